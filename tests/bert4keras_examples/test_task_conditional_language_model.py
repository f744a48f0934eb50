"""bert4keras' task_conditional_language_model, ported: application='lm' conditioned on a
label through conditional LayerNorm (layer_norm_cond, additional_input_layers), a ``Loss``
layer masked by the model's padding mask, and nucleus sampling."""
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
    """The condition reaches the model: the same tokens under the two labels give different
    losses. bert4keras starts conditional LayerNorm's dense layers at zero, so after the
    example's one training step the difference is small, but far above float32 rounding."""
    x, _ = first_batch(example["data_generator"](example["data"], 8))
    model = example["model"]
    zeros, ones = np.zeros_like(x[2]), np.ones_like(x[2])
    a, b = row_loss(model, [x[0], x[1], zeros]), row_loss(model, [x[0], x[1], ones])
    assert abs(a - b) > 1e-6 * abs(a), (a, b)


def test_lm_loss_ignores_padding(example):
    x, _ = first_batch(example["data_generator"](example["data"], 8))
    assert_padding_invariant(example["model"], x)
