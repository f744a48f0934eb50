"""bert4keras' task_sentence_similarity_lcqmc, ported: sentence-pair classification on the
pooled output (set_gelu('tanh'), Adam, save / load 'best_model.weights')."""
import pytest

from .conftest import assert_trained, run_port


@pytest.fixture(scope="module")
def example(example_root, tiny_bert, port_dir):
    return run_port("task_sentence_similarity_lcqmc", example_root, port_dir)


def test_trains(example):
    assert_trained(example["model"])


def test_evaluates(example):
    assert 0.0 <= example["evaluate"](example["test_generator"]) <= 1.0
