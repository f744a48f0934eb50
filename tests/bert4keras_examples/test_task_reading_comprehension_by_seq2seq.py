"""bert4keras' task_reading_comprehension_by_seq2seq, ported: UniLM answer generation with
a ``Loss`` layer, and extractive beam search voting over several passages (use_states)."""

from .conftest import assert_padding_invariant, assert_trained, first_batch, port_fixture


example = port_fixture("task_reading_comprehension_by_seq2seq")


def test_trains(example):
    assert_trained(example["model"])


def test_answers_and_predicts_to_file(example, tmp_path):
    d = example["valid_data"][0]
    passages = [p["passage"] for p in d["passages"]] + [example["train_data"][0]["passages"][0]["passage"]]
    answer = example["reader"].answer(d["question"], passages)  # votes over both passages
    assert isinstance(answer, str)
    out = tmp_path / "answers.txt"
    example["predict_to_file"](example["valid_data"], str(out))
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(example["valid_data"])


def test_unilm_loss_ignores_padding(example):
    x, _ = first_batch(example["data_generator"](example["train_data"], 4))
    assert_padding_invariant(example["model"], x)
