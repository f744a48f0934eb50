"""bert4keras' task_sequence_labeling_cws_crf, ported: BERT + CRF word segmentation."""

from .conftest import assert_padding_invariant, assert_trained, first_batch, port_fixture


example = port_fixture("task_sequence_labeling_cws_crf")


def test_trains(example):
    assert_trained(example["model"])


def test_segments_and_evaluates(example, tmp_path):
    text = "今天天气很好，我们去北京看长城。"
    assert "".join(example["segmenter"].tokenize(text)) == text
    assert 0 <= example["simple_evaluate"](example["valid_data"]) <= 1
    src, out = tmp_path / "in.utf8", tmp_path / "out.utf8"
    src.write_text(text + "\n", encoding="utf-8")
    example["predict_to_file"](str(src), str(out))
    assert out.read_text(encoding="utf-8").replace(" ", "").strip() == text


def test_crf_loss_ignores_padding(example):
    x, y = first_batch(example["data_generator"](example["train_data"], 4))
    assert_padding_invariant(example["model"], x, y, pad_targets=True)
