"""Reading comprehension by seq2seq (Su Jianlin's article; bert4keras'
task_reading_comprehension_by_seq2seq) and by MLM (task_reading_comprehension_by_mlm),
both in one run, on CMRC 2018.

* seq2seq: a UniLM reads ``[CLS] passage [SEP] question [SEP]`` (segment 0) and writes
  ``answer [SEP]`` (segment 1). Decoding is beam search in the cached engine constrained
  to spans of the passage (``kerasformer.generation.constraints.SpanConstraint``): at each
  step only tokens that continue some substring of the passage are allowed.
* MLM: a BERT reads ``[CLS] [MASK]*A [SEP] question [SEP] passage [SEP]`` and predicts the
  answer's tokens (then ``[SEP]``) at the ``[MASK]`` positions at once; decoding picks,
  position by position, the best token that keeps the answer a span of the passage.

Long passages are cut into overlapping windows (``--window`` characters, ``--stride``
apart); as in the articles' multi-passage setting every window answers on its own (or
abstains: the empty answer, which the model learns on windows without the answer), and
the answers vote: an answer found with scores ``s_i`` gets ``sum(s_i^2) / (sum(s_i) + 1)``
(the MLM script's vote; the seq2seq script mixes the windows' distributions at every step
instead, which needs an uncached decoder -- here each window's answer score is its beam
probability). Training follows the articles: each epoch, one window per question, whose
target is the answer if the window holds it, else the empty answer; as CMRC passages span
several windows, ``--positive-share`` of the examples take a window holding the answer.

Data: ``../shared/data/cmrc2018``: trains on ``dev.json``, evaluates on ``trial.json`` with
the official CMRC 2018 evaluation (``cmrc_f1`` / ``cmrc_em``: character-level F1 of the
longest common substring and exact match, punctuation removed as the official script does).

By default the models are trained FROM SCRATCH (no pretrained Chinese model here) with a
character vocabulary: expect low scores; ``--config/--checkpoint/--vocab`` load a
pretrained BERT for both. ``--smoke`` is a seconds-long run on a few examples.
"""
import math
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

# ---------------------------------------------------------------- the official evaluation
# the punctuation list of cmrc2018_evaluate.py, as it is: '……' is one entry, so a single
# '…' (the script compares one character at a time) is never removed
SP_CHAR = ['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=', '，', '。', '：', '？', '！', '“',
           '”', '；', '’', '《', '》', '……', '·', '、', '「', '」', '（', '）', '－', '～', '『', '』']
_CJK = re.compile(r"[\u4e00-\u9fa5]")
# nltk.word_tokenize on the non-Chinese runs (Treebank rules, as far as CMRC answers go):
# numbers with inner '.' or ',' stay whole, so do words with inner periods ('u.s', 'e.g');
# a period after a word stays on it unless it ends the text ('dr. who' vs 'ok.'); "'s" is
# split off; any other symbol stands alone. (NLTK's ``'' / `` quote rewriting and "n't"
# are not reproduced.)
_WORDS = re.compile(r"\d+(?:[.,]\d+)+|\w+(?:\.\w+)*(?:\.(?=\s+\S))?|'\w+|[^\w\s]")


def mixed_segmentation(text, rm_punc=False):
    """The official segmentation: Chinese characters and punctuation one by one, other
    runs split into words (the script's ``nltk.word_tokenize``, here a regex that agrees
    with it on words, numbers and punctuation: no NLTK data is needed)."""
    text = str(text).lower().strip()
    segs, run = [], ""
    for char in text:
        if rm_punc and char in SP_CHAR:
            continue
        if _CJK.search(char) or char in SP_CHAR:
            if run:
                segs.extend(_WORDS.findall(run))
                run = ""
            segs.append(char)
        else:
            run += char
    if run:
        segs.extend(_WORDS.findall(run))
    return segs


def remove_punctuation(text):
    return "".join(c for c in str(text).lower().strip() if c not in SP_CHAR)


def _lcs_length(a, b):
    """Length of the longest common substring (contiguous) of two lists."""
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def cmrc_f1(answers, prediction):
    """The best F1 over the reference answers (official ``calc_f1_score``)."""
    scores = []
    pred = mixed_segmentation(prediction, rm_punc=True)
    for answer in answers:
        ref = mixed_segmentation(answer, rm_punc=True)
        common_len = _lcs_length(ref, pred)
        if common_len == 0:
            scores.append(0.0)
            continue
        p, r = common_len / len(pred), common_len / len(ref)
        scores.append(2 * p * r / (p + r))
    return max(scores)


def cmrc_em(answers, prediction):
    pred = remove_punctuation(prediction)
    return float(any(remove_punctuation(a) == pred for a in answers))


def evaluate(examples, predictions):
    """``{'f1', 'em', 'average'}`` x100 over all questions (a missing prediction scores 0,
    as the official script counts unanswered questions in the total)."""
    f1 = em = 0.0
    for ex in examples:
        if ex["id"] in predictions:
            f1 += cmrc_f1(ex["answers"], predictions[ex["id"]])
            em += cmrc_em(ex["answers"], predictions[ex["id"]])
    n = max(len(examples), 1)
    f1, em = 100.0 * f1 / n, 100.0 * em / n
    return {"f1": f1, "em": em, "average": (f1 + em) / 2}


# ---------------------------------------------------------------- data
def load_cmrc(path, limit=0):
    """SQuAD-style JSON -> [{'id', 'context', 'question', 'answers', 'start'}]."""
    import json

    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    out = []
    for article in data:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                answers = [a["text"] for a in qa["answers"]]
                out.append(dict(id=qa["id"], context=para["context"], question=qa["question"],
                                answers=answers, start=qa["answers"][0]["answer_start"] if answers else -1))
                if limit and len(out) == limit:
                    return out
    return out


def windows(context, size, stride):
    """``[(start, text)]``: overlapping pieces of ``size`` characters, ``stride`` apart,
    the last one ending at the end of the context."""
    if len(context) <= size:
        return [(0, context)]
    starts = list(range(0, len(context) - size, stride)) + [len(context) - size]
    return [(s, context[s:s + size]) for s in starts]


def window_answer(example, start, text):
    """The answer if this window holds it (at its position), else ''."""
    answer, pos = example["answers"][0], example["start"]
    if pos >= start and pos + len(answer) <= start + len(text) and answer:
        return answer
    return ""


# ---------------------------------------------------------------- arguments
def parse_args(argv=None):
    p = common.new_parser(__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=common.data_path("cmrc2018"),
                   help="folder with dev.json (train) and trial.json (test)")
    p.add_argument("--out", default=os.path.join("results", "reading_comprehension.json"))
    p.add_argument("--config")
    p.add_argument("--checkpoint")
    p.add_argument("--vocab")
    common.add_pretrained_arg(p)
    p.add_argument("--model", default="bert")
    p.add_argument("--variants", default="seq2seq,mlm", help="comma-separated: seq2seq, mlm")
    p.add_argument("--window", type=int, default=160, help="passage window, characters")
    p.add_argument("--stride", type=int, default=100, help="distance between window starts")
    p.add_argument("--max-q-len", type=int, default=40, help="question tokens kept")
    p.add_argument("--max-a-len", type=int, default=16, help="answer tokens (generated at most)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--heads", type=int, default=None)
    common.add_dropout_arg(p)
    p.add_argument("--min-count", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-train", type=int, default=0, help="first N training questions (0: all)")
    p.add_argument("--max-test", type=int, default=300, help="first N test questions (0: all)")
    p.add_argument("--positive-share", type=float, default=0.5,
                   help="training: share of examples whose window holds the answer (the rest: a random "
                        "window, usually the empty answer); CMRC passages are longer than a window")
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--decode-batch", type=int, default=32, help="windows per engine call")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--examples", type=int, default=10)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--smoke", action="store_true", help="a tiny run: a few examples, tiny model")
    if "--smoke" in (sys.argv[1:] if argv is None else argv):  # tiny defaults; explicit options win
        p.set_defaults(max_train=24, max_test=4, epochs=1, layers=1, hidden_size=32, window=48, stride=40,
                       max_q_len=16, max_a_len=6, batch_size=8, beam=2, min_count=1, examples=2)
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.variants or set(args.variants) - {"seq2seq", "mlm"}:
        raise SystemExit("--variants: seq2seq and/or mlm")
    common.resolve_pretrained(args)
    if (args.checkpoint or args.config) and not (args.config and args.vocab):
        raise SystemExit("a pretrained model needs --config and --vocab (and --checkpoint for its weights)")
    if args.window < 1 or args.stride < 1 or args.max_a_len < 1:
        raise SystemExit("--window, --stride and --max-a-len must be at least 1")
    # the longest input, the MLM variant's: [CLS] answer masks [SEP] question [SEP] window [SEP]
    spare = args.max_q_len + args.max_a_len + 4
    window = args.window
    common.cap_to_positions(args, "window", needed=args.window + spare, spare=spare)
    if args.window < window and args.stride >= args.window:  # keep windows overlapping as they did
        args.stride = max(1, args.stride * args.window // window)
        print(f"--stride -> {args.stride}, in proportion")
    return args


# ---------------------------------------------------------------- models
def build(args, vocab_size, keep_tokens, application):
    from kerasformer import build_transformer_model

    kwargs = dict(model=args.model, with_mlm=True, keep_tokens=keep_tokens, **common.encoder_dropout(args),
                  application=application)
    if args.config:
        return build_transformer_model(args.config, args.checkpoint, **kwargs)
    return build_transformer_model(
        None, None, vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
        num_attention_heads=args.heads or max(2, args.hidden_size // 64),
        intermediate_size=4 * args.hidden_size, max_position=512, **kwargs)


class Encoded:
    """Token ids of a question, its windows and their answers (shared by both variants)."""

    def __init__(self, tokenizer, examples, args):
        self.items = []
        for ex in examples:
            q = tokenizer.encode(ex["question"], maxlen=args.max_q_len + 2)[0][1:]  # question [SEP]
            wins = []
            for start, text in windows(ex["context"], args.window, args.stride):
                p = tokenizer.encode(text)[0][1:-1]
                answer = window_answer(ex, start, text)
                a = tokenizer.encode(answer)[0][1:-1][: args.max_a_len - 1] if answer else []
                wins.append((p, a))
            self.items.append((q, wins))


def seq2seq_example(cls, sep, q, p, a=None):
    """``[CLS] passage [SEP] question [SEP]`` (+ ``answer [SEP]``), with segment ids."""
    prompt = [cls] + p + [sep] + q
    if a is None:
        return prompt
    return prompt + a + [sep], [0] * len(prompt) + [1] * (len(a) + 1)


def mlm_example(cls, sep, mask, q, p, max_a):
    return [cls] + [mask] * max_a + [sep] + q + p + [sep]


def batches(encoded, variant, ids, args, rng):
    """One epoch: a random window per question (the articles' sampling)."""
    from kerasformer import sequence_padding

    cls, sep, mask = ids
    order = rng.permutation(len(encoded.items))
    for i in range(0, len(order), args.batch_size):
        tokens, segments, targets = [], [], []
        for j in order[i:i + args.batch_size]:
            q, wins = encoded.items[j]
            holding = [w for w in wins if w[1]]
            if holding and rng.random() < args.positive_share:
                p, a = holding[rng.integers(len(holding))]
            else:
                p, a = wins[rng.integers(len(wins))]
            if variant == "seq2seq":
                t, s = seq2seq_example(cls, sep, q, p, a)
                y = [-1] * len(t)
                y[len(t) - len(a) - 2: len(t) - 1] = a + [sep]  # position k predicts token k + 1
            else:
                t = mlm_example(cls, sep, mask, q, p, args.max_a_len)
                s = [0] * len(t)
                y = [-1] * len(t)
                y[1: 2 + len(a)] = a + [sep]
            tokens.append(t)
            segments.append(s)
            targets.append(y)
        length = common.bucket_length(max(map(len, tokens)), 32)
        yield ([sequence_padding(tokens, length).astype("int32"), sequence_padding(segments, length).astype("int32")],
               sequence_padding(targets, length, value=-1).astype("int32"))


def train(model, encoded, variant, ids, args):
    import keras

    rng = np.random.default_rng(args.seed)
    steps_per_epoch = -(-len(encoded.items) // args.batch_size)
    total = steps_per_epoch * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(total - total // 10, 1), alpha=0.05, warmup_target=args.lr,
        warmup_steps=max(total // 10, 1))
    # cross-entropy on the answer tokens only (their targets are >= 0)
    model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0), loss=common.masked_token_loss)
    losses = []
    with common.progress(total=total, quiet=args.quiet, desc=f"training {variant}", unit="batch") as bar:
        for _ in range(args.epochs):
            epoch = []
            for x, y in batches(encoded, variant, ids, args, rng):
                epoch.append(float(model.train_on_batch(x, y)))
                bar.update(1)
                bar.set_postfix(loss=f"{epoch[-1]:.3f}")
            losses.append(float(np.mean(epoch)))
    return losses


# ---------------------------------------------------------------- answering
def vote(found):
    """``{answer: [scores]}`` -> the answer with the largest ``sum(s^2) / (sum(s) + 1)``."""
    if not found:
        return ""
    return max(found.items(), key=lambda kv: sum(s * s for s in kv[1]) / (sum(kv[1]) + 1))[0]


def answer_seq2seq(model, tokenizer, encoded, ids, args):
    """Every window of every question through the engine's constrained beam search, in
    batches of windows of similar length; then the windows of a question vote.

    Every window gives a non-empty span, scored by its probability (which includes the
    model's belief that the answer starts at all: a window without the answer puts its
    mass on the end token and scores low). The articles let a window abstain when the end
    token is its most probable first token; every CMRC question has an answer in its
    passage, and a model trained from scratch abstains everywhere, so here none does."""
    from kerasformer import generate
    from kerasformer.generation.constraints import SpanConstraint

    cls, sep, _ = ids
    jobs = [(k, p, seq2seq_example(cls, sep, q, p)) for k, (q, wins) in enumerate(encoded.items)
            for p, _ in wins]
    jobs.sort(key=lambda job: len(job[2]))  # one padded length per batch, few compiled programs
    span_length = max(16, -(-max(len(p) for _, p, _ in jobs) // 16) * 16)
    found = [{} for _ in encoded.items]
    with common.progress(total=len(jobs), quiet=args.quiet, desc="answering (seq2seq)", unit="window") as bar:
        for i in range(0, len(jobs), args.decode_batch):
            chunk = jobs[i:i + args.decode_batch]
            constraint = SpanConstraint([p for _, p, _ in chunk], length=span_length)
            beams = generate(model, [prompt for _, _, prompt in chunk], args.max_a_len, strategy="beam",
                             num_beams=args.beam, end_id=sep, constraint=constraint, return_all_beams=True)
            for (k, _, _), rows in zip(chunk, beams):
                tokens, logp = rows[0]
                text = _clean(tokenizer.decode([t for t in tokens if t != sep]))
                if text:
                    found[k].setdefault(text, []).append(math.exp(logp))
            bar.update(len(chunk))
    return [vote(f) for f in found]


def answer_mlm(model, tokenizer, encoded, ids, args):
    """The MLM script's decoding: all answer positions in one pass, then position by
    position the most probable token that keeps the answer a span of the window (the end
    token once the answer is non-empty, see ``answer_seq2seq``); score = mean probability
    of the chosen tokens; windows vote."""
    from kerasformer import sequence_padding
    from kerasformer.backend import predict
    from kerasformer.generation.constraints import Guide, SpanConstraint

    cls, sep, mask = ids
    found = [{} for _ in encoded.items]
    jobs = [(k, p, mlm_example(cls, sep, mask, q, p, args.max_a_len)) for k, (q, wins) in enumerate(encoded.items)
            for p, _ in wins]
    jobs.sort(key=lambda job: len(job[2]))
    with common.progress(total=len(jobs), quiet=args.quiet, desc="answering (mlm)", unit="window") as bar:
        for i in range(0, len(jobs), args.decode_batch):
            chunk = jobs[i:i + args.decode_batch]
            length = common.bucket_length(max(len(t) for _, _, t in chunk), 32)
            tokens = sequence_padding([t for _, _, t in chunk], length).astype("int32")
            probs = np.asarray(predict(model, [tokens, np.zeros_like(tokens)]))[:, 1: 1 + args.max_a_len]
            guide = Guide(SpanConstraint([p for _, p, _ in chunk]), sep, batch=len(chunk))
            answers = [[] for _ in chunk]
            scores = np.zeros(len(chunk))
            done = np.zeros(len(chunk), bool)
            for step in range(args.max_a_len):
                allowed = guide.mask(answers, probs.shape[-1], every_row=False)
                allowed[done] = True  # finished rows: anything, ignored
                p = np.where(allowed, probs[:, step], 0.0)
                choice = p.argmax(axis=1)
                for r in np.flatnonzero(~done):
                    answers[r].append(int(choice[r]))
                    scores[r] += p[r, choice[r]]
                done |= choice == sep
                guide.update(choice)
                if done.all():
                    break
            for r, (k, _, _) in enumerate(chunk):
                text = _clean(tokenizer.decode([t for t in answers[r] if t != sep]))
                if text:
                    found[k].setdefault(text, []).append(scores[r] / len(answers[r]))
            bar.update(len(chunk))
    return [vote(f) for f in found]


def _clean(text):
    return "".join(text.split())  # the tokenizer's decode spaces Latin words: CMRC answers do not


# ---------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    import kerasformer  # noqa: F401  (JAX unless KERAS_BACKEND says otherwise)
    import keras

    keras.utils.set_random_seed(args.seed)
    timer = common.Timer()
    data_dir = os.path.abspath(args.data_dir)
    train_set = load_cmrc(common.require_file(os.path.join(data_dir, "dev.json"), "CMRC 2018 dev.json"),
                          args.max_train)
    test_set = load_cmrc(common.require_file(os.path.join(data_dir, "trial.json"), "CMRC 2018 trial.json"),
                         args.max_test)
    print(f"CMRC 2018: {len(train_set)} training questions (dev.json), {len(test_set)} test questions "
          f"(trial.json); backend {keras.backend.backend()}")
    texts = [ex["context"] + ex["question"] for ex in train_set]
    tokenizer, token_dict, keep_tokens, vocab_path = common.make_tokenizer(args, texts, args.out)
    if "mlm" in args.variants and "[MASK]" not in token_dict:
        raise SystemExit("the mlm variant needs a [MASK] token in the vocabulary")
    ids = (tokenizer._token_start_id, tokenizer._token_end_id, token_dict.get("[MASK]"))
    with timer("encode"):
        train_enc, test_enc = Encoded(tokenizer, train_set, args), Encoded(tokenizer, test_set, args)
    windows_per_question = sum(len(w) for _, w in test_enc.items) / max(len(test_enc.items), 1)
    results = {
        "task": "CMRC 2018 reading comprehension (train dev.json -> test trial.json)",
        "metric_note": "official CMRC 2018 evaluation: F1 (longest common substring of mixed "
                       "segmentation, punctuation removed) and EM, x100; average = (F1 + EM) / 2",
        "train_questions": len(train_set), "test_questions": len(test_set),
        "test_windows_per_question": round(windows_per_question, 2),
        "vocab_size": len(token_dict), "vocab_path": vocab_path,
        "environment": common.environment(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": vars(args), "variants": {},
    }
    for variant in args.variants:
        model = build(args, len(token_dict), keep_tokens, "unilm" if variant == "seq2seq" else "encoder")
        with timer(f"{variant}_train"):
            losses = train(model, train_enc, variant, ids, args)
        with timer(f"{variant}_answer"):
            answer = answer_seq2seq if variant == "seq2seq" else answer_mlm
            predictions = answer(model, tokenizer, test_enc, ids, args)
        metrics = evaluate(test_set, {ex["id"]: p for ex, p in zip(test_set, predictions)})
        print(f"{variant}: F1 {metrics['f1']:.2f}  EM {metrics['em']:.2f}  average {metrics['average']:.2f}")
        results["variants"][variant] = {
            "metrics": {k: round(v, 2) for k, v in metrics.items()},
            "parameters": int(model.count_params()),
            "train_loss_per_epoch": [round(v, 4) for v in losses],
            "answered": sum(bool(p) for p in predictions),
            "examples": [{"question": ex["question"], "answers": ex["answers"][:1], "prediction": p}
                         for ex, p in list(zip(test_set, predictions))[: args.examples]],
            "predictions": {ex["id"]: p for ex, p in zip(test_set, predictions)},  # re-scorable
        }
        results["timings"] = timer.summary()
        common.write_json(args.out, results)  # after each variant: a partial run keeps its figures
    print(f"results -> {os.path.abspath(args.out)} ({timer.summary()['total']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
