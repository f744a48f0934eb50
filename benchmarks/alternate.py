"""Run benchmark contenders alternately (A B C A B C ...), each in its own process.

A Keras backend is fixed per process, so every contender lives in a worker process that
sets itself up once (builds its model, warms up) and then times one call per request.
The parent asks the workers in turn, round after round, so that a noisy neighbour slows
every contender of a round alike: the per-round ratios are what we report (their median
and spread), not times from separate runs. Every worker gets the same thread count.

A script declares ``CONTENDERS = {name: setup}`` where ``setup(args)`` returns a
zero-argument function doing one timed unit of work (it may return a number, e.g. a loss,
which the parent shows to catch a contender that does nothing), and calls
``alternate.main(__file__, CONTENDERS, parser, baseline=...)``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# the checkout these scripts live in is what they measure, not whichever kerasformer is installed
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(1, REPO)


def set_threads(n):
    """The same thread count for every library a contender may use."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    # XLA's CPU client has no thread-count switch: at 1 thread its Eigen kernels are made
    # single-threaded; otherwise JAX keeps its own pool (its CPU time may exceed wall time)
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()


def _torch_threads(n):
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def worker(setup, args):
    """Serve timing requests on stdin; answer on the real stdout, one JSON line each."""
    answer = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, not into the protocol
    fn = setup(args)
    _torch_threads(args.threads)
    for _ in range(args.warmup):
        fn()
    answer.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start, cpu = time.perf_counter(), time.process_time()
        value = fn()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = None
        answer.write(json.dumps({"seconds": seconds, "cpu": cpu, "value": value}) + "\n")


class Worker:
    def __init__(self, script, name, argv, threads):
        cmd = [sys.executable, script, "--worker", name, "--threads", str(threads)] + argv
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.failed = None

    def wait_ready(self):
        line = self.proc.stdout.readline()
        if not line:
            self.failed = f"exited with code {self.proc.wait()} during set-up"

    def run(self):
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.failed = f"exited with code {self.proc.wait()}"
            return None
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            self.proc.wait(timeout=60)


def parse(parser, contenders):
    parser.add_argument("--rounds", type=int, default=5, help="A B C ... rounds")
    # 3: kerasformer on torch traces an input shape on its third call (backend.TRACE_AFTER)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per contender before round 1")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of every contender")
    parser.add_argument("--only", nargs="+", choices=sorted(contenders), help="run these contenders only")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--worker", choices=sorted(contenders), help=argparse.SUPPRESS)
    return parser.parse_args()


def main(script, contenders, parser, baseline, units=None, describe=None, pairs=()):
    """Parse the arguments; as a worker, serve; as the parent, alternate and report.

    ``units`` (e.g. ``(tokens, "tokens/s")``) adds a throughput column; ``describe`` is a
    line printed above the table; ``pairs`` lists further ``(a, b)`` comparisons (how many
    times faster a is than b, per round). Returns the results dict (parent) or None (worker)."""
    args = parse(parser, contenders)
    set_threads(args.threads)
    if args.worker:
        worker(contenders[args.worker], args)
        return None
    argv = sys.argv[1:]
    names = [n for n in contenders if not args.only or n in args.only]
    workers = [Worker(script, n, argv, args.threads) for n in names]
    try:
        for w in workers:  # set up one at a time: compilation must not overlap another's timing
            w.wait_ready()
        times = {w.name: [] for w in workers}
        cpus = {w.name: [] for w in workers}
        values = {}
        for r in range(args.rounds):
            for w in workers:
                if w.failed:
                    continue
                result = w.run()
                if result is not None:
                    times[w.name].append(result["seconds"])
                    cpus[w.name].append(result["cpu"])
                    values[w.name] = result["value"]
    finally:
        for w in workers:
            w.close()
    return report(args, workers, times, cpus, values, baseline, units, describe, pairs)


def ratios(faster, slower):
    """Per-round ratios ``slower / faster`` (> 1: the first is faster); their median, min, max."""
    r = [b / a for a, b in zip(faster, slower)]
    return dict(ratio_median=statistics.median(r), ratio_min=min(r), ratio_max=max(r))


def report(args, workers, times, cpus, values, baseline, units, describe, pairs=()):
    if describe:
        print(describe)
    print(f"{args.rounds} rounds alternating ({' '.join(w.name for w in workers)}), "
          f"{args.threads} threads each, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}")
    base = times.get(baseline) or []
    header = f"{'contender':30s} {'median ms':>10s} {'CPU ms':>9s}"
    if units:
        header += f" {units[1]:>12s}"
    header += f" {'vs ' + baseline + ' (median, min-max of rounds)':>44s}  value"
    print(header)
    results = {"rounds": args.rounds, "threads": args.threads, "baseline": baseline, "contenders": {}}
    for w in workers:
        t = times[w.name]
        if w.failed or not t:
            print(f"{w.name:30s} failed: {w.failed}")
            results["contenders"][w.name] = {"failed": w.failed}
            continue
        median = statistics.median(t)
        row = f"{w.name:30s} {median * 1e3:10.1f} {statistics.median(cpus[w.name]) * 1e3:9.1f}"
        if units:
            row += f" {units[0] / median:12,.0f}"
        entry = {"median_s": median, "times_s": t, "cpu_s": cpus[w.name], "value": values.get(w.name)}
        if len(base) == len(t):  # ratio > 1: this contender is faster than the baseline
            entry.update(ratios(t, base))
            row += f" {entry['ratio_median']:>32.2f}x ({entry['ratio_min']:.2f}-{entry['ratio_max']:.2f})"
        if entry["value"] is not None:  # a checksum of the output: contenders that agree show the same
            row += f"  {entry['value']:.6g}"
        results["contenders"][w.name] = entry
        print(row)
    results["pairs"] = {}
    for a, b in pairs:
        if times.get(a) and times.get(b) and len(times[a]) == len(times[b]):
            r = ratios(times[a], times[b])
            results["pairs"][f"{a} vs {b}"] = r
            print(f"{a} vs {b}: {r['ratio_median']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return results
