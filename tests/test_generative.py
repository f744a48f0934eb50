"""kerasformer.generative: flows invert and their log-determinants match autodiff; the
single-loss GAN step applies exactly the alternating losses' gradients; Gumbel-softmax
samples the categorical; BN-VAE's KL stays above its analytic bound."""
import math

import keras
import numpy as np
import pytest
from keras import ops

from kerasformer import backend
from kerasformer.backend import to_numpy
from kerasformer.errors import KerasformerError
from kerasformer.generative import (GAN, AdditiveCoupling, AffineCoupling, FlowSequence, Glow, InvertibleConv1x1,
                                    InvertibleResidual, PosteriorBatchNorm, Scaling, SpectralDense, TrainStep,
                                    checkerboard_mask, data_init, gumbel_softmax, kl_divergence, parity_mask)


def autodiff_log_det(fn, x):
    """``log |det d fn(x_i) / d x_i|`` per example, from the backend's own autodiff (the
    reference the flows' analytic log-determinants are checked against)."""
    x = np.asarray(x, "float32")
    flat = lambda v: ops.reshape(fn(v[None]), (-1,))  # noqa: E731
    if backend.name() == "jax":
        import jax

        jac = jax.vmap(jax.jacfwd(flat))(ops.convert_to_tensor(x))
    else:
        import torch

        jac = torch.stack([torch.autograd.functional.jacobian(flat, ops.convert_to_tensor(xi)) for xi in x])
    jac = to_numpy(jac).astype("float64").reshape(len(x), x[0].size, x[0].size)
    return np.linalg.slogdet(jac)[1]


def perturb(layer, seed, scale=0.3):
    """Random weights everywhere, so no coupling starts as the identity."""
    rng = np.random.default_rng(seed)
    for v in layer.trainable_variables:
        v.assign(to_numpy(v) + scale * rng.normal(size=v.shape).astype("float32"))


def _nice():
    return FlowSequence([AdditiveCoupling(parity_mask(6, 0), hidden=(8,)),
                         AdditiveCoupling(parity_mask(6, 1), hidden=(8,)), Scaling()]), (3, 6)


def _realnvp():
    return FlowSequence([AffineCoupling(checkerboard_mask(2, 3, p), hidden=(8,)) for p in (0, 1, 0)]), (3, 6)


def _glow():
    return Glow(levels=2, steps=2, hidden=8, seed=1), (2, 4, 4, 2)


def _iresnet(terms=20):
    return FlowSequence([InvertibleResidual(hidden=(16,), coeff=0.7, terms=terms, power_iterations=30, seed=s)
                         for s in (0, 10)]), (3, 4)


@pytest.fixture(scope="module", params=["nice", "realnvp", "glow", "iresnet"])
def flow_case(request):
    flow, shape = {"nice": _nice, "realnvp": _realnvp, "glow": _glow, "iresnet": _iresnet}[request.param]()
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    data_init(flow, ops.convert_to_tensor(x))
    perturb(flow, seed=1, scale=0.1 if request.param in ("iresnet", "glow") else 0.3)
    return request.param, flow, x


def test_flow_inverts(flow_case):
    _, flow, x = flow_case
    y, _ = flow.forward(ops.convert_to_tensor(x))
    back = to_numpy(flow.inverse(y))
    assert np.abs(to_numpy(y).reshape(x.shape[0], -1) - x.reshape(x.shape[0], -1)).max() > 1e-2  # not the identity
    np.testing.assert_allclose(back, x, atol=1e-5)


def test_flow_log_det_matches_autodiff(flow_case):
    name, flow, x = flow_case
    log_det = to_numpy(flow.log_det(ops.convert_to_tensor(x))).astype("float64")
    exact = autodiff_log_det(lambda v: flow.forward(v)[0], x)
    if name == "iresnet":
        # 20 terms of the series: error <= dim * L^21 / (21 (1 - L)) per block, L = Lip(g) <= 0.49
        tol = sum(block.series_error_bound(x.shape[-1]) for block in flow.flows) + 1e-5
        assert tol < 1e-4
    else:
        tol = 1e-4
    assert np.abs(exact).max() > 1e-2 or name == "nice"  # NICE's couplings are volume preserving
    np.testing.assert_allclose(log_det, exact, atol=tol)


def test_iresnet_truncated_series_within_its_bound():
    # two terms: the truncation error is visible, and within the stated bound
    flow, shape = _iresnet(terms=2)
    x = np.random.default_rng(3).normal(size=shape).astype("float32")
    flow.forward(ops.convert_to_tensor(x))
    perturb(flow, seed=4, scale=0.5)
    err = np.abs(to_numpy(flow.log_det(ops.convert_to_tensor(x))) - autodiff_log_det(lambda v: flow.forward(v)[0], x))
    bound = sum(block.series_error_bound(shape[-1]) for block in flow.flows)
    assert 1e-5 < err.max() <= bound + 1e-5


def test_invconv_lu_starts_as_a_rotation():
    conv = InvertibleConv1x1(seed=3)
    conv.forward(ops.ones((1, 2, 2, 5)))
    w = to_numpy(conv.weight())
    np.testing.assert_allclose(w @ w.T, np.eye(5), atol=1e-5)


def test_flow_bad_input_is_a_clear_error():
    with pytest.raises(KerasformerError, match="mask"):
        AdditiveCoupling(parity_mask(4)).forward(ops.ones((2, 6)))
    with pytest.raises(KerasformerError, match="divisible"):
        Glow(levels=2).forward(ops.ones((1, 6, 6, 1)))
    with pytest.raises(KerasformerError, match="coeff"):
        InvertibleResidual(coeff=1.0)


def test_spectral_dense_has_unit_spectral_norm():
    layer = SpectralDense(7, power_iterations=50, seed=0)
    layer(ops.ones((1, 5)))
    assert abs(np.linalg.norm(to_numpy(layer.normalized_kernel()), 2) - 1.0) < 1e-4
    before = to_numpy(layer.u).copy()
    layer(ops.ones((1, 5)), training=True)  # training writes the improved power-iteration vector
    assert np.abs(to_numpy(layer.u) - before).max() > 1e-3


# ------------------------------------------------------------------------------- GAN

def _gan(loss, gp_weight):
    keras.utils.set_random_seed(0)
    g = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)])
    d = keras.Sequential([keras.Input((4,)), SpectralDense(8), keras.layers.LeakyReLU(0.2), keras.layers.Dense(1)])
    return GAN(g, d, keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3), loss=loss, gp_weight=gp_weight)


@pytest.mark.parametrize("loss,gp_weight", [("standard", 0.0), ("wgan", 10.0)])
def test_single_loss_gradients_equal_the_two_losses(loss, gp_weight):
    gan = _gan(loss, gp_weight)
    rng = np.random.default_rng(0)
    real, z = rng.normal(size=(5, 4)).astype("float32"), rng.normal(size=(5, 3)).astype("float32")
    eps = rng.uniform(size=(5, 1)).astype("float32")
    d_vals, g_vals, d_state, g_state = gan._values()
    (_, aux), grads = gan.single_gradients(d_vals + g_vals, d_state, g_state, real, z, eps)
    (_, d_aux), d_grads = gan.d_gradients(d_vals, g_vals, d_state, g_state, real, z, eps)
    (_, g_aux), g_grads = gan.g_gradients(g_vals, d_vals, d_state, g_state, z)
    n = len(d_vals)
    # (WGAN's critic loss does not depend on the last bias: that gradient is 0 in both)
    assert sum(np.abs(to_numpy(w)).max() > 0 for w in d_grads + g_grads) >= len(grads) - 1
    for got, want in zip(grads, d_grads + g_grads):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-6, atol=1e-7)
    assert len(grads) == n + len(g_vals)
    np.testing.assert_allclose(to_numpy(aux["d_loss"]), to_numpy(d_aux["d_loss"]), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(aux["g_loss"]), to_numpy(g_aux["g_loss"]), rtol=1e-6)
    if gp_weight:
        assert float(to_numpy(aux["gp"])) > 0


def test_gan_steps_update_both_models():
    gan = _gan("standard", 0.0)
    rng = np.random.default_rng(1)
    real, z = rng.normal(size=(5, 4)).astype("float32"), rng.normal(size=(5, 3)).astype("float32")
    for step in (gan.single_step, gan.alternating_step):
        before = [to_numpy(v).copy() for v in gan.generator.trainable_variables + gan.discriminator.trainable_variables]
        logs = step(real, z)
        after = [to_numpy(v) for v in gan.generator.trainable_variables + gan.discriminator.trainable_variables]
        assert all(np.abs(a - b).max() > 0 for a, b in zip(after, before))
        assert set(logs) >= {"d_loss", "g_loss"}
    with pytest.raises(KerasformerError, match="unknown GAN loss"):
        GAN(gan.generator, gan.discriminator, None, None, loss="nope")


# --------------------------------------------------------------------- Gumbel-softmax

def test_gumbel_softmax_low_temperature_samples_the_categorical():
    probs = np.array([0.1, 0.2, 0.3, 0.4], "float32")
    n = 20000
    logits = ops.convert_to_tensor(np.tile(np.log(probs), (n, 1)))
    samples = to_numpy(gumbel_softmax(logits, temperature=0.05, seed=keras.random.SeedGenerator(7)))
    assert samples.max(axis=-1).mean() > 0.95  # nearly one-hot at a low temperature
    np.testing.assert_allclose(samples.mean(0), probs, atol=0.02)
    counts = np.bincount(samples.argmax(-1), minlength=4)
    chi2 = (((counts - n * probs) ** 2) / (n * probs)).sum()
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 0.001


def test_gumbel_straight_through_is_one_hot_with_the_soft_gradient():
    logits = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    noise = ops.convert_to_tensor(np.random.default_rng(1).gumbel(size=(4, 5)).astype("float32"))
    w = ops.convert_to_tensor(np.random.default_rng(2).normal(size=(4, 5)).astype("float32"))

    def objective(hard):
        return backend.value_and_grad(
            lambda v: ops.sum(w * gumbel_softmax(v[0], 0.5, hard=hard, noise=noise)))([ops.convert_to_tensor(logits)])

    (_, (g_hard,)), (_, (g_soft,)) = objective(True), objective(False)
    hard = to_numpy(gumbel_softmax(ops.convert_to_tensor(logits), 0.5, hard=True, noise=noise))
    np.testing.assert_array_equal(hard, np.eye(5)[np.argmax(logits + to_numpy(noise), -1)])
    np.testing.assert_allclose(to_numpy(g_hard), to_numpy(g_soft), atol=1e-6)
    assert np.abs(to_numpy(g_soft)).max() > 1e-3
    with pytest.raises(KerasformerError, match="temperature"):
        gumbel_softmax(ops.convert_to_tensor(logits), 0.0)


# ------------------------------------------------------------------------------ VAE

def test_kl_divergence_matches_closed_form():
    rng = np.random.default_rng(0)
    mean, log_var = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    want = 0.5 * (mean ** 2 + np.exp(log_var) - log_var - 1).sum(-1)
    np.testing.assert_allclose(to_numpy(kl_divergence(ops.convert_to_tensor(mean.astype("float32")),
                                                      ops.convert_to_tensor(log_var.astype("float32")))), want, rtol=1e-5)


@pytest.mark.parametrize("use_bn", [True, False])
def test_bn_vae_kl_stays_above_its_bound(use_bn):
    """Minimise the KL alone (the strongest push towards collapse): with BN the batch-mean
    KL stays >= 0.5 * sum(gamma_mu^2) at every step; without BN it falls below that bound."""
    keras.utils.set_random_seed(0)
    enc = keras.layers.Dense(2 * 4)
    bn = PosteriorBatchNorm(tau=0.5)
    x = ops.convert_to_tensor(np.random.default_rng(0).normal(size=(16, 6)).astype("float32"))
    h = enc(x)
    bn([h[:, :4], h[:, 4:]])

    def loss(x):
        h = enc(x)
        mean, log_var = h[:, :4], h[:, 4:]
        if use_bn:
            mean, log_var = bn([mean, log_var], training=True)
        kl = ops.mean(kl_divergence(mean, log_var))
        return kl, {"kl": kl, "bound": bn.kl_lower_bound()}

    step = TrainStep([enc, bn], loss, keras.optimizers.Adam(0.1))
    kls = []
    for _ in range(40):
        _, aux = step(x)
        kl, bound = float(to_numpy(aux["kl"])), float(to_numpy(aux["bound"]))
        kls.append(kl)
        assert bound >= 0.5 * 0.5 * 4 - 1e-6  # tau * d / 2
        if use_bn:
            assert kl >= bound * (1 - 1e-5)
    if not use_bn:
        assert kls[-1] < 0.5 * 0.5 * 4  # the same bound does not hold without BN


# --------------------------------------------------------------------------- recipes

def _recipe(name):
    import importlib
    import sys

    root = __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"recipes.generative.{name}")


def _run_recipe(tmp_path, name, *extra):
    out = tmp_path / f"{name}.json"
    results = _recipe(name).main(["--smoke", "--out", str(out), *extra])
    import json

    assert json.loads(out.read_text(encoding="utf-8"))["smoke"] is True
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]  # atomic writes left nothing
    return results


def test_flows_recipe_smoke(tmp_path):
    res = _run_recipe(tmp_path, "flows")
    assert set(res["models"]) == {"nice", "realnvp", "glow", "iresnet"}
    for r in res["models"].values():
        assert r["invertibility_error"] < 1e-4 and 0 < r["test_bits_per_dim"] < 20
    assert (tmp_path / "flows-glow-samples.png").exists()


@pytest.mark.parametrize("name", ["gan", "wgan_gp"])
def test_gan_recipes_smoke(tmp_path, name):
    res = _run_recipe(tmp_path, name, "--no-png")
    assert set(res["modes"]) == {"single", "alternating"} and res["speedup_single_vs_alternating"] > 0
    assert all(np.isfinite(m["d_loss"]).all() for m in res["modes"].values())


def test_gumbel_vae_recipe_smoke(tmp_path):
    res = _run_recipe(tmp_path, "gumbel_vae", "--no-png", "--hard")
    assert np.isfinite(res["history"]["test_recon_argmax_code"]).all() and res["history"]["kl"][0] >= 0


def test_text_vae_recipe_smoke(tmp_path):
    import os

    if not os.path.isfile(_recipe("text_vae").common.data_path("sentiment", "chnsenticorp", "train.tsv")):
        pytest.skip("ChnSentiCorp is not in ../shared/data")
    res = _run_recipe(tmp_path, "text_vae", "--no-png")
    assert set(res["models"]) == {"plain", "bn"}
    assert res["models"]["bn"]["kl_lower_bound"] >= 0.5 * 0.5 * 4 - 1e-6
    assert min(res["models"]["bn"]["history"]["train_min_kl_minus_bound"]) >= -1e-4  # at every step
