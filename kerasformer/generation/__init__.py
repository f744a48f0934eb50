"""Decoding: the cached engine (``generate``) and bert4keras' ``AutoRegressiveDecoder``."""
from kerasformer.generation.autoregressive import AutoRegressiveDecoder
from kerasformer.generation.engine import generate

__all__ = ["AutoRegressiveDecoder", "generate"]
