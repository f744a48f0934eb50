"""Gumbel-softmax: a differentiable stand-in for sampling a categorical variable.

``argmax(logits + g)`` with ``g`` standard Gumbel noise is an exact sample of
``softmax(logits)`` (the Gumbel-max trick); replacing the argmax by
``softmax((logits + g) / temperature)`` makes it differentiable, and as the temperature
goes to 0 the soft sample goes to that one-hot sample. The straight-through variant
returns the one-hot sample forward and the soft sample's gradient backward.
"""
import keras
from keras import ops

from kerasformer.errors import KerasformerError


def gumbel_noise(shape, seed=None, eps=1e-20):
    """Standard Gumbel noise ``-log(-log(u))``, ``u ~ U(0, 1)``."""
    u = keras.random.uniform(shape, minval=0.0, maxval=1.0, seed=seed)
    return -ops.log(-ops.log(u + eps) + eps)


def gumbel_softmax(logits, temperature=1.0, hard=False, noise=None, seed=None):
    """A relaxed one-hot sample of ``softmax(logits)`` over the last axis.

    ``noise``: Gumbel noise of the logits' shape (drawn with ``seed`` when None).
    ``hard=True``: the one-hot ``argmax`` forward, the soft sample's gradient backward.
    """
    if isinstance(temperature, (int, float)) and temperature <= 0:  # a tensor may anneal it
        raise KerasformerError(f"temperature must be > 0, got {temperature}")
    if noise is None:
        noise = gumbel_noise(ops.shape(logits), seed=seed)
    soft = ops.softmax((logits + noise) / temperature, axis=-1)
    if not hard:
        return soft
    one_hot = ops.one_hot(ops.argmax(soft, axis=-1), ops.shape(logits)[-1], dtype=soft.dtype)
    return one_hot + (soft - ops.stop_gradient(soft))  # exactly one-hot forward


class GumbelSoftmax(keras.layers.Layer):
    """Layer form of :func:`gumbel_softmax`; at inference (``training=False``) it returns the
    one-hot argmax of the logits (the mode) unless ``sample_at_inference``."""

    def __init__(self, temperature=1.0, hard=False, sample_at_inference=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.temperature, self.hard, self.sample_at_inference = temperature, hard, sample_at_inference
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, logits, training=False, noise=None):
        if not training and not self.sample_at_inference:
            return ops.one_hot(ops.argmax(logits, axis=-1), ops.shape(logits)[-1], dtype=logits.dtype)
        if noise is None:
            noise = gumbel_noise(ops.shape(logits), seed=self.seed_generator)
        return gumbel_softmax(logits, self.temperature, self.hard, noise=noise)
