"""bert4keras' task_sentence_similarity_lcqmc, ported: sentence-pair classification on the
pooled output (set_gelu('tanh'), Adam, save / load 'best_model.weights')."""
import math


from .conftest import assert_trains_on_batch, first_batch, port_fixture


example = port_fixture("task_sentence_similarity_lcqmc")


def test_trains(example):
    """The example's head has Dropout(0.1): its fit losses are noisy, so the check is on the
    inference loss of one batch before and after two steps."""
    assert all(math.isfinite(v) for v in example["model"].history.history["loss"])
    assert_trains_on_batch(example["model"], *first_batch(example["train_generator"]))


def test_evaluates(example):
    assert 0.0 <= example["evaluate"](example["test_generator"]) <= 1.0
