"""UniLM title generation on CSL (abstract -> title), bert4keras' task_seq2seq_autotitle_csl.

One BERT-style model with UniLM's seq2seq attention mask reads ``[CLS] abstract [SEP]``
(segment 0, bidirectional) and writes ``title [SEP]`` (segment 1, left to right). The
loss is cross-entropy on the title tokens only, and the LM head runs on those positions
alone. Decoding is beam search; the scores
are character-level Rouge-1/2/L and BLEU, computed with the same formulas as the
bert4keras example (the ``rouge`` package and NLTK's ``sentence_bleu`` with
``SmoothingFunction().method1``), re-implemented here so no extra package is needed.

By default the model is trained FROM SCRATCH (no pretrained weights exist on this
machine) with a character vocabulary built from the training set; CSL's public title
split has no train part, so it trains on ``ts_dev.tsv`` (1,000 pairs) and tests on
``ts_test.tsv`` (1,000 pairs)::

    python recipes/unilm_csl.py                      # defaults: ~10-15 min on 2 CPU cores
    python recipes/unilm_csl.py --max-test 100 --epochs 2       # a quick smoke run
    python recipes/unilm_csl.py --config bert/bert_config.json \\
        --checkpoint bert/bert_model.ckpt --vocab bert/vocab.txt --lr 2e-5   # pretrained

Decoding uses the cached engine, ``kerasformer.generate(..., strategy='beam')``, and
falls back (with a note) to the bert4keras-style ``AutoRegressiveDecoder.beam_search``
if the engine is missing or fails; ``--decoder bert4keras`` asks for the latter.
The results JSON (metrics, arguments, timings, example predictions) is written
atomically to ``--out``, and the vocabulary next to it.
"""
import argparse
import collections
import math
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, REPO)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (recipes/common.py: vocabulary, atomic JSON writes)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join(REPO, "..", "shared", "data", "csl"),
                   help="folder with ts_dev.tsv (train) and ts_test.tsv (test)")
    p.add_argument("--out", default=os.path.join("results", "unilm_csl.json"))
    p.add_argument("--config", help="pretrained model config (bert_config.json / config.json)")
    p.add_argument("--checkpoint", help="pretrained checkpoint (TF prefix, safetensors, .bin)")
    p.add_argument("--vocab", help="vocab.txt of the pretrained model (simplified as bert4keras does)")
    common.add_pretrained_arg(p)
    p.add_argument("--model", default="bert", help="model family key for build_transformer_model")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--maxlen", type=int, default=160, help="abstract + title tokens")
    p.add_argument("--title-maxlen", type=int, default=32, help="most title tokens generated")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=None, help="default: hidden_size / 64, at least 2")
    common.add_dropout_arg(p)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (warm-up, cosine decay)")
    p.add_argument("--min-count", type=int, default=1, help="vocabulary: keep characters seen this often")
    p.add_argument("--max-train", type=int, default=0, help="use only the first N training pairs (0: all)")
    p.add_argument("--max-test", type=int, default=0, help="score only the first N test pairs (0: all)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--decoder", choices=["engine", "bert4keras"], default="engine")
    p.add_argument("--decode-batch", type=int, default=16, help="prompts per engine call")
    p.add_argument("--save-weights", help="also save the trained weights here (.weights.h5)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--examples", type=int, default=10, help="example predictions kept in the JSON")
    args = p.parse_args(argv)
    common.check_args(args)  # --pretrained, the config/vocab pair, --maxlen within its positions
    if args.maxlen <= args.title_maxlen:
        raise SystemExit(f"--maxlen {args.maxlen} leaves no room for the abstract beside --title-maxlen "
                         f"{args.title_maxlen}")
    return args


# ---------------------------------------------------------------- data
def load_pairs(path, limit=0):
    """``to title<TAB>abstract<TAB>title`` lines -> [(abstract, title)]."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise ValueError(f"{path}: expected 3 tab-separated fields, got {len(fields)}")
            pairs.append((fields[1], fields[2]))
            if limit and len(pairs) == limit:
                break
    return pairs


# ---------------------------------------------------------------- metrics
def _sentences(text):
    """The ``rouge`` package's preprocessing: split at '.', squeeze whitespace."""
    return [" ".join(s.split()) for s in text.split(".") if len(s) > 0]


def _words(sentences):
    return [w for s in sentences for w in s.split(" ")]


def _ngrams(words, n):
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _f1(p, r):
    return 2.0 * ((p * r) / (p + r + 1e-8))


def rouge_n(hyp, ref, n):
    """F1 of ROUGE-N as ``rouge`` computes it (sets of n-grams, not counts)."""
    h, r = _ngrams(_words(_sentences(hyp)), n), _ngrams(_words(_sentences(ref)), n)
    overlap = len(h & r)
    precision = overlap / len(h) if h else 0.0
    recall = overlap / len(r) if r else 0.0
    return _f1(precision, recall)


def _lcs_tokens(x, y):
    """One longest common subsequence of x and y (``rouge``'s table and walk back)."""
    n, m = len(x), len(y)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            table[i][j] = (table[i - 1][j - 1] + 1 if x[i - 1] == y[j - 1]
                           else max(table[i - 1][j], table[i][j - 1]))
    out, i, j = [], n, m
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            out.append(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return out[::-1]


def rouge_l(hyp, ref):
    """F1 of ``rouge``'s summary-level ROUGE-L: the union of LCS tokens between each
    reference sentence and every hypothesis sentence, counted as sets."""
    hyp_s, ref_s = _sentences(hyp), _sentences(ref)
    if not hyp_s or not ref_s:  # nothing but '.' (``rouge`` would raise)
        return 0.0
    m, n = len(set(_words(ref_s))), len(set(_words(hyp_s)))
    union = set()
    for r in ref_s:
        for h in hyp_s:
            union |= set(_lcs_tokens(r.split(" "), h.split(" ")))
    llcs = len(union)
    return _f1(llcs / n, llcs / m)


def sentence_bleu(reference, hypothesis, max_n=4):
    """NLTK's ``sentence_bleu([reference], hypothesis, smoothing_function=method1)`` with
    its default uniform 4-gram weights: clipped n-gram precisions, zero matched
    unigrams -> 0, a zero precision replaced by 0.1 / its denominator, brevity penalty
    against the reference length."""
    numerators, denominators = [], []
    for n in range(1, max_n + 1):
        hyp_counts = collections.Counter(tuple(hypothesis[i:i + n]) for i in range(len(hypothesis) - n + 1))
        ref_counts = collections.Counter(tuple(reference[i:i + n]) for i in range(len(reference) - n + 1))
        numerators.append(sum(min(c, ref_counts[g]) for g, c in hyp_counts.items()))
        denominators.append(max(1, sum(hyp_counts.values())))
    if numerators[0] == 0:
        return 0.0
    c, r = len(hypothesis), len(reference)
    bp = 1.0 if c > r else (0.0 if c == 0 else math.exp(1 - r / c))
    log_p = [math.log((num if num else 0.1) / den) for num, den in zip(numerators, denominators)]
    return bp * math.exp(math.fsum(log_p) / max_n)


def score(predictions, references):
    """bert4keras' evaluation: texts as space-separated characters, averaged over all
    pairs (an empty prediction scores 0)."""
    totals = dict.fromkeys(["rouge-1", "rouge-2", "rouge-l", "bleu"], 0.0)
    for pred, ref in zip(predictions, references):
        pred, ref = " ".join(pred), " ".join(ref)
        if pred.strip():
            totals["rouge-1"] += rouge_n(pred, ref, 1)
            totals["rouge-2"] += rouge_n(pred, ref, 2)
            totals["rouge-l"] += rouge_l(pred, ref)
            totals["bleu"] += sentence_bleu(ref.split(" "), pred.split(" "))
    count = max(len(references), 1)
    return {k: 100.0 * v / count for k, v in totals.items()}


def clean(text):
    """Text compared at character level: normalised like the tokenizer, no spaces."""
    return "".join(common.normalize(text).split())


# ---------------------------------------------------------------- model and training
def build(args, vocab_size, keep_tokens=None):
    """The UniLM as its family object (``.model`` is the Keras model that decodes; its
    layers are shared with :func:`training_model`)."""
    from kerasformer import build_transformer_model

    if args.config:
        return build_transformer_model(args.config, args.checkpoint, model=args.model,
                                       application="unilm", with_mlm=True, return_keras_model=False,
                                       keep_tokens=keep_tokens, **common.encoder_dropout(args))
    heads = args.heads or max(2, args.hidden_size // 64)
    return build_transformer_model(
        None, None, model=args.model, application="unilm", with_mlm=True, return_keras_model=False,
        vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
        num_attention_heads=heads, intermediate_size=4 * args.hidden_size,
        max_position=max(512, args.maxlen), dropout_rate=common.dropout_or_default(args),
        attention_dropout_rate=common.dropout_or_default(args))


def training_model(transformer, slots):
    """What trains: the encoder, then the LM head on ``slots`` gathered positions per row,
    the ones that predict a title token, instead of on every position (the pretraining
    objectives' ``masked_positions_model``, the same shared layers). Only the title carries
    a loss, so the loss and the gradients are the full head's; the head (a vocabulary-wide
    matmul) runs on a fraction of the positions."""
    from kerasformer.pretraining.train import masked_positions_model

    return masked_positions_model(transformer, slots)


def title_loss(y_true, y_pred):
    """Cross-entropy on the title only (bert4keras' CrossEntropy layer) from probabilities:
    ``y_true`` holds the next token id where it belongs to segment 1, -1 elsewhere; the
    mean is over the title tokens of the batch. (The UniLM trains on gathered positions
    with :func:`gathered_title_loss`; recipes/couplet.py's CNN uses this one.)"""
    return common.masked_token_loss(y_true, y_pred)


def gathered_title_loss(y_true, y_pred):
    """:func:`title_loss` on :func:`training_model`'s logits at the gathered positions."""
    from kerasformer.pretraining.objectives import masked_loss

    return masked_loss(y_true, y_pred)


def title_slots(encoded):
    """Gathered positions per row: the most title tokens of any pair (every segment-1 token
    is predicted from the position before it), rounded up to a multiple of 8, so that the
    step keeps one shape for the head whatever the batch."""
    return -(-max(int(np.sum(segment_ids)) for _, segment_ids in encoded) // 8) * 8


def make_batches(pairs, tokenizer, args):
    """A bert4keras DataGenerator: [token_ids, segment_ids, title positions] -> the title
    tokens at those positions (-1 on the padded slots); ``.slots`` positions per row.
    Batches are padded to a multiple of 32 tokens, so that JAX compiles a handful of
    shapes rather than one per batch."""
    from kerasformer import DataGenerator, sequence_padding
    from kerasformer.pretraining.objectives import gather_targets

    encoded = [tokenizer.encode(abstract, title, maxlen=args.maxlen) for abstract, title in pairs]
    slots = title_slots(encoded)

    class Batches(DataGenerator):
        def __iter__(self, random=False):
            batch = []
            for is_end, (token_ids, segment_ids) in self.sample(random):
                batch.append((token_ids, segment_ids))
                if len(batch) == self.batch_size or is_end:
                    length = min(-(-max(len(t) for t, _ in batch) // 32) * 32, args.maxlen)
                    token_ids = sequence_padding([t for t, _ in batch], length)
                    segment_ids = sequence_padding([s for _, s in batch], length)
                    # position t predicts token t + 1, where that token is part of the title
                    targets = np.full(token_ids.shape, -1, "int32")
                    targets[:, :-1] = np.where(segment_ids[:, 1:] == 1, token_ids[:, 1:], -1)
                    positions, targets, dropped = gather_targets(targets, slots)
                    assert dropped == 0, dropped  # slots holds the longest title
                    yield [token_ids.astype("int32"), segment_ids.astype("int32"), positions], targets
                    batch = []

    batches = Batches(encoded, args.batch_size)
    batches.slots = slots
    return batches


def train(transformer, batches, args):
    import keras

    steps = len(batches) * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(steps - steps // 20, 1), alpha=0.05,
        warmup_target=args.lr, warmup_steps=max(steps // 20, 1))
    model = training_model(transformer, batches.slots)
    model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0), loss=gathered_title_loss)
    history = model.fit(batches.forfit(), steps_per_epoch=len(batches), epochs=args.epochs,
                        shuffle=False, verbose=1)  # the generator shuffles itself
    return [float(v) for v in history.history["loss"]]


# ---------------------------------------------------------------- decoding
def decode_engine(model, prompts, args, end_id, generate):
    from tqdm import tqdm

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths together
    outputs = [None] * len(prompts)
    with tqdm(total=len(prompts), desc="decoding (engine, beam %d)" % args.beam, unit="title") as bar:
        for start in range(0, len(order), args.decode_batch):
            chunk = order[start:start + args.decode_batch]
            new = generate(model, [prompts[i] for i in chunk], max_new_tokens=args.title_maxlen,
                           strategy="beam", num_beams=args.beam, end_id=end_id)
            for i, ids in zip(chunk, new):
                outputs[i] = list(ids)
            bar.update(len(chunk))
    return outputs


def bert4keras_decoder(model, end_id, maxlen):
    """The bert4keras example's AutoTitle, unchanged but for the prompt being pre-encoded:
    the whole sequence is re-run at every step (no cache). Also the baseline of
    benchmarks/bench_unilm_beam.py."""
    from kerasformer.generation.autoregressive import AutoRegressiveDecoder

    class AutoTitle(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            token_ids, segment_ids = inputs
            token_ids = np.concatenate([token_ids, output_ids], 1)
            segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
            return self.last_token(model).predict([token_ids, segment_ids])

    return AutoTitle(start_id=None, end_id=end_id, maxlen=maxlen)


def decode_bert4keras(model, prompts, args, end_id):
    from tqdm import tqdm

    autotitle = bert4keras_decoder(model, end_id, args.title_maxlen)
    return [list(autotitle.beam_search([ids, [0] * len(ids)], topk=args.beam))
            for ids in tqdm(prompts, desc="decoding (bert4keras, beam %d)" % args.beam, unit="title")]


# ---------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    args.data_dir = os.path.abspath(args.data_dir)
    import kerasformer  # noqa: F401  (picks JAX unless KERAS_BACKEND says otherwise)
    import keras

    keras.utils.set_random_seed(args.seed)
    started = time.time()
    data_dir = os.path.abspath(args.data_dir)
    train_pairs = load_pairs(os.path.join(data_dir, "ts_dev.tsv"), args.max_train)
    test_pairs = load_pairs(os.path.join(data_dir, "ts_test.tsv"), args.max_test)
    print(f"CSL titles: {len(train_pairs)} training pairs (ts_dev), {len(test_pairs)} test pairs "
          f"(ts_test); backend {keras.backend.backend()}")

    # a pretrained vocabulary trimmed to what a Chinese model needs, or characters seen
    tokenizer, token_dict, keep_tokens, vocab_path = common.make_tokenizer(
        args, [a + t for a, t in train_pairs], args.out)
    print(f"vocabulary: {len(token_dict)} tokens -> {vocab_path}")

    transformer = build(args, len(token_dict), keep_tokens)
    model = transformer.model
    print(f"model: {args.model} UniLM, {model.count_params():,} parameters"
          + ("" if args.config else f" ({args.layers} layers x {args.hidden_size}, from scratch)"))

    batches = make_batches(train_pairs, tokenizer, args)
    t0 = time.time()
    losses = train(transformer, batches, args)
    train_seconds = time.time() - t0
    if args.save_weights:
        from kerasformer import saving

        saving.save_weights(model, args.save_weights)  # atomic: a kill keeps the old file

    max_prompt = args.maxlen - args.title_maxlen
    prompts = [tokenizer.encode(abstract, maxlen=max_prompt)[0] for abstract, _ in test_pairs]
    end_id = tokenizer.end_id
    decoder, note = args.decoder, None
    t0 = time.time()
    outputs = None
    if decoder == "engine":
        from kerasformer import generate

        try:
            outputs = decode_engine(model, prompts, args, end_id, generate)
        except Exception as e:  # noqa: BLE001  (any engine failure: fall back, say why)
            note = f"kerasformer.generate failed: {type(e).__name__}: {e}"
        if outputs is None:
            print(f"NOTE: {note}; falling back to the bert4keras-style AutoRegressiveDecoder "
                  "(uncached, much slower)")
            decoder, t0 = "bert4keras", time.time()
    if outputs is None:
        outputs = decode_bert4keras(model, prompts, args, end_id)
    decode_seconds = time.time() - t0

    predictions = [clean(tokenizer.decode(ids)) for ids in outputs]
    references = [clean(title) for _, title in test_pairs]
    metrics = score(predictions, references)
    generated = sum(len(ids) for ids in outputs)
    print("test ({} pairs): rouge-1 {rouge-1:.2f}  rouge-2 {rouge-2:.2f}  rouge-l {rouge-l:.2f}  "
          "bleu {bleu:.2f}".format(len(test_pairs), **metrics))
    results = {
        "task": "CSL title generation (ts_dev -> ts_test), UniLM",
        "metrics": {k: round(v, 2) for k, v in metrics.items()},
        "metrics_note": "character level, x100, averaged over test pairs (bert4keras' example: "
                        "rouge package formulas, NLTK sentence_bleu with method1 smoothing)",
        "test_pairs": len(test_pairs),
        "train_pairs": len(train_pairs),
        "decoder": decoder,
        "decoder_note": note,
        "backend": keras.backend.backend(),
        "parameters": int(model.count_params()),
        "vocab_size": len(token_dict),
        "vocab_path": vocab_path,
        "train_loss_per_epoch": [round(v, 4) for v in losses],
        "timings": {"train_seconds": round(train_seconds, 1), "decode_seconds": round(decode_seconds, 1),
                    "generated_tokens_per_second": round(generated / max(decode_seconds, 1e-9), 1),
                    "total_seconds": round(time.time() - started, 1)},
        "args": vars(args),
        "examples": [{"abstract": a[:120] + ("..." if len(a) > 120 else ""), "reference": t,
                      "prediction": p} for (a, t), p in list(zip(test_pairs, predictions))[:args.examples]],
    }
    common.write_json(args.out, results)
    print(f"results -> {os.path.abspath(args.out)} (train {train_seconds:.0f} s, decode "
          f"{decode_seconds:.0f} s, total {time.time() - started:.0f} s)")
    return results


if __name__ == "__main__":
    main()
