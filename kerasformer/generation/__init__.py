"""Decoding: the cached engine (``generate``), its allowed-token constraints and
bert4keras' ``AutoRegressiveDecoder``."""
from kerasformer.generation.autoregressive import AutoRegressiveDecoder
from kerasformer.generation.constraints import SpanConstraint, TrieConstraint
from kerasformer.generation.engine import generate

__all__ = ["AutoRegressiveDecoder", "SpanConstraint", "TrieConstraint", "generate"]
