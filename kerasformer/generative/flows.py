"""Normalising flows: NICE, RealNVP, Glow and the invertible ResNet.

Every flow is a Keras layer with ``forward(x) -> (y, log_det)`` (``log_det`` per example:
``log |det dy/dx|``), ``inverse(y) -> x`` and ``log_det(x)``; calling the layer returns
``y``. Flows compose with :class:`FlowSequence`. A density model is
``log p(x) = log N(forward(x)[0]; 0, I) + log_det`` (:func:`standard_normal_log_prob`).

Vector flows (NICE, RealNVP, i-ResNet) act on ``(batch, dim)``; Glow's steps act on images
``(batch, height, width, channels)`` and :class:`Glow` maps an image to a flat code.
"""
import math

import numpy as np
import keras
from keras import ops

from kerasformer.backend import private
from kerasformer.errors import KerasformerError


def standard_normal_log_prob(z):
    """``log N(z; 0, I)`` per example, summed over every axis but the first."""
    z = ops.reshape(z, (ops.shape(z)[0], -1))
    return -0.5 * ops.sum(ops.square(z) + math.log(2 * math.pi), axis=-1)


def bits_per_dim(log_prob, dims, levels=None):
    """Negative log-likelihood in bits per dimension. ``levels``: for data dequantised from
    ``levels`` discrete values to ``[0, 1)``, each unit cell has volume ``levels**-dims``, so
    the discrete NLL adds ``dims * log(levels)``."""
    nll = -log_prob + (dims * math.log(levels) if levels else 0.0)
    return nll / (dims * math.log(2.0))


# ----------------------------------------------------------------------------- base

class Flow(keras.layers.Layer):
    """An invertible layer: subclasses implement ``_forward`` and ``_inverse``."""

    def forward(self, x):
        x = ops.convert_to_tensor(x)
        self._build_for(x)
        return self._forward(x)

    def inverse(self, y):
        if not self.built:
            raise KerasformerError(f"flow {self.name!r} is not built: call forward() on a batch first")
        return self._inverse(y)

    def log_det(self, x):
        return self.forward(x)[1]

    def call(self, x):
        return self.forward(x)[0]

    def _build_for(self, x):
        if not self.built:
            self.build(tuple(x.shape))
            self.built = True

    def build(self, input_shape):
        pass

    def _zeros(self, x):
        return ops.zeros((ops.shape(x)[0],), dtype=x.dtype)


class FlowSequence(Flow):
    """``flows`` applied in order; log-determinants add."""

    def __init__(self, flows, **kwargs):
        super().__init__(**kwargs)
        self.flows = list(flows)

    def _forward(self, x):
        total = self._zeros(x)
        for flow in self.flows:
            x, ld = flow.forward(x)
            total = total + ld
        return x, total

    def _inverse(self, y):
        for flow in reversed(self.flows):
            y = flow.inverse(y)
        return y


def data_init(flow, x):
    """Run ``flow`` once on ``x`` (eagerly) with every :class:`ActNorm` inside initialising
    itself from its input: zero mean, unit variance per channel (Glow's data-dependent init)."""
    norms = [l for l in private.sublayers(flow) if isinstance(l, ActNorm)]
    for norm in norms:
        norm.pending_init = True
    try:
        return flow.forward(x)
    finally:
        for norm in norms:
            norm.pending_init = False


# -------------------------------------------------------------------- masks and MLPs

def parity_mask(dim, parity=0):
    """1 on the coordinates ``i % 2 == parity`` (they pass through a coupling unchanged)."""
    return (np.arange(dim) % 2 == parity).astype("float32")


def checkerboard_mask(height, width, parity=0, channels=1):
    """RealNVP's checkerboard over a ``height x width x channels`` image, flattened."""
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    board = ((i + j) % 2 == parity).astype("float32")
    return np.repeat(board[:, :, None], channels, axis=2).reshape(-1)


def _mlp(hidden, out, name):
    layers = [keras.layers.Dense(h, activation="relu", name=f"{name}_{i}") for i, h in enumerate(hidden)]
    return layers + [keras.layers.Dense(out, name=f"{name}_out")]


def _apply(layers, x):
    for layer in layers:
        x = layer(x)
    return x


class _MaskedCoupling(Flow):
    """Shared by NICE's and RealNVP's couplings: ``mask`` (length ``dim``, 1 = conditioner)."""

    def __init__(self, mask, hidden=(64, 64), **kwargs):
        super().__init__(**kwargs)
        self.mask_values = np.asarray(mask, dtype="float32")
        if self.mask_values.ndim != 1 or not np.isin(self.mask_values, (0.0, 1.0)).all():
            raise KerasformerError("a coupling mask is a 1-D array of zeros and ones")
        self.hidden = tuple(hidden)

    def build(self, input_shape):
        if input_shape[-1] != self.mask_values.shape[0]:
            raise KerasformerError(f"coupling mask has {self.mask_values.shape[0]} entries, "
                                   f"the input has {input_shape[-1]} features")
        self.net = _mlp(self.hidden, self._net_outputs(input_shape[-1]), "net")

    def _mask(self, x):
        return ops.cast(ops.convert_to_tensor(self.mask_values), x.dtype)


class AdditiveCoupling(_MaskedCoupling):
    """NICE: ``y = x + (1 - b) * m(b * x)``; volume preserving (``log_det = 0``)."""

    def _net_outputs(self, dim):
        return dim

    def _forward(self, x):
        b = self._mask(x)
        return x + (1.0 - b) * _apply(self.net, b * x), self._zeros(x)

    def _inverse(self, y):
        b = self._mask(y)
        return y - (1.0 - b) * _apply(self.net, b * y)


class Scaling(Flow):
    """NICE's final diagonal scaling ``y = x * exp(s)``, ``log_det = sum(s)``."""

    def build(self, input_shape):
        self.log_scale = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="log_scale")

    def _forward(self, x):
        return x * ops.exp(self.log_scale), self._zeros(x) + ops.sum(self.log_scale)

    def _inverse(self, y):
        return y * ops.exp(-self.log_scale)


class AffineCoupling(_MaskedCoupling):
    """RealNVP: ``y = b * x + (1 - b) * (x * exp(s) + t)`` with ``(s, t)`` functions of ``b * x``;
    ``s = scale * tanh(.)`` (a learned per-feature scale on a bounded output, as RealNVP)."""

    def _net_outputs(self, dim):
        return 2 * dim

    def build(self, input_shape):
        super().build(input_shape)
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def _shift_log_scale(self, x):
        b = self._mask(x)
        h = _apply(self.net, b * x)
        d = self.mask_values.shape[0]
        s = (1.0 - b) * self.scale * ops.tanh(h[..., :d])
        t = (1.0 - b) * h[..., d:]
        return s, t

    def _forward(self, x):
        s, t = self._shift_log_scale(x)
        return x * ops.exp(s) + t, ops.sum(s, axis=-1)

    def _inverse(self, y):
        s, t = self._shift_log_scale(y)  # b * y == b * x: the conditioner sees the same input
        return (y - t) * ops.exp(-s)


# ---------------------------------------------------------------------------- Glow

def _positions(x):
    """Number of spatial positions (every axis but batch and channels)."""
    return math.prod(x.shape[1:-1])


class ActNorm(Flow):
    """``y = (x + bias) * exp(log_scale)`` per channel; ``log_det = positions * sum(log_scale)``.
    Initialise from data with :func:`data_init`."""

    pending_init = False

    def build(self, input_shape):
        c = input_shape[-1]
        self.bias = self.add_weight(shape=(c,), initializer="zeros", name="bias")
        self.log_scale = self.add_weight(shape=(c,), initializer="zeros", name="log_scale")

    def _forward(self, x):
        if self.pending_init:
            axes = tuple(range(len(x.shape) - 1))
            mean = ops.mean(x, axis=axes)
            std = ops.sqrt(ops.mean(ops.square(x - mean), axis=axes))
            self.bias.assign(-mean)
            self.log_scale.assign(-ops.log(std + 1e-6))
        y = (x + self.bias) * ops.exp(self.log_scale)
        return y, self._zeros(x) + _positions(x) * ops.sum(self.log_scale)

    def _inverse(self, y):
        return y * ops.exp(-self.log_scale) - self.bias


def _plu(a):
    """``a = P @ L @ U`` (partial pivoting; L unit lower-triangular), in numpy."""
    n = a.shape[0]
    u, lower, perm = a.astype("float64").copy(), np.eye(n), np.arange(n)
    for k in range(n):
        p = k + int(np.argmax(np.abs(u[k:, k])))
        u[[k, p]], perm[[k, p]] = u[[p, k]], perm[[p, k]]
        lower[[k, p], :k] = lower[[p, k], :k]
        for i in range(k + 1, n):
            lower[i, k] = u[i, k] / u[k, k]
            u[i, k:] -= lower[i, k] * u[k, k:]
    return np.eye(n)[perm].T, lower, u


class InvertibleConv1x1(Flow):
    """Glow's invertible 1x1 convolution in the LU parametrisation: ``W = P L (U + diag(sign *
    exp(log_s)))`` with ``P`` fixed, so ``log_det = positions * sum(log_s)`` costs O(C).
    Initialised from a random rotation (``seed``), as Glow."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed

    def build(self, input_shape):
        c = input_shape[-1]
        q, _ = np.linalg.qr(np.random.default_rng(self.seed).normal(size=(c, c)))
        p, lower, upper = _plu(q)
        diag = np.diag(upper)
        self.permutation = p.astype("float32")
        self.sign = np.sign(diag).astype("float32")
        const = keras.initializers.Constant
        self.lower = self.add_weight(shape=(c, c), initializer=const(np.tril(lower, -1)), name="lower")
        self.upper = self.add_weight(shape=(c, c), initializer=const(np.triu(upper, 1)), name="upper")
        self.log_s = self.add_weight(shape=(c,), initializer=const(np.log(np.abs(diag))), name="log_s")

    def weight(self):
        c = self.log_s.shape[0]
        eye = ops.eye(c)
        lower = ops.tril(self.lower, -1) + eye
        upper = ops.triu(self.upper, 1) + ops.diag(ops.convert_to_tensor(self.sign) * ops.exp(self.log_s))
        return ops.matmul(ops.convert_to_tensor(self.permutation), ops.matmul(lower, upper))

    def _forward(self, x):
        y = ops.matmul(x, ops.transpose(self.weight()))
        return y, self._zeros(x) + _positions(x) * ops.sum(self.log_s)

    def _inverse(self, y):
        return ops.matmul(y, ops.transpose(ops.inv(self.weight())))


class GlowCoupling(Flow):
    """Glow's affine coupling over channels: the first half conditions ``(shift, scale)`` of
    the second through conv3x3-ReLU-conv1x1-ReLU-conv3x3 (last one zero-initialised, so the
    step starts as the identity); ``y_b = (x_b + shift) * sigmoid(raw + 2)``."""

    def __init__(self, hidden=32, **kwargs):
        super().__init__(**kwargs)
        self.hidden = int(hidden)

    def build(self, input_shape):
        c = input_shape[-1]
        if c < 2:
            raise KerasformerError(f"an affine coupling needs at least 2 channels, got {c}")
        self.split = c // 2
        self.net = [keras.layers.Conv2D(self.hidden, 3, padding="same", activation="relu"),
                    keras.layers.Conv2D(self.hidden, 1, activation="relu"),
                    keras.layers.Conv2D(2 * (c - self.split), 3, padding="same", kernel_initializer="zeros")]

    def _shift_scale(self, xa):
        h = _apply(self.net, xa)
        cb = h.shape[-1] // 2
        return h[..., :cb], ops.sigmoid(h[..., cb:] + 2.0)

    def _forward(self, x):
        xa, xb = x[..., :self.split], x[..., self.split:]
        shift, scale = self._shift_scale(xa)
        y = ops.concatenate([xa, (xb + shift) * scale], axis=-1)
        return y, ops.sum(ops.reshape(ops.log(scale), (ops.shape(x)[0], -1)), axis=-1)

    def _inverse(self, y):
        ya, yb = y[..., :self.split], y[..., self.split:]
        shift, scale = self._shift_scale(ya)
        return ops.concatenate([ya, yb / scale - shift], axis=-1)


def squeeze(x):
    """``(B, H, W, C)`` -> ``(B, H/2, W/2, 4C)``: each 2x2 patch becomes channels."""
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h // 2, 2, w // 2, 2, c))
    return ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, h // 2, w // 2, 4 * c))


def unsqueeze(x):
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h, w, 2, 2, c // 4))
    return ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, 2 * h, 2 * w, c // 4))


class Glow(Flow):
    """Glow's multi-scale architecture: ``levels`` times (squeeze, ``steps`` x (actnorm,
    invertible 1x1 conv, affine coupling), split off half the channels as a code, except at
    the last level). Maps ``(B, H, W, C)`` to a flat code ``(B, H*W*C)`` (the split-off codes
    and the last level's output, concatenated), with a standard normal prior on all of it
    (Glow learns a conditional prior for the split-off halves; this keeps the plain one)."""

    def __init__(self, levels=2, steps=4, hidden=32, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.levels, self.steps, self.hidden, self.seed = int(levels), int(steps), int(hidden), seed

    def build(self, input_shape):
        _, h, w, c = input_shape
        if h % 2 ** self.levels or w % 2 ** self.levels:
            raise KerasformerError(f"Glow with {self.levels} levels needs height and width divisible by "
                                   f"{2 ** self.levels}, got {h}x{w}")
        self.shapes = []  # (H, W, C) of each level after its squeeze
        for level in range(self.levels):
            h, w, c = h // 2, w // 2, c * 4
            self.shapes.append((h, w, c))
            c = c // 2 if level < self.levels - 1 else c
        self.flow_steps = [
            FlowSequence([ActNorm(), InvertibleConv1x1(seed=self.seed + 100 * level + k),
                          GlowCoupling(self.hidden)])
            for level in range(self.levels) for k in range(self.steps)]

    def _level_steps(self, level):
        return self.flow_steps[level * self.steps:(level + 1) * self.steps]

    def _forward(self, x):
        total, codes = self._zeros(x), []
        for level in range(self.levels):
            x = squeeze(x)
            for step in self._level_steps(level):
                x, ld = step.forward(x)
                total = total + ld
            if level < self.levels - 1:
                keep = x.shape[-1] // 2
                codes.append(ops.reshape(x[..., keep:], (ops.shape(x)[0], -1)))
                x = x[..., :keep]
        codes.append(ops.reshape(x, (ops.shape(x)[0], -1)))
        return ops.concatenate(codes, axis=-1), total

    def _inverse(self, z):
        sizes, start = [], 0
        for level, (h, w, c) in enumerate(self.shapes):
            size = h * w * (c - c // 2) if level < self.levels - 1 else h * w * c
            sizes.append((start, size))
            start += size
        x = None
        for level in reversed(range(self.levels)):
            h, w, c = self.shapes[level]
            begin, size = sizes[level]
            code = z[:, begin:begin + size]
            if level == self.levels - 1:
                x = ops.reshape(code, (-1, h, w, c))
            else:
                x = ops.concatenate([x, ops.reshape(code, (-1, h, w, c - c // 2))], axis=-1)
            for step in reversed(self._level_steps(level)):
                x = step.inverse(x)
            x = unsqueeze(x)
        return x


# ------------------------------------------------------------------------ i-ResNet

class InvertibleResidual(Flow):
    """i-ResNet block ``y = x + g(x)`` (Behrmann et al. 2019): ``g`` an MLP of
    :class:`SpectralDense` layers each with spectral norm <= ``coeff`` and ELU between
    (Lipschitz 1), so ``Lip(g) <= coeff**layers < 1`` and the block is invertible.

    ``inverse`` is the fixed point ``x = y - g(x)`` (``inverse_iterations`` steps, error
    shrinking like ``Lip(g)**k``). ``log_det`` is the power series
    ``log det(I + J) = Tr(log(I + J)) = sum_k (-1)^(k+1) Tr(J^k) / k`` (from
    ``det(exp(A)) = exp(Tr(A))``), truncated after ``terms`` terms; its error is at most
    ``dim * L**(terms+1) / ((terms+1) (1 - L))`` with ``L = Lip(g)``. The traces are exact
    (the Jacobian of the small MLP is formed explicitly) rather than Hutchinson estimates.
    """

    def __init__(self, hidden=(64,), coeff=0.9, terms=10, inverse_iterations=100,
                 power_iterations=1, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < coeff < 1.0:
            raise KerasformerError(f"an invertible residual block needs 0 < coeff < 1, got {coeff}")
        self.hidden, self.coeff, self.terms = tuple(hidden), float(coeff), int(terms)
        self.inverse_iterations, self.power_iterations, self.seed = int(inverse_iterations), int(power_iterations), seed

    def build(self, input_shape):
        from kerasformer.generative.spectral import SpectralDense

        units = self.hidden + (input_shape[-1],)
        self.dense = [SpectralDense(u, coeff=self.coeff, power_iterations=self.power_iterations,
                                    seed=None if self.seed is None else self.seed + i)
                      for i, u in enumerate(units)]
        d = input_shape[-1]
        for layer in self.dense:
            layer.build((None, d))
            layer.built = True
            d = layer.units

    def _kernels(self, training=False):
        return [layer.normalized_kernel(training) for layer in self.dense]

    def _g(self, x, kernels, slopes=None):
        """``g(x)``; with ``slopes`` (a list) also collects ELU's derivative at each hidden layer."""
        for i, (layer, k) in enumerate(zip(self.dense, kernels)):
            x = ops.matmul(x, k) + layer.bias
            if i < len(kernels) - 1:
                if slopes is not None:
                    slopes.append(ops.where(x > 0, 1.0, ops.exp(ops.minimum(x, 0.0))))
                x = ops.elu(x)
        return x

    def forward(self, x, training=False):
        x = ops.convert_to_tensor(x)
        self._build_for(x)
        kernels = self._kernels(training)
        slopes = []
        y = x + self._g(x, kernels, slopes)
        # M = K1 diag(s1) K2 ... K_L (row-vector layout): J = M^T, so Tr(J^k) = Tr(M^k)
        m = kernels[0][None]
        for slope, k in zip(slopes, kernels[1:]):
            m = ops.matmul(m * slope[:, None, :], k)
        power, log_det = m, self._zeros(x)
        for k in range(1, self.terms + 1):
            log_det = log_det + ((-1.0) ** (k + 1) / k) * ops.trace(power, axis1=1, axis2=2)
            if k < self.terms:
                power = ops.matmul(power, m)
        return y, log_det

    def _inverse(self, y):
        kernels = self._kernels()
        return ops.fori_loop(0, self.inverse_iterations, lambda i, x: y - self._g(x, kernels), y)

    def lipschitz_bound(self):
        """``prod_i ||W_i||_2`` of the kernels in use (exact SVD, numpy): the bound on Lip(g)."""
        from kerasformer.backend import to_numpy

        return float(np.prod([np.linalg.norm(to_numpy(k), 2) for k in self._kernels()]))

    def series_error_bound(self, dim):
        lip = self.lipschitz_bound()
        return dim * lip ** (self.terms + 1) / ((self.terms + 1) * (1.0 - lip))
