"""kerasformer: the bert4keras toolbox for Keras 3 (JAX, PyTorch, TensorFlow).

JAX is the default backend: if neither ``KERAS_BACKEND`` nor an already imported
Keras has chosen one, importing kerasformer picks JAX (Keras alone would pick
TensorFlow, which kerasformer never needs).
"""
import os
import sys

if "keras" not in sys.modules and "KERAS_BACKEND" not in os.environ:
    os.environ["KERAS_BACKEND"] = "jax"

from kerasformer.errors import (CheckpointError, KerasformerError, UnsafeCheckpointError,  # noqa: E402
                                WeightMismatchError)

__version__ = "0.1.0"


def __getattr__(name):
    # Keras is imported on first use of a model name, not by `import kerasformer`: the
    # command line must choose the backend first, and `kerasformer --help` stays instant
    if name == "build_transformer_model":
        from kerasformer.models import build_transformer_model

        return build_transformer_model
    if name == "save_pretrained":
        from kerasformer.pretrained import save_pretrained

        return save_pretrained
    # the tokenizer and snippets are imported lazily: they need no Keras at all
    if name in ("Tokenizer", "load_vocab", "save_vocab"):
        from kerasformer.tokenizers import wordpiece

        return getattr(wordpiece, name)
    if name == "SpTokenizer":
        from kerasformer.tokenizers.sentencepiece import SpTokenizer

        return SpTokenizer
    if name in ("HFTokenizer", "load_tokenizer"):
        from kerasformer.tokenizers import hf

        return getattr(hf, name)
    if name in ("generate", "AutoRegressiveDecoder"):
        from kerasformer import generation

        return getattr(generation, name)
    if name in ("sequence_padding", "truncate_sequences", "DataGenerator", "text_segmentate", "to_array",
                "ViterbiDecoder"):
        from kerasformer import snippets

        return getattr(snippets, name)
    raise AttributeError(f"module 'kerasformer' has no attribute {name!r}")


__all__ = [
    "CheckpointError", "KerasformerError", "UnsafeCheckpointError", "WeightMismatchError",
    "build_transformer_model", "save_pretrained", "generate", "AutoRegressiveDecoder", "Tokenizer", "SpTokenizer",
    "HFTokenizer", "load_tokenizer", "load_vocab", "save_vocab", "sequence_padding",
    "truncate_sequences", "DataGenerator", "text_segmentate", "to_array",
]
