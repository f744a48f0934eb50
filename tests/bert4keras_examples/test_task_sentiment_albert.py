"""bert4keras' task_sentiment_albert, ported: ALBERT sentiment classification on [CLS] with
``extend_with_piecewise_linear_lr(Adam)``."""

from .conftest import assert_trained, port_fixture


example = port_fixture("task_sentiment_albert", "tiny_albert")


def test_trains(example):
    assert_trained(example["model"])


def test_evaluates(example):
    assert 0.0 <= example["evaluate"](example["test_generator"]) <= 1.0
