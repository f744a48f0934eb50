"""Position-wise feed-forward block."""
import keras

from kerasformer.layers.activations import activation_name, get_activation
from kerasformer.layers.attention import dense


@keras.saving.register_keras_serializable(package="kerasformer")
class FeedForward(keras.layers.Layer):
    """``o_dense(act(i0_dense(x)))``; with a list of activations, the gated form
    ``o_dense(act0(i0_dense(x)) * act1(i1_dense(x)) * ...)`` used by T5.1.1 / mT5.
    The default activation is bert4keras' ('relu'); the models pass their config's.
    """

    def __init__(self, units, activation="relu", use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        if not isinstance(activation, (list, tuple)):
            activation = [activation]
        self.activation = [activation_name(a) for a in activation]
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True  # position-wise: the padding mask passes through

    def build(self, input_shape):
        dim = input_shape[-1]
        self.input_denses = []
        for i, act in enumerate(self.activation):
            layer = keras.layers.Dense(self.units, use_bias=self.use_bias, name=f"i{i}_dense",
                                       kernel_initializer=self.kernel_initializer)
            layer.build((None, dim))
            setattr(self, f"i{i}_dense", layer)
            self.input_denses.append((layer, get_activation(act)))
        self.o_dense = keras.layers.Dense(dim, use_bias=self.use_bias, name="o_dense",
                                          kernel_initializer=self.kernel_initializer)
        self.o_dense.build((None, self.units))

    def call(self, inputs):
        x = None
        for layer, act in self.input_denses:
            h = act(dense(layer, inputs))
            x = h if x is None else x * h
        return dense(self.o_dense, x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
