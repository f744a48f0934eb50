"""Conditional text generation with Conditional LayerNorm (CLN), after Su Jianlin's article
"基于Conditional Layer Normalization的条件文本生成" and bert4keras'
examples/task_conditional_language_model.py: a BERT language model (``application='lm'``)
whose every LayerNorm's gamma and beta are shifted by zero-initialised projections of a
condition vector, here the embedding of a review's sentiment label
(``build_transformer_model(..., layer_norm_cond=c, additional_input_layers=c_in)``), trained
on ChnSentiCorp reviews (train split), then asked for positive or negative reviews.

The claim is measured, not shown: a sentiment classifier trained separately (the
classification recipe, ``recipes/classify.py``, called as a library on the same train
split) judges the sampled texts. Reported per model: the share of samples it judges to
carry the requested sentiment (a model that ignores the label scores about 50%), distinct-1
and distinct-2 (unique character n-grams / all n-grams over the samples) and the average
length. In the same run and at the same size, the same LM is trained with **prefix
conditioning** instead (the label as the first token, ``[NEG]`` / ``[POS]`` in place of
``[CLS]``), the usual alternative::

    python recipes/conditional_lm.py                      # defaults: ~27 min on 2 shared CPU cores (JAX)
    python recipes/conditional_lm.py --smoke              # seconds: tiny data and model
    KERAS_BACKEND=torch python recipes/conditional_lm.py  # same recipe on PyTorch
    python recipes/conditional_lm.py --config bert/bert_config.json \\
        --checkpoint bert/bert_model.ckpt --vocab bert/vocab.txt --lr 2e-5 --warmup 0

Sampling is the article's: bert4keras' ``AutoRegressiveDecoder.random_sample`` (top-k and/or
top-p), the label passed to the CLN model as an extra model input at every step, uncached.
Texts are cut into pieces of at most ``--maxlen - 2`` characters at punctuation first, as
the article does. The results JSON (metrics of both models, the judge's own accuracy,
samples, arguments, timings) is written atomically to ``--out`` after every stage.
"""
import os
import sys
import tempfile
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import classify  # noqa: E402  (recipes/classify.py: the judge)
import common  # noqa: E402  (recipes/common.py, next to this file)

LABELS = ("negative", "positive")  # ids 0 / 1, as the article (0: negative, 1: positive)
PREFIX_TOKENS = ("[NEG]", "[POS]")  # the prefix model's first token, one per label
VARIANTS = ("cln", "prefix")
SEPS, STRIPS = "\n。！？!?；;，, ", "；;，, "  # the article's text_segmentate arguments
SMOKE = dict(max_train=32, judge_max_train=32, max_dev=32, maxlen=16, layers=1, hidden_size=32, epochs=1,
             batch_size=32, cond_size=8, samples=4, gen_maxlen=8, judge_epochs=1, judge_maxlen=32,
             judge_hidden_size=32, judge_layers=1, warmup=0)


def parse_args(argv=None):
    p = common.new_parser(__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=common.data_path("sentiment", "chnsenticorp"),
                   help="folder with train.tsv and dev.tsv ('text<TAB>negative|positive')")
    p.add_argument("--variants", default="cln,prefix", help="comma-separated, from: " + ", ".join(VARIANTS))
    p.add_argument("--smoke", action="store_true", help="tiny data, model and sampling (the test suite's run)")
    g = p.add_argument_group("conditional LayerNorm")
    g.add_argument("--cond-size", type=int, default=64, help="label embedding size (the article: 128, "
                   "for BERT-base)")
    g.add_argument("--cond-hidden-size", type=int, default=None,
                   help="layer_norm_cond_hidden_size: a Dense layer between the condition and each "
                        "norm's projections (default: none, as the article)")
    g.add_argument("--cond-hidden-act", default="linear", help="layer_norm_cond_hidden_act")
    g = p.add_argument_group("sampling (AutoRegressiveDecoder.random_sample)")
    g.add_argument("--samples", type=int, default=200, help="samples per label and model")
    g.add_argument("--sample-batch", type=int, default=100, help="samples drawn per random_sample call")
    g.add_argument("--topk", type=int, default=0, help="sample among the k most probable ids (0: off)")
    g.add_argument("--topp", type=float, default=0.95, help="nucleus sampling threshold (1: off)")
    g.add_argument("--gen-maxlen", type=int, default=None, help="most new tokens (default --maxlen - 2)")
    g.add_argument("--examples", type=int, default=10,
                   help="samples per label kept in the JSON, evenly spaced over the draws (random_sample "
                        "returns the earliest finished, i.e. shortest, first); 0: all")
    g = p.add_argument_group("the judge (recipes/classify.py, trained on the same train split)")
    g.add_argument("--judge-max-train", type=int, default=0,
                   help="the judge's training reviews: the first N of train.tsv (0: all; independent of "
                        "--max-train, a better judge is cheap)")
    g.add_argument("--judge-epochs", type=int, default=2)
    g.add_argument("--judge-maxlen", type=int, default=128)
    g.add_argument("--judge-layers", type=int, default=2)
    g.add_argument("--judge-hidden-size", type=int, default=64)
    # defaults: the measured run of recipes/README.md (sized for 2 heavily shared CPU cores)
    common.add_common_args(p, out=os.path.join("results", "conditional_lm.json"), epochs=3, batch_size=32,
                           maxlen=32, layers=2, hidden_size=64, lr=2e-3, warmup=50, max_train=2000, max_dev=0,
                           decay_to=0.1)
    p.set_defaults(min_count=2)
    args = p.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():  # what the command line leaves at its default
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown or not args.variants:
        raise SystemExit(f"--variants: expected some of {', '.join(VARIANTS)}, got {unknown or 'none'}")
    common.check_args(args)  # may cap --maxlen to a pretrained model's positions
    if args.gen_maxlen is None:
        args.gen_maxlen = args.maxlen - 2
    for name in ("samples", "sample_batch", "cond_size", "gen_maxlen", "judge_epochs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if args.topk < 0 or not 0.0 < args.topp <= 1.0:
        raise SystemExit("--topk must be >= 0 and --topp in (0, 1]")
    return args


# ---------------------------------------------------------------------------- data

def load_pieces(path, maxlen, limit=0):
    """``[(piece, label id)]``: each review cut into pieces of at most ``maxlen - 2``
    characters at punctuation (the article's ``text_segmentate``), its label on each."""
    from kerasformer.snippets import text_segmentate

    label_ids = {name: i for i, name in enumerate(LABELS)}
    pieces = []
    for text, label in classify.load_examples(path, limit):
        if label not in label_ids:
            raise SystemExit(f"{path}: label {label[:40]!r} is not one of {', '.join(LABELS)}")
        pieces.extend((t, label_ids[label]) for t in text_segmentate(text, maxlen - 2, SEPS, STRIPS) if t)
    return pieces


class Encoded:
    """Token ids of the pieces; ``first`` replaces [CLS] (the prefix model's label token)."""

    def __init__(self, pieces, tokenizer, maxlen):
        self.ids = [tokenizer.encode(text, maxlen=maxlen)[0] for text, _ in pieces]
        self.labels = np.array([label for _, label in pieces], dtype="int32")
        self.lengths = [len(x) for x in self.ids]


def make_batch(data, index, args, variant, prefix_ids):
    """``(inputs, targets)``: targets are the next token ids, -1 at padding
    (common.masked_token_loss: the article's CrossEntropy layer, masked by padding). The CLN model
    reads ``[token_ids, segment_ids, label]``; the prefix model ``[token_ids, segment_ids]``
    with the label's token in place of [CLS]. Both predict the same tokens (the text and
    [SEP], never the first token)."""
    from kerasformer.snippets import sequence_padding

    length = common.bucket_length(max(data.lengths[i] for i in index), maxlen=args.maxlen)
    ids = sequence_padding([data.ids[i] for i in index], length=length).astype("int32")
    labels = data.labels[index]
    if variant == "prefix":
        ids[:, 0] = np.asarray(prefix_ids, dtype="int32")[labels]
    targets = np.full(ids.shape, -1, "int32")
    targets[:, :-1] = np.where(ids[:, 1:] > 0, ids[:, 1:], -1)
    inputs = [ids, np.zeros_like(ids)]
    if variant == "cln":
        inputs.append(labels.reshape(-1, 1))
    return tuple(inputs), targets


# ---------------------------------------------------------------------------- models

def build_lm(args, variant, vocab_size, keep_tokens=None, compound_tokens=None):
    """The article's model: ``c_in`` (the label) -> Embedding -> the condition of every
    LayerNorm of an ``application='lm'`` BERT. The prefix model is the same BERT LM without
    the condition. Returns the kerasformer ``Transformer`` (``.model`` is the Keras model)."""
    import keras

    kwargs = dict(application="lm", compound_tokens=compound_tokens)
    if variant == "cln":
        c_in = keras.layers.Input(shape=(1,), dtype="int32", name="Input-Label")
        c = keras.layers.Embedding(len(LABELS), args.cond_size, name="Embedding-Label")(c_in)
        c = keras.layers.Reshape((args.cond_size,))(c)
        kwargs.update(layer_norm_cond=c, layer_norm_cond_hidden_size=args.cond_hidden_size,
                      layer_norm_cond_hidden_act=args.cond_hidden_act, additional_input_layers=c_in)
    return common.build_encoder(args, vocab_size, keep_tokens, **kwargs)


def make_sampler(model, variant, start_id, end_id, prefix_ids, maxlen):
    """The article's ``RandomSentiment``: an ``AutoRegressiveDecoder`` whose ``predict`` re-runs
    the model on the whole output so far. CLN: starts from [CLS], the label is the model's
    third input. Prefix: the label's token leads the ids."""
    from kerasformer.generation.autoregressive import AutoRegressiveDecoder

    class RandomSentiment(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            if variant == "cln":
                token_ids = output_ids
                return self.last_token(model).predict([token_ids, np.zeros_like(token_ids), inputs[0]])
            token_ids = np.concatenate([inputs[0], output_ids], 1)
            return self.last_token(model).predict([token_ids, np.zeros_like(token_ids)])

        def generate(self, label, n, topk=None, topp=None):
            """``n`` id lists for the label, without the start and end ids."""
            first = [[label]] if variant == "cln" else [[prefix_ids[label]]]
            outputs = self.random_sample(first, n, topk=topk, topp=topp)
            skip = 0 if self.start_id is None else 1
            texts = []
            for ids in outputs:
                ids = list(ids[skip:])
                ids = ids[:ids.index(end_id)] if end_id in ids else ids
                # a label token sampled mid-text is not text (nor in a pretrained vocabulary)
                texts.append([i for i in ids if i not in prefix_ids])
            return texts

    return RandomSentiment(start_id=start_id if variant == "cln" else None, end_id=end_id, maxlen=maxlen)


# ---------------------------------------------------------------------------- metrics

def distinct(texts, n):
    """Unique character n-grams / all character n-grams over ``texts`` (0 when none)."""
    grams = [t[i:i + n] for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def spread(items, n):
    """``n`` items evenly spaced over ``items`` (all of them when ``n`` is 0 or too large)."""
    if not n or n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def judge_share(judge, texts, label, tokenizer, judge_args):
    """The share of ``texts`` the judge assigns to ``label`` (classify.accuracy with that
    label as every text's gold)."""
    if not texts:
        return 0.0
    data = classify.Encoded([(t, LABELS[label]) for t in texts], tokenizer, {n: i for i, n in enumerate(LABELS)},
                            judge_args.maxlen)
    return classify.accuracy(judge, data, judge_args, quiet=True)


def text_metrics(samples, judge, tokenizer, judge_args):
    """``samples``: {label: [text]} -> the judged shares and diversity of one model."""
    per_label = {LABELS[k]: judge_share(judge, texts, k, tokenizer, judge_args) for k, texts in samples.items()}
    texts = [t for ts in samples.values() for t in ts]
    counts = {LABELS[k]: len(ts) for k, ts in samples.items()}
    share = sum(per_label[n] * counts[n] for n in per_label) / max(sum(counts.values()), 1)
    return {"requested_sentiment_share": share, "requested_sentiment_share_per_label": per_label,
            "distinct_1": distinct(texts, 1), "distinct_2": distinct(texts, 2),
            "average_length": float(np.mean([len(t) for t in texts])) if texts else 0.0,
            "empty_share": float(np.mean([not t for t in texts])) if texts else 0.0, "samples": len(texts)}


# ---------------------------------------------------------------------------- stages

def train_judge(args, tokenizer, token_dict, work_dir):
    """The classification recipe's model, trained on the train split (its dev accuracy is
    measured on full dev reviews), then rebuilt from its saved weights as the judge."""
    import keras

    from kerasformer import saving

    judge_args = classify.parse_args([
        "--task", "chnsenticorp", "--data-dir", args.data_dir, "--epochs", str(args.judge_epochs),
        "--maxlen", str(args.judge_maxlen), "--layers", str(args.judge_layers),
        "--hidden-size", str(args.judge_hidden_size), "--batch-size", str(args.batch_size),
        "--max-train", str(args.judge_max_train), "--max-dev", str(args.max_dev), "--seed", str(args.seed),
        "--out", os.path.join(work_dir, "judge.json")] + (["--quiet"] if args.quiet else []))
    judge_args.save_weights = os.path.join(work_dir, "judge.weights.h5")
    label_ids = {n: i for i, n in enumerate(LABELS)}
    train = classify.load_examples(os.path.join(args.data_dir, "train.tsv"), args.judge_max_train)
    dev = classify.load_examples(os.path.join(args.data_dir, "dev.tsv"), args.max_dev)
    train_data = classify.Encoded(train, tokenizer, label_ids, judge_args.maxlen)
    dev_data = classify.Encoded(dev, tokenizer, label_ids, judge_args.maxlen)
    run = classify.train_and_evaluate(judge_args, token_dict, None, train_data, dev_data, len(LABELS), name="judge")
    keras.backend.clear_session()
    _, judge = classify.build_model(judge_args, len(token_dict), None, len(LABELS), "adam")
    with warnings.catch_warnings():  # the judge only predicts: its optimizer state is not wanted
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        saving.load_weights(judge, judge_args.save_weights)
    summary = {"dev_accuracy": run["dev_accuracy"], "history": run["history"], "parameters": run["parameters"],
               "model": run["model"], "timings_s": run["timings_s"], "pool": judge_args.pool,
               "epochs": judge_args.epochs, "maxlen": judge_args.maxlen, "train_reviews": len(train)}
    return judge, judge_args, summary


def train_lm(args, variant, train_data, token_dict, keep_tokens, compound_tokens, prefix_ids):
    common.set_seed(args.seed)  # both variants start from the same draws
    timer = common.Timer()
    rng = np.random.default_rng(args.seed)
    steps = len(common.length_batches(train_data.lengths, args.batch_size, shuffle=False))
    total = steps * args.epochs
    optimizer = common.make_optimizer(args.lr, common.lr_schedule(args.warmup, total, args.decay_to))
    with timer("build"):
        transformer = build_lm(args, variant, len(token_dict), keep_tokens, compound_tokens)
        model = transformer.model
        model.compile(optimizer=optimizer, loss=common.masked_token_loss)

    def batches():
        while True:
            for index in common.length_batches(train_data.lengths, args.batch_size, shuffle=True, rng=rng):
                yield make_batch(train_data, index, args, variant, prefix_ids)

    print(f"{variant}: {model.count_params():,} parameters, {total} steps")
    with timer("train"):
        history = model.fit(batches(), steps_per_epoch=steps, epochs=args.epochs, shuffle=False,
                            verbose=0 if args.quiet else 1)
    if args.save_weights:
        from kerasformer import saving

        root = args.save_weights.removesuffix(".weights.h5")
        saving.save_weights(model, f"{root}_{variant}.weights.h5")  # one file per variant, atomic
    losses = [float(v) for v in history.history["loss"]]
    print(f"{variant}: training loss per epoch " + ", ".join(f"{v:.3f}" for v in losses))
    return model, {"parameters": int(model.count_params()), "train_loss_per_epoch": losses,
                   "steps_per_epoch": steps, "total_steps": total, "model": common.model_summary(args, transformer),
                   "timings_s": timer.summary()}


def sample(args, model, variant, tokenizer, prefix_ids):
    """``{label: [text]}``: ``--samples`` texts per label, drawn ``--sample-batch`` at a time."""
    np.random.seed(args.seed)  # random_sample draws from NumPy's global generator
    sampler = make_sampler(model, variant, tokenizer._token_start_id, tokenizer._token_end_id, prefix_ids,
                           args.gen_maxlen)
    samples = {}
    chunks = [(k, min(args.sample_batch, args.samples - i)) for k in range(len(LABELS))
              for i in range(0, args.samples, args.sample_batch)]
    for label, n in common.progress(chunks, quiet=args.quiet, desc=f"sampling ({variant})", unit="call"):
        ids = sampler.generate(label, n, topk=args.topk or None, topp=args.topp if args.topp < 1 else None)
        samples.setdefault(label, []).extend("".join(tokenizer.decode(x).split()) for x in ids)
    return samples


# ---------------------------------------------------------------------------- main

def prefix_tokens(args, token_dict, keep_tokens):
    """The prefix model's label tokens: appended to a from-scratch vocabulary; with a
    pretrained one, new rows initialised as the mean of '负' / '正' (compound_tokens)."""
    if not args.vocab:
        for token in PREFIX_TOKENS:
            token_dict.setdefault(token, len(token_dict))
        return [token_dict[t] for t in PREFIX_TOKENS], None
    compound = [[token_dict.get(c, token_dict["[UNK]"])] for c in "负正"]  # ids of the simplified vocab
    ids = list(range(len(token_dict), len(token_dict) + len(PREFIX_TOKENS)))
    return ids, compound


def main(argv=None):
    args = parse_args(argv)
    import kerasformer  # noqa: F401  (picks JAX unless KERAS_BACKEND says otherwise)
    import keras

    timer = common.Timer()
    with timer("data"):
        train_path = common.require_file(os.path.join(args.data_dir, "train.tsv"), "training data")
        common.require_file(os.path.join(args.data_dir, "dev.tsv"), "dev data")
        pieces = load_pieces(train_path, args.maxlen, args.max_train)
        dev_pieces = load_pieces(os.path.join(args.data_dir, "dev.tsv"), args.maxlen, args.max_dev)
        tokenizer, token_dict, keep_tokens, vocab_path = common.make_tokenizer(
            args, [t for t, _ in pieces], args.out)
        prefix_ids, compound = prefix_tokens(args, token_dict, keep_tokens)
        train_data = Encoded(pieces, tokenizer, args.maxlen)
    print(f"ChnSentiCorp: {len(pieces)} training pieces of <= {args.maxlen - 2} characters "
          f"({np.mean(train_data.labels):.1%} positive), {len(token_dict)} tokens; backend {keras.backend.backend()}")
    results = {
        "task": "ChnSentiCorp, sentiment-conditioned review generation: conditional LayerNorm vs prefix",
        "metrics_note": "requested_sentiment_share: share of samples the judge (recipes/classify.py, trained "
                        "separately on the train split) assigns to the requested label (~0.5 if the label is "
                        "ignored); distinct-n: unique / all character n-grams over all samples of a model; "
                        "average_length in characters",
        "data": {"train_pieces": len(pieces), "positive_share": float(np.mean(train_data.labels)),
                 "data_dir": os.path.abspath(args.data_dir), "train_subset": bool(args.max_train)},
        "vocab": {"size": len(token_dict), "path": vocab_path, "pretrained": bool(args.vocab)},
        "metrics": {}, "runs": {}, "samples": {},
    }

    def save():
        results.update(timings_s=timer.summary(), environment=common.environment(), args=vars(args))
        common.write_json(args.out, results)

    with tempfile.TemporaryDirectory() as work_dir, timer("judge"):
        judge, judge_args, results["judge"] = train_judge(args, tokenizer, token_dict, work_dir)
        # the ceiling for generated pieces: the judge on real dev pieces of the same length
        real = {k: [t for t, label in dev_pieces if label == k] for k in range(len(LABELS))}
        results["judge"]["dev_pieces"] = text_metrics(real, judge, tokenizer, judge_args)
    print(f"judge: dev accuracy {results['judge']['dev_accuracy']:.4f} (reviews), "
          f"{results['judge']['dev_pieces']['requested_sentiment_share']:.4f} (pieces)")
    save()
    for variant in args.variants:
        with timer(f"train {variant}"):
            model, results["runs"][variant] = train_lm(args, variant, train_data, token_dict, keep_tokens, compound,
                                                      prefix_ids)
        with timer(f"sample {variant}"):
            samples = sample(args, model, variant, tokenizer, prefix_ids)
        metrics = text_metrics(samples, judge, tokenizer, judge_args)
        results["metrics"][variant] = metrics
        results["samples"][variant] = {LABELS[k]: spread(texts, args.examples) for k, texts in samples.items()}
        print(f"{variant}: requested sentiment {metrics['requested_sentiment_share']:.1%} "
              f"(negative {metrics['requested_sentiment_share_per_label']['negative']:.1%}, positive "
              f"{metrics['requested_sentiment_share_per_label']['positive']:.1%}), distinct-1 "
              f"{metrics['distinct_1']:.3f}, distinct-2 {metrics['distinct_2']:.3f}, "
              f"length {metrics['average_length']:.1f}")
        save()
    print(f"results -> {args.out}")
    return results


if __name__ == "__main__":
    main()
