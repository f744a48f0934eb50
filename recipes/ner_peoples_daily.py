"""Named-entity recognition on People's Daily 1998 (person / place / organisation), after
bert4keras' task_sequence_labeling_ner_crf.py and task_sequence_labeling_ner_global_pointer.py.

A BERT-style encoder reads ``[CLS] c1 c2 ... cn [SEP]`` (one token per character) and one of
two heads finds the entities:

* ``--head crf``: a Dense layer gives per-character scores over the B_/M_/E_ x nr/ns/nt + O
  tags, a ``ConditionalRandomField`` learns the tag transitions, and the best path is
  found with ``ViterbiDecoder`` (paths must start and end on 'O', i.e. [CLS] and [SEP]);
* ``--head globalpointer``: a ``GlobalPointer`` scores every (start, end) span per entity
  type, trained with ``global_pointer_crossentropy``; spans scoring > 0 are entities.

Scores are entity-level precision / recall / F1 on the dev set (an entity counts only if
its type, start and end are all right), overall and per type, after every epoch. The
headline numbers are those of the LAST epoch (no model selection on dev).

By default the encoder is trained FROM SCRATCH (no pretrained Chinese weights exist on this
machine) with a character vocabulary built from the training data; pass
``--config/--checkpoint/--vocab`` to fine-tune a pretrained BERT instead::

    python recipes/ner_peoples_daily.py --head crf             # defaults: ~7-8 min on 2 CPU cores (JAX)
    python recipes/ner_peoples_daily.py --head globalpointer
    python recipes/ner_peoples_daily.py --max-train 64 --max-dev 32 --epochs 1 --layers 1 \\
        --hidden-size 32 --out /tmp/ner.json                    # a smoke run
    python recipes/ner_peoples_daily.py --config chinese_L-12_H-768_A-12/bert_config.json \\
        --checkpoint chinese_L-12_H-768_A-12/bert_model.ckpt \\
        --vocab chinese_L-12_H-768_A-12/vocab.txt --lr 2e-5 --warmup 0 --epochs 3

The results JSON (metrics, per-epoch history, arguments, data sizes, timings) is written
atomically to ``--out``, the vocabulary next to it.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (recipes/common.py, next to this file)

TYPE_NAMES = {"nr": "person", "ns": "place", "nt": "organisation"}


def parse_args(argv=None):
    p = common.new_parser(__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=common.data_path("ner_peoples_daily"),
                   help="folder with train.txt and dev.txt ('char TAG' lines, blank line between sentences)")
    p.add_argument("--head", choices=["crf", "globalpointer"], default="crf")
    p.add_argument("--crf-lr-multiplier", type=float, default=None,
                   help="learning-rate multiplier of the CRF transitions (default: 0.01 / --lr, so the "
                        "transitions move at a rate of about 0.01 whatever --lr; bert4keras used 1000 "
                        "with lr 2e-5)")
    p.add_argument("--gp-head-size", type=int, default=64, help="GlobalPointer head size")
    common.add_common_args(p, out=None, epochs=8, batch_size=32, maxlen=64, layers=2, hidden_size=128,
                           lr=1e-3, warmup=300, decay_to=0.1, max_train=0, max_dev=0)
    args = p.parse_args(argv)
    if args.out is None:
        args.out = os.path.join("results", f"ner_peoples_daily_{args.head}.json")
    common.check_args(args)
    return args


# ---------------------------------------------------------------------------- data

def load_sentences(path, limit=0):
    """``[(chars, tags)]`` from 'char TAG' lines with a blank line between sentences."""
    sentences, chars, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                if chars:
                    sentences.append((chars, tags))
                    chars, tags = [], []
                    if limit and len(sentences) == limit:
                        return sentences
                continue
            if len(fields) != 2:
                raise SystemExit(f"{path}:{number}: expected 'char TAG', got {line!r}")
            chars.append(fields[0])
            tags.append(fields[1])
    if chars and not (limit and len(sentences) >= limit):
        sentences.append((chars, tags))
    return sentences


def tags_to_entities(tags):
    """``{(type, start, end)}`` (end inclusive) from B_x M_x* E_x runs; anything malformed
    (a run broken by another tag or type) yields no entity."""
    entities, start, kind = set(), None, None
    for i, tag in enumerate(tags):
        prefix, _, tag_type = tag.partition("_")
        if prefix == "B":
            start, kind = i, tag_type
        elif prefix == "M" and start is not None and tag_type == kind:
            continue
        elif prefix == "E" and start is not None and tag_type == kind:
            entities.add((kind, start, i))
            start = None
        else:
            start = None
    return entities


def entity_types(sentences):
    return sorted({t.partition("_")[2] for _, tags in sentences for t in tags if t != "O"})


def encode_chars(chars, token_dict, maxlen):
    """One token per character ([CLS] chars [SEP]), cut to ``maxlen``; characters the vocabulary
    lacks become [UNK]. One token per character keeps tags aligned with no offset mapping."""
    unk = token_dict["[UNK]"]
    ids = [token_dict["[CLS]"]]
    for c in chars[:maxlen - 2]:
        ids.append(token_dict.get(c, token_dict.get(common.normalize(c), unk)))
    ids.append(token_dict["[SEP]"])
    return ids


class Encoded:
    """The examples as token ids plus the labels each head trains on."""

    def __init__(self, sentences, token_dict, tag_ids, types, maxlen):
        self.ids = [encode_chars(chars, token_dict, maxlen) for chars, _ in sentences]
        kept = maxlen - 2
        # CRF: one tag per token; [CLS] and [SEP] are 'O' (id 0), as in bert4keras
        self.tags = [[0] + [tag_ids[t] for t in tags[:kept]] + [0] for _, tags in sentences]
        # GlobalPointer: entity spans in token positions (+1 for [CLS]) that survive the cut
        type_ids = {t: i for i, t in enumerate(types)}
        self.spans = [[(type_ids[k], s + 1, e + 1) for k, s, e in tags_to_entities(tags) if e < kept]
                      for _, tags in sentences]
        self.gold = [tags_to_entities(tags) for _, tags in sentences]  # full sentences, uncut
        self.truncated = sum(len(chars) > kept for chars, _ in sentences)
        self.lengths = [len(x) for x in self.ids]


def make_batch(data, index, head, num_types, maxlen):
    from kerasformer.snippets import sequence_padding

    length = common.bucket_length(max(data.lengths[i] for i in index), maxlen=maxlen)
    ids = sequence_padding([data.ids[i] for i in index], length=length)
    inputs = (ids.astype("int32"), np.zeros_like(ids, dtype="int32"))
    if head == "crf":
        return inputs, sequence_padding([data.tags[i] for i in index], length=length).astype("int32")
    labels = np.zeros((len(index), num_types, length, length), dtype="float32")
    for row, i in enumerate(index):
        for k, s, e in data.spans[i]:
            labels[row, k, s, e] = 1.0
    return inputs, labels


def training_batches(data, args, num_types, seed):
    """Endless shuffled, length-bucketed batches for ``model.fit``; ``steps`` per epoch."""
    rng = np.random.default_rng(seed)
    steps = len(common.length_batches(data.lengths, args.batch_size, shuffle=False))

    def forever():
        while True:
            for index in common.length_batches(data.lengths, args.batch_size, shuffle=True, rng=rng):
                yield make_batch(data, index, args.head, num_types, args.maxlen)

    return forever(), steps


# ---------------------------------------------------------------------------- model

def build_model(args, vocab_size, keep_tokens, num_tags, num_types, optimizer):
    import keras
    from keras import ops

    from kerasformer.layers.crf import ConditionalRandomField
    from kerasformer.layers.global_pointer import GlobalPointer
    from kerasformer.losses import global_pointer_crossentropy, global_pointer_f1_score

    transformer = common.build_encoder(args, vocab_size, keep_tokens)
    encoder = transformer.model
    token_ids = encoder.inputs[0]
    padding = ops.not_equal(token_ids, 0)  # [batch, length], true on real tokens
    x = encoder.outputs[0]
    if args.head == "crf":
        multiplier = args.crf_lr_multiplier or max(1.0, 0.01 / args.lr)
        crf = ConditionalRandomField(lr_multiplier=multiplier, name="CRF")
        scores = keras.layers.Dense(num_tags, kernel_initializer=transformer.initializer, name="NER-Dense")(x)
        outputs = crf(scores, mask=padding)
        model = keras.Model(encoder.inputs, outputs, name="ner_crf")
        model.compile(optimizer=optimizer, loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
        model.crf_layer = crf
    else:
        gp = GlobalPointer(heads=num_types, head_size=args.gp_head_size, name="GlobalPointer")
        outputs = gp(x, mask=padding)
        model = keras.Model(encoder.inputs, outputs, name="ner_globalpointer")
        model.compile(optimizer=optimizer, loss=global_pointer_crossentropy,
                      metrics=[global_pointer_f1_score])
    return transformer, model


# ---------------------------------------------------------------------------- evaluation

def predict_entities(model, data, args, types, tag_names, quiet=False, desc="dev"):
    """Entities ``{(type, start, end)}`` (character positions) of every example."""
    from kerasformer.backend import predict, to_numpy
    from kerasformer.snippets import ViterbiDecoder

    order = np.argsort(data.lengths, kind="stable")  # similar lengths together: little padding
    batches = [order[i:i + 2 * args.batch_size] for i in range(0, len(order), 2 * args.batch_size)]
    if args.head == "crf":
        o = tag_names.index("O")
        ends = starts = [o]  # [CLS] and [SEP] are tagged O in training
        decoder = ViterbiDecoder(to_numpy(model.crf_layer.trans), starts=starts, ends=ends)
    results = [None] * len(data.ids)
    for index in common.progress(batches, quiet=quiet, desc=f"evaluating {desc}", unit="batch", leave=False):
        inputs, _ = make_batch(data, index, "crf", len(types), args.maxlen)  # labels unused
        scores = predict(model, list(inputs))
        for row, i in enumerate(index):
            n = data.lengths[i]  # tokens incl. [CLS] and [SEP]
            if args.head == "crf":
                path = decoder.decode(scores[row, :n])
                results[i] = tags_to_entities([tag_names[t] for t in path[1:n - 1]])
            else:
                span_scores = scores[row, :, 1:n - 1, 1:n - 1]  # real characters only
                results[i] = {(types[k], int(s), int(e)) for k, s, e in np.argwhere(span_scores > 0)}
    return results


def entity_scores(gold, predicted, types):
    """Micro precision / recall / F1 over all entities, and per type."""

    def prf(tp, n_pred, n_gold):
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_gold if n_gold else 0.0
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                "predicted": n_pred, "gold": n_gold, "correct": tp}

    totals = {t: [0, 0, 0] for t in types}
    for g, p in zip(gold, predicted):
        for t in types:
            gt = {e for e in g if e[0] == t}
            pt = {e for e in p if e[0] == t}
            totals[t][0] += len(gt & pt)
            totals[t][1] += len(pt)
            totals[t][2] += len(gt)
    overall = prf(*(sum(v[i] for v in totals.values()) for i in range(3)))
    overall["per_type"] = {f"{t} ({TYPE_NAMES.get(t, t)})": prf(*v) for t, v in totals.items()}
    return overall


# ---------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    import kerasformer  # noqa: F401  (picks JAX unless KERAS_BACKEND says otherwise)
    import keras

    common.set_seed(args.seed)
    timer = common.Timer()
    with timer("data"):
        train_file = common.require_file(os.path.join(args.data_dir, "train.txt"), "training data")
        dev_file = common.require_file(os.path.join(args.data_dir, "dev.txt"), "dev data")
        train = load_sentences(train_file, args.max_train)
        dev = load_sentences(dev_file, args.max_dev)
        types = entity_types(train)
        tag_names = ["O"] + [f"{p}_{t}" for t in types for p in "BME"]
        tag_ids = {t: i for i, t in enumerate(tag_names)}
        unknown = {t for _, tags in train + dev for t in tags} - set(tag_names)
        if unknown:
            raise SystemExit(f"tags outside the B_/M_/E_ scheme of {types}: {sorted(unknown)}")
        tokenizer, token_dict, keep_tokens, vocab_path = common.make_tokenizer(
            args, ["".join(chars) for chars, _ in train], args.out)
        train_data = Encoded(train, token_dict, tag_ids, types, args.maxlen)
        dev_data = Encoded(dev, token_dict, tag_ids, types, args.maxlen)
    print(f"People's Daily NER: {len(train)} training sentences, {len(dev)} dev sentences, types {types}, "
          f"{len(token_dict)} tokens in the vocabulary; backend {keras.backend.backend()}")

    batches, steps = training_batches(train_data, args, len(types), args.seed)
    schedule = common.lr_schedule(args.warmup, steps * args.epochs, args.decay_to)
    optimizer = common.make_optimizer(args.lr, schedule)
    with timer("build"):
        transformer, model = build_model(args, len(token_dict), keep_tokens, len(tag_names), len(types), optimizer)
    print(f"model: BERT + {args.head}, {model.count_params():,} parameters"
          + ("" if args.config else f" ({args.layers} layers x {args.hidden_size}, from scratch)"))

    history = []

    class DevEvaluation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with timer("evaluate"):
                predicted = predict_entities(self.model, dev_data, args, types, tag_names, quiet=args.quiet)
            scores = entity_scores(dev_data.gold, predicted, types)
            history.append({"epoch": epoch + 1, "loss": float((logs or {}).get("loss", float("nan"))),
                            "precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"]})
            history[-1]["_scores"] = scores
            print(f"epoch {epoch + 1}: dev precision {scores['precision']:.4f}  recall {scores['recall']:.4f}  "
                  f"f1 {scores['f1']:.4f}")

    with timer("train+evaluate"):
        model.fit(batches, steps_per_epoch=steps, epochs=args.epochs, callbacks=[DevEvaluation()], shuffle=False,
                  verbose=0 if args.quiet else 1)
    timings = timer.summary()
    timings["train"] = round(timings.pop("train+evaluate") - timings.get("evaluate", 0.0), 2)
    if args.save_weights:
        from kerasformer import saving

        saving.save_weights(model, args.save_weights)  # atomic: a kill keeps the old file

    final = history[-1].pop("_scores")
    for h in history:
        h.pop("_scores", None)
    best = max(history, key=lambda h: h["f1"])
    results = {
        "task": "People's Daily 1998 NER (person nr, place ns, organisation nt), entity-level, dev set",
        "head": args.head,
        "metrics": {"precision": final["precision"], "recall": final["recall"], "f1": final["f1"]},
        "metrics_note": "entity-level micro P/R/F1 on dev after the last epoch (type, start and end must all "
                        "match); gold entities come from the full sentences, so entities cut off by --maxlen "
                        "count as missed",
        "per_type": final["per_type"],
        "counts": {k: final[k] for k in ("predicted", "gold", "correct")},
        "best_epoch": {"epoch": best["epoch"], "f1": best["f1"]},
        "history": history,
        "data": {"train_sentences": len(train), "dev_sentences": len(dev),
                 "train_subset": bool(args.max_train), "dev_subset": bool(args.max_dev),
                 "train_truncated": train_data.truncated, "dev_truncated": dev_data.truncated,
                 "data_dir": os.path.abspath(args.data_dir)},
        "model": {**common.model_summary(args, transformer), "parameters": int(model.count_params()),
                  "vocab_size": len(token_dict), "vocab_path": vocab_path,
                  "crf_lr_multiplier": getattr(getattr(model, "crf_layer", None), "lr_multiplier", None)},
        "training": {"steps_per_epoch": steps, "total_steps": steps * args.epochs, "lr_schedule": schedule},
        "timings_s": timings,
        "environment": common.environment(),
        "args": vars(args),
    }
    common.write_json(args.out, results)
    print(f"dev ({len(dev)} sentences): precision {final['precision']:.4f}  recall {final['recall']:.4f}  "
          f"f1 {final['f1']:.4f}; train {timings['train']:.0f}s -> {args.out}")
    return results


if __name__ == "__main__":
    main()
