"""Multi-head attention, the heart of every family."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasformer")
class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product attention over ``heads`` heads.

    Called on ``[q, k, v]`` (or a single tensor for self-attention) with

    * ``attention_mask``: boolean, broadcastable to ``[batch, heads, q_len, k_len]``;
      False means "may not attend". Built once per model call (see ``kerasformer.masks``).
    * ``attention_bias``: optional additive bias of the same shape (relative positions).

    ``head_size`` is the per-head size of values, ``key_size`` that of queries/keys
    (they differ in some Chinese models). Sub-layers ``q_dense``, ``k_dense``,
    ``v_dense``, ``o_dense`` hold the weights, so variable paths read
    ``<layer>/q_dense/kernel`` and so on.
    """

    def __init__(self, heads, head_size, out_dim=None, key_size=None, use_bias=True,
                 attention_dropout=0.0, attention_scale=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.head_size = head_size
        self.out_dim = out_dim
        self.key_size = key_size or head_size
        self.use_bias = use_bias
        self.attention_dropout = attention_dropout
        self.attention_scale = attention_scale
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dropout = keras.layers.Dropout(attention_dropout)

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            q_shape, k_shape, v_shape = input_shape
        else:
            q_shape = k_shape = v_shape = input_shape
        out_dim = self.out_dim or q_shape[-1]

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

    def call(self, inputs, attention_mask=None, attention_bias=None, training=None):
        if isinstance(inputs, (list, tuple)):
            q, k, v = inputs
        else:
            q = k = v = inputs
        qw = self._split_heads(self.q_dense(q), self.key_size)
        kw = self._split_heads(self.k_dense(k), self.key_size)
        vw = self._split_heads(self.v_dense(v), self.head_size)
        scores = ops.matmul(qw, ops.transpose(kw, (0, 1, 3, 2)))
        if self.attention_scale:
            scores = scores / ops.cast(self.key_size, scores.dtype) ** 0.5
        if attention_bias is not None:
            scores = scores + ops.cast(attention_bias, scores.dtype)
        # softmax in float32: under bf16 the max-subtraction and sum lose too much
        scores = ops.cast(scores, "float32")
        if attention_mask is not None:
            scores = ops.where(attention_mask, scores, ops.cast(-1e30, "float32"))
        probs = ops.cast(ops.softmax(scores, axis=-1), vw.dtype)
        probs = self.dropout(probs, training=training)
        out = ops.matmul(probs, vw)  # [batch, heads, q_len, head_size]
        out = ops.transpose(out, (0, 2, 1, 3))
        batch, length = ops.shape(out)[0], ops.shape(out)[1]
        out = ops.reshape(out, (batch, length, self.heads * self.head_size))
        return self.o_dense(out)

    def compute_output_shape(self, input_shape):
        q_shape = input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape
        return tuple(q_shape[:-1]) + (self.out_dim or q_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(heads=self.heads, head_size=self.head_size, out_dim=self.out_dim,
                      key_size=self.key_size, use_bias=self.use_bias,
                      attention_dropout=self.attention_dropout,
                      attention_scale=self.attention_scale,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
