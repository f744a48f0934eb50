"""VAE parts: the reparameterised sample, the Gaussian KL term, and BN-VAE.

BN-VAE (Su Jianlin, "变分自编码器 + BN = 更好的VAE"; Zhu et al. 2020): in a text VAE with a
strong decoder the KL term tends to 0 (posterior collapse). Batch-normalising the posterior
mean ``mu`` with a scale ``gamma`` makes its batch mean of squares ``beta^2 + gamma^2``, so the
KL averaged over a batch is at least ``0.5 * sum_j gamma_j^2`` (the variance part of the KL,
``sigma^2 - log sigma^2 - 1``, is never negative). Su's parametrisation shares a free
``theta`` between the mean's scale ``gamma_mu^2 = tau + (1 - tau) sigmoid(theta)`` and the
log-variance's ``gamma_s^2 = (1 - tau) sigmoid(-theta)``, so the bound is at least
``0.5 * tau * d``.
"""
import keras
from keras import ops

from kerasformer.errors import KerasformerError


def kl_divergence(mean, log_var):
    """KL(N(mean, exp(log_var)) || N(0, I)) per example, summed over the last axis."""
    return 0.5 * ops.sum(ops.square(mean) + ops.exp(log_var) - log_var - 1.0, axis=-1)


class Sampling(keras.layers.Layer):
    """``[mean, log_var]`` -> ``mean + exp(log_var / 2) * eps`` with ``eps ~ N(0, I)``; pass
    ``noise=eps`` to supply it (compiled train steps draw their noise outside)."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, noise=None):
        mean, log_var = inputs
        if noise is None:
            noise = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * noise


class PosteriorBatchNorm(keras.layers.Layer):
    """BN-VAE: ``[mean, log_var]`` -> the same, batch-normalised with scales
    ``gamma_mu = sqrt(tau + (1 - tau) sigmoid(theta))`` and ``gamma_s = sqrt((1 - tau)
    sigmoid(-theta))`` per latent dimension (``theta`` learned, Su's parametrisation).

    Training normalises with the batch statistics exactly (``var`` floored at ``epsilon``,
    not shifted by it, so the batch variance of the output mean is exactly ``gamma_mu^2``
    and the bound holds to rounding); inference uses moving averages. The mean has a
    learned shift ``beta`` (which only raises the KL); the log-variance has none.
    """

    def __init__(self, tau=0.5, momentum=0.99, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < tau < 1.0:
            raise KerasformerError(f"tau must be in (0, 1), got {tau}")
        self.tau, self.momentum, self.epsilon = float(tau), float(momentum), float(epsilon)

    def build(self, input_shape):
        d = input_shape[0][-1]
        self.theta = self.add_weight(shape=(d,), initializer="zeros", name="theta")
        self.beta = self.add_weight(shape=(d,), initializer="zeros", name="beta")
        self.moving = [self.add_weight(shape=(d,), initializer=init, trainable=False, name=n)
                       for n, init in [("mean_mean", "zeros"), ("mean_var", "ones"),
                                       ("logvar_mean", "zeros"), ("logvar_var", "ones")]]

    def scales(self):
        """``(gamma_mu^2, gamma_s^2)``, each of shape ``(d,)``."""
        t = ops.sigmoid(self.theta)
        return self.tau + (1.0 - self.tau) * t, (1.0 - self.tau) * (1.0 - t)

    def kl_lower_bound(self):
        """``0.5 * sum_j gamma_mu_j^2``: the lower bound of the batch-averaged KL in training."""
        return 0.5 * ops.sum(self.scales()[0])

    def _normalize(self, x, moving_mean, moving_var, training):
        if training:
            mean = ops.mean(x, axis=0)
            var = ops.mean(ops.square(x - mean), axis=0)
            m = self.momentum
            moving_mean.assign(m * moving_mean + (1.0 - m) * mean)
            moving_var.assign(m * moving_var + (1.0 - m) * var)
        else:
            mean, var = moving_mean, moving_var
        return (x - mean) / ops.sqrt(ops.maximum(var, self.epsilon))

    def call(self, inputs, training=False):
        mean, log_var = inputs
        g_mu, g_s = self.scales()
        mean = self._normalize(mean, *self.moving[:2], training) * ops.sqrt(g_mu) + self.beta
        log_var = self._normalize(log_var, *self.moving[2:], training) * ops.sqrt(g_s)
        return mean, log_var
