"""bert4keras' task_seq2seq_autotitle_csl_mt5, ported: mT5 with keep_tokens, a ``Loss`` layer
masked by the decoder's own padding mask, and beam search on the decoder."""

from .conftest import assert_padding_invariant, assert_trained, first_batch, port_fixture


example = port_fixture("task_seq2seq_autotitle_csl_mt5", "tiny_mt5")


def test_trains(example):
    assert_trained(example["model"])


def test_generates_and_evaluates(example):
    # the Evaluator's own input: on JAX every decoder step shape compiles once
    assert isinstance(example["autotitle"].generate(example["valid_data"][0][1]), str)
    metrics = example["Evaluator"]().evaluate(example["valid_data"])
    assert set(metrics) == {"rouge-1", "rouge-2", "rouge-l", "bleu"}


def test_decoder_loss_ignores_padding(example):
    x, _ = first_batch(example["data_generator"](example["train_data"], 4))
    assert_padding_invariant(example["model"], x, sequences=((0,), (1,)))
