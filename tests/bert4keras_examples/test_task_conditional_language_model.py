"""bert4keras' task_conditional_language_model, ported: application='lm' conditioned on a
label through conditional LayerNorm (layer_norm_cond, additional_input_layers), a ``Loss``
layer masked by the model's padding mask, and nucleus sampling."""
import keras
import numpy as np

from .conftest import assert_padding_invariant, assert_trained, first_batch, row_loss, port_fixture


example = port_fixture("task_conditional_language_model")


def test_trains(example):
    assert_trained(example["model"])


def test_samples_per_label(example):
    np.random.seed(0)
    for label in (0, 1):
        texts = example["random_sentiment"].generate(label, 2, 5)
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_label_changes_the_output(example):
    """The condition reaches every conditional LayerNorm. bert4keras starts their
    ``gamma_dense`` / ``beta_dense`` kernels at zero, so the example's two steps move them
    only slightly: check they moved (gradients flowed from the loss to the label path), then
    give them random values and check the two labels give clearly different losses."""
    model = example["model"]
    kernels = [v for v in model.trainable_variables
               if v.path.endswith(("gamma_dense/kernel", "beta_dense/kernel"))]
    assert kernels, "no conditional LayerNorm (gamma_dense / beta_dense) in the model"
    saved = [keras.ops.convert_to_numpy(v) for v in kernels]
    assert any(np.abs(k).max() > 0 for k in saved)
    x, _ = first_batch(example["data_generator"](example["data"], 8))
    zeros, ones = np.zeros_like(x[2]), np.ones_like(x[2])
    rng = np.random.default_rng(0)
    try:
        for v, k in zip(kernels, saved):
            v.assign(rng.normal(0.0, 0.1, k.shape).astype(k.dtype))
        a, b = row_loss(model, [x[0], x[1], zeros]), row_loss(model, [x[0], x[1], ones])
    finally:
        for v, k in zip(kernels, saved):
            v.assign(k)
    # the label embedding is small (uniform +-0.05), so the change is ~1e-4 of the loss:
    # far above float32 rounding (~1e-7), and exactly 0 if the label were not wired in
    assert abs(a - b) > 1e-5 * abs(a), (a, b)


def test_lm_loss_ignores_padding(example):
    x, _ = first_batch(example["data_generator"](example["data"], 8))
    assert_padding_invariant(example["model"], x)
