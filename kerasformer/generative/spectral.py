"""Spectral normalisation (Miyato et al. 2018) as a Dense layer.

The kernel's largest singular value ``sigma`` is estimated by power iteration from a stored
vector ``u`` (with the iterates held constant for the gradient, as in the paper); the
layer uses ``W / sigma`` (``coeff=None``: Lipschitz constant 1, for a GAN discriminator) or
``W * min(1, coeff / sigma)`` (i-ResNet: only shrink, to at most ``coeff``). In training
(``training=True``) the improved ``u`` is written back, so one iteration per step tracks
the kernel as it changes; at inference ``u`` is left as is and the call is deterministic.
"""
import keras
from keras import ops

from kerasformer.backend import private
from kerasformer.errors import KerasformerError


def _l2_normalize(x, eps=1e-12):
    return x / (ops.sqrt(ops.sum(ops.square(x))) + eps)


class SpectralDense(keras.layers.Layer):
    def __init__(self, units, coeff=None, power_iterations=1, use_bias=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        if coeff is not None and coeff <= 0:
            raise KerasformerError(f"coeff must be > 0, got {coeff}")
        self.units, self.coeff, self.use_bias = int(units), coeff, use_bias
        self.power_iterations = int(power_iterations)
        self.seed = seed

    def build(self, input_shape):
        init = keras.initializers.GlorotUniform(seed=self.seed)
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer=init, name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias") if self.use_bias else None
        self.u = self.add_weight(shape=(self.units,), trainable=False, name="u",
                                 initializer=keras.initializers.RandomNormal(seed=self.seed))

    def sigma(self, iterations=None, update=False):
        """The power-iteration estimate of the kernel's spectral norm (no gradient through
        the iterates, gradient through the kernel)."""
        w = self.kernel
        u = ops.stop_gradient(self.u)
        ws = ops.stop_gradient(w)
        for _ in range(self.power_iterations if iterations is None else iterations):
            v = _l2_normalize(ops.matmul(ws, u))
            u = _l2_normalize(ops.matmul(ops.transpose(ws), v))
        if update:
            self.u.assign(u)
        v = _l2_normalize(ops.matmul(ws, u))
        return ops.sum(v * ops.matmul(w, u))

    def normalized_kernel(self, training=False):
        sigma = self.sigma(update=training)
        if self.coeff is None:
            return self.kernel / sigma
        return self.kernel * ops.minimum(1.0, self.coeff / sigma)

    def call(self, x, training=False):
        y = ops.matmul(x, self.normalized_kernel(training))
        return y if self.bias is None else y + self.bias


def update_spectral_norms(layer, iterations=1):
    """One (or more) power iterations for every :class:`SpectralDense` inside ``layer``,
    written back: run it after each optimizer step when the forward pass is not called with
    ``training=True`` (flows), so the estimates track the kernels as they change."""
    for sub in private.sublayers(layer):
        if isinstance(sub, SpectralDense):
            sub.sigma(iterations=iterations, update=True)
