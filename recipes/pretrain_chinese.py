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
and MFU; ``OUT/model/`` the exported model). ``--ship DIR`` then writes the model as
float16 safetensors with a ``MODEL_CARD.md`` made from the run's own records: that is how
``kerasformer/data/chinese_small`` (``kerasformer.embedded``) was made.
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
    p.add_argument("--mixed-precision", action="store_true",
                   help="Keras' mixed_bfloat16 (float32 weights and optimizer, bfloat16 matmuls): on a "
                        "CPU with avx512_bf16, KERAS_BACKEND=torch runs the step ~1.8x faster than float32 "
                        "on JAX (benchmarks/bench_train.py); checkpoints hold float32 numpy arrays, so "
                        "--resume may switch precision and backend (the shipped run went from JAX float32 "
                        "to torch mixed bfloat16 at step 1,440)")
    p.add_argument("--smoke", action="store_true", help="a few hundred lines per file, a few steps")
    p.add_argument("--ship", metavar="DIR", help="after training, write OUT/model as float16 with a model card to DIR "
                   "(kerasformer/data/chinese_small for the package)")
    p.add_argument("--machine", default="", help="the machine, for the model card")
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
                      resume=args.resume, segmenter="jieba", pack="stream", mixed_precision=args.mixed_precision)
    if losses:
        print(f"final loss {losses[-1]:.4f}; model folder: {os.path.join(args.out, 'model')}")
    if args.ship:
        ship(args.out, args.ship, dict(vars(args), batch_size=4 if args.smoke else args.batch_size))
        print(f"shipped: {args.ship}")
    return 0


def run_summary(out, batch_size):
    """The run's figures from ``OUT/log.csv`` (one row per step) and the dataset index."""
    import csv
    import json

    import numpy as np

    with open(os.path.join(out, "log.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(out, "data", "index.json"), encoding="utf-8") as f:
        index = json.load(f)
    step = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    tps = np.array([float(r["tokens_per_s"]) for r in rows])
    mfu = np.array([float(r["mfu"]) for r in rows])
    tokens_per_step = batch_size * int(index["seq_len"])
    window = max(1, len(rows) // 20)
    curve = [(int(step[min(i + window, len(step)) - 1]), float(loss[i:i + window].mean()))
             for i in range(0, len(rows), window)]
    # what a model that ignores the context scores: the entropy of the characters (specials excluded)
    ids = np.concatenate([np.load(os.path.join(out, "data", shard["name"] + ".ids.npy"), mmap_mode="r").ravel()
                          for shard in index["shards"][:8]])  # 8 shards: a 67 MB sample at most
    counts = np.bincount(ids[ids > 4])
    p = counts[counts > 0] / counts.sum()
    return {"steps": int(step[-1]), "final_loss": float(loss[-window:].mean()), "curve": curve,
            "unigram_entropy": float(-(p * np.log(p)).sum()),
            "tokens_per_s_median": float(np.median(tps)), "mfu_median": float(np.median(mfu)),
            # time spent in steps (each row's step time from its tokens/s), not the wall-clock
            # span of log.csv, which holds the gaps between resumed sessions
            "hours": float((tokens_per_step / tps).sum() / 3600), "rows": int(index["examples"]),
            "tokens": int(index["tokens"]), "chars": int(index["chars"]), "seq_len": int(index["seq_len"])}


def dropout_note(rate):
    """The card's advice on fine-tuning dropout: a model is best fine-tuned with the dropout it
    was pretrained with (measured on ChnSentiCorp: 80.8% at 0 against 63.6% at 0.1 for a model
    pretrained at 0; recipes/README.md)."""
    if rate:
        return f"Pretrained with dropout {rate:g} (the config's rates); fine-tune with the same."
    return ("Pretrained without dropout (the config's rates are 0): fine-tune without it too, as the recipes "
            "do by default (`build_transformer_model` follows the config); dropout 0.1 costs ChnSentiCorp 17 points.")


def trained_positions_only(transformer, config_path, seq_len):
    """The same model with its position table cut to the ``seq_len`` rows pretraining
    trained. The rows after them are still their random initialisation: a fine-tuning
    input longer than ``seq_len`` would read them, silently (the CSL recipe's titles sit at
    positions 128-160 of its --maxlen 160). With the table cut, the
    loader refuses a longer input with a clear error and the recipes cap ``--maxlen``."""
    import keras

    from kerasformer import build_transformer_model

    if transformer.max_position <= seq_len:
        return transformer
    cut = build_transformer_model(config_path, None, with_mlm=True, return_keras_model=False, max_position=seq_len)
    for target, source in zip(cut.model.weights, transformer.model.weights):
        value = keras.ops.convert_to_numpy(source.value)
        target.assign(value[:seq_len] if tuple(target.shape) != tuple(source.shape) else value)
    return cut


def ship(out, target, args):
    """``OUT/model`` as float16 safetensors in ``target`` (the vocabulary and configs as they
    are) plus ``MODEL_CARD.md``."""
    from kerasformer import build_transformer_model
    from kerasformer.pretrained import save_pretrained

    r = run_summary(out, args.get("batch_size", 32))
    trained = build_transformer_model(os.path.join(out, "model"), with_mlm=True, return_keras_model=False)
    transformer = trained_positions_only(trained, os.path.join(out, "model", "config.json"), r["seq_len"])
    save_pretrained(transformer, target, dtype="float16")
    params = transformer.model.count_params()
    size = os.path.getsize(os.path.join(target, "model.safetensors")) / 1e6
    curve = " | ".join(f"{s}: {v:.2f}" for s, v in r["curve"])
    card = f"""# chinese-small: kerasformer's own Chinese RoBERTa

A {transformer.num_hidden_layers}-layer, {transformer.hidden_size}-hidden BERT-architecture model
({params / 1e6:.1f}M parameters with the MLM head, {transformer.vocab_size:,}-character vocabulary;
{size:.1f} MB as float16 safetensors), pretrained with `recipes/pretrain_chinese.py` by the
kerasformer project. Loads with `build_transformer_model(folder)` and Hugging Face
`BertForMaskedLM.from_pretrained(folder)`.

## Data
The shared corpora of the project (`../shared/data/`): Tang poems (converted to simplified
characters with OpenCC), Song ci, Yuan qu, and the *training* splits of the couplet,
People's Daily NER, TNEWS, AFQMC, ChnSentiCorp and CSL title sets (modern text repeated
{args.get("modern_repeat", 3)}x). No dev or test split. {r["chars"]:,} characters packed into
{r["rows"]:,} rows of {r["seq_len"]} tokens ({r["tokens"]:,} real tokens; short documents share
rows, separated by [SEP]).

## Training
Masked LM with whole-word masking (jieba words, 15%, 80/10/10), {args.get("optimizer", "adamw")}
at peak learning rate {args.get("lr")}, 6% warm-up then linear decay, batch {args.get("batch_size")} x
{r["seq_len"]}, {r["steps"]:,} steps ({r["steps"] * args.get("batch_size", 32) / r["rows"]:.2f} epochs) on CPU:
{r["hours"]:.2f} h of steps, median {r["tokens_per_s_median"]:,.0f} tokens/s, median MFU
{r["mfu_median"]:.1%} of the CPU's nominal peak (float32, or bfloat16 with `--mixed-precision`).
{args.get("machine", "")}

Final training loss (mean of the last 5% of steps): {r["final_loss"]:.3f} nats per masked token.
Loss curve (step: mean loss of the window ending there): {curve}.

A small model, trained for {r["hours"]:.1f} hours on two CPU cores: compare its loss with the corpus'
unigram entropy ({r["unigram_entropy"]:.2f} nats, what a model ignoring the context scores). It has learned which characters a register uses (poetry,
titles, reviews) and some local context, not yet the words: fill-mask mostly proposes
frequent characters of the right register. A starting point for fine-tuning on such text and
for longer pretraining (`--resume --steps N` continues the run), not a general Chinese model.
{dropout_note(transformer.dropout_rate)}
Inputs of up to {transformer.max_position} tokens, the length it was pretrained at: the position table holds
those rows only (the untrained rest is cut off), so a longer input is refused with a clear
error and the recipes cap `--maxlen` to it.
Fine-tuning figures: `recipes/README.md`.
"""
    with open(os.path.join(target, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
        f.write(card)


if __name__ == "__main__":
    sys.exit(main())
