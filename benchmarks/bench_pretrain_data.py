"""Pretraining data pipeline: preprocessing characters/s, loader batches/s, and how much
faster the loader is than the training step it feeds (the goal: >= 5x, so the step never
waits for data).

    python benchmarks/bench_pretrain_data.py [--corpus FILE...] [--docs 20000] [--config small]

Preprocessing (jieba words, WordPiece, bert4keras packing) runs in ``--workers`` processes
over the first ``--docs`` documents; the loader draws whole-word MLM batches from the
shards (the objective's masking included, on its background thread); the step is the
kerasformer MLM ``train_on_batch`` of ``kerasformer pretrain`` on the same batches.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(REPO, "..", "shared", "data", "sentiment", "chnsenticorp", "train.tsv")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", nargs="+", default=[DEFAULT], help="text files, one document per line")
    p.add_argument("--docs", type=int, default=20000, help="documents to preprocess")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=50, help="loader batches timed")
    p.add_argument("--steps", type=int, default=5, help="training steps timed")
    p.add_argument("--config", default="small", help="pretraining preset of the step")
    args = p.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    sys.path.insert(0, REPO)
    from kerasformer.pretraining.corpus import build_shards, build_vocab
    from kerasformer.pretraining.loader import Loader
    from kerasformer.pretraining.objectives import Objective
    from kerasformer.pretraining.train import _MaskedLoss, _vocab_ids, build_pretraining_model, make_optimizer

    work = tempfile.mkdtemp(prefix="kf-bench-data-")
    try:
        text = os.path.join(work, "corpus.txt")
        chars = docs = 0
        with open(text, "w", encoding="utf-8") as out:
            for path in args.corpus:
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        if docs >= args.docs:
                            break
                        line = line.rstrip("\n").split("\t")[0]
                        out.write(line + "\n")
                        chars, docs = chars + len(line), docs + 1
        vocab = os.path.join(work, "vocab.txt")
        build_vocab([text], vocab, progress=False)
        start = time.perf_counter()
        index = build_shards([text], os.path.join(work, "data"), vocab, seq_len=args.seq_len,
                             workers=args.workers, progress=False)
        prep = time.perf_counter() - start
        rows = sum(s["count"] for s in index["shards"])
        print(f"preprocessing: {docs:,} documents, {chars:,} characters -> {rows:,} rows of {args.seq_len} "
              f"in {prep:.1f} s with {args.workers} workers: {chars / prep:,.0f} chars/s")

        ids = _vocab_ids(vocab)
        loader = Loader(os.path.join(work, "data"), args.batch_size, Objective("mlm", seed=0, **ids), seed=0)
        batches = [next(loader)]  # starts the prefetch thread
        start = time.perf_counter()
        for _ in range(args.batches):
            batches.append(next(loader))
        load = (time.perf_counter() - start) / args.batches
        loader.close()
        print(f"loader: {1 / load:,.1f} batches/s of {args.batch_size} x {args.seq_len} (masking included)")

        transformer = build_pretraining_model("mlm", args.config, ids["vocab_size"], seq_len=args.seq_len)
        model = transformer.model
        model.compile(optimizer=make_optimizer("adamw", 1e-4, 1000, 0), loss=_MaskedLoss())
        model.train_on_batch(*batches[0])  # compiles
        start = time.perf_counter()
        for i in range(args.steps):
            model.train_on_batch(*batches[1 + i % args.batches])
        step = (time.perf_counter() - start) / args.steps
        print(f"training step ({args.config}, {os.environ['KERAS_BACKEND']}): {1 / step:,.2f} steps/s; "
              f"the loader is {step / load:,.1f}x faster than the step (goal >= 5x)")
        return {"chars_per_s": chars / prep, "batches_per_s": 1 / load, "steps_per_s": 1 / step,
                "loader_vs_step": step / load}
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
