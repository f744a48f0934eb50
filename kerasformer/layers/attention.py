"""Multi-head attention, the heart of every family."""
import keras
from keras import ops

from kerasformer import backend
from kerasformer.errors import KerasformerError
from kerasformer.layers.positions import apply_rotary

POSITION_BIAS_TYPES = (None, "typical_relative", "rotary")


def dense(layer, x):
    """``layer(x)`` for a built ``keras.layers.Dense`` sub-layer. A float layer runs as one
    matmul (+ bias + activation) without Keras' per-call bookkeeping, which dominates the
    cost of a single decoding step on small models; ``layer.kernel`` already includes a
    LoRA update (``enable_lora``). The weights stay in the Dense layer, so names,
    checkpoints and training are unchanged."""
    if layer.quantization_mode == "int8" and not layer.lora_enabled and layer.inputs_quantizer:
        matmul = backend.int8_matmul()
        if matmul is not None:  # Keras' int8 Dense, step by step, on a fast integer kernel
            x, x_scale = layer.inputs_quantizer(x, axis=-1)
            y = ops.cast(matmul(x, layer._kernel), layer.compute_dtype)
            y = ops.divide(y, ops.multiply(layer.kernel_scale, x_scale))
            if layer.use_bias:
                y = ops.add(y, layer.bias)
            return layer.activation(y) if layer.activation is not None else y
    if layer.quantization_mode is not None:
        # int4 / float8 / GPTQ ... (and int8 without a fast kernel): ``kernel`` is the raw
        # quantized tensor; only Keras' own quantized call applies the scales (and float8's
        # amax history)
        return layer(x)
    y = ops.matmul(x, ops.cast(layer.kernel, x.dtype))
    if layer.use_bias:
        y = y + ops.cast(layer.bias, x.dtype)
    return layer.activation(y) if layer.activation is not None else y


@keras.saving.register_keras_serializable(package="kerasformer")
class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product attention over ``heads`` heads.

    Called on ``[q, k, v]`` (or a single tensor for self-attention) with

    * ``attention_mask``: boolean, broadcastable to ``[batch, heads, q_len, k_len]``;
      False means "may not attend". Built once per model call (see ``kerasformer.masks``).
    * ``attention_bias``: optional additive bias of the same shape (relative positions).
    * ``position_bias``: position information consumed as ``position_bias_type`` says
      (see ``kerasformer.layers.positions``):

      - ``'typical_relative'`` (NEZHA; Shaw et al.): ``position_bias`` is ``r`` of shape
        ``[q_len, k_len, key_size]``; scores get ``q_i . r_ij`` added (before scaling) and
        the output gets ``sum_j p_ij r_ij`` added, as bert4keras' ``p_bias='typical_relative'``.
        Needs ``head_size == key_size``.
      - ``'rotary'`` (RoFormer): ``position_bias`` is the ``[1, length, key_size]`` sinusoid
        of ``SinusoidalPositionEmbedding``; queries and keys (and values too with
        ``rotary_value=True``, Hugging Face RoFormer's option) are rotated by position
        before the dot product (self-attention: queries and keys share the positions).

      Without ``position_bias`` the layer is plain attention whatever the type.

    ``head_size`` is the per-head size of values, ``key_size`` that of queries/keys
    (they differ in some Chinese models). Sub-layers ``q_dense``, ``k_dense``,
    ``v_dense``, ``o_dense`` hold the weights, so variable paths read
    ``<layer>/q_dense/kernel`` and so on.
    """

    def __init__(self, heads, head_size, out_dim=None, key_size=None, use_bias=True,
                 attention_dropout=0.0, attention_scale=True,
                 kernel_initializer="glorot_uniform", position_bias_type=None, rotary_value=False,
                 **kwargs):
        super().__init__(**kwargs)
        if position_bias_type not in POSITION_BIAS_TYPES:
            raise KerasformerError(f"unknown position_bias_type {position_bias_type!r}; "
                                   f"choose one of {POSITION_BIAS_TYPES}")
        self.heads = heads
        self.head_size = head_size
        self.out_dim = out_dim
        self.key_size = key_size or head_size
        self.use_bias = use_bias
        self.attention_dropout = attention_dropout
        self.attention_scale = attention_scale
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dropout = keras.layers.Dropout(attention_dropout)
        self.position_bias_type = position_bias_type
        self.rotary_value = bool(rotary_value)
        if position_bias_type == "typical_relative" and self.key_size != head_size:
            raise KerasformerError("position_bias_type='typical_relative' adds the same relative "
                                   f"embeddings to keys and values: key_size ({self.key_size}) must "
                                   f"equal head_size ({head_size})")
        if self.rotary_value and self.key_size != head_size:
            raise KerasformerError(f"rotary_value rotates values with the key table: key_size "
                                   f"({self.key_size}) must equal head_size ({head_size})")

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            q_shape, k_shape, v_shape = input_shape
        else:
            q_shape = k_shape = v_shape = input_shape
        out_dim = self.out_dim or self.heads * self.head_size  # bert4keras' default

        def dense(units, name, in_dim):
            layer = keras.layers.Dense(units, use_bias=self.use_bias, name=name,
                                       kernel_initializer=self.kernel_initializer)
            layer.build((None, in_dim))
            return layer

        self.q_dense = dense(self.heads * self.key_size, "q_dense", q_shape[-1])
        self.k_dense = dense(self.heads * self.key_size, "k_dense", k_shape[-1])
        self.v_dense = dense(self.heads * self.head_size, "v_dense", v_shape[-1])
        self.o_dense = dense(out_dim, "o_dense", self.heads * self.head_size)

    def _split_heads(self, x, size):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, length, self.heads, size))
        return ops.transpose(x, (0, 2, 1, 3))  # [batch, heads, length, size]

    def project_kv(self, k, v):
        """Keys and values split into heads, ``[batch, heads, length, size]``: what a
        static cache holds (T5's cross-attention over the encoder output)."""
        return (self._split_heads(dense(self.k_dense, k), self.key_size),
                self._split_heads(dense(self.v_dense, v), self.head_size))

    def call(self, inputs, attention_mask=None, attention_bias=None, position_bias=None,
             cache=None, cache_index=None, decoding=None, cross=False, training=None,
             return_attention_scores=False, mask=None, **unsupported):
        """With ``cache=(keys, values)`` (each ``[batch, heads, max_len, size]``) the layer
        decodes incrementally: the new keys/values are written at ``cache_index`` and the
        queries attend over the whole cache (the mask hides unwritten slots); it then
        returns ``(output, cache)``. ``cache_index=None`` marks a static cache, used as is.

        ``decoding`` (a ``kerasformer.generation.engine.DecodingState``): a cached forward
        pass. ``cache`` is then this application's entry of the state (None on the prefill,
        where it is allocated for ``decoding.max_len`` slots) and the new tokens go to slot
        ``decoding.cache_index``; ``cross=True`` marks keys/values from a source fixed over
        the decoding (T5's encodings), projected once on the prefill and reused as they
        are. Returns ``(output, new cache)``.

        ``return_attention_scores=True`` also returns the attention probabilities
        ``[batch, heads, q_len, k_len]`` (float32, before attention dropout) as the last
        element: ``(output, probs)``, or ``(output, cache, probs)`` with a cache.

        Without ``attention_mask``, the Keras mask of the values (bert4keras' ``v_mask``,
        e.g. from ``Embedding(mask_zero=True)``) keeps queries off padded keys, as in
        bert4keras; the families always pass their own ``attention_mask``.
        """
        if unsupported:
            raise KerasformerError(
                f"MultiHeadAttention got {', '.join(sorted(unsupported))}: bert4keras' a_bias / "
                "p_bias inputs are keyword arguments here: attention_bias=<additive bias>, "
                "position_bias=<table> with the layer's position_bias_type "
                "('typical_relative' or 'rotary')")
        if isinstance(inputs, (list, tuple)):
            q, k, v = inputs
        else:
            q = k = v = inputs
        if attention_mask is None and mask is not None:
            key_mask = mask[2] if isinstance(mask, (list, tuple)) else mask
            if key_mask is not None:
                attention_mask = ops.expand_dims(ops.expand_dims(ops.cast(key_mask, "bool"), 1), 1)
        if decoding is not None:
            cache, cache_index = self._decoding_cache(decoding, cache, cross, k, v)
        qw = self._split_heads(dense(self.q_dense, q), self.key_size)
        static_cache = cache is not None and cache_index is None
        if static_cache:
            kw, vw = cache
        else:
            kw, vw = self.project_kv(k, v)
        relative = None
        if position_bias is not None and self.position_bias_type == "rotary":
            if len(position_bias.shape) == 3:  # [batch or 1, length, depth] -> broadcast over heads
                position_bias = ops.expand_dims(position_bias, 1)
            qw = apply_rotary(position_bias, qw)
            kw = apply_rotary(position_bias, kw)
            if self.rotary_value:
                vw = apply_rotary(position_bias, vw)
        elif position_bias is not None and self.position_bias_type == "typical_relative":
            relative = ops.cast(position_bias, qw.dtype)  # [q_len, k_len, key_size]
        elif position_bias is not None:
            raise KerasformerError(f"layer '{self.name}' got a position_bias but has no "
                                   "position_bias_type to say how to use it")
        if cache is not None and not static_cache:
            # in place on torch, dynamic_update_slice on JAX: never a copy of the whole cache
            kw = backend.update_cache(cache[0], kw, cache_index)
            vw = backend.update_cache(cache[1], vw, cache_index)
            cache = (kw, vw)
        fused = None
        if relative is None and not return_attention_scores and not (training and self.attention_dropout):
            fused = backend.fused_attention()
        if fused is not None:
            # the same arithmetic in one kernel: the mask becomes an additive -1e30, which
            # swallows any score as the ``where`` below does (a fully masked row attends
            # uniformly either way)
            bias = None if attention_bias is None else ops.cast(attention_bias, qw.dtype)
            if attention_mask is not None:
                bias = ops.where(attention_mask, ops.cast(0.0, qw.dtype) if bias is None else bias,
                                 ops.cast(-1e30, qw.dtype))
            scale = self.key_size ** -0.5 if self.attention_scale else 1.0
            out = fused(qw, kw, vw, bias, scale)  # [batch, heads, q_len, head_size]
        else:
            out, attention = self._attend(qw, kw, vw, relative, attention_bias, attention_mask, training)
        out = ops.transpose(out, (0, 2, 1, 3))
        batch, length = ops.shape(out)[0], ops.shape(out)[1]
        out = ops.reshape(out, (batch, length, self.heads * self.head_size))
        out = dense(self.o_dense, out)
        if return_attention_scores:
            return (out, attention) if cache is None else (out, cache, attention)
        return out if cache is None else (out, cache)

    def _attend(self, qw, kw, vw, relative, attention_bias, attention_mask, training):
        """Attention with every step spelled out in ``keras.ops``: the output
        ``[batch, heads, q_len, head_size]`` and the probabilities (before dropout)."""
        scores = ops.matmul(qw, ops.transpose(kw, (0, 1, 3, 2)))
        if relative is not None:
            scores = scores + ops.einsum("bhqd,qkd->bhqk", qw, relative)
        if self.attention_scale:
            scores = scores / ops.cast(self.key_size, scores.dtype) ** 0.5
        if attention_bias is not None:
            scores = scores + ops.cast(attention_bias, scores.dtype)
        # softmax in float32: under bf16 the max-subtraction and sum lose too much
        scores = ops.cast(scores, "float32")
        if attention_mask is not None:
            scores = ops.where(attention_mask, scores, ops.cast(-1e30, "float32"))
        # over one key (decoding's first step from a one-token prompt) the softmax is 1,
        # and keras.ops.softmax warns that a size-1 axis is likely a mistake
        attention = ops.ones_like(scores) if scores.shape[-1] == 1 else ops.softmax(scores, axis=-1)
        probs = ops.cast(attention, vw.dtype)
        probs = self.dropout(probs, training=training)
        out = ops.matmul(probs, vw)  # [batch, heads, q_len, head_size]
        if relative is not None:
            out = out + ops.einsum("bhqk,qkd->bhqd", probs, relative)
        return out, attention

    def _decoding_cache(self, decoding, cache, cross, k, v):
        """(cache, cache_index) of a cached pass; see ``call``."""
        if cache is None and decoding.max_len is None:
            raise KerasformerError(f"no cache for attention layer {self.name}: caches are made "
                                   "on the prefill pass")
        if cross:
            return (self.project_kv(k, v) if cache is None else cache), None
        if cache is None:
            shape = (decoding.batch, self.heads, decoding.max_len)
            cache = (ops.zeros(shape + (self.key_size,), self.compute_dtype),
                     ops.zeros(shape + (self.head_size,), self.compute_dtype))
        return cache, decoding.cache_index

    def compute_mask(self, inputs, mask=None):
        # the output has the queries' time axis, so it keeps the queries' padding mask
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def compute_output_shape(self, input_shape):
        q_shape = input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape
        return tuple(q_shape[:-1]) + (self.out_dim or self.heads * self.head_size,)

    def get_config(self):
        config = super().get_config()
        config.update(heads=self.heads, head_size=self.head_size, out_dim=self.out_dim,
                      key_size=self.key_size, use_bias=self.use_bias,
                      attention_dropout=self.attention_dropout,
                      attention_scale=self.attention_scale,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        # only when used, so that configs of plain attention layers stay as they were
        if self.position_bias_type is not None:
            config.update(position_bias_type=self.position_bias_type, rotary_value=self.rotary_value)
        return config
