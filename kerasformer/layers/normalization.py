"""Layer normalisation, plain or conditional (bert4keras' ``layer_norm_cond``)."""
import keras
from keras import ops

from kerasformer import backend


class ConditionalShift:
    """The conditional part of a (conditional) norm, shared by :class:`LayerNorm` and
    bert4keras' ``ScaleOffset`` / ``LayerNormalization``: gamma and beta shifted by
    zero-initialised dense projections of a condition ``cond``, through ``hidden_units`` units
    with ``hidden_activation`` first when given. The layer sets ``hidden_units``,
    ``hidden_activation`` and ``hidden_initializer``."""

    def build_projections(self, dim, cond_dim, names):
        """The projections for ``names`` ('gamma' / 'beta'), created in that order (the
        checkpoint's weight order) after the hidden layer."""
        if self.hidden_units:
            self.hidden_dense = keras.layers.Dense(
                self.hidden_units, activation=self.hidden_activation, use_bias=False,
                kernel_initializer=self.hidden_initializer, name="hidden_dense")
            self.hidden_dense.build((None, cond_dim))
            cond_dim = self.hidden_units
        for name in names:
            dense = keras.layers.Dense(dim, use_bias=False, kernel_initializer="zeros", name=f"{name}_dense")
            dense.build((None, cond_dim))
            setattr(self, f"{name}_dense", dense)

    def condition(self, x, cond):
        """``cond`` through the hidden layer, broadcast over ``x``'s middle axes (``cond`` is
        ``[batch, dim]``, one vector per example, or already ``x``'s rank)."""
        if self.hidden_units:
            cond = self.hidden_dense(cond)
        while len(cond.shape) < len(x.shape):
            cond = ops.expand_dims(cond, 1)
        return cond


@keras.saving.register_keras_serializable(package="kerasformer")
class LayerNorm(ConditionalShift, keras.layers.Layer):
    """LayerNorm over the last axis, optionally conditioned on a second input.

    With ``conditional=True`` the layer is called on ``[x, cond]`` and gamma/beta are
    shifted by zero-initialised dense projections of ``cond`` (conditional LayerNorm,
    as used in bert4keras for conditional text generation). Because the projections
    start at zero, a pretrained model's behaviour is unchanged until it is fine-tuned.

    ``center=False`` and ``scale=False`` drop beta / gamma (RoFormer-v2's scale-free
    norm); ``rms=True`` normalises by the root mean square without centring (T5).
    Weights, in checkpoint order: gamma, beta.
    """

    def __init__(self, epsilon=1e-12, center=True, scale=True, rms=False, conditional=False,
                 hidden_units=None, hidden_activation="linear", hidden_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.rms = rms
        self.conditional = conditional
        self.hidden_units = hidden_units
        self.hidden_activation = hidden_activation
        self.hidden_initializer = keras.initializers.get(hidden_initializer)

    def build(self, input_shape):
        shape = input_shape[0] if self.conditional else input_shape
        dim = shape[-1]
        if self.scale:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        if self.center:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        if self.conditional:
            self.build_projections(dim, input_shape[1][-1], ["gamma"] * self.scale + ["beta"] * self.center)

    def call(self, inputs):
        if self.conditional:
            x, cond = inputs
            cond = self.condition(x, cond)
        else:
            x = inputs
            if self.scale and self.center and not self.rms:
                # the fused kernel where the backend has one (torch's F.layer_norm)
                return backend.layer_norm(x, self.gamma, self.beta, self.epsilon)
        # normalise in float32 even under mixed precision: the variance is fragile in bf16
        dtype = x.dtype
        x = ops.cast(x, "float32")
        if self.rms:
            variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
        else:
            x = x - ops.mean(x, axis=-1, keepdims=True)
            variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
        x = x * ops.rsqrt(variance + self.epsilon)
        x = ops.cast(x, dtype)
        if self.scale:
            gamma = ops.cast(self.gamma, dtype)
            if self.conditional:
                gamma = gamma + self.gamma_dense(cond)
            x = x * gamma
        if self.center:
            beta = ops.cast(self.beta, dtype)
            if self.conditional:
                beta = beta + self.beta_dense(cond)
            x = x + beta
        return x

    def compute_mask(self, inputs, mask=None):
        if self.conditional and isinstance(mask, (list, tuple)):
            return mask[0]  # the condition is one vector per example: x's mask is the mask
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape[0] if self.conditional else input_shape

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, center=self.center, scale=self.scale, rms=self.rms,
                      conditional=self.conditional, hidden_units=self.hidden_units,
                      hidden_activation=self.hidden_activation,
                      hidden_initializer=keras.initializers.serialize(self.hidden_initializer))
        return config
