"""bert4keras' task_seq2seq_autotitle_csl, ported: UniLM title generation (application=
'unilm' implies the MLM head), a ``Loss`` layer, beam search and the Rouge / BLEU evaluator."""

from .conftest import assert_padding_invariant, assert_trained, first_batch, port_fixture


example = port_fixture("task_seq2seq_autotitle_csl")


def test_trains(example):
    assert_trained(example["model"])


def test_generates_and_evaluates(example):
    title = example["autotitle"].generate(example["test_data"][0][1], topk=2)
    assert isinstance(title, str)
    metrics = example["Evaluator"]().evaluate(example["valid_data"])
    assert set(metrics) == {"rouge-1", "rouge-2", "rouge-l", "bleu"}


def test_unilm_loss_ignores_padding(example):
    x, _ = first_batch(example["data_generator"](example["train_data"], 4))
    assert_padding_invariant(example["model"], x)
