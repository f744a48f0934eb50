"""bert4keras' task_sequence_labeling_ner_crf, ported: BERT + CRF NER, Viterbi decoding with
the CRF's transitions read by ``K.eval(CRF.trans)``."""

from .conftest import assert_padding_invariant, assert_trained, first_batch, port_fixture


example = port_fixture("task_sequence_labeling_ner_crf")


def test_trains(example):
    assert_trained(example["model"])


def test_recognizes_and_evaluates(example):
    entities = example["NER"].recognize("张三在北京看长城。")
    assert all(0 <= start <= end < 9 and kind in example["categories"] for start, end, kind in entities)
    f1, precision, recall = example["evaluate"](example["valid_data"])
    assert 0 <= f1 <= 1 and 0 <= precision <= 1 and 0 <= recall <= 1


def test_crf_loss_ignores_padding(example):
    """The CRF sees bert4keras' padding mask: a row's loss is the same alone and padded."""
    x, y = first_batch(example["data_generator"](example["train_data"], 4))
    assert_padding_invariant(example["model"], x, y, pad_targets=True)
