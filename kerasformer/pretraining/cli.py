"""``kerasformer pretrain ...`` and ``kerasformer vocab CORPUS... --out vocab.txt``.

Parsed before Keras is imported, so ``--backend`` and the multi-host set-up
(``jax.distributed.initialize``, which must run before JAX is used) come first.
"""
import argparse
import os
import sys


def vocab_main(argv):
    parser = argparse.ArgumentParser(prog="kerasformer vocab",
                                     description="a Chinese character vocabulary (with ## pieces) from a corpus")
    parser.add_argument("corpus", nargs="+", help="text files (.gz allowed)")
    parser.add_argument("--out", required=True, help="vocab.txt to write")
    parser.add_argument("--min-count", type=int, default=1, help="keep characters seen at least this often")
    parser.add_argument("--max-size", type=int, default=None, help="at most this many tokens")
    parser.add_argument("--documents", choices=["line", "blank"], default="line",
                        help="one document per line, or blank-line separated")
    args = parser.parse_args(argv)
    from kerasformer.errors import KerasformerError
    from kerasformer.pretraining.corpus import build_vocab

    try:
        n = build_vocab(args.corpus, args.out, min_count=args.min_count, max_size=args.max_size,
                        documents=args.documents)
    except KerasformerError as e:
        print(f"kerasformer vocab: error: {e}", file=sys.stderr)
        return 2
    print(f"{n} tokens written to {args.out}")
    return 0


def pretrain_parser():
    p = argparse.ArgumentParser(prog="kerasformer pretrain", description="pretrain a Transformer (MLM / LM / UniLM)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", choices=["jax", "torch"], help="Keras backend (default $KERAS_BACKEND, else jax)")
    p.add_argument("--objective", choices=["mlm", "lm", "unilm"], default="mlm")
    p.add_argument("--corpus", nargs="+", help="raw text files (.gz allowed), preprocessed once into OUT/data")
    p.add_argument("--data", help="a dataset folder already preprocessed (instead of --corpus)")
    p.add_argument("--config", default="small", help="preset (tiny, small, medium, base) or a config.json")
    p.add_argument("--model", default="bert", help="family: bert, roberta, albert, nezha, roformer, roformer_v2, gpt2")
    p.add_argument("--vocab", required=True, help="vocab.txt (see kerasformer vocab)")
    p.add_argument("--init", help="checkpoint to continue from (default: from scratch)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32, help="global rows per micro-batch")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per update")
    p.add_argument("--steps", type=int, default=1000, help="optimizer updates")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=0.1, help="warm-up steps (a fraction of --steps if < 1)")
    p.add_argument("--optimizer", choices=["adamw", "lamb"], default="adamw")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--ema", type=float, default=None, help="EMA momentum (e.g. 0.999); exported weights are the average")
    p.add_argument("--mixed-precision", action="store_true", help="mixed bfloat16")
    p.add_argument("--recompute", action="store_true", help="gradient checkpointing of every block")
    p.add_argument("--dropout", type=float, default=None, help="override the config's dropout rates")
    p.add_argument("--data-parallel", type=int, default=None, metavar="N", help="data parallel over N devices (JAX)")
    p.add_argument("--mesh", default=None, metavar="DxM", help="data x model mesh, e.g. 2x4 (JAX)")
    p.add_argument("--multihost", action="store_true",
                   help="jax.distributed.initialize first (one command per host; see docs/pretraining.md)")
    p.add_argument("--static-masking", action="store_true", help="the same masks every epoch")
    p.add_argument("--mask-rate", type=float, default=0.15)
    p.add_argument("--segmenter", choices=["jieba", "char"], default="jieba", help="whole words for Chinese")
    p.add_argument("--documents", choices=["line", "blank"], default="line")
    p.add_argument("--pack", choices=["document", "stream"], default="document",
                   help="document: each document in its own rows (bert4keras); stream: short documents "
                        "share rows, separated by [SEP] (RoBERTa's FULL-SENTENCES)")
    p.add_argument("--workers", type=int, default=None, help="preprocessing processes (default: all CPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s per device for MFU")
    p.add_argument("--out", required=True, help="output folder")
    return p


def pretrain_main(argv):
    parser = pretrain_parser()
    args = parser.parse_args(argv)
    if (args.corpus is None) == (args.data is None):
        parser.error("give either --corpus FILE... or --data DIR")
    if args.backend:
        if "keras" in sys.modules:
            parser.error("--backend must be chosen before Keras is imported")
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("KERAS_BACKEND", "jax")
    from kerasformer.errors import KerasformerError

    try:
        if args.multihost:
            from kerasformer.pretraining.distribution import initialize_multihost

            if os.environ["KERAS_BACKEND"] != "jax":
                raise KerasformerError("--multihost runs on the JAX backend")
            initialize_multihost()
        from kerasformer.pretraining.train import pretrain

        losses = pretrain(
            args.objective, args.data or args.corpus, args.vocab, args.out, config=args.config, model=args.model,
            init=args.init, seq_len=args.seq_len, batch_size=args.batch_size, steps=args.steps, lr=args.lr,
            warmup=args.warmup, optimizer=args.optimizer, weight_decay=args.weight_decay,
            grad_accum=args.grad_accum, ema=args.ema, mixed_precision=args.mixed_precision,
            recompute=args.recompute, dropout_rate=args.dropout, data_parallel=args.data_parallel,
            mesh=args.mesh, seed=args.seed, static_masking=args.static_masking, mask_rate=args.mask_rate,
            save_every=args.save_every, keep=args.keep, resume=args.resume, peak_tflops=args.peak_tflops,
            segmenter=args.segmenter, documents=args.documents, workers=args.workers, pack=args.pack)
    except KerasformerError as e:
        print(f"kerasformer pretrain: error: {e}", file=sys.stderr)
        return 2
    if losses:
        print(f"final loss {losses[-1]:.4f}; model folder: {os.path.join(args.out, 'model')}")
    return 0
