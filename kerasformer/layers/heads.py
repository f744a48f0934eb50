"""Small output-side layers."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasformer")
class BiasAdd(keras.layers.Layer):
    """Adds a learned bias over the last axis (BERT's MLM output bias)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs + ops.cast(self.bias, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="kerasformer")
class TakeToken(keras.layers.Layer):
    """``x[:, index]``: the [CLS] vector for pooling."""

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, inputs):
        return inputs[:, self.index]

    def compute_mask(self, inputs, mask=None):
        return None  # one vector per sequence: no time axis left to mask

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@keras.saving.register_keras_serializable(package="kerasformer")
class TakePositions(keras.layers.Layer):
    """``[x, positions] -> x[b, positions[b]]``: the vectors at chosen positions of every
    sequence (the masked tokens of an MLM batch, so the head runs on those alone)."""

    def call(self, inputs):
        x, positions = inputs
        return ops.take_along_axis(x, ops.expand_dims(ops.cast(positions, "int32"), -1), axis=1)

    def compute_mask(self, inputs, mask=None):
        return None  # padded slots are marked by their target (-1), not by a mask

    def compute_output_shape(self, input_shape):
        x, positions = input_shape
        return (x[0], positions[1], x[2])
