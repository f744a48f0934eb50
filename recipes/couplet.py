"""The couplet robot as sequence labelling, after Su Jianlin's "玩转Keras之seq2seq自动生成对联".

The article's observation: a couplet's second line has exactly as many characters as the
first and answers it position by position, so pairing is sequence labelling, not seq2seq.
The model: character embeddings -> a stack of residual gated 1-D convolutions (the
article's ``gated_resnet``: ``[h, g] = Conv1D(2d)(x)``, ``x * (1 - sigmoid(g)) + h * sigmoid(g)``)
-> a softmax per position predicting the second line's character there. Decoding is
greedy per position, or constrained (``kerasformer.couplet.Decoder``): no position copies
the first line's character, punctuation is copied, and repeated characters mirror the
first line's pattern (ABAB -> CDCD).

In the same run, a UniLM seq2seq model of similar size (``build_transformer_model(...,
application='unilm')`` from scratch, or from ``--config/--checkpoint/--vocab``) is
trained on the same pairs with the same budget and decoded with the cached engine
(``kerasformer.generate``, greedy and beam search): quality and speed side by side::

    python recipes/couplet.py                        # defaults: ~16 min (7 min of training per model)
    python recipes/couplet.py --smoke                  # seconds: tiny models, 200 pairs
    python recipes/couplet.py --no-unilm --save-model results/couplet_model
    kerasformer couplet "春回大地千山秀" --model results/couplet_model

Scores (per evaluation set: dev.tsv, the last ``--holdout`` training pairs held out, each
``--test`` file): character-level BLEU (NLTK's sentence BLEU with method1 smoothing,
averaged, x100: recipes/unilm_csl.py's), per-character accuracy against the reference,
the share of outputs whose punctuation and repeated-character pattern match the first
line's, the share that copy a first-line character at the same position, and decoding
speed in lines per second (after one warm-up batch, so compilation is not counted).
The results JSON is written atomically to ``--out`` after each model, the vocabulary
next to it.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (recipes/common.py, next to this file)
import unilm_csl  # noqa: E402  (the UniLM model, its loss and the BLEU formula)


SMOKE = dict(max_train=200, holdout=8, max_dev=16, epochs=2, layers=1, hidden_size=32, cnn_layers=2, cnn_hidden=32,
             maxlen=32, batch_size=16, beam=2, decode_batch=8, train_seconds=0, quiet=True)


def parse_args(argv=None):
    p = common.new_parser(__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=common.data_path("couplet"), help="folder with train.tsv and dev.tsv "
                   "('first line<TAB>second line')")
    p.add_argument("--test", action="append", default=[], help="another evaluation file in the same format "
                   "(repeatable)")
    p.add_argument("--holdout", type=int, default=1000, help="hold the last N training pairs out as a test set "
                   "(dev.tsv has only 41); 0: none")
    g = p.add_argument_group("the CNN (sequence labelling)")
    g.add_argument("--cnn-layers", type=int, default=6, help="residual gated convolution blocks")
    g.add_argument("--cnn-hidden", type=int, default=128, help="embedding and convolution width")
    g.add_argument("--kernel-size", type=int, default=3)
    g.add_argument("--cnn-dropout", type=float, default=0.1, help="dropout after the embedding")
    g.add_argument("--cnn-lr", type=float, default=None, help="the CNN's (peak) learning rate (default --lr); a "
                   "UniLM fine-tuned from --pretrained wants a smaller --lr than a CNN trained from scratch")
    g = p.add_argument_group("the UniLM peer (--layers/--hidden-size/--heads/--config... below are its)")
    g.add_argument("--no-unilm", action="store_true", help="train and score only the CNN")
    g.add_argument("--beam", type=int, default=3, help="UniLM beam width (0: greedy only)")
    g.add_argument("--decode-batch", type=int, default=64, help="lines per decoding batch (both models)")
    g.add_argument("--train-seconds", type=float, default=420,
                   help="stop each model's training after this many seconds (the same wall-clock budget for "
                        "both; --epochs stays the upper bound); 0: no limit")
    g.add_argument("--save-model", help="save the CNN as a model folder here (kerasformer couplet --model DIR)")
    g.add_argument("--examples", type=int, default=10, help="example pairings kept in the JSON")
    g.add_argument("--smoke", action="store_true", help="a few steps on a few examples, tiny models (the test "
                   "suite's run): sets the sizes in SMOKE, whatever else is given")
    common.add_common_args(p, out=os.path.join("results", "couplet.json"), epochs=3, batch_size=64, maxlen=64,
                           layers=4, hidden_size=128, lr=2e-3, warmup=10, max_train=0, max_dev=0)
    p.set_defaults(min_count=2)
    args = p.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    common.check_args(args)
    for name in ("cnn_layers", "cnn_hidden", "kernel_size", "decode_batch"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if args.holdout < 0 or args.beam < 0:
        raise SystemExit("--holdout and --beam must be at least 0")
    return args


# ---------------------------------------------------------------------------- data

def load_pairs(path, limit=0):
    """``[(first, second)]`` from 'first<TAB>second' lines of equal length; blank lines are
    skipped, anything else is a clear error."""
    from kerasformer.couplet import check_line

    pairs = []
    with open(common.require_file(path, "couplet data"), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            fields = line.split("\t")
            try:
                first, second = (check_line(s.strip()) for s in fields) if len(fields) == 2 else (None, None)
            except ValueError:
                first = None
            if first is None or len(first) != len(second):
                raise SystemExit(f"{path}:{number}: expected 'first<TAB>second', two lines of equal length "
                                 f"without spaces, got {line[:80]!r}")
            pairs.append((first, second))
            if limit and len(pairs) == limit:
                break
    return pairs


def cnn_batches(pairs, token_dict, args, rng):
    """Forever: (ids, targets) batches of similar length; targets are -1 on padding."""
    from kerasformer.couplet import encode

    firsts = [encode(a, token_dict) for a, _ in pairs]
    seconds = [encode(b, token_dict) for _, b in pairs]
    lengths = [len(x) for x in firsts]
    while True:
        for index in common.length_batches(lengths, args.batch_size, shuffle=True, rng=rng):
            length = common.bucket_length(max(lengths[i] for i in index), multiple=16)
            ids = np.zeros((len(index), length), "int32")
            targets = np.full((len(index), length), -1, "int32")
            for row, i in enumerate(index):
                ids[row, :lengths[i]] = firsts[i]
                targets[row, :lengths[i]] = seconds[i]
            yield ids, targets


# ---------------------------------------------------------------------------- models

def build_cnn(args, vocab_size):
    """The article's model; only standard layers and keras.ops, so the saved .keras file
    loads without custom objects."""
    import keras
    from keras import ops

    ids = keras.Input((None,), dtype="int32", name="Input-Token")
    # padding is zeroed after every block, so a line's output does not depend on its batch
    mask = ops.expand_dims(ops.cast(ops.not_equal(ids, 0), "float32"), -1)
    x = keras.layers.Embedding(vocab_size, args.cnn_hidden, name="Embedding-Token")(ids)
    x = keras.layers.Dropout(args.cnn_dropout, name="Embedding-Dropout")(x) * mask
    for i in range(args.cnn_layers):
        h, g = ops.split(keras.layers.Conv1D(2 * args.cnn_hidden, args.kernel_size, padding="same",
                                             name=f"Gated-Conv-{i}")(x), 2, axis=-1)
        gate = ops.sigmoid(g)
        x = (x * (1.0 - gate) + h * gate) * mask
    probs = keras.layers.Dense(vocab_size, activation="softmax", name="Output")(x)
    return keras.Model(ids, probs, name="couplet_cnn")


def train_model(model, batches, steps, args, name, lr, loss=unilm_csl.title_loss):
    """Fit for ``--epochs`` (or until ``--train-seconds`` have passed) at peak rate ``lr``;
    returns the loss per epoch, the seconds and the steps trained."""
    import keras

    schedule = common.lr_schedule(args.warmup, steps * args.epochs, args.decay_to)
    model.compile(optimizer=common.make_optimizer(lr, schedule), loss=loss)
    print(f"{name}: {model.count_params():,} parameters, {steps} steps x {args.epochs} epochs"
          + (f", at most {args.train_seconds:.0f} s" if args.train_seconds else ""))
    done = {"steps": 0}

    class Budget(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            done["steps"] += 1
            if args.train_seconds and time.time() - t0 > args.train_seconds:
                self.model.stop_training = True

    t0 = time.time()
    history = model.fit(batches, steps_per_epoch=steps, epochs=args.epochs, shuffle=False, callbacks=[Budget()],
                        verbose=0 if args.quiet else 1)
    return [float(v) for v in history.history["loss"]], time.time() - t0, done["steps"]


def decode_unilm(model, tokenizer, lines, strategy, args, max_new_tokens):
    """The UniLM's second lines: ``[CLS] first [SEP]`` -> ``second [SEP]``. Batches of
    similar prompt length, all of ``--decode-batch`` rows (the last one filled up with
    copies of its last prompt) and one ``max_new_tokens`` (decoding stops when every row has ended), so the
    engine compiles one program per prompt-length bucket."""
    from kerasformer import generate

    prompts = [tokenizer.encode(line)[0] for line in lines]
    order = sorted(range(len(lines)), key=lambda i: len(prompts[i]))
    rows = args.decode_batch
    outputs = [None] * len(lines)
    for start in range(0, len(order), rows):
        chunk = order[start:start + rows]
        batch = [prompts[i] for i in chunk] + [prompts[chunk[-1]]] * (rows - len(chunk))
        new = generate(model, batch, max_new_tokens=max_new_tokens, strategy=strategy, num_beams=args.beam,
                       end_id=tokenizer._token_end_id)
        for i, ids in zip(chunk, new):
            outputs[i] = unilm_csl.clean(tokenizer.decode(list(ids)))
    return outputs


# ---------------------------------------------------------------------------- scores

def score(pairs, predictions):
    """The report's figures for one decoder on one evaluation set."""
    from kerasformer.couplet import is_punctuation, pattern

    n = max(len(pairs), 1)
    bleu = sum(unilm_csl.sentence_bleu(list(ref), list(pred)) if pred else 0.0
               for (_, ref), pred in zip(pairs, predictions))
    correct = sum(a == b for (_, ref), pred in zip(pairs, predictions) for a, b in zip(ref, pred))
    copies = sum(any(a == b and not is_punctuation(a) for a, b in zip(first, pred))
                 for (first, _), pred in zip(pairs, predictions))
    return {
        "bleu": 100.0 * bleu / n,
        "char_accuracy": correct / max(sum(len(ref) for _, ref in pairs), 1),
        "pattern_match": sum(pattern(pred) == pattern(first) for (first, _), pred in zip(pairs, predictions)) / n,
        "length_match": sum(len(pred) == len(first) for (first, _), pred in zip(pairs, predictions)) / n,
        "copies_first_line": copies / n,
        "exact_match": sum(pred == ref for (_, ref), pred in zip(pairs, predictions)) / n,
    }


def evaluate(decode, eval_sets, args):
    """``{set: metrics + lines_per_second}`` for ``decode(lines) -> outputs``. First, untimed,
    one full batch per padded length (multiples of 8) that the sets hold, so that
    compilation is not counted as decoding time."""
    lines = {-(-len(a) // 8): a for pairs in eval_sets.values() for a, _ in pairs}
    for line in lines.values():
        decode([line] * args.decode_batch)
    results, predictions = {}, {}
    for name, pairs in eval_sets.items():
        t0 = time.time()
        outputs = decode([a for a, _ in pairs])
        seconds = time.time() - t0
        results[name] = {**score(pairs, outputs), "lines": len(pairs), "decode_seconds": seconds,
                         "lines_per_second": len(pairs) / max(seconds, 1e-9)}
        predictions[name] = outputs
    return results, predictions


def print_table(results):
    for set_name in next(iter(results.values())):
        print(f"\n{set_name}:  {'decoder':28s} {'BLEU':>6s} {'char acc':>8s} {'pattern':>7s} {'copies':>6s} "
              f"{'lines/s':>8s}")
        for decoder, sets in results.items():
            m = sets[set_name]
            print(f"{'':{len(set_name) + 3}s}{decoder:28s} {m['bleu']:6.2f} {m['char_accuracy']:8.4f} "
                  f"{m['pattern_match']:7.3f} {m['copies_first_line']:6.3f} {m['lines_per_second']:8.1f}")


# ---------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    import kerasformer  # noqa: F401  (picks JAX unless KERAS_BACKEND says otherwise)
    import keras

    from kerasformer import couplet

    timer = common.Timer()
    with timer("data"):
        train = load_pairs(os.path.join(args.data_dir, "train.tsv"), args.max_train)
        eval_sets = {"dev": load_pairs(os.path.join(args.data_dir, "dev.tsv"), args.max_dev)}
        if args.holdout:
            if args.holdout >= len(train):
                raise SystemExit(f"--holdout {args.holdout} leaves no training pairs (there are {len(train)})")
            train, eval_sets["holdout"] = train[:-args.holdout], train[-args.holdout:]
        for path in args.test:
            name = os.path.splitext(os.path.basename(path))[0]
            eval_sets[name if name not in eval_sets else path] = load_pairs(path)
        tokenizer, token_dict, keep_tokens, vocab_path = common.make_tokenizer(
            args, [a + b for a, b in train], args.out)
    print(f"couplets: {len(train)} training pairs, evaluation on "
          + ", ".join(f"{k} ({len(v)})" for k, v in eval_sets.items())
          + f"; {len(token_dict)} tokens; backend {keras.backend.backend()}")

    results = {
        "task": "couplet pairing (first line -> second line): CNN sequence labelling vs UniLM seq2seq",
        "metrics_note": "bleu: character-level sentence BLEU (NLTK method1 smoothing) averaged, x100; "
                        "char_accuracy: position-wise matches / reference characters; pattern_match: share of "
                        "outputs whose punctuation and repeated-character pattern equal the first line's; "
                        "copies_first_line: share of outputs repeating a first-line character at the same "
                        "position; lines_per_second: after one warm-up batch",
        "data": {"train_pairs": len(train), "eval_pairs": {k: len(v) for k, v in eval_sets.items()},
                 "data_dir": os.path.abspath(args.data_dir), "tests": args.test},
        "vocab": {"size": len(token_dict), "path": vocab_path, "pretrained": bool(args.vocab)},
        "reference": {k: score(v, [b for _, b in v]) for k, v in eval_sets.items()},
        "models": {}, "results": {},
        "examples": [{"first": a, "reference": b} for a, b in eval_sets["dev"][:args.examples]],
    }
    cnn_settings = {k: getattr(args, k) for k in ("cnn_layers", "cnn_hidden", "kernel_size", "cnn_dropout")}
    cnn_settings["cnn_lr"] = args.cnn_lr or args.lr

    def record(name, model, trained, settings, decoders):
        losses, seconds, steps = trained
        results["models"][name] = {"parameters": int(model.count_params()), "train_seconds": seconds,
                                   "train_steps": steps, "train_pairs_seen": min(steps * args.batch_size,
                                                                                 args.epochs * len(train)),
                                   "train_loss_per_epoch": losses, **settings}
        for decoder, decode in decoders.items():
            with timer(f"decode {decoder}"):
                results["results"][decoder], predictions = evaluate(decode, eval_sets, args)
            for example, output in zip(results["examples"], predictions["dev"]):
                example[decoder] = output
        results.update(timings_s=timer.summary(), environment=common.environment(), args=vars(args))
        common.write_json(args.out, results)  # after each model: a long run can be watched

    # the CNN: sequence labelling
    common.set_seed(args.seed)
    cnn = build_cnn(args, len(token_dict))
    steps = len(common.length_batches([0] * len(train), args.batch_size, shuffle=False))
    with timer("train cnn"):
        trained = train_model(cnn, cnn_batches(train, token_dict, args, np.random.default_rng(args.seed)), steps,
                              args, "CNN", cnn_settings["cnn_lr"])
    decoder = couplet.Decoder(token_dict)
    record("cnn", cnn, trained, cnn_settings, {
        "cnn greedy": lambda lines: couplet.pair(cnn, token_dict, lines, False, args.decode_batch, decoder),
        "cnn constrained": lambda lines: couplet.pair(cnn, token_dict, lines, True, args.decode_batch, decoder)})
    if args.save_model:
        couplet.save(args.save_model, cnn, token_dict, {"kind": "cnn sequence labelling", **cnn_settings,
                                                         "trained_pairs": len(train)})
        print(f"CNN model folder -> {args.save_model}")

    # the peer: UniLM seq2seq, same pairs, same epochs and schedule
    if not args.no_unilm:
        common.set_seed(args.seed)
        transformer = unilm_csl.build(args, len(token_dict), keep_tokens)
        unilm = transformer.model  # decodes; trains through the gathered head (the same layers)
        batches = unilm_csl.make_batches(train, tokenizer, args)
        with timer("train unilm"):
            trained = train_model(unilm_csl.training_model(transformer, batches.slots), batches.forfit(),
                                  len(batches), args, "UniLM", args.lr, unilm_csl.gathered_title_loss)
        if args.save_weights:
            from kerasformer import saving

            saving.save_weights(unilm, args.save_weights)
        longest = max(len(a) for pairs in eval_sets.values() for a, _ in pairs) + 1  # + [SEP]
        decoders = {"unilm greedy": lambda lines: decode_unilm(unilm, tokenizer, lines, "greedy", args, longest)}
        if args.beam:
            decoders[f"unilm beam {args.beam}"] = lambda lines: decode_unilm(unilm, tokenizer, lines, "beam", args,
                                                                             longest)
        record("unilm", unilm, trained, {"summary": common.model_summary(args, argparse.Namespace(
            num_hidden_layers=args.layers, hidden_size=args.hidden_size,
            num_attention_heads=args.heads or max(2, args.hidden_size // 64),
            intermediate_size=4 * args.hidden_size))}, decoders)

    results["metrics"] = {f"{name}: {decoder}": {k: m[k] for k in ("bleu", "char_accuracy", "pattern_match",
                                                                      "lines_per_second")}
                          for decoder, sets in results["results"].items() for name, m in sets.items()}
    common.write_json(args.out, results)
    print_table(results["results"])
    print(f"\nresults -> {os.path.abspath(args.out)} ({timer.summary()['total']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
