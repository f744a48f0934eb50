"""Shared pieces of the recipes (NER, classification, UniLM titles, conditional LM).

Nothing here trains anything: paths to the shared datasets, the character vocabulary a
from-scratch model uses, the command-line arguments both recipes accept, the encoder
they build (random or from a pretrained checkpoint), the optimizer (piecewise-linear
warm-up and EMA from :mod:`kerasformer.optimizers`), length bucketing, progress bars,
timings, the masked next-token loss and the atomic results JSON.

Imports of Keras and kerasformer happen inside the functions, after the recipe has
parsed its arguments, so ``--help`` is instant and ``KERAS_BACKEND`` is honoured.
"""
import argparse
import collections
import json
import os
import platform
import sys
import time
import unicodedata

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, REPO)

from kerasformer.checkpoints.torch_pickle import atomic_write  # noqa: E402

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def data_path(*parts):
    """``<repo>/../shared/data/<parts>``: where the shared datasets live, found from this
    file's location so the recipes work from any working directory."""
    return os.path.normpath(os.path.join(REPO, "..", "shared", "data", *parts))


def require_file(path, what):
    if not os.path.isfile(path):
        raise SystemExit(f"{what} not found: {path}\n(pass --data-dir; the datasets are described in "
                         f"{data_path('README.md')})")
    return path


# ---------------------------------------------------------------------------- vocabulary

def normalize(text):
    """What an uncased BERT tokenizer sees: lower case, accents stripped (NFD minus marks)."""
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in text if unicodedata.category(c) != "Mn")


def build_char_vocab(texts, min_count=1):
    """A BERT-style vocabulary for a model trained from scratch: the special tokens, then
    every character seen at least ``min_count`` times in ``texts`` (most frequent first),
    plus a '##' continuation piece for each ASCII letter and digit, so the WordPiece
    tokenizer splits Latin words and numbers into characters instead of making them [UNK].
    Returns ``{token: id}``."""
    counts = collections.Counter()
    for text in texts:
        counts.update(c for c in normalize(text) if not c.isspace())
    chars = [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
    pieces = ["##" + c for c in chars if c.isascii() and c.isalnum()]
    return {t: i for i, t in enumerate(SPECIAL_TOKENS + chars + pieces)}


def make_tokenizer(args, train_texts, out_path):
    """``(tokenizer, token_dict, keep_tokens, vocab_path)``.

    With ``--vocab`` (a pretrained model's vocab.txt) the vocabulary is simplified as
    bert4keras does for Chinese models and ``keep_tokens`` slices the checkpoint's embedding;
    otherwise a character vocabulary is built from the training texts. Either way the
    vocabulary actually used is written next to the results JSON.
    """
    from kerasformer import Tokenizer, load_vocab, save_vocab

    keep_tokens = None
    if args.vocab:
        # [MASK] stays where the vocabulary has it: the MLM variants (reading comprehension)
        # predict through it (bert4keras' MLM examples pass it in startswith too)
        present = load_vocab(args.vocab)
        token_dict, keep_tokens = load_vocab(args.vocab, simplified=True,
                                             startswith=[t for t in SPECIAL_TOKENS if t in present])
    else:
        token_dict = build_char_vocab(train_texts, args.min_count)
    vocab_path = os.path.splitext(os.path.abspath(out_path))[0] + "_vocab.txt"
    os.makedirs(os.path.dirname(vocab_path), exist_ok=True)
    tmp = vocab_path + ".tmp"
    save_vocab(tmp, token_dict)
    os.replace(tmp, vocab_path)
    return Tokenizer(token_dict, do_lower_case=True), token_dict, keep_tokens, vocab_path


# ---------------------------------------------------------------------------- arguments

def add_common_args(parser, *, out, epochs, batch_size, maxlen, layers, hidden_size, lr, warmup,
                    max_train, max_dev, decay_to=1.0):
    """The arguments both recipes share; each recipe passes its own defaults."""
    g = parser.add_argument_group("data")
    g.add_argument("--max-train", type=int, default=max_train,
                   help="use only the first N training examples (0: all)")
    g.add_argument("--max-dev", type=int, default=max_dev, help="evaluate on the first N dev examples (0: all)")
    g.add_argument("--maxlen", type=int, default=maxlen, help="tokens per example, [CLS] and [SEP] included")
    g = parser.add_argument_group("model (from scratch unless --config/--checkpoint)")
    g.add_argument("--config", help="pretrained model config (bert_config.json / config.json)")
    g.add_argument("--checkpoint", help="pretrained checkpoint (TF prefix, safetensors, pytorch_model.bin)")
    g.add_argument("--vocab", help="the pretrained model's vocab.txt (simplified as bert4keras does)")
    add_pretrained_arg(g)
    g.add_argument("--model", default="bert", help="model family key for build_transformer_model")
    g.add_argument("--layers", type=int, default=layers, help="from scratch: Transformer layers")
    g.add_argument("--hidden-size", type=int, default=hidden_size, help="from scratch: hidden size")
    g.add_argument("--heads", type=int, default=None, help="from scratch: attention heads "
                   "(default hidden_size / 64, at least 2)")
    g.add_argument("--intermediate-size", type=int, default=None, help="from scratch: default 4 * hidden")
    add_dropout_arg(g)
    g.add_argument("--min-count", type=int, default=1, help="from scratch: keep characters seen this often")
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=epochs)
    g.add_argument("--batch-size", type=int, default=batch_size)
    g.add_argument("--lr", type=float, default=lr, help="(peak) learning rate of Adam" + (
        "" if lr is not None else "; default: the recipe's, smaller for pretrained weights (--checkpoint)"))
    g.add_argument("--warmup", type=int, default=warmup,
                   help="linear warm-up steps (kerasformer.optimizers piecewise-linear schedule); 0: none")
    g.add_argument("--decay-to", type=float, default=decay_to,
                   help="after the warm-up, decay linearly to this fraction of --lr by the last step "
                        "(1.0: constant)")
    g.add_argument("--seed", type=int, default=42)
    g = parser.add_argument_group("output")
    g.add_argument("--out", default=out, help="results JSON (written atomically); the vocabulary goes "
                   "next to it")
    g.add_argument("--save-weights", help="also save the trained weights here (.weights.h5)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


DEFAULT_DROPOUT = 0.1  # from scratch, and for the heads the recipes add


def add_dropout_arg(parser):
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout rate; default: a pretrained config's own rates (chinese-small: none), "
                             f"{DEFAULT_DROPOUT} from scratch")


def encoder_dropout(args):
    """``build_transformer_model`` keyword arguments for ``--dropout``. A pretrained model
    keeps its config's rates unless ``--dropout`` is given, as bert4keras and transformers do:
    ``chinese-small`` was pretrained without dropout, and fine-tuning it with 0.1 (the old
    default here) cost ChnSentiCorp 17 points (63.6% against 80.8%, recipes/README.md)."""
    return {} if args.dropout is None and args.config else {"dropout_rate": dropout_or_default(args)}


def dropout_or_default(args):
    """``--dropout``, or 0.1 where no config says otherwise (heads the recipes add, from-scratch models)."""
    return DEFAULT_DROPOUT if args.dropout is None else args.dropout


def add_pretrained_arg(parser):
    parser.add_argument("--pretrained", metavar="FOLDER",
                        help="a model folder (config.json, weights, vocab.txt) standing for --config, "
                             "--checkpoint and --vocab; 'chinese-small' is kerasformer's own embedded model")


def resolve_pretrained(args):
    """Fill ``--config/--checkpoint/--vocab`` from ``--pretrained`` (a folder, or the name of
    an embedded model); they must not be given beside it."""
    if not getattr(args, "pretrained", None):
        return args
    if args.config or args.checkpoint or args.vocab:
        raise SystemExit("--pretrained stands for --config, --checkpoint and --vocab: give one or the others")
    folder = args.pretrained
    if not os.path.isdir(folder):
        from kerasformer.embedded import MODELS, model_dir

        if folder not in MODELS:
            raise SystemExit(f"--pretrained {folder[:200]!r} is neither a folder nor an embedded model "
                             f"({', '.join(MODELS)})")
        folder = model_dir(folder)
    from kerasformer.models.transformer import find_config_file

    args.config, args.checkpoint = find_config_file(folder), folder
    args.vocab = os.path.join(folder, "vocab.txt")
    if not os.path.isfile(args.vocab):
        raise SystemExit(f"no vocab.txt in {folder[:200]}")
    return args


def pretrained_max_position(config_path):
    """How many positions the ``--config`` model's position table holds (``None`` when the
    config does not say). Our ``chinese-small`` holds 128, the length it was pretrained at."""
    if not config_path:
        return None
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None  # the loader reports a bad config in its own words
    value = config.get("max_position_embeddings", config.get("max_position")) if isinstance(config, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def cap_to_positions(args, name, needed=None, spare=0):
    """Shorten ``args.<name>`` (a length option) so that inputs fit the pretrained model's
    position table, saying so: a longer input would be refused by the model, and a table
    padded with rows that pretraining never trained (what ``chinese-small`` had before it
    was cut to 128) would be read silently. ``needed`` is the input length the option
    leads to (default: the option itself) and ``spare`` what the rest of the input takes."""
    limit = pretrained_max_position(getattr(args, "config", None))
    value = getattr(args, name)
    needed = value if needed is None else needed
    if limit is None or needed <= limit:
        return args
    capped = limit - spare
    if capped < 1:
        raise SystemExit(f"the pretrained model holds {limit} positions: too few for the rest of the input "
                         f"({spare} tokens)")
    print(f"--{name.replace('_', '-')} {value} -> {capped}: the pretrained model's position table holds "
          f"{limit} positions")
    setattr(args, name, capped)
    return args


def check_args(args):
    resolve_pretrained(args)
    cap_to_positions(args, "maxlen")
    if (args.checkpoint or args.config) and not (args.config and args.vocab):
        raise SystemExit("a pretrained model needs --config and --vocab (and --checkpoint for its weights)")
    for name in ("epochs", "batch_size", "maxlen"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if args.maxlen < 3:
        raise SystemExit("--maxlen must leave room for [CLS], one token and [SEP]")


def set_seed(seed):
    import keras

    keras.utils.set_random_seed(seed)


# ---------------------------------------------------------------------------- the encoder

def build_encoder(args, vocab_size, keep_tokens=None, **kwargs):
    """A BERT-style encoder as a kerasformer ``Transformer`` (``.model`` is the Keras model).

    From scratch (the default) its size comes from ``--layers/--hidden-size/--heads`` and
    ``max_position`` is ``--maxlen``; with ``--config`` it follows the config and, with
    ``--checkpoint``, loads the pretrained weights (every variable, or a clear error).
    """
    from kerasformer import build_transformer_model

    if args.config:
        return build_transformer_model(args.config, args.checkpoint, model=args.model, keep_tokens=keep_tokens,
                                       return_keras_model=False, **encoder_dropout(args), **kwargs)
    heads = args.heads or max(2, args.hidden_size // 64)
    return build_transformer_model(
        None, None, model=args.model, vocab_size=vocab_size, hidden_size=args.hidden_size,
        num_hidden_layers=args.layers, num_attention_heads=heads,
        intermediate_size=args.intermediate_size or 4 * args.hidden_size, max_position=args.maxlen,
        return_keras_model=False, **encoder_dropout(args), **kwargs)


def model_summary(args, transformer):
    if args.config:
        return {"pretrained_config": args.config, "checkpoint": args.checkpoint}
    return {"from_scratch": True, "layers": transformer.num_hidden_layers,
            "hidden_size": transformer.hidden_size, "heads": transformer.num_attention_heads,
            "intermediate_size": transformer.intermediate_size}


# ---------------------------------------------------------------------------- the optimizer

def lr_schedule(warmup, total_steps, decay_to=1.0):
    """The piecewise-linear multiplier schedule: rise from 0 to 1 over ``warmup`` steps, then
    (with ``decay_to < 1``) fall linearly to ``decay_to`` at ``total_steps``. ``None`` when
    the learning rate is constant."""
    schedule = {}
    if warmup > 0:
        schedule[int(warmup)] = 1.0
    if decay_to < 1.0 and total_steps > warmup:
        if not schedule:
            schedule[0] = 1.0
        schedule[int(total_steps)] = float(decay_to)
    return schedule or None


def make_optimizer(lr, schedule=None, ema_momentum=None):
    """Adam, extended with kerasformer's piecewise-linear learning rate when ``schedule`` is
    given and with its exponential moving average when ``ema_momentum`` is given (then
    ``optimizer.apply_ema_weights()`` / ``reset_old_weights()`` swap the averages in and out)."""
    import keras

    from kerasformer import optimizers as kopt

    cls, kwargs = keras.optimizers.Adam, {}
    if schedule:
        cls = kopt.extend_with_piecewise_linear_lr(cls)
        kwargs["lr_schedule"] = schedule
    if ema_momentum:
        cls = kopt.extend_with_exponential_moving_average(cls)
        kwargs["ema_momentum"] = ema_momentum
    return cls(learning_rate=lr, **kwargs)


# ---------------------------------------------------------------------------- the loss

def masked_token_loss(y_true, y_pred):
    """Mean sparse cross-entropy over the positions whose target is a token id
    (``y_true >= 0``; -1 marks positions that predict nothing, e.g. padding): bert4keras'
    CrossEntropy layer of its language-model examples, as a plain Keras loss."""
    import keras
    from keras import ops

    mask = ops.cast(y_true >= 0, "float32")
    ce = keras.losses.sparse_categorical_crossentropy(ops.maximum(y_true, 0), y_pred)
    return ops.sum(ce * mask) / ops.maximum(ops.sum(mask), 1.0)


# ---------------------------------------------------------------------------- batching

def bucket_length(n, multiple=16, maxlen=None):
    """The padded length of a batch whose longest example has ``n`` tokens: a multiple of
    ``multiple`` up to ``4 * multiple``, then a multiple of a quarter of the next power of two
    (16 32 48 64 96 128 192 256 384 512 ...), capped at ``maxlen``. A few fixed lengths keep
    JAX from compiling one program per batch length (each costs seconds), while padding
    stays under a third of the batch."""
    n = max(int(n), 1)
    if n > 4 * multiple:
        multiple = 1 << max(0, (n - 1).bit_length() - 2)
    n = -(-n // multiple) * multiple
    return min(n, maxlen) if maxlen else n


def length_batches(lengths, batch_size, shuffle, rng=None, pool=100):
    """Batches of indices. Unshuffled: consecutive examples in order. Shuffled: examples are
    shuffled, then sorted by length inside pools of ``pool`` batches, so that a batch holds
    examples of similar length (little padding) while the batch order stays random."""
    idx = np.arange(len(lengths))
    if not shuffle:
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    rng = rng or np.random
    idx = rng.permutation(len(lengths))
    batches = []
    chunk = batch_size * pool
    for i in range(0, len(idx), chunk):
        part = idx[i:i + chunk]
        part = part[np.argsort([lengths[j] for j in part], kind="stable")]
        batches.extend(part[k:k + batch_size] for k in range(0, len(part), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


# ---------------------------------------------------------------------------- output

def progress(iterable=None, quiet=False, **kwargs):
    """A tqdm progress bar (to stderr), or the bare iterable with ``quiet``."""
    from tqdm import tqdm

    return tqdm(iterable, disable=quiet, dynamic_ncols=True, **kwargs)


class Timer:
    """Named wall-clock timings: ``with timer('train'): ...``; ``timer.seconds`` is a dict."""

    def __init__(self):
        self.seconds = {}
        self.started = time.time()

    def __call__(self, name):
        timer = self

        class _Span:
            def __enter__(self):
                self.t0 = time.time()

            def __exit__(self, *exc):
                timer.seconds[name] = round(timer.seconds.get(name, 0.0) + time.time() - self.t0, 2)

        return _Span()

    def summary(self):
        return {**self.seconds, "total": round(time.time() - self.started, 2)}


def environment():
    import keras

    return {"backend": keras.backend.backend(), "keras": keras.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count()}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float):
        return round(value, 6)
    return value


def write_json(path, obj):
    """Write ``obj`` as JSON through a temporary file in the same folder and ``os.replace``:
    a reader never sees half a file, and an interrupted run leaves the previous one intact."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(_jsonable(obj), f, ensure_ascii=False, indent=2)
        f.write("\n")
    return path


def new_parser(description):
    return argparse.ArgumentParser(description=description,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
