"""build_transformer_model: options, serialisation and clear errors on bad input."""
import json
import os

import keras
import numpy as np
import pytest

from kerasformer import KerasformerError, WeightMismatchError, build_transformer_model
from kerasformer.backend import predict

CONFIG = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=24, max_position=16)


def test_unknown_model_name():
    with pytest.raises(KerasformerError, match="unknown model 'bort'.*bert"):
        build_transformer_model(**CONFIG, model="bort")


def test_unknown_application():
    with pytest.raises(KerasformerError, match="unknown application 'seq2seq'.*unilm"):
        build_transformer_model(**CONFIG, application="seq2seq")


def test_unknown_keyword_is_named():
    with pytest.raises(KerasformerError, match="with_poool"):
        build_transformer_model(**CONFIG, with_poool=True)


def test_missing_config_file():
    with pytest.raises(KerasformerError, match="config file not found"):
        build_transformer_model("/nonexistent/bert_config.json")


def test_text_longer_than_position_table():
    model = build_transformer_model(**CONFIG)
    ids = np.ones((1, 20), dtype="int32")
    with pytest.raises(Exception, match="20 tokens.*(16 positions|holds 16).*maxlen=16"):
        predict(model, [ids, np.zeros_like(ids)])


def test_sequence_length_fixed_shape():
    model = build_transformer_model(**CONFIG, sequence_length=8)
    assert model.inputs[0].shape == (None, 8)


def test_heads_follow_bert4keras_output_order():
    model = build_transformer_model(**CONFIG, with_pool=True, with_mlm=True)
    pooled, mlm = model.outputs
    assert pooled.shape == (None, 16) and mlm.shape == (None, None, 40)
    model = build_transformer_model(**CONFIG, with_nsp=True)
    assert model.outputs[0].shape == (None, 2)


def _export_as_hf_dict(transformer):
    return transformer.export_tensors("hf")


def test_keep_and_compound_tokens():
    full = build_transformer_model(**CONFIG, with_mlm="linear", return_keras_model=False)
    tensors = _export_as_hf_dict(full)
    keep = [0, 5, 7, 3]
    compound = [[1, 2], [3]]  # ids into the kept vocabulary, as in bert4keras
    small = build_transformer_model(**CONFIG, with_mlm="linear", keep_tokens=keep,
                                    compound_tokens=compound, return_keras_model=False)
    small.load_weights_from_checkpoint(tensors)
    table = full.model.get_layer("Embedding-Token").embeddings.numpy()
    got = small.model.get_layer("Embedding-Token").embeddings.numpy()
    expected = np.concatenate([table[keep], table[[5, 7]].mean(0, keepdims=True), table[[3]]])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    bias = full.model.get_layer("MLM-Bias").bias.numpy()
    np.testing.assert_allclose(small.model.get_layer("MLM-Bias").bias.numpy(),
                               np.concatenate([bias[keep], [bias[[5, 7]].mean()], bias[[3]]]), rtol=1e-6)
    # and the MLM logits of kept tokens are the full model's logits at those ids
    ids = np.array([[1, 2, 3, 0]], dtype="int32")
    full_logits = predict(full.model, [np.array([[keep[1], keep[2], keep[3], 0]], "int32"), np.zeros_like(ids)])
    small_logits = predict(small.model, [ids, np.zeros_like(ids)])
    np.testing.assert_allclose(small_logits[..., :4], full_logits[..., keep], atol=1e-5)


def test_wrong_shape_names_variable_and_both_shapes():
    transformer = build_transformer_model(**CONFIG, return_keras_model=False)
    tensors = _export_as_hf_dict(transformer)
    tensors["bert.encoder.layer.0.attention.self.query.weight"] = np.zeros((16, 8), "float32")
    fresh = build_transformer_model(**CONFIG, return_keras_model=False)
    with pytest.raises(WeightMismatchError, match=r"q_dense/kernel: model expects \(16, 16\).*\(8, 16\)"):
        fresh.load_weights_from_checkpoint(tensors)


def test_missing_variable_is_named():
    transformer = build_transformer_model(**CONFIG, return_keras_model=False)
    tensors = _export_as_hf_dict(transformer)
    del tensors["bert.encoder.layer.0.output.LayerNorm.weight"]
    fresh = build_transformer_model(**CONFIG, return_keras_model=False)
    with pytest.raises(WeightMismatchError, match="FeedForward-Norm/gamma.*output.LayerNorm.weight"):
        fresh.load_weights_from_checkpoint(tensors)


def test_unused_tensors_are_reported():
    transformer = build_transformer_model(**CONFIG, with_pool=True, return_keras_model=False)
    tensors = _export_as_hf_dict(transformer)
    tensors["bert.extra.weight"] = np.zeros(3, "float32")
    fresh = build_transformer_model(**CONFIG, return_keras_model=False)
    report = fresh.load_weights_from_checkpoint(tensors)
    assert "bert.extra.weight" in report.unused
    assert "bert.pooler.dense.weight" in report.unused


def test_keras_file_round_trip(tmp_path):
    model = build_transformer_model(**CONFIG, application="unilm", with_mlm=True)
    ids = np.array([[2, 5, 6, 3, 9, 0]], dtype="int32")
    segments = np.array([[0, 0, 0, 1, 1, 0]], dtype="int32")
    expected = predict(model, [ids, segments])
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(predict(restored, [ids, segments]), expected, atol=1e-6)
