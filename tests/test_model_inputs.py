"""Model inputs as bert4keras users pass them, and bad ones refused before Keras sees them
(issue 10, defects 1 and 4)."""
import os

import keras
import numpy as np
import pytest

from kerasformer import KerasformerError, build_transformer_model

TF_BERT = os.path.join(os.path.dirname(__file__), "fixtures", "tf", "bert_tiny")


@pytest.fixture(scope="module")
def model():
    return build_transformer_model(os.path.join(TF_BERT, "bert_config.json"),
                                   os.path.join(TF_BERT, "bert_model.ckpt"), with_mlm=True)


TOKENS, SEGMENTS = [3, 20, 14, 4], [0, 0, 0, 0]
ARRAYS = [np.array([TOKENS], "int32"), np.array([SEGMENTS], "int32")]


def test_nested_python_lists(model):
    expected = model.predict(ARRAYS, verbose=0)
    np.testing.assert_array_equal(model.predict([[TOKENS], [SEGMENTS]], verbose=0), expected)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model([[TOKENS], [SEGMENTS]])), expected,
                               atol=1e-5)
    named = {"Input-Token": [TOKENS], "Input-Segment": [SEGMENTS]}
    np.testing.assert_array_equal(model.predict(named, verbose=0), expected)


def test_ragged_lists_are_a_clear_error(model):
    with pytest.raises(KerasformerError, match="different lengths.*sequence_padding"):
        model.predict([[TOKENS, TOKENS[:2]], [SEGMENTS, SEGMENTS[:2]]], verbose=0)


@pytest.mark.parametrize("how", ["predict", "call"])
def test_overlong_input_then_normal_input(model, how):
    run = ((lambda x: model.predict(x, verbose=0)) if how == "predict"
           else (lambda x: keras.ops.convert_to_numpy(model(x))))
    expected = model.predict(ARRAYS, verbose=0)
    long = [np.ones((1, 65), "int32"), np.zeros((1, 65), "int32")]
    with pytest.raises(KerasformerError, match="65 tokens.*holds 64.*maxlen=64"):
        run(long)
    np.testing.assert_allclose(run(ARRAYS), expected, atol=1e-5)


def test_model_survives_an_error_inside_predict(model, monkeypatch):
    """Any failure inside Keras' predict (here the layer's own check, with the up-front
    one switched off) leaves the variables attached: on JAX they used to stay None."""
    expected = model.predict(ARRAYS, verbose=0)
    monkeypatch.setattr(model, "_kerasformer_max_length", None)
    with pytest.raises(Exception, match="position table"):
        model.predict([np.ones((1, 70), "int32"), np.zeros((1, 70), "int32")], verbose=0)
    np.testing.assert_array_equal(model.predict(ARRAYS, verbose=0), expected)


def test_fixed_sequence_length_is_checked():
    model = build_transformer_model(os.path.join(TF_BERT, "bert_config.json"), sequence_length=8)
    with pytest.raises(KerasformerError, match="sequence_length=8"):
        model.predict([[TOKENS], [SEGMENTS]], verbose=0)
    assert model.predict([[TOKENS * 2], [SEGMENTS * 2]], verbose=0).shape == (1, 8, 32)


def test_fit_takes_lists_and_survives_an_error_inside_fit(monkeypatch):
    model = build_transformer_model(os.path.join(TF_BERT, "bert_config.json"), with_mlm=True)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    labels = np.array([TOKENS], "int32")
    model.fit([[TOKENS], [SEGMENTS]], labels, epochs=1, verbose=0)
    expected = model.predict(ARRAYS, verbose=0)
    with pytest.raises(KerasformerError, match="holds 64"):
        model.fit([np.ones((1, 65), "int32"), np.zeros((1, 65), "int32")], np.ones((1, 65)), verbose=0)
    monkeypatch.setattr(model, "_kerasformer_max_length", None)  # now Keras' step itself fails
    with pytest.raises(Exception, match="position table"):
        model.fit([np.ones((1, 66), "int32"), np.zeros((1, 66), "int32")], np.ones((1, 66)), verbose=0)
    np.testing.assert_allclose(model.predict(ARRAYS, verbose=0), expected, atol=1e-6)


def test_predict_checks_its_inputs_once(model, monkeypatch):
    """predict standardizes the whole input once; Keras' torch trainer then calls the model per
    batch, which must not check every batch again. A generator's batches are still checked."""
    from kerasformer.models import inputs

    checks = []
    original = inputs._check_lengths
    monkeypatch.setattr(inputs, "_check_lengths", lambda m, pairs: checks.append(1) or original(m, pairs))
    model.predict([np.repeat(a, 4, axis=0) for a in ARRAYS], batch_size=1, verbose=0)
    assert len(checks) == 1
    long = np.zeros((1, 1000), "int32")
    with pytest.raises(KerasformerError, match="position table"):
        model.predict((batch for batch in [((long, long),)]), verbose=0)
