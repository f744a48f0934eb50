"""Composable Keras 3 layers; every one uses ``keras.ops`` only."""
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

__all__ = [
    "ConditionalRandomField", "EfficientGlobalPointer", "GlobalPointer", "MaximumEntropyMarkovModel",
    "RelativePositionEmbedding", "SinusoidalPositionEmbedding", "apply_rotary", "BiasAdd", "Embedding", "FeedForward", "LayerNorm", "MultiHeadAttention",
    "PositionEmbedding", "TakeToken", "gelu_erf", "gelu_tanh", "get_activation",
]
