"""UniLM beam search: the cached engine vs the uncached bert4keras-style decoder.

One random UniLM BERT (default 4 layers x 256, vocabulary 5,000), prompts of 64
tokens, beam 4, exactly 64 new tokens (no end id, so both run every step). Contenders:

* ``engine``: ``kerasformer.generate(model, prompts, strategy='beam', num_beams=4)``,
  key/value cache, all prompts of a batch decoded together;
* ``bert4keras``: ``AutoRegressiveDecoder.beam_search(..., topk=4)`` with the
  bert4keras ``predict`` (the whole sequence re-run at every step, one prompt at a time).

Each backend runs in its own process (a Keras backend is fixed per process); the parent
prints generated tokens per second (prompts x new tokens / seconds, after a warm-up call
that compiles), the speed-up of the engine, and whether both found the same beam::

    python benchmarks/bench_unilm_beam.py [--backends jax,torch] [--batches 1,8]
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="jax,torch")
    p.add_argument("--batches", default="1,8", help="prompts per batch, comma-separated")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=5000)
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    p.add_argument("--new", type=int, default=64, help="generated tokens")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the engine (median)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], result


def worker(args):
    os.environ["KERAS_BACKEND"] = args.worker
    sys.path.insert(0, REPO)
    import numpy as np

    from kerasformer import build_transformer_model, generate
    sys.path.insert(0, os.path.join(REPO, "recipes"))
    from unilm_csl import bert4keras_decoder  # bert4keras' AutoTitle: the uncached baseline

    # a large initialiser gives peaked distributions, so both searches agree on the best
    # beam instead of splitting near-ties by float noise
    model = build_transformer_model(
        None, None, vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=max(2, args.hidden // 64), intermediate_size=4 * args.hidden,
        max_position=max(512, args.prompt + args.new), initializer_range=0.3,
        application="unilm", with_mlm=True)
    rng = np.random.default_rng(0)
    batches = [int(b) for b in args.batches.split(",")]
    prompts = [rng.integers(5, args.vocab, args.prompt).tolist() for _ in range(max(batches))]

    decoder = bert4keras_decoder(model, end_id=None, maxlen=args.new)

    def uncached(batch):
        return [decoder.beam_search([p, [0] * len(p)], topk=args.beam).tolist() for p in batch]

    engine_note = None
    rows = []
    for size in batches:
        batch = prompts[:size]
        row = {"batch": size}
        start = time.perf_counter()
        uncached(batch[:1])  # warm-up: compiles every shape the loop meets (JAX)
        row["bert4keras_warmup_s"] = time.perf_counter() - start
        seconds, slow = median_time(lambda: uncached(batch), 1)
        row["bert4keras_s"] = seconds
        row["bert4keras_tok_s"] = size * args.new / seconds
        try:
            def cached():
                return generate(model, batch, max_new_tokens=args.new, strategy="beam",
                                num_beams=args.beam, end_id=None)

            start = time.perf_counter()
            cached()
            row["engine_warmup_s"] = time.perf_counter() - start
            seconds, fast = median_time(cached, args.repeats)
            row["engine_s"] = seconds
            row["engine_tok_s"] = size * args.new / seconds
            row["speedup"] = row["engine_tok_s"] / row["bert4keras_tok_s"]
            row["same_tokens"] = sum(list(a) == list(b) for a, b in zip(fast, slow))
        except Exception as e:  # noqa: BLE001  (report, keep the other numbers)
            engine_note = f"engine failed: {type(e).__name__}: {str(e)[:300]}"
        rows.append(row)
    print("RESULT " + json.dumps({"backend": args.worker, "rows": rows, "engine_note": engine_note}))


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    print(f"UniLM beam search: {args.layers} layers x {args.hidden}, vocab {args.vocab}, prompt "
          f"{args.prompt} tokens, beam {args.beam}, +{args.new} tokens")
    print(f"{'backend':8} {'batch':>5} {'bert4keras tok/s':>17} {'engine tok/s':>13} {'speed-up':>9} "
          f"{'same beam':>10} {'warm-up b4k / engine':>22}")
    for backend in args.backends.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", backend] + [
            a for a in (argv if argv is not None else sys.argv[1:])]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "KERAS_BACKEND": backend})
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"{backend:8} failed:\n{proc.stderr[-2000:]}")
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        for row in result["rows"]:
            engine = f"{row['engine_tok_s']:13.1f}" if "engine_tok_s" in row else f"{'-':>13}"
            speedup = f"{row['speedup']:8.1f}x" if "speedup" in row else f"{'-':>9}"
            same = f"{row['same_tokens']}/{row['batch']}" if "same_tokens" in row else "-"
            warm = f"{row['bert4keras_warmup_s']:.1f} s / " + (
                f"{row['engine_warmup_s']:.1f} s" if "engine_warmup_s" in row else "-")
            print(f"{backend:8} {row['batch']:5d} {row['bert4keras_tok_s']:17.1f} {engine} {speedup} "
                  f"{same:>10} {warm:>22}")
        if result["engine_note"]:
            print(f"{backend:8} NOTE: {result['engine_note']}; engine column skipped")


if __name__ == "__main__":
    main()
