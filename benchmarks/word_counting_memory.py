"""Bounded-memory n-gram counting: the 20M-character Tang poetry corpus under an
address-space cap, next to a naive Counter under the same cap.

Each contender runs in a child process with ``resource.setrlimit(RLIMIT_AS, cap)``:
  - naive:   collections.Counter of every 1..4-gram, line by line (what a short script does);
  - memory:  kerasformer.words.count_ngrams, chunk counts merged in memory;
  - spill:   kerasformer.words.count_ngrams(spill_dir=...), hash-partitioned on disk.
It prints, per contender, whether it finished, the wall time, the peak RSS and the
number of n-grams kept (min_count).

    python benchmarks/word_counting_memory.py                    # --cap-mb 200; naive takes ~5 min
    python benchmarks/word_counting_memory.py --corpus x.txt --cap-mb 400 --min-count 2
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CORPUS = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "poetry", "tang.txt"))

# the child imports kerasformer.words without kerasformer/__init__ (which imports Keras,
# whose backends reserve gigabytes of address space that would count against the cap)
CHILD_PRELUDE = f"""
import sys, types, json, time, resource
pkg = types.ModuleType("kerasformer"); pkg.__path__ = [{os.path.join(REPO, "kerasformer")!r}]
sys.modules["kerasformer"] = pkg
"""

CHILD = {
    "naive": """
import collections, re
counts = collections.Counter()
with open(CORPUS, encoding="utf-8") as f:
    for line in f:
        for s in re.split("[^\\u4e00-\\u9fff0-9a-zA-Z]+", line):
            for n in range(1, ORDER + 1):
                for i in range(len(s) - n + 1):
                    counts[s[i:i + n]] += 1
kept = sum(1 for v in counts.values() if v >= MIN_COUNT)
""",
    "memory": """
from kerasformer.words.counting import count_ngrams
kept = len(count_ngrams([CORPUS], order=ORDER, min_count=MIN_COUNT, chunk_chars=CHUNK, progress=False))
""",
    "spill": """
import tempfile
from kerasformer.words.counting import count_ngrams
with tempfile.TemporaryDirectory() as d:
    kept = len(count_ngrams([CORPUS], order=ORDER, min_count=MIN_COUNT, chunk_chars=CHUNK, progress=False,
                            spill_dir=d, partitions=PARTITIONS))
""",
}


def run(name, args):
    code = (CHILD_PRELUDE + f"CORPUS={args.corpus!r}; ORDER={args.order}; MIN_COUNT={args.min_count}; "
            f"CHUNK={args.chunk_chars}; PARTITIONS={args.partitions}\nt=time.perf_counter()\n"
            + CHILD[name] + "\nprint(json.dumps({'kept': kept, 'seconds': time.perf_counter() - t, "
            "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n")
    cap = args.cap_mb * 2 ** 20

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    start = time.perf_counter()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")  # no per-thread BLAS buffers
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit,
                              timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"finished": False, "seconds": args.timeout, "error": "timed out"}
    if proc.returncode == 0:
        return {"finished": True, **json.loads(proc.stdout.strip().splitlines()[-1])}
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return {"finished": False, "seconds": time.perf_counter() - start, "error": tail[:200]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    p.add_argument("--cap-mb", type=int, default=200, help="address-space cap of each child (MiB)")
    p.add_argument("--order", type=int, default=4)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--chunk-chars", type=int, default=1 << 18)
    p.add_argument("--partitions", type=int, default=32)
    p.add_argument("--only", help="comma-separated contenders (naive, memory, spill)")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--out", help="results JSON")
    args = p.parse_args()
    if not os.path.isfile(args.corpus):
        raise SystemExit(f"corpus not found: {args.corpus}")
    results = {"corpus": args.corpus, "corpus_mb": os.path.getsize(args.corpus) / 2 ** 20, "cap_mb": args.cap_mb,
               "order": args.order, "min_count": args.min_count}
    for name in (args.only or "spill,memory,naive").split(","):
        results[name] = r = run(name, args)
        state = (f"finished in {r['seconds']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MiB, {r['kept']:,} n-grams kept"
                 if r["finished"] else f"FAILED after {r['seconds']:.1f}s: {r['error']}")
        print(f"{name:7s} under {args.cap_mb} MiB: {state}", flush=True)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, args.out)  # atomic


if __name__ == "__main__":
    main()
