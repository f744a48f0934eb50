"""Token and position embeddings."""
import keras
from keras import ops

from kerasformer.errors import KerasformerError


@keras.saving.register_keras_serializable(package="kerasformer")
class Embedding(keras.layers.Embedding):
    """``keras.layers.Embedding`` that can also run backwards as the tied output layer.

    ``layer(ids)`` looks rows up; ``layer(hidden, mode='dense')`` multiplies by the
    transposed table, giving vocabulary logits that share weights with the input
    embedding (BERT's MLM head, GPT-2's LM head).
    """

    def __init__(self, *args, mask_id=None, **kwargs):
        super().__init__(*args, **kwargs)
        # bert4keras' token embedding is where the padding mask is born: ids equal to
        # ``mask_id`` are padding, and Keras carries the mask through every layer to the
        # model outputs, where Loss layers and the CRF read it. In mode='dense' the hidden
        # states' own mask passes through.
        self.mask_id = mask_id
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        if not keras.backend.standardize_dtype(inputs.dtype).startswith(("int", "uint")):
            return mask  # mode='dense': hidden states in, their mask out
        if self.mask_id is None:
            return None
        real = ops.not_equal(inputs, self.mask_id)
        # the first position always counts as real, as in bert4keras: T5's decoder input
        # starts with the padding id, and a row never is all padding
        return ops.concatenate([ops.ones_like(real[:, :1]), real[:, 1:]], axis=1)

    def get_config(self):
        return {**super().get_config(), "mask_id": self.mask_id}

    def call(self, inputs, mode="embedding"):
        if mode == "dense":
            return ops.matmul(inputs, ops.transpose(ops.cast(self.embeddings, inputs.dtype)))
        return super().call(inputs)

    def compute_output_shape(self, input_shape, mode="embedding"):
        if mode == "dense":
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, mode="embedding"):
        shape = self.compute_output_shape(inputs.shape, mode=mode)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="kerasformer")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embeddings (bert4keras' ``PositionEmbedding``).

    Positions are ``offset, offset + 1, ...`` by default; ``position_ids`` may be given as a
    call argument (Hugging Face RoBERTa numbers positions from ``pad_token_id + 1``) or, with
    ``custom_position_ids=True``, as a second input: ``layer([x, position_ids])``.
    ``merge_mode``: 'add' (``x + pe``), 'mul' (``x * (pe + 1)``), 'zero' (``pe`` alone) or
    'concat' (last axis). ``hierarchical`` (True = 0.4, or a float alpha): Su Jianlin's
    hierarchical decomposition (https://kexue.fm/archives/7947) reaching ``input_dim ** 2``
    positions: ``pe(i) = alpha u(i // n) + (1 - alpha) u(i % n)`` with
    ``u = (E - alpha E[0]) / (1 - alpha)``. Without it, a sequence longer than the table is
    refused with a message that says how to truncate, instead of silently clamping the gather.
    """

    def __init__(self, input_dim, output_dim, merge_mode="add", hierarchical=None,
                 embeddings_initializer="zeros", custom_position_ids=False, offset=0, **kwargs):
        super().__init__(**kwargs)
        if merge_mode not in ("add", "mul", "zero", "concat"):
            raise KerasformerError(f"merge_mode must be 'add', 'mul', 'zero' or 'concat', got {str(merge_mode)[:20]!r}")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.merge_mode = merge_mode
        self.hierarchical = hierarchical
        self.custom_position_ids = bool(custom_position_ids)
        self.offset = offset
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs, position_ids=None, decoding=None):
        """``position_ids``: rows of the table to read (``offset`` included); by default
        ``offset, offset + 1, ...``. A cached pass (``decoding``) reads its positions, each
        row of a left-padded batch numbering its own tokens from 0."""
        if decoding is not None:
            position_ids = decoding.positions + self.offset
        if self.custom_position_ids:
            inputs, position_ids = inputs
        seq_len = ops.shape(inputs)[1]
        if (not self.hierarchical and isinstance(seq_len, int)
                and seq_len + self.offset > self.input_dim):
            raise KerasformerError(
                f"input sequence has {seq_len} tokens but the position table of layer "
                f"'{self.name}' holds {self.input_dim - self.offset} positions "
                f"(max_position_embeddings={self.input_dim}); truncate the text, e.g. "
                f"Tokenizer.encode(text, maxlen={self.input_dim - self.offset})"
            )
        table = ops.cast(self.embeddings, self.compute_dtype)
        if self.hierarchical:
            if position_ids is None:
                position_ids = ops.expand_dims(ops.arange(seq_len) + self.offset, 0)
            alpha = 0.4 if self.hierarchical is True else self.hierarchical
            position_ids = ops.cast(position_ids, "int32")
            table = (table - alpha * table[:1]) / (1 - alpha)
            pos = (alpha * ops.take(table, position_ids // self.input_dim, axis=0)
                   + (1 - alpha) * ops.take(table, position_ids % self.input_dim, axis=0))
        elif position_ids is None:
            pos = ops.expand_dims(table[self.offset : self.offset + seq_len], 0)
        else:
            pos = ops.take(table, ops.cast(position_ids, "int32"), axis=0)
        if self.merge_mode == "zero":
            return pos
        pos = ops.cast(pos, inputs.dtype)
        if self.merge_mode == "add":
            return inputs + pos
        if self.merge_mode == "mul":
            return inputs * (pos + 1.0)
        pos = ops.broadcast_to(pos, tuple(ops.shape(inputs)[:2]) + (self.output_dim,))
        return ops.concatenate([inputs, pos], axis=-1)

    def compute_mask(self, inputs, mask=None):
        if self.custom_position_ids and mask is not None:
            mask = mask[0]
        return None if self.merge_mode == "zero" else mask

    def compute_output_spec(self, inputs, position_ids=None):
        if self.custom_position_ids:
            inputs, position_ids = inputs
        shape = tuple(inputs.shape)
        if self.merge_mode == "zero":
            batch = 1 if position_ids is None else position_ids.shape[0]
            return keras.KerasTensor((batch, shape[1], self.output_dim), dtype=self.compute_dtype)
        if self.merge_mode == "concat":
            shape = shape[:-1] + (None if shape[-1] is None else shape[-1] + self.output_dim,)
        return keras.KerasTensor(shape, dtype=inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            merge_mode=self.merge_mode,
            hierarchical=self.hierarchical,
            custom_position_ids=self.custom_position_ids,
            offset=self.offset,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config
