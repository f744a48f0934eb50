"""bert4keras' task_reading_comprehension_by_mlm, ported: answers as MLM predictions at
[MASK] slots, a compiled masked cross-entropy, passage-constrained argmax decoding."""

from .conftest import assert_padding_invariant, assert_trained, first_batch, port_fixture


example = port_fixture("task_reading_comprehension_by_mlm")


def test_trains(example):
    assert_trained(example["model"])


def test_answers_and_predicts_to_file(example, tmp_path):
    d = example["valid_data"][0]
    passages = [p["passage"] for p in d["passages"]] + [example["train_data"][0]["passages"][0]["passage"]]
    results = example["gen_answer"](d["question"], passages)  # one score list per answer
    assert all(isinstance(k, str) and v >= 0 for k, v in results.items())
    out = tmp_path / "answers.txt"
    example["predict_to_file"](example["valid_data"], str(out))
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(example["valid_data"])


def test_loss_ignores_input_padding(example):
    x, y = first_batch(example["data_generator"](example["train_data"], 4))
    assert_padding_invariant(example["model"], x, y)
