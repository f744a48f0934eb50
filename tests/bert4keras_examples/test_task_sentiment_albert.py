"""bert4keras' task_sentiment_albert, ported: ALBERT sentiment classification on [CLS] with
``extend_with_piecewise_linear_lr(Adam)``."""
import pytest

from .conftest import assert_trained, run_port


@pytest.fixture(scope="module")
def example(example_root, tiny_albert, port_dir):
    return run_port("task_sentiment_albert", example_root, port_dir)


def test_trains(example):
    assert_trained(example["model"])


def test_evaluates(example):
    assert 0.0 <= example["evaluate"](example["test_generator"]) <= 1.0
