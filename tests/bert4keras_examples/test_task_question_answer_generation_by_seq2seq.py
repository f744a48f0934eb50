"""bert4keras' task_question_answer_generation_by_seq2seq, ported: UniLM with a ``Loss``
layer; sample an answer, then beam-search a question."""
import numpy as np

from .conftest import assert_padding_invariant, assert_trained, first_batch, port_fixture


example = port_fixture("task_question_answer_generation_by_seq2seq")


def test_trains(example):
    assert_trained(example["model"])


def test_generates_and_predicts_to_file(example, tmp_path):
    np.random.seed(0)
    q, a = example["qag"].generate(example["train_data"][0][0])
    assert isinstance(q, str) and isinstance(a, str)
    out = tmp_path / "qa.csv"
    example["predict_to_file"](example["valid_data"], str(out))
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(example["valid_data"])


def test_unilm_loss_ignores_padding(example):
    x, _ = first_batch(example["data_generator"](example["train_data"], 4))
    assert_padding_invariant(example["model"], x)
