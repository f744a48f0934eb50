"""Text classification on TNEWS (15 news categories) or ChnSentiCorp (review sentiment), after
bert4keras' task_sentiment_albert.py / task_iflytek_adversarial_training.py, with the
training tricks of its toolkit as switches:

* ``--ema``: an exponential moving average of the weights (``kerasformer.optimizers.
  extend_with_exponential_moving_average``); dev accuracy is measured with the averaged
  weights swapped in (``apply_ema_weights`` ... ``reset_old_weights``);
* ``--warmup N``: the learning rate rises linearly over the first N steps
  (``extend_with_piecewise_linear_lr``; ``--decay-to`` adds a linear decay);
* ``--fgm EPS``: adversarial training, FGM on the token embeddings
  (``kerasformer.training.adversarial_training(model, 'Embedding-Token', EPS)``);
* ``--ablation``: trains the baseline (none of the three) and each trick alone, with the
  same data, seed and budget, and writes all dev accuracies into one JSON.

The model is a BERT-style encoder, the mean of its token vectors (``--pool cls``: its [CLS]
pooler, the default with a pretrained model) and a softmax layer. By default it is trained
FROM SCRATCH (no pretrained Chinese weights exist on this machine) with a character
vocabulary built from the training texts; pass
``--config/--checkpoint/--vocab`` to fine-tune a pretrained BERT::

    python recipes/classify.py --task chnsenticorp            # defaults: ~6 min on 2 CPU cores (JAX)
    python recipes/classify.py --task tnews                   # ~6 min
    python recipes/classify.py --task tnews --ablation --max-train 20000 --epochs 2   # ~7 min
    python recipes/classify.py --task tnews --config bert/bert_config.json \\
        --checkpoint bert/bert_model.ckpt --vocab bert/vocab.txt --lr 2e-5 --warmup 0

Accuracy is measured on the dev set after every epoch; the headline number is the last
epoch's (no model selection on dev). The results JSON (metrics, per-epoch history,
arguments, data sizes, timings) is written atomically to ``--out``.
"""
import copy
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (recipes/common.py, next to this file)

TASKS = {
    # folder, files, defaults chosen for a ~5-10 minute run on 2 CPU cores (see the README)
    "tnews": dict(data_dir=("clue", "tnews"), maxlen=48, epochs=3, max_train=0, max_dev=0,
                  description="TNEWS short-news classification, 15 classes (CLUE)"),
    "chnsenticorp": dict(data_dir=("sentiment", "chnsenticorp"), maxlen=256, epochs=4, max_train=0, max_dev=0,
                         description="ChnSentiCorp review sentiment, positive / negative"),
}
VARIANTS = ("baseline", "+ema", "+warmup", "+fgm")
# Adam's rate without warm-up or decay. Pretrained weights take a smaller one: from
# chinese-small at 1e-3, TNEWS and ChnSentiCorp diverged within the first epoch (dev accuracy
# at chance: 10.9%, 49.4%) where 2e-4 trains (recipes/README.md); a BERT-base wants ~2e-5.
SCRATCH_LR, PRETRAINED_LR = 1e-3, 2e-4


def parse_args(argv=None):
    p = common.new_parser(__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=sorted(TASKS), default="tnews")
    p.add_argument("--data-dir", default=None, help="folder with train.tsv and dev.tsv ('text<TAB>label'); "
                   "default: the task's folder under ../shared/data")
    p.add_argument("--pool", choices=["cls", "mean"], default=None,
                   help="sentence vector: BERT's [CLS] pooler (bert4keras' examples; the default with a "
                        "pretrained --config) or the mean of the real tokens' vectors (the default from "
                        "scratch: a random [CLS] learns far more slowly)")
    p.add_argument("--ema", action="store_true", help="evaluate with an exponential moving average of the weights")
    p.add_argument("--ema-momentum", type=float, default=None,
                   help="EMA momentum (default: 1 - 10 / total steps, within [0.9, 0.999], so the average "
                        "spans about the last tenth of training)")
    p.add_argument("--fgm", type=float, default=0.0, metavar="EPS",
                   help="adversarial training (FGM) on the token embeddings with this epsilon; 0: off")
    p.add_argument("--ablation", action="store_true",
                   help="run baseline, +ema, +warmup and +fgm (each alone) and report all accuracies; "
                        "+warmup uses --warmup (or 10%% of the steps when it is 0), +fgm uses --fgm "
                        "(or 0.5 when it is 0)")
    # None: the task's default (TASKS); the learning rate's: SCRATCH_LR, or PRETRAINED_LR
    common.add_common_args(p, out=None, epochs=None, batch_size=32, maxlen=None, layers=2, hidden_size=128,
                           lr=None, warmup=0, max_train=None, max_dev=None)
    args = p.parse_args(argv)
    task = TASKS[args.task]
    for name in ("maxlen", "epochs", "max_train", "max_dev"):
        if getattr(args, name) is None:
            setattr(args, name, task[name])
    if args.data_dir is None:
        args.data_dir = common.data_path(*task["data_dir"])
    if args.pool is None:
        args.pool = "cls" if args.config else "mean"
    if args.out is None:
        args.out = os.path.join("results", f"classify_{args.task}{'_ablation' if args.ablation else ''}.json")
    common.check_args(args)
    if args.lr is None:
        args.lr = PRETRAINED_LR if args.checkpoint else SCRATCH_LR
    if args.ablation and (args.ema or args.fgm):
        raise SystemExit("--ablation chooses the tricks itself: drop --ema / --fgm (--warmup and --fgm "
                         "only set the values its variants use)")
    return args


# ---------------------------------------------------------------------------- data

def load_examples(path, limit=0):
    """``[(text, label)]`` from 'text<TAB>label' lines."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            text, sep, label = line.rpartition("\t")
            if not sep or not label:
                raise SystemExit(f"{path}:{number}: expected 'text<TAB>label', got {line[:80]!r}")
            examples.append((text, label))
            if limit and len(examples) == limit:
                break
    return examples


def label_names(data_dir, train):
    """labels.txt when the task has one (its order fixes the class ids), else the sorted labels."""
    path = os.path.join(data_dir, "labels.txt")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    return sorted({label for _, label in train})


class Encoded:
    def __init__(self, examples, tokenizer, label_ids, maxlen):
        self.ids = [tokenizer.encode(text, maxlen=maxlen)[0] for text, _ in examples]
        self.labels = np.array([label_ids[label] for _, label in examples], dtype="int32")
        self.lengths = [len(x) for x in self.ids]
        self.truncated = sum(len(text) > maxlen - 2 for text, _ in examples)  # about: chars, not tokens


def make_batch(data, index, maxlen):
    from kerasformer.snippets import sequence_padding

    length = common.bucket_length(max(data.lengths[i] for i in index), maxlen=maxlen)
    ids = sequence_padding([data.ids[i] for i in index], length=length).astype("int32")
    return (ids, np.zeros_like(ids)), data.labels[index]


def training_batches(data, args, seed):
    rng = np.random.default_rng(seed)
    steps = len(common.length_batches(data.lengths, args.batch_size, shuffle=False))

    def forever():
        while True:
            for index in common.length_batches(data.lengths, args.batch_size, shuffle=True, rng=rng):
                yield make_batch(data, index, args.maxlen)

    return forever(), steps


# ---------------------------------------------------------------------------- model

def build_model(args, vocab_size, keep_tokens, num_classes, optimizer):
    import keras
    from keras import ops

    if args.pool == "cls":  # BERT's pooler: tanh(Dense([CLS])), loaded too from a checkpoint
        transformer = common.build_encoder(args, vocab_size, keep_tokens, with_pool=True)
        encoder = transformer.model
        x = encoder.outputs[0]
    else:  # the mean of the real tokens' vectors
        transformer = common.build_encoder(args, vocab_size, keep_tokens)
        encoder = transformer.model
        real = ops.expand_dims(ops.cast(ops.not_equal(encoder.inputs[0], 0), encoder.outputs[0].dtype), -1)
        x = ops.sum(encoder.outputs[0] * real, axis=1) / ops.maximum(ops.sum(real, axis=1), 1.0)
    x = keras.layers.Dropout(common.dropout_or_default(args), name="Classifier-Dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=transformer.initializer,
                                 name="Classifier")(x)
    model = keras.Model(encoder.inputs, outputs, name=f"classify_{args.task}")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return transformer, model


def fgm_function():
    """kerasformer.training.adversarial_training, imported only when FGM is asked for."""
    try:
        from kerasformer.training import adversarial_training
    except ImportError as e:
        raise SystemExit(f"--fgm needs kerasformer.training.adversarial_training, which this installation "
                         f"lacks ({e}); run without --fgm") from None
    return adversarial_training


def enable_fgm(model, epsilon):
    fgm_function()(model, embedding_name="Embedding-Token", epsilon=epsilon)


# ---------------------------------------------------------------------------- evaluation

def accuracy(model, data, args, quiet=False, desc="dev"):
    from kerasformer.backend import predict

    order = np.argsort(data.lengths, kind="stable")
    size = 2 * args.batch_size
    correct = 0
    for start in common.progress(range(0, len(order), size), quiet=quiet, desc=f"evaluating {desc}",
                                 unit="batch", leave=False):
        index = order[start:start + size]
        inputs, labels = make_batch(data, index, args.maxlen)
        probs = predict(model, list(inputs))
        correct += int(np.sum(np.argmax(probs, axis=-1) == labels))
    return correct / max(len(order), 1)


# ---------------------------------------------------------------------------- one run

def train_and_evaluate(args, token_dict, keep_tokens, train_data, dev_data, num_classes, name=""):
    """Build a fresh model (same seed every time), train it, and return its results."""
    import keras

    keras.backend.clear_session()
    common.set_seed(args.seed)
    timer = common.Timer()
    batches, steps = training_batches(train_data, args, args.seed)
    total = steps * args.epochs
    schedule = common.lr_schedule(args.warmup, total, args.decay_to)
    ema = None
    if args.ema:
        ema = args.ema_momentum or float(min(0.999, max(0.9, 1.0 - 10.0 / total)))
    optimizer = common.make_optimizer(args.lr, schedule, ema_momentum=ema)
    with timer("build"):
        transformer, model = build_model(args, len(token_dict), keep_tokens, num_classes, optimizer)
        if args.fgm:
            enable_fgm(model, args.fgm)
    tricks = ", ".join(t for t in (f"ema {ema:.4f}" if ema else "", f"warmup {args.warmup}" if args.warmup else "",
                                   f"fgm {args.fgm}" if args.fgm else "") if t) or "no tricks"
    print(f"{name or 'run'}: {model.count_params():,} parameters, {total} steps, {tricks}")

    history = []

    class DevEvaluation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with timer("evaluate"):
                if ema:
                    optimizer.apply_ema_weights(self.model)
                acc = accuracy(self.model, dev_data, args, quiet=args.quiet)
                if ema:
                    optimizer.reset_old_weights()
            logs = logs or {}
            history.append({"epoch": epoch + 1, "loss": float(logs.get("loss", float("nan"))),
                            "train_accuracy": float(logs.get("accuracy", float("nan"))), "dev_accuracy": acc})
            print(f"{name + ' ' if name else ''}epoch {epoch + 1}: dev accuracy {acc:.4f}")

    with timer("train+evaluate"):
        model.fit(batches, steps_per_epoch=steps, epochs=args.epochs, callbacks=[DevEvaluation()], shuffle=False,
                  verbose=0 if args.quiet else 1)
    timings = timer.summary()
    timings["train"] = round(timings.pop("train+evaluate") - timings.get("evaluate", 0.0), 2)
    if args.save_weights:
        if ema:  # save what was evaluated
            optimizer.apply_ema_weights(model)
        from kerasformer import saving

        saving.save_weights(model, args.save_weights)  # atomic: a kill keeps the old file
    return {
        "dev_accuracy": history[-1]["dev_accuracy"],
        "best_epoch": max(history, key=lambda h: h["dev_accuracy"]),
        "history": history,
        "tricks": {"ema_momentum": ema, "warmup": args.warmup, "lr_schedule": schedule, "fgm_epsilon": args.fgm},
        "steps_per_epoch": steps, "total_steps": total,
        "parameters": int(model.count_params()),
        "model": common.model_summary(args, transformer),
        "timings_s": timings,
    }


# ---------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    import kerasformer  # noqa: F401  (picks JAX unless KERAS_BACKEND says otherwise)
    import keras

    timer = common.Timer()
    with timer("data"):
        train = load_examples(common.require_file(os.path.join(args.data_dir, "train.tsv"), "training data"),
                              args.max_train)
        dev = load_examples(common.require_file(os.path.join(args.data_dir, "dev.tsv"), "dev data"), args.max_dev)
        labels = label_names(args.data_dir, train)
        label_ids = {label: i for i, label in enumerate(labels)}
        unknown = {label for _, label in train + dev} - set(labels)
        if unknown:
            raise SystemExit(f"labels missing from the label list {labels}: {sorted(unknown)}")
        tokenizer, token_dict, keep_tokens, vocab_path = common.make_tokenizer(
            args, [text for text, _ in train], args.out)
        train_data = Encoded(train, tokenizer, label_ids, args.maxlen)
        dev_data = Encoded(dev, tokenizer, label_ids, args.maxlen)
    majority = max(np.mean(dev_data.labels == k) for k in range(len(labels))) if len(dev) else 0.0
    print(f"{TASKS[args.task]['description']}: {len(train)} training, {len(dev)} dev examples, {len(labels)} "
          f"classes, {len(token_dict)} tokens in the vocabulary; backend {keras.backend.backend()}")

    results = {
        "task": TASKS[args.task]["description"] + ", dev accuracy",
        "metrics_note": "accuracy on dev after the last epoch (no model selection on dev); with EMA the "
                        "averaged weights are evaluated",
        "data": {"train_examples": len(train), "dev_examples": len(dev), "classes": len(labels),
                 "train_subset": bool(args.max_train), "dev_subset": bool(args.max_dev),
                 "dev_majority_class_accuracy": float(majority),
                 "train_texts_longer_than_maxlen": train_data.truncated,
                 "dev_texts_longer_than_maxlen": dev_data.truncated,
                 "data_dir": os.path.abspath(args.data_dir)},
        "vocab": {"size": len(token_dict), "path": vocab_path, "pretrained": bool(args.vocab)},
    }
    if args.ablation:
        fgm_function()  # fail now, not after three trainings
        runs = {}
        for variant in VARIANTS:
            run_args = copy.copy(args)
            run_args.ema, run_args.warmup, run_args.fgm = False, 0, 0.0
            if variant == "+ema":
                run_args.ema = True
            elif variant == "+warmup":
                steps = len(common.length_batches(train_data.lengths, args.batch_size, shuffle=False))
                run_args.warmup = args.warmup or max(1, steps * args.epochs // 10)
            elif variant == "+fgm":
                run_args.fgm = args.fgm or 0.5
            run_args.save_weights = None
            runs[variant] = train_and_evaluate(run_args, token_dict, keep_tokens, train_data, dev_data,
                                               len(labels), name=variant)
            results["ablation"] = runs  # written after every variant: a long run can be watched
            results["metrics"] = {f"dev_accuracy{'' if v == 'baseline' else ' ' + v}": r["dev_accuracy"]
                                  for v, r in runs.items()}
            results.update(timings_s=timer.summary(), environment=common.environment(), args=vars(args))
            common.write_json(args.out, results)
        print("ablation, dev accuracy: " + ", ".join(f"{v} {r['dev_accuracy']:.4f}" for v, r in runs.items()))
    else:
        run = train_and_evaluate(args, token_dict, keep_tokens, train_data, dev_data, len(labels))
        results["metrics"] = {"dev_accuracy": run["dev_accuracy"]}
        results.update(run)
        results.update(timings_s={**timer.summary(), **{k: v for k, v in run["timings_s"].items() if k != "total"}},
                       environment=common.environment(), args=vars(args))
        common.write_json(args.out, results)
        print(f"dev ({len(dev)} examples): accuracy {run['dev_accuracy']:.4f}; train "
              f"{run['timings_s']['train']:.0f}s -> {args.out}")
    return results


if __name__ == "__main__":
    main()
