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
    """Learned absolute position embeddings, added to the input sequence.

    ``position_ids`` may be given explicitly (Hugging Face RoBERTa numbers positions
    from ``pad_token_id + 1`` and skips padding); otherwise positions are
    ``offset, offset + 1, ...``. A sequence longer than the table is refused with a
    message that says how to truncate, instead of silently clamping the gather.
    """

    def __init__(self, input_dim, output_dim, offset=0, embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.offset = offset
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs, position_ids=None):
        seq_len = ops.shape(inputs)[1]
        if isinstance(seq_len, int) and seq_len + self.offset > self.input_dim:
            raise KerasformerError(
                f"input sequence has {seq_len} tokens but the position table of layer "
                f"'{self.name}' holds {self.input_dim - self.offset} positions "
                f"(max_position_embeddings={self.input_dim}); truncate the text, e.g. "
                f"Tokenizer.encode(text, maxlen={self.input_dim - self.offset})"
            )
        table = ops.cast(self.embeddings, inputs.dtype)
        if position_ids is None:
            pos = table[self.offset : self.offset + seq_len]
            return inputs + ops.expand_dims(pos, 0)
        return inputs + ops.take(table, ops.cast(position_ids, "int32"), axis=0)

    def compute_output_spec(self, inputs, position_ids=None):
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            offset=self.offset,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config
