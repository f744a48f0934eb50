"""bert4keras' task_language_model, ported: application='lm' (implies the MLM head), a
``Loss`` layer masked by the model's padding mask, story continuation by nucleus sampling."""
import numpy as np

from .conftest import assert_padding_invariant, assert_trained, first_batch, port_fixture


example = port_fixture("task_language_model")


def test_trains(example):
    assert_trained(example["model"])


def test_continues_stories(example):
    np.random.seed(0)
    text = "今天天气很好，"
    results = example["story_completion"].generate(text, n=2)
    assert len(results) == 2 and all(r.startswith(text) for r in results)


def test_lm_loss_ignores_padding(example):
    """mask[1] must reach the Loss layer: without it the example silently averages over
    padding (its `if mask[1] is None: y_mask = 1.0` branch)."""
    x, _ = first_batch(example["data_generator"](example["data"], 4))
    assert_padding_invariant(example["model"], x)
