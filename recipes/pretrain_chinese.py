"""Pretrain kerasformer's own small Chinese RoBERTa (MLM, whole-word masking) on the
shared corpora, with the ``kerasformer pretrain`` machinery.

    python recipes/pretrain_chinese.py --out runs/zh-small            # about an hour on 2 cores
    python recipes/pretrain_chinese.py --out /tmp/zh --smoke           # a minute

Step 1 writes the corpus, one document per line, to ``OUT/corpus/``:
- the Tang poems converted to simplified characters with OpenCC (``t2s``), the Song ci
  and the Yuan qu (already simplified): ``title。text`` per poem;
- the *training* splits of every labelled set (couplet, People's Daily NER, TNEWS,
  AFQMC, ChnSentiCorp, CSL discipline titles); never a dev or test split, so that the
  recipes that fine-tune this model are evaluated on text it never saw. (CSL's ``ts_dev``,
  CMRC's ``dev.json`` and LCSTS serve as training or evaluation data of recipes under
  names that say dev/test, so they are left out too.)
The modern sets are small beside the 25M characters of poetry; ``--modern-repeat``
(default 3) repeats them so the model also learns the language of the downstream tasks.

Step 2 builds a character vocabulary (``kerasformer vocab``), step 3 runs
``kerasformer.pretraining.pretrain`` (``OUT/log.csv`` holds the loss curve, tokens/s
and MFU; ``OUT/model/`` the exported model).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recipes.common import data_path, progress  # noqa: E402

# (file under ../shared/data, how to take the text out of one line)
MODERN = [
    ("couplet/train.tsv", lambda f: ["，".join(f[:2])]),
    ("clue/tnews/train.tsv", lambda f: [f[0]]),
    ("clue/afqmc/train.txt", lambda f: f[:2]),
    ("sentiment/chnsenticorp/train.tsv", lambda f: [f[0]]),
    ("csl/ctg_train.tsv", lambda f: [f[1]] if len(f) > 1 else []),
]
POETRY = ["poetry/tang.txt", "poetry/song_ci.txt", "poetry/yuan_qu.txt"]


def ner_sentences(path):
    """People's Daily NER is one ``char TAG`` per line: join the characters back."""
    chars = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                if chars:
                    yield "".join(chars)
                chars = []
            else:
                chars.append(line.split()[0])
    if chars:
        yield "".join(chars)


def write_corpus(out_dir, modern_repeat=3, limit=None):
    """Write ``poetry.txt`` and ``modern.txt`` (one document per line) into ``out_dir``."""
    import opencc  # pip install opencc (the conversion tables of the OpenCC project)

    os.makedirs(out_dir, exist_ok=True)
    to_simplified = opencc.OpenCC("t2s")
    poetry_path, modern_path = os.path.join(out_dir, "poetry.txt"), os.path.join(out_dir, "modern.txt")
    with open(poetry_path + ".tmp", "w", encoding="utf-8") as out:
        for name in POETRY:
            convert = name.endswith("tang.txt")  # the Tang poems are in traditional characters
            with open(data_path(name), encoding="utf-8") as f:
                for i, line in enumerate(progress(f, desc=name, unit=" poems")):
                    if limit and i >= limit:
                        break
                    title, _, text = line.rstrip("\n").partition("\t")
                    doc = f"{title}。{text}" if text else title
                    out.write((to_simplified.convert(doc) if convert else doc).replace("\n", " ") + "\n")
    os.replace(poetry_path + ".tmp", poetry_path)
    docs = []
    for name, take in MODERN:
        with open(data_path(name), encoding="utf-8") as f:
            for i, line in enumerate(f):
                if limit and i >= limit:
                    break
                docs.extend(t for t in take(line.rstrip("\n").split("\t")) if t.strip())
    for i, sentence in enumerate(ner_sentences(data_path("ner_peoples_daily/train.txt"))):
        if limit and i >= limit:
            break
        docs.append(sentence)
    with open(modern_path + ".tmp", "w", encoding="utf-8") as out:
        for _ in range(modern_repeat):
            for doc in docs:
                out.write(doc + "\n")
    os.replace(modern_path + ".tmp", modern_path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (corpus/, data/, checkpoints/, model/, log.csv)")
    p.add_argument("--config", default="small", help="preset (tiny, small 4x256, medium 6x384) or config.json")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    # AdamW, not LAMB: LAMB (bert4keras' layer adaptation) moves every weight matrix by lr * its
    # norm per step, about 1/50 of Adam's step for BERT's 0.02-scale initialisation at batch 32.
    # Measured here: with LAMB at 5e-4 this model sat on the unigram plateau (loss = the
    # corpus' unigram entropy, 6.9 nats) for 1,300 steps; on a toy corpus whose masked
    # characters follow from their neighbours, LAMB at 1e-3 stayed at chance after 300 steps
    # where AdamW at 1e-3 reached loss 0.07 by step 600. LAMB is for large batches.
    p.add_argument("--optimizer", choices=["adamw", "lamb"], default="adamw")
    p.add_argument("--modern-repeat", type=int, default=3)
    p.add_argument("--min-count", type=int, default=3, help="characters seen fewer times are [UNK]")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--smoke", action="store_true", help="a few hundred lines per file, a few steps")
    args = p.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    from kerasformer.pretraining.corpus import build_vocab
    from kerasformer.pretraining.train import pretrain

    corpus_dir = os.path.join(args.out, "corpus")
    files = [os.path.join(corpus_dir, n) for n in ("poetry.txt", "modern.txt")]
    vocab = os.path.join(args.out, "vocab.txt")
    if not (args.resume and os.path.exists(vocab)):
        write_corpus(corpus_dir, args.modern_repeat, limit=200 if args.smoke else None)
        build_vocab(files, vocab, min_count=1 if args.smoke else args.min_count)
    steps = 4 if args.smoke else args.steps
    # pretrain() preprocesses the files into OUT/data once and reuses a complete dataset after.
    # pack="stream": a poem, a title or a couplet is far shorter than a row; packed one
    # document per row (bert4keras' way) the rows held 17-70 real tokens of 128
    # (measured on this corpus), so most of every step was padding.
    losses = pretrain("mlm", files, vocab,
                      args.out, config="tiny" if args.smoke else args.config, model="roberta",
                      seq_len=32 if args.smoke else args.seq_len, batch_size=4 if args.smoke else args.batch_size,
                      steps=steps, lr=args.lr, warmup=0.06, optimizer=args.optimizer, save_every=max(1, steps // 20),
                      resume=args.resume, segmenter="jieba", pack="stream")
    if losses:
        print(f"final loss {losses[-1]:.4f}; model folder: {os.path.join(args.out, 'model')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
