"""bert4keras layers that kerasformer's models do not use, with bert4keras 0.11.5's arguments
and formulas: ``ScaleOffset``, (conditional) ``LayerNormalization``, mask-aware
``GlobalAveragePooling1D`` / ``GlobalMaxPooling1D``, ``Concatenate1D`` and
``GatedAttentionUnit``. All of them accept and propagate Keras masks as bert4keras' did.
"""
import keras
import numpy as np
from keras import ops

# a module reference, not names: kerasformer.backend imports backend.bert4keras, which imports these
# layers, so the names exist only once backend.bert4keras has finished loading
from kerasformer import backend
from kerasformer.backend import bert4keras as _compat
from kerasformer.errors import KerasformerError
from kerasformer.layers.normalization import ConditionalShift


def integerize_shape(func):
    """bert4keras' decorator for ``build``: Keras 3 shapes are already ints or None."""
    return func


class Layer(keras.layers.Layer):
    """bert4keras' base layer: a ``keras.layers.Layer`` that passes masks through."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True


def _is_bool(tensor):
    return keras.backend.standardize_dtype(tensor.dtype) == "bool"


def _is_set(value):
    return value is not False and value is not None


@keras.saving.register_keras_serializable(package="kerasformer")
class ScaleOffset(ConditionalShift, keras.layers.Layer):
    """``x * gamma + beta`` over the last axis. ``scale`` / ``offset``: True for a trained
    ``gamma`` (ones) / ``beta`` (zeros), a number for a constant, False or None for none.
    ``conditional=True``: called on ``[x, cond]`` (``cond`` ``[batch, dim]``), and gamma / beta
    are shifted by zero-initialised dense projections of ``cond`` (through ``hidden_units``
    units with ``hidden_activation`` first, when given)."""

    def __init__(self, scale=True, offset=True, conditional=False, hidden_units=None,
                 hidden_activation="linear", hidden_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.scale = scale
        self.offset = offset
        self.conditional = conditional
        self.hidden_units = hidden_units
        self.hidden_activation = keras.activations.get(hidden_activation)
        self.hidden_initializer = keras.initializers.get(hidden_initializer)

    def build(self, input_shape):
        shape = input_shape[0] if self.conditional else input_shape
        dim = shape[-1]
        if self.offset is True:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        if self.scale is True:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        if self.conditional:  # bert4keras' weight order: beta before gamma
            self.build_projections(dim, input_shape[1][-1],
                                   ["beta"] * _is_set(self.offset) + ["gamma"] * _is_set(self.scale))

    def compute_mask(self, inputs, mask=None):
        if self.conditional:
            return None if mask is None else mask[0]
        return mask

    def _scale_offset(self, inputs, conds=None):
        if _is_set(self.scale):
            gamma = self.gamma if self.scale is True else self.scale
            if self.conditional:
                gamma = gamma + self.gamma_dense(conds)
            inputs = inputs * gamma
        if _is_set(self.offset):
            beta = self.beta if self.offset is True else self.offset
            if self.conditional:
                beta = beta + self.beta_dense(conds)
            inputs = inputs + beta
        return inputs

    def _split(self, inputs):
        if not self.conditional:
            return inputs, None
        inputs, conds = inputs
        return inputs, self.condition(inputs, conds)

    def call(self, inputs):
        return self._scale_offset(*self._split(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape[0] if self.conditional else input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset,
                "conditional": self.conditional, "hidden_units": self.hidden_units,
                "hidden_activation": keras.activations.serialize(self.hidden_activation),
                "hidden_initializer": keras.initializers.serialize(self.hidden_initializer)}


@keras.saving.register_keras_serializable(package="kerasformer")
class LayerNormalization(ScaleOffset):
    """bert4keras' (conditional) layer normalisation: ``x - mean`` (``zero_mean``), divided by
    ``sqrt(mean(x^2) + epsilon)`` (``unit_variance``; 0 where that is 0), then
    :class:`ScaleOffset` (``scale``, ``offset``, ``conditional``, ``hidden_*``). ``epsilon``
    defaults to Keras' ``epsilon()`` (1e-7), as bert4keras. kerasformer's models use
    :class:`kerasformer.layers.LayerNorm`."""

    def __init__(self, zero_mean=True, unit_variance=True, epsilon=None, **kwargs):
        super().__init__(**kwargs)
        self.zero_mean = zero_mean
        self.unit_variance = unit_variance
        self.epsilon = epsilon or keras.config.epsilon()

    def call(self, inputs):
        x, conds = self._split(inputs)
        if self.zero_mean:
            x = x - ops.mean(x, axis=-1, keepdims=True)
        if self.unit_variance:
            denominator = ops.sqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + self.epsilon)
            safe = ops.where(denominator == 0, ops.ones_like(denominator), denominator)
            x = ops.where(denominator == 0, ops.zeros_like(x), x / safe)  # divide_no_nan
        return self._scale_offset(x, conds)

    def get_config(self):
        return {**super().get_config(), "zero_mean": self.zero_mean,
                "unit_variance": self.unit_variance, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="kerasformer")
class GlobalAveragePooling1D(keras.layers.GlobalAveragePooling1D):
    """Mean over the sequence axis counting only unmasked steps (bert4keras)."""

    def call(self, inputs, mask=None):
        axis = 1 if self.data_format == "channels_last" else 2
        if mask is None:
            return ops.mean(inputs, axis=axis, keepdims=self.keepdims)
        mask = ops.cast(mask, inputs.dtype)
        mask = mask[..., None] if axis == 1 else mask[:, None]
        return ops.sum(inputs * mask, axis=axis, keepdims=self.keepdims) / ops.sum(mask, axis=axis, keepdims=self.keepdims)


@keras.saving.register_keras_serializable(package="kerasformer")
class GlobalMaxPooling1D(keras.layers.GlobalMaxPooling1D):
    """Max over the sequence axis ignoring masked steps (bert4keras)."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        axis = 1 if self.data_format == "channels_last" else 2
        return ops.max(_compat.sequence_masking(inputs, mask, -np.inf, axis), axis=axis, keepdims=self.keepdims)

    def compute_mask(self, inputs, mask=None):
        return None


@keras.saving.register_keras_serializable(package="kerasformer")
class Concatenate1D(keras.layers.Layer):
    """Concatenate sequences along the time axis; masks follow (a sequence without a mask
    counts as all real)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return ops.concatenate(list(inputs), axis=1)

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        masks = [ops.ones_like(x[..., 0], dtype="bool") if m is None else ops.cast(m, "bool")
                 for x, m in zip(inputs, mask)]
        return ops.concatenate(masks, axis=1)

    def compute_output_shape(self, input_shape):
        lengths = [s[1] for s in input_shape]
        length = sum(lengths) if all(n is not None for n in lengths) else None
        return (input_shape[0][0], length, input_shape[0][2])


@keras.saving.register_keras_serializable(package="kerasformer")
class GatedAttentionUnit(keras.layers.Layer):
    """Gated Attention Unit (Hua et al. 2022, https://arxiv.org/abs/2202.10447) as bert4keras.

    Self-attention (``self_attention=True``, called on ``x`` or ``[x, a_bias?, sinusoidal?]``):
    ``u, v, z = split(act(i_dense(x)), [units, units, key_size])``, ``q`` and ``k`` two
    :class:`ScaleOffset` of ``z``; otherwise on ``[q, k, v, ...]`` with ``u, q`` from
    ``uq_dense(q)``, ``k_dense(k)``, ``v_dense(v)``. Then ``a = q k^T (/ sqrt(key_size))``,
    ``A = attention_normalize(a, mask, normalization)`` ('squared_relu' by default),
    output ``o_dense(u * (A v))``. Call arguments: ``a_bias=True`` (the next input is an
    additive or boolean attention bias), ``p_bias='rotary'`` (the next input is the
    sinusoidal table of RoPE).

    ``attention_mask`` (kerasformer's families: boolean ``[batch, 1, q_len, k_len]`` or
    ``[batch, q_len, k_len]``, padding and the LM / UniLM mask together) replaces the Keras
    mask, as bert4keras' boolean ``a_bias`` combined with it: the length of 'squared_relu' /
    'softmax_plus' counts the keys each query may see.

    Cached decoding (self-attention only), as ``MultiHeadAttention``: with ``decoding`` (a
    ``kerasformer.generation.engine.DecodingState``) and ``cache`` (this unit's entry, None
    on the prefill, where it is allocated for ``decoding.max_len`` slots) the rotated keys
    and the values of the new tokens are written at ``decoding.cache_index``, the queries
    attend over the whole cache under ``attention_mask`` (the state's), and the call
    returns ``(output, new cache)``.
    """

    def __init__(self, units, key_size, activation="swish", use_bias=True, normalization="squared_relu",
                 self_attention=True, attention_scale=True, attention_dropout=None,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.units = units
        self.key_size = key_size
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.normalization = normalization
        self.self_attention = self_attention
        self.attention_scale = attention_scale
        self.attention_dropout = attention_dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dropout = keras.layers.Dropout(attention_dropout or 0.0)

    def _dense(self, units, name, in_dim, activation=None):
        layer = keras.layers.Dense(units, activation=activation, use_bias=self.use_bias,
                                   kernel_initializer=self.kernel_initializer, name=name)
        layer.build((None, in_dim))
        return layer

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
        hidden_size = shapes[0][-1]
        if self.self_attention:
            self.i_dense = self._dense(2 * self.units + self.key_size, "i_dense", hidden_size, self.activation)
            self.q_scaleoffset = ScaleOffset(offset=self.use_bias, name="q_scaleoffset")
            self.k_scaleoffset = ScaleOffset(offset=self.use_bias, name="k_scaleoffset")
            self.q_scaleoffset.build((None, self.key_size))
            self.k_scaleoffset.build((None, self.key_size))
        else:
            self.uq_dense = self._dense(self.units + self.key_size, "uq_dense", hidden_size, self.activation)
            self.k_dense = self._dense(self.key_size, "k_dense", shapes[1][-1], self.activation)
            self.v_dense = self._dense(self.units, "v_dense", shapes[2][-1], self.activation)
        self.o_dense = self._dense(hidden_size, "o_dense", self.units)

    def call(self, inputs, mask=None, a_bias=None, p_bias=None, attention_mask=None, cache=None,
             decoding=None, training=None):
        if not isinstance(inputs, (list, tuple)):
            inputs, mask = [inputs], [mask]
        inputs = list(inputs)
        if self.self_attention:
            x, n = inputs[0], 1
        else:
            (q, k, v), n = inputs[:3], 3
        # bert4keras: the mask of the first input is the key mask (self-attention's only one)
        mask = None if mask is None else mask[0]
        if a_bias:
            a_bias = inputs[n]
            n += 1
        else:
            a_bias = None
        if self.self_attention:
            x = self.i_dense(x)
            u, v, qk = x[..., :self.units], x[..., self.units:2 * self.units], x[..., 2 * self.units:]
            q, k = self.q_scaleoffset(qk), self.k_scaleoffset(qk)
        else:
            if decoding is not None:
                raise KerasformerError("GatedAttentionUnit: cached decoding needs self_attention=True")
            uq = self.uq_dense(q)
            u, q = uq[..., :self.units], uq[..., self.units:]
            k, v = self.k_dense(k), self.v_dense(v)
        if p_bias == "rotary":
            q, k = _compat.apply_rotary_position_embeddings(inputs[n], q, k)
        elif p_bias is not None:
            raise KerasformerError(f"GatedAttentionUnit: p_bias must be None or 'rotary', got {str(p_bias)[:30]!r}")
        if decoding is not None:
            cache = self._write_cache(decoding, cache, k, v)
            k, v = cache[0][:, 0], cache[1][:, 0]
        a = ops.einsum("bmd,bnd->bmn", q, k)
        if self.attention_scale:
            a = a / self.key_size ** 0.5
        a = ops.cast(a, "float32")  # normalised in float32, as MultiHeadAttention's softmax
        if attention_mask is not None:
            if len(attention_mask.shape) == 4:  # kerasformer's [batch, 1 (heads), q, k]
                attention_mask = attention_mask[:, 0]
            mask = None  # it holds the padding too
            if a_bias is not None and not _is_bool(a_bias):  # additive: added, the mask masks
                a, a_bias = a + ops.cast(a_bias, a.dtype), None
            a_bias = attention_mask if a_bias is None else ops.logical_and(a_bias, attention_mask)
        # hidden scores get a finite value: a query that sees no key (the left padding of a
        # decoding prefill) stays finite instead of NaN, which its values would carry on
        A = _compat.attention_normalize(a, mask, -1, self.normalization, a_bias, value=-1e30)  # noqa: N806
        if self.attention_dropout:
            A = self.dropout(A, training=training)  # noqa: N806
        out = self.o_dense(u * ops.einsum("bmn,bnd->bmd", ops.cast(A, v.dtype), v))
        return out if decoding is None else (out, cache)

    def _write_cache(self, decoding, cache, k, v):
        """The new rotated keys and values written into this unit's cache at
        ``decoding.cache_index``; ``[batch, 1, max_len, size]`` each (one head), so the cache
        update is ``MultiHeadAttention``'s (in place on torch)."""
        if cache is None:
            if decoding.max_len is None:
                raise KerasformerError(f"no cache for unit {self.name}: caches are made on the prefill pass")
            shape = (decoding.batch, 1, decoding.max_len)
            cache = (ops.zeros(shape + (self.key_size,), self.compute_dtype),
                     ops.zeros(shape + (self.units,), self.compute_dtype))
        index = decoding.cache_index
        return (backend.update_cache(cache[0], k[:, None], index),
                backend.update_cache(cache[1], v[:, None], index))

    def compute_mask(self, inputs, mask=None):
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def compute_output_shape(self, input_shape):
        return input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape

    def get_config(self):
        return {**super().get_config(), "units": self.units, "key_size": self.key_size,
                "activation": keras.activations.serialize(self.activation), "use_bias": self.use_bias,
                "normalization": self.normalization, "self_attention": self.self_attention,
                "attention_scale": self.attention_scale, "attention_dropout": self.attention_dropout,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


__all__ = ["Layer", "integerize_shape", "Concatenate1D", "GatedAttentionUnit", "GlobalAveragePooling1D", "GlobalMaxPooling1D",
           "LayerNormalization", "ScaleOffset"]
