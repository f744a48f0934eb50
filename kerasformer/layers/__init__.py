"""Composable Keras 3 layers; every one uses ``keras.ops`` only.

As ``bert4keras.layers`` (which star-imported ``keras.layers``), any other Keras layer name is
served too: ``from kerasformer.layers import Dense, Lambda, Input`` gives Keras' own.
"""
import keras as _keras

from kerasformer.layers.activations import gelu_erf, gelu_tanh, get_activation
from kerasformer.layers.attention import MultiHeadAttention
from kerasformer.layers.crf import ConditionalRandomField, MaximumEntropyMarkovModel
from kerasformer.layers.embeddings import Embedding, PositionEmbedding
from kerasformer.layers.feedforward import FeedForward
from kerasformer.layers.global_pointer import EfficientGlobalPointer, GlobalPointer
from kerasformer.layers.heads import BiasAdd, TakeToken
from kerasformer.layers.normalization import LayerNorm
from kerasformer.layers.positions import (RelativePositionEmbedding, SinusoidalPositionEmbedding,
                                          apply_rotary)
from kerasformer.layers.compat import (Concatenate1D, GatedAttentionUnit, GlobalAveragePooling1D,  # noqa: I001
                                       GlobalMaxPooling1D, Layer, LayerNormalization, ScaleOffset,
                                       integerize_shape)

# As bert4keras, which replaced them in keras.layers: Keras' own GlobalMaxPooling1D ignores the
# mask, so a ported script's keras.layers.GlobalMaxPooling1D() would silently pool padding.
# Ours equal Keras' on unmasked input.
for _name, _cls in [("GlobalAveragePooling1D", GlobalAveragePooling1D), ("GlobalAvgPool1D", GlobalAveragePooling1D),
                    ("GlobalMaxPooling1D", GlobalMaxPooling1D), ("GlobalMaxPool1D", GlobalMaxPooling1D)]:
    setattr(_keras.layers, _name, _cls)

__all__ = [
    "ConditionalRandomField", "EfficientGlobalPointer", "GlobalPointer", "MaximumEntropyMarkovModel",
    "RelativePositionEmbedding", "SinusoidalPositionEmbedding", "apply_rotary", "BiasAdd", "Embedding", "FeedForward", "LayerNorm", "MultiHeadAttention",
    "PositionEmbedding", "TakeToken", "gelu_erf", "gelu_tanh", "get_activation",
    "Concatenate1D", "GatedAttentionUnit", "GlobalAveragePooling1D", "GlobalMaxPooling1D",
    "Layer", "LayerNormalization", "Loss", "ScaleOffset", "integerize_shape",
]


def __getattr__(name):
    if name == "Loss":  # lives in kerasformer.training, which imports the layers: load it on use
        from kerasformer.training import Loss

        return Loss
    # bert4keras.layers did `from keras.layers import *`: Dense, Lambda, Input, Dropout, ...
    if not name.startswith("_") and hasattr(_keras.layers, name):
        return getattr(_keras.layers, name)
    raise AttributeError(f"module 'kerasformer.layers' has no attribute {name!r}")
