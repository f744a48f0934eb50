"""Position encodings that are functions, not weights: NEZHA's relative embeddings and
RoFormer's rotary embeddings.

Neither holds a variable. Their tables are fixed sinusoids, so a checkpoint never stores
them (Huawei's NEZHA builds the table with numpy at graph time; Hugging Face keeps it as a
buffer), and computing them here means there is nothing to load and nothing to get wrong.

Both layers produce the ``position_bias`` that ``MultiHeadAttention`` consumes:

* :class:`RelativePositionEmbedding` -> ``[q_len, k_len, depth]``, used with
  ``position_bias_type='typical_relative'`` (NEZHA);
* :class:`SinusoidalPositionEmbedding` -> ``[1, length, depth]``, used with
  ``position_bias_type='rotary'`` (RoFormer, RoFormer-v2), applied by :func:`apply_rotary`.
"""
import keras
import numpy as np
from keras import ops

from kerasformer.errors import KerasformerError


def sinusoidal_table(num_positions, depth):
    """``[num_positions, depth]`` with ``table[p, 2i] = sin(p / 10000^(2i/depth))`` and
    ``table[p, 2i+1] = cos(...)`` (sin and cos interleaved), computed in float64.

    This is the table of Huawei's NEZHA code (``_generate_relative_positions_embeddings``)
    and of bert4keras' ``Sinusoidal`` initializer.
    """
    positions = np.arange(num_positions, dtype=np.float64)[:, None]
    inv_freq = np.power(10000.0, -2.0 * np.arange(depth // 2, dtype=np.float64) / depth)
    angles = positions * inv_freq[None, :]
    table = np.zeros((num_positions, depth), dtype=np.float64)
    table[:, 0: 2 * (depth // 2): 2] = np.sin(angles)
    table[:, 1: 2 * (depth // 2): 2] = np.cos(angles)
    return table


def relative_position_ids(q_len, k_len, max_relative_position, query_offset=0):
    """``ids[i, j] = clip(j - i, -K, K) + K``: the row of the relative table that query i
    uses for key j (NEZHA / Shaw et al. 2018, shifted so that ids are >= 0). Query i sits
    at position ``query_offset + i`` (cached decoding: the newest positions)."""
    q_idx = ops.arange(q_len, dtype="int32") + ops.cast(query_offset, "int32")
    q_idx = ops.expand_dims(q_idx, 1)
    k_idx = ops.expand_dims(ops.arange(k_len, dtype="int32"), 0)
    distance = ops.clip(k_idx - q_idx, -max_relative_position, max_relative_position)
    return distance + max_relative_position


@keras.saving.register_keras_serializable(package="kerasformer")
class RelativePositionEmbedding(keras.layers.Layer):
    """NEZHA's functional relative position encoding.

    Called on ``x`` (self-attention) or ``[q, k]``, returns ``[q_len, k_len, output_dim]``
    where entry ``(i, j)`` is row ``clip(j - i, -K, K) + K`` of :func:`sinusoidal_table`
    with ``2K + 1`` rows (``K = max_relative_position``, 64 in Huawei's release).

    Note the shift: the NEZHA paper writes the encoding as a sinusoid of ``j - i``, but the
    released code (and so the released checkpoints, bert4keras and Hugging Face) index the
    table by the clipped distance plus K, i.e. a sinusoid of ``clip(j - i) + K``. We follow
    the code, because that is what the weights were trained with.
    """

    def __init__(self, input_dim=None, output_dim=64, embeddings_initializer="zeros",
                 max_relative_position=None, **kwargs):
        # Two forms. kerasformer's (NEZHA): max_relative_position=K, the fixed sinusoid above.
        # bert4keras' RelativePositionEmbedding(input_dim, output_dim, embeddings_initializer):
        # a trained [input_dim, output_dim] table (zeros by default) read at the same rows,
        # with K = (input_dim - 1) // 2 (bert4keras' NEZHA = that with a Sinusoidal table).
        if max_relative_position is None and input_dim is None:
            max_relative_position = 64
        self.learned = max_relative_position is None
        if not self.learned:
            kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if self.learned:
            self.input_dim = int(input_dim)
            self.max_relative_position = (self.input_dim - 1) // 2
        else:
            self.max_relative_position = int(max_relative_position)
            self.input_dim = 2 * self.max_relative_position + 1
        self.output_dim = int(output_dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self._table = None if self.learned else sinusoidal_table(self.input_dim, self.output_dim)

    def build(self, input_shape):
        if self.learned:
            self.embeddings = self.add_weight(name="embeddings", shape=(self.input_dim, self.output_dim),
                                              initializer=self.embeddings_initializer)

    def call(self, inputs, query_offset=0, key_length=None, decoding=None):
        """``query_offset`` / ``key_length``: the queries are the positions from
        ``query_offset`` on, the keys ``key_length`` positions. A cached pass (``decoding``)
        sets both: queries at its cache index, keys the whole cache. Only j - i matters,
        and a left-padded row shifts its query and key positions alike, so cache slots
        serve as positions."""
        if decoding is not None:
            query_offset, key_length = decoding.cache_index, decoding.key_length
        q, k = inputs if isinstance(inputs, (list, tuple)) else (inputs, inputs)
        k_len = ops.shape(k)[1] if key_length is None else key_length
        ids = relative_position_ids(ops.shape(q)[1], k_len, self.max_relative_position, query_offset)
        if self.learned:
            table = self.embeddings
        else:
            table = ops.convert_to_tensor(self._table.astype(np.float32))
        return ops.cast(ops.take(table, ids, axis=0), self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return None  # a position table, not a sequence of the batch: no padding to carry

    def compute_output_spec(self, inputs):
        q, k = inputs if isinstance(inputs, (list, tuple)) else (inputs, inputs)
        return keras.KerasTensor((q.shape[1], k.shape[1], self.output_dim), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        if self.learned:
            config.update(input_dim=self.input_dim, output_dim=self.output_dim,
                          embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer))
        else:
            config.update(max_relative_position=self.max_relative_position, output_dim=self.output_dim)
        return config


@keras.saving.register_keras_serializable(package="kerasformer")
class SinusoidalPositionEmbedding(keras.layers.Layer):
    """Sin-cos position embeddings (bert4keras' ``SinusoidalPositionEmbedding``): for
    positions ``p`` the ``output_dim`` values ``sin(p * w_i), cos(p * w_i)`` interleaved, with
    ``w_i = 10000^(-2i / output_dim)``, merged with the input ``x`` ``[batch, length, ...]``
    as ``merge_mode`` says: 'add' (``x + pe``, the default), 'mul' (``x * (pe + 1)``),
    'concat' (along the last axis) or 'zero' (the table alone, ``[1, length, output_dim]``:
    RoFormer's rotary table). ``custom_position_ids=True``: called on ``[x, position_ids]``.

    Angles are computed in float32 whatever the compute dtype: in bf16 a position of a
    few hundred would lose whole radians.
    """

    def __init__(self, output_dim, merge_mode="add", custom_position_ids=False, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if output_dim % 2:
            raise KerasformerError(f"sinusoidal position embeddings need an even size, got {output_dim}")
        if merge_mode not in ("add", "mul", "zero", "concat"):
            raise KerasformerError(f"merge_mode must be 'add', 'mul', 'zero' or 'concat', got {str(merge_mode)[:20]!r}")
        self.output_dim = int(output_dim)
        self.merge_mode = merge_mode
        self.custom_position_ids = bool(custom_position_ids)
        self.supports_masking = True

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("merge_mode", "zero")  # saved before merge_mode existed: the rotary table
        return cls(**config)

    def table(self, positions):
        """``[..., output_dim]`` sinusoids of ``positions`` (float32)."""
        positions = ops.cast(positions, "float32")
        inv_freq = ops.convert_to_tensor(
            np.power(10000.0, -2.0 * np.arange(self.output_dim // 2) / self.output_dim).astype(np.float32))
        angles = ops.expand_dims(positions, -1) * inv_freq  # [..., depth/2]
        table = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)  # [..., depth/2, 2]
        return ops.reshape(table, tuple(ops.shape(positions)) + (self.output_dim,))

    def call(self, inputs, position_ids=None, decoding=None):
        """``position_ids`` (``[batch, length]``, optional): the positions to encode, giving
        ``[batch, length, output_dim]``; by default ``0 .. length - 1`` for every row. A
        cached pass (``decoding``) encodes its positions: every row of a left-padded batch
        numbers its own tokens (with rotary_value the output depends on absolute positions,
        not only on j - i)."""
        if decoding is not None:
            position_ids = decoding.positions
        if self.custom_position_ids:
            inputs, position_ids = inputs
        if position_ids is None:
            position_ids = ops.expand_dims(ops.arange(ops.shape(inputs)[1]), 0)
        table = self.table(position_ids)
        if self.merge_mode == "zero":
            return ops.cast(table, self.compute_dtype)
        table = ops.cast(table, inputs.dtype)
        if self.merge_mode == "add":
            return inputs + table
        if self.merge_mode == "mul":
            return inputs * (table + 1.0)
        table = ops.broadcast_to(table, tuple(ops.shape(inputs)[:2]) + (self.output_dim,))
        return ops.concatenate([inputs, table], axis=-1)

    def compute_mask(self, inputs, mask=None):
        if self.merge_mode == "zero":
            return None
        return mask[0] if self.custom_position_ids and mask is not None else mask

    def compute_output_spec(self, inputs, position_ids=None):
        if self.custom_position_ids:
            inputs, position_ids = inputs
        if self.merge_mode == "zero":
            batch = 1 if position_ids is None else position_ids.shape[0]
            return keras.KerasTensor((batch, inputs.shape[1], self.output_dim), dtype=self.compute_dtype)
        shape = tuple(inputs.shape)
        if self.merge_mode == "concat":
            shape = shape[:-1] + (None if shape[-1] is None else shape[-1] + self.output_dim,)
        return keras.KerasTensor(shape, dtype=inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "output_dim": self.output_dim, "merge_mode": self.merge_mode,
                "custom_position_ids": self.custom_position_ids}


def apply_rotary(sinusoidal, x):
    """Rotate consecutive pairs ``(x[2i], x[2i+1])`` of the last axis of ``x`` by the angles
    in ``sinusoidal`` (the output of :class:`SinusoidalPositionEmbedding`, broadcastable to
    ``x``):

        out[2i]   = x[2i] cos - x[2i+1] sin
        out[2i+1] = x[2i+1] cos + x[2i] sin

    which is Su et al.'s RoFormer and the ``rotate_half`` of bert4keras / Hugging Face
    RoFormer (pairs are interleaved, not split into halves as in GPT-NeoX / LLaMA).
    """
    shape = ops.shape(x)
    depth = shape[-1]
    pairs = ops.reshape(x, tuple(shape[:-1]) + (depth // 2, 2))
    table = ops.cast(sinusoidal, x.dtype)
    table = ops.reshape(table, tuple(ops.shape(table)[:-1]) + (depth // 2, 2))
    sin, cos = table[..., 0], table[..., 1]
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = ops.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)
    return ops.reshape(rotated, shape)
