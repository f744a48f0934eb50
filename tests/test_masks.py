"""Masks proven by perturbation: change a token, see which outputs may move."""
import numpy as np
import pytest

from kerasformer import build_transformer_model
from kerasformer.backend import predict

CONFIG = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=48, max_position=32)


def outputs_changed(model, ids, segments, position, new_token=7):
    before = predict(model, [ids, segments])
    ids2 = ids.copy()
    ids2[0, position] = new_token if ids[0, position] != new_token else new_token + 1
    after = predict(model, [ids2, segments])
    return np.abs(after - before).max(axis=-1)[0] > 1e-6  # per position: did it change?


def test_lm_mask_is_causal():
    model = build_transformer_model(**CONFIG, application="lm")
    length = 10
    ids = np.arange(3, 3 + length, dtype="int32")[None]
    segments = np.zeros_like(ids)
    for position in range(length):
        changed = outputs_changed(model, ids, segments, position)
        assert not changed[:position].any(), f"position {position} leaked into earlier outputs"
        assert changed[position:].all(), f"position {position} did not reach later outputs"


def test_one_token_attends_to_itself_without_a_warning():
    """A one-token input (the first step of sampling from [CLS]) attends over one key: its
    output is the first position's output of a longer causal input, and keras' warning
    about a softmax over a size-1 axis is not raised."""
    import warnings

    model = build_transformer_model(**CONFIG, application="lm")
    ids = np.array([[3, 9, 4]], "int32")
    longer = predict(model, [ids, np.zeros_like(ids)])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="You are using a softmax over axis")
        alone = predict(model, [ids[:, :1], np.zeros_like(ids[:, :1])])
    assert np.abs(alone[:, 0] - longer[:, 0]).max() <= 1e-5


def test_encoder_mask_is_bidirectional():
    model = build_transformer_model(**CONFIG)
    ids = np.arange(3, 13, dtype="int32")[None]
    assert outputs_changed(model, ids, np.zeros_like(ids), 9).all()


def test_unilm_mask():
    model = build_transformer_model(**CONFIG, application="unilm")
    ids = np.arange(3, 13, dtype="int32")[None]
    segments = np.array([[0] * 4 + [1] * 6], dtype="int32")  # segment 0: 0..3, segment 1: 4..9
    for position in range(4):  # a segment-0 token is seen by every position
        assert outputs_changed(model, ids, segments, position).all()
    for position in range(4, 10):  # a segment-1 token: never by segment 0, only by later seg-1
        changed = outputs_changed(model, ids, segments, position)
        assert not changed[:4].any(), "segment 0 saw segment 1"
        assert not changed[4:position].any(), "segment 1 saw its own future"
        assert changed[position:].all()


def test_padding_is_invisible():
    model = build_transformer_model(**CONFIG)
    ids = np.array([[3, 4, 5, 6, 0, 0]], dtype="int32")
    segments = np.zeros_like(ids)
    padded = predict(model, [ids, segments])[0, :4]
    short = predict(model, [ids[:, :4], segments[:, :4]])[0]
    np.testing.assert_allclose(padded, short, atol=1e-5)


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_masked_models_still_match_on_prefix(application):
    # the output for a prefix does not depend on what follows it (lm) / on segment 1 (unilm)
    model = build_transformer_model(**CONFIG, application=application)
    ids = np.array([[3, 4, 5, 6, 7, 8]], dtype="int32")
    segments = np.array([[0, 0, 0, 1, 1, 1]], dtype="int32")
    full = predict(model, [ids, segments])[0, :3]
    prefix = predict(model, [ids[:, :3], segments[:, :3]])[0]
    np.testing.assert_allclose(full, prefix, atol=1e-5)
