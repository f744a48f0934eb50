"""bert4keras' ``bert4keras.backend`` helpers with their 0.11.5 meanings, on ``keras.ops``
(every backend). Re-exported by :mod:`kerasformer.backend`, so a bert4keras script's
``from bert4keras.backend import keras, K, search_layer, sequence_masking, ...`` becomes
``from kerasformer.backend import ...`` unchanged. ``K`` is :mod:`kerasformer.keras2`.

Where an implementation already exists in kerasformer it is reused: the losses
(:mod:`kerasformer.losses`), ``piecewise_linear`` (:mod:`kerasformer.optimizers`), the rotary
rotation (:func:`kerasformer.layers.positions.apply_rotary`), the GELUs
(:mod:`kerasformer.layers.activations`) and gradient checkpointing
(:func:`kerasformer.backend.recompute_call`).
"""
import functools
import os

import keras
import numpy as np
from keras import ops

from kerasformer import keras2 as K
from kerasformer.backend import BERT4KERAS, private
from kerasformer.errors import KerasformerError
from kerasformer.keras2 import flatten, reshape, where  # noqa: F401 - bert4keras exports them
from kerasformer.layers import activations as _activations
from kerasformer.layers.activations import gelu_erf, gelu_tanh
from kerasformer.layers.positions import apply_rotary
from kerasformer.losses import multilabel_categorical_crossentropy, sparse_multilabel_categorical_crossentropy
from kerasformer.optimizers import piecewise_linear

is_tf_keras = False  # there is only one Keras now
do_recompute = os.environ.get("RECOMPUTE", "0").lower() in ("1", "true", "yes", "on")


def set_gelu(version):
    """Choose what the activation name 'gelu' means in the kerasformer models (and
    :func:`kerasformer.layers.get_activation`) built afterwards: ``'erf'`` (exact, the
    default) or ``'tanh'`` (the approximation). As in bert4keras, layers already built keep
    theirs. Keras' own ``Dense(activation='gelu')`` is Keras' exact GELU either way."""
    version = str(version).lower()
    if version not in ("erf", "tanh"):
        raise KerasformerError(f"set_gelu: version must be 'erf' or 'tanh', got {version[:20]!r}")
    _activations._ACTIVATIONS["gelu"] = gelu_erf if version == "erf" else gelu_tanh


def get_available_gpus():
    try:
        return [str(d) for d in keras.distribution.list_devices("gpu")]
    except Exception:  # noqa: BLE001 - no GPU support in this backend build
        return []


def symbolic(f):
    return f


def graph_mode_decorator(f, *args, **kwargs):
    raise KerasformerError("graph_mode_decorator wraps TensorFlow 1 graph internals, which Keras 3 "
                           "does not have; use kerasformer.backend.recompute_call for checkpointing")


# -------------------------------------------------------------------------- layers

def _history_layer(x):
    if isinstance(x, keras.layers.Layer):
        return x
    history = private.keras_history(x)
    if history is None:
        raise KerasformerError(
            "search_layer needs a layer, a model or a symbolic Keras tensor (a model's input or "
            "output). Inside a loss the tensors are concrete and carry no graph: for bert4keras' "
            "gradient-penalty / adversarial-training examples use kerasformer.training."
            "gradient_penalty(model) / adversarial_training(model)")
    return history[0]


def search_layer(inputs, name, exclude_from=None):
    """The layer called ``name`` found by walking the graph upwards from ``inputs`` (a layer,
    a model or a symbolic tensor), looking inside nested models; ``None`` if there is none."""
    seen = exclude_from if exclude_from is not None else set()
    queue = [_history_layer(inputs)]
    while queue:
        layer = queue.pop(0)
        if layer.name == name:
            return layer
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            queue.extend(layer.layers)
        for node in private.get(layer, "_inbound_nodes"):
            for tensor in node.input_tensors:
                history = private.keras_history(tensor)
                if history is not None:
                    queue.append(history[0])
    return None


# ------------------------------------------------------------------------- tensors

def align(tensor, axes, ndim=None):
    """Batched ``expand_dims``: axis ``i`` of ``tensor`` becomes axis ``axes[i]`` of a tensor
    with ``ndim`` axes (size-1 axes everywhere else)."""
    if len(axes) != len(tensor.shape):
        raise KerasformerError(f"align: {len(axes)} axes for a tensor with {len(tensor.shape)}")
    if not (ndim or min(axes) >= 0):
        raise KerasformerError("align: negative axes need ndim")
    ndim = ndim or max(axes) + 1
    kept = sorted(a % ndim for a in axes)
    for position in range(ndim):
        if position not in kept:
            tensor = ops.expand_dims(tensor, position)
    return tensor


def dtype(x):
    """``K.dtype`` that returns ``None`` for non-tensors (bert4keras' tolerant version)."""
    try:
        return K.dtype(x)
    except AttributeError:
        return None


def sequence_masking(x, mask=None, value=0, axis=None, bias=None, return_mask=False):
    """bert4keras' conditional masking: where ``mask`` ([batch, length], on axis ``axis`` of
    ``x``, default 1; a list of axes masks each) is false, ``x`` becomes ``value`` ('-inf' and
    'inf' accepted); ``bias`` is an extra additive bias, or a bool mask combined with ``mask``."""
    if isinstance(value, str):
        value = {"-inf": -np.inf, "inf": np.inf}[value]
    if not (mask is None and bias is None):
        if mask is None:
            if K.dtype(bias) == "bool":
                mask = bias
                x = ops.where(mask, x, value)
            else:
                x = x + bias
        else:
            axes = [1] if axis is None else (list(axis) if isinstance(axis, (list, tuple)) else [axis])
            axes = [a if a >= 0 else len(x.shape) + a for a in axes]
            mask = ops.cast(mask, "bool")
            full_mask = align(mask, [0, axes[0]], len(x.shape))
            for a in axes[1:]:
                full_mask = full_mask & align(mask, [0, a], len(x.shape))
            mask = full_mask
            if bias is None:
                x = ops.where(mask, x, value)
            elif K.dtype(bias) == "bool":
                mask = ops.logical_and(mask, bias)
                x = ops.where(mask, x, value)
            else:
                x = ops.where(mask, x + bias, value)
    if return_mask:
        return x, mask
    return x


def batch_gather(params, indices):
    """``tf.gather(params, indices, batch_dims=ndim(indices) - 1)``: per leading index, pick
    entries of ``params``' next axis (trailing axes of ``params`` come along)."""
    indices = ops.cast(indices, "int32")
    rank = len(indices.shape)
    extra = tuple(params.shape[rank:])
    if extra:
        indices = ops.reshape(indices, tuple(ops.shape(indices)) + (1,) * len(extra))
        indices = ops.broadcast_to(indices, tuple(ops.shape(indices)[:rank]) + tuple(ops.shape(params)[rank:]))
    return ops.take_along_axis(params, indices, axis=rank - 1)


def pool1d(x, pool_size, strides=1, padding="valid", data_format=None, pool_mode="max"):
    """Pooling along the sequence axis of ``[batch, length, dim]``."""
    pool = ops.max_pool if pool_mode == "max" else ops.average_pool
    return pool(x, pool_size, strides=strides, padding=padding, data_format=data_format or "channels_last")


def divisible_temporal_padding(x, n):
    """Right-pad the sequence axis so its length is a multiple of ``n``."""
    length = ops.shape(x)[1]
    pad = (-length) % n
    return ops.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (len(x.shape) - 2))


def root_mean_square(x, axis=None, keepdims=False):
    return ops.sqrt(ops.mean(ops.square(x), axis=axis, keepdims=keepdims))


def swish(x):
    return ops.silu(x)


def leaky_relu(x, alpha=0.2):
    return ops.leaky_relu(x, negative_slope=alpha)


def attention_normalize(a, mask=None, axis=-1, method="softmax", bias=None, value=-np.inf):
    """bert4keras' attention normalisations: 'softmax', 'squared_relu' (relu(a)^2 / length,
    https://arxiv.org/abs/2202.10447) and 'softmax_plus' (softmax(a * log(l) / log(512)), with
    the length ``l`` at least 16, https://kexue.fm/archives/8823). The length counts the keys
    a query may see: ``mask`` (the keys) and a boolean ``bias`` (e.g. an LM / UniLM mask)
    together, so under a causal mask it is per query.

    ``value``: what hidden scores become (bert4keras: -inf). A finite one keeps a query that
    may see no key finite (bert4keras gives NaN there, which the values carry into later
    layers), as the left padding of a decoding prefill needs; squared_relu divides by at
    least 1 (such a query gets zeros, not 0/0)."""
    a, mask = sequence_masking(a, mask, value, axis, bias, True)
    if method == "softmax":
        return ops.softmax(a, axis=axis)
    if mask is None:
        length = ops.cast(ops.shape(a)[-1], a.dtype)
    else:
        length = ops.sum(ops.cast(mask, a.dtype), axis=axis, keepdims=True)
    if method == "squared_relu":
        return ops.relu(a) ** 2 / ops.maximum(length, 1)
    if method == "softmax_plus":
        a = a * ops.log(ops.maximum(length, 16)) / np.log(512)
        if mask is not None:
            # hidden scores exactly ``value`` again: XLA may fuse the scale into the softmax
            # as an FMA, and a finite value's exact product minus its rounded max overflows
            # exp (NaN for a query that sees no key)
            a = ops.where(mask, a, value)
        return ops.softmax(a, axis=axis)
    raise KerasformerError(f"attention_normalize: unknown method {str(method)[:40]!r}")


# ----------------------------------------------------------------------- positions

def sinusoidal_embeddings(pos, dim, base=10000):
    """``[..., dim]`` sinusoids of positions ``pos``: ``sin(p * base^(-2i/dim))`` at ``2i`` and
    ``cos`` at ``2i + 1`` (interleaved)."""
    if dim % 2:
        raise KerasformerError(f"sinusoidal_embeddings: dim must be even, got {dim}")
    indices = ops.arange(0, dim // 2, dtype="float32")
    indices = ops.power(float(base), -2.0 * indices / dim)
    angles = ops.expand_dims(ops.cast(pos, "float32"), -1) * indices
    embeddings = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
    return flatten(embeddings, -2)


@keras.saving.register_keras_serializable(package="kerasformer")
class Sinusoidal(keras.initializers.Initializer):
    """Sin-cos position table initialiser (``[size, dim]``)."""

    def __call__(self, shape, dtype=None):
        size, dim = shape
        return ops.cast(sinusoidal_embeddings(ops.arange(size, dtype="float32"), dim), dtype or "float32")


def apply_rotary_position_embeddings(sinusoidal, *tensors):
    """RoPE: rotate each of ``tensors`` ([b, n, ..., d]) by the angles of ``sinusoidal``
    ([b, n, d], from :func:`sinusoidal_embeddings`). One tensor in, one out; else a list."""
    if not tensors:
        raise KerasformerError("apply_rotary_position_embeddings: at least one input tensor")
    if any(tuple(t.shape) != tuple(tensors[0].shape) for t in tensors[1:]):
        raise KerasformerError("apply_rotary_position_embeddings: all tensors must have the same shape")
    sinusoidal = align(sinusoidal, [0, 1, -1], len(tensors[0].shape))
    outputs = [apply_rotary(sinusoidal, t) for t in tensors]
    return outputs[0] if len(outputs) == 1 else outputs


# ------------------------------------------------------------------ recomputation

def recompute_grad(call):
    """Decorator for a layer's ``call``: gradient checkpointing when the environment variable
    ``RECOMPUTE=1`` is set (as bert4keras), else ``call`` unchanged. See
    :func:`kerasformer.backend.recompute_call`."""
    if not do_recompute:
        return call

    @functools.wraps(call)
    def inner(self, *args, **kwargs):
        from kerasformer.backend import recompute_call

        return recompute_call(self, functools.partial(call, self))(*args, **kwargs)

    return inner


__all__ = list(BERT4KERAS)
