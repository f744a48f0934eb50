"""Span-scoring heads for named-entity recognition and relation extraction: Su Jianlin's
GlobalPointer (https://kexue.fm/archives/8373) and Efficient GlobalPointer
(https://kexue.fm/archives/8877), with bert4keras' exact formulas and masking.

Both map ``[batch, length, hidden]`` to ``[batch, heads, length, length]`` where entry
``(h, i, j)`` scores "tokens i..j form an entity of type h". Train them with
``kerasformer.losses.global_pointer_crossentropy`` (a span is predicted when its score > 0).

Masking, as bert4keras (``mask`` [batch, length], true on real tokens; passed explicitly or
as a Keras mask): rows and columns of padded tokens are *set* to -1e12, and with
``tril_mask=True`` the strictly lower triangle (end before start) has 1e12 *subtracted*.
GlobalPointer masks before dividing by ``sqrt(head_size)`` (so masked entries are about
-1e12 / sqrt(head_size)), the efficient variant after -- both exactly as bert4keras. Scores
are computed in float32 (-1e12 does not fit in float16).
"""
import keras
import numpy as np
from keras import ops

from kerasformer.layers.positions import SinusoidalPositionEmbedding, apply_rotary

NEG_INF = 1e12  # bert4keras' infinity


def _mask_spans(logits, mask, tril_mask):
    """bert4keras' ``sequence_masking(..., '-inf', 2)``, ``(..., 3)`` and the triangle."""
    if mask is not None:
        mask = ops.cast(mask, "bool")
        rows = mask[:, None, :, None]
        cols = mask[:, None, None, :]
        logits = ops.where(rows, logits, -NEG_INF)
        logits = ops.where(cols, logits, -NEG_INF)
    if tril_mask:
        length = ops.shape(logits)[-1]
        upper = ops.triu(ops.ones((length, length), dtype="float32"))  # j >= i
        logits = logits - (1.0 - upper) * NEG_INF
    return logits


@keras.saving.register_keras_serializable(package="kerasformer")
class GlobalPointer(keras.layers.Layer):
    """``s_h(i, j) = <R_i q_{h,i}, R_j k_{h,j}> / sqrt(head_size)`` with ``[q; k]`` per head from
    one dense layer (``dense``: hidden -> heads * 2 * head_size, head h taking the h-th slice,
    its first half q and second half k) and ``R_i`` RoFormer's rotation for position i
    (``RoPE=True``; interleaved pairs, as :func:`kerasformer.layers.positions.apply_rotary`).
    """

    def __init__(self, heads, head_size, RoPE=True, use_bias=True, tril_mask=True,  # noqa: N803
                 kernel_initializer="lecun_normal", **kwargs):
        super().__init__(**kwargs)
        self.heads = int(heads)
        self.head_size = int(head_size)
        self.RoPE = bool(RoPE)
        self.use_bias = bool(use_bias)
        self.tril_mask = bool(tril_mask)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.rotary_table = SinusoidalPositionEmbedding(self.head_size, merge_mode="zero", name="rotary_table")

    def build(self, input_shape):
        self.dense = keras.layers.Dense(self.heads * self.head_size * 2, use_bias=self.use_bias,
                                        kernel_initializer=self.kernel_initializer, name="dense")
        self.dense.build(input_shape)

    def _rotate(self, x, reference):
        """RoPE on ``x`` [batch, length, (heads,) head_size]."""
        if not self.RoPE:
            return x
        table = ops.cast(self.rotary_table(reference), "float32")  # [1, length, head_size]
        if len(x.shape) == 4:
            table = ops.expand_dims(table, 2)
        return apply_rotary(table, x)

    def call(self, inputs, mask=None):
        x = ops.cast(self.dense(inputs), "float32")
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, length, self.heads, 2 * self.head_size))
        qw, kw = x[..., :self.head_size], x[..., self.head_size:]
        qw, kw = self._rotate(qw, inputs), self._rotate(kw, inputs)
        logits = ops.einsum("bmhd,bnhd->bhmn", qw, kw)
        logits = _mask_spans(logits, mask, self.tril_mask)
        return logits / np.sqrt(self.head_size).astype("float32")

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, inputs, mask=None):
        return keras.KerasTensor((inputs.shape[0], self.heads, inputs.shape[1], inputs.shape[1]),
                                 dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(heads=self.heads, head_size=self.head_size, RoPE=self.RoPE, use_bias=self.use_bias,
                      tril_mask=self.tril_mask,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.saving.register_keras_serializable(package="kerasformer")
class EfficientGlobalPointer(GlobalPointer):
    """Efficient GlobalPointer: one shared ``(q, k)`` projection for all heads plus a per-head
    additive term:

        p = p_dense(x)                               # hidden -> 2 * head_size
        q, k = p[..., 0::2], p[..., 1::2]            # interleaved, RoPE applied to both
        b = q_dense(p)                               # 2 * head_size -> 2 * heads
        s_h(i, j) = <q_i, k_j> / sqrt(head_size) + (b[j, 2h] + b[i, 2h+1]) / 2

    then the masks (after the scaling, unlike :class:`GlobalPointer`).
    """

    def build(self, input_shape):
        self.p_dense = keras.layers.Dense(self.head_size * 2, use_bias=self.use_bias,
                                          kernel_initializer=self.kernel_initializer, name="p_dense")
        self.p_dense.build(input_shape)
        self.q_dense = keras.layers.Dense(self.heads * 2, use_bias=self.use_bias,
                                          kernel_initializer=self.kernel_initializer, name="q_dense")
        self.q_dense.build(tuple(input_shape[:-1]) + (self.head_size * 2,))

    def call(self, inputs, mask=None):
        p = self.p_dense(inputs)
        x = ops.cast(p, "float32")
        qw, kw = x[..., 0::2], x[..., 1::2]
        qw, kw = self._rotate(qw, inputs), self._rotate(kw, inputs)
        logits = ops.einsum("bmd,bnd->bmn", qw, kw) / np.sqrt(self.head_size).astype("float32")
        bias = ops.transpose(ops.cast(self.q_dense(p), "float32"), (0, 2, 1)) / 2  # [batch, 2*heads, length]
        # even units score the end token j, odd units the start token i
        logits = logits[:, None] + bias[:, 0::2, None, :] + bias[:, 1::2, :, None]
        return _mask_spans(logits, mask, self.tril_mask)
