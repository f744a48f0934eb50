"""``kerasformer.backend``'s bert4keras part: ``K`` (Keras 2's backend functions) and the
helpers of ``bert4keras.backend``, each against numpy / bert4keras 0.11.5's formula."""
import json

import keras
import numpy as np
import pytest

from kerasformer import backend
from kerasformer.backend import K
from kerasformer.errors import KerasformerError

from conftest import TINY_BERT

rng = np.random.default_rng(0)


def close(a, b, atol=1e-5):
    np.testing.assert_allclose(K.eval(a) if not isinstance(a, np.ndarray) else a, b, rtol=1e-5, atol=atol)


def test_reductions_elementwise_and_config():
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    close(K.sum(x, 1), x.sum(1))
    close(K.mean(x, axis=-1, keepdims=True), x.mean(-1, keepdims=True))
    close(K.max(x), x.max())
    close(K.square(x), x ** 2)
    close(K.clip(x, -0.5, 0.5), np.clip(x, -0.5, 0.5))
    close(K.l2_normalize(x, -1), x / np.sqrt((x ** 2).sum(-1, keepdims=True)))
    assert K.floatx() == "float32" and K.epsilon() == keras.config.epsilon()
    assert K.int_shape(x) == (2, 3, 4) and K.ndim(x) == 3 and K.dtype(K.cast(x, "int32")) == "int32"
    assert K.prod([3, 4]) == 12  # bert4keras' K.prod(shape[2:]) on a static shape
    close(K.switch(K.greater(x, 0), x, K.zeros_like(x)), np.maximum(x, 0))
    close(K.switch(np.array([True, False]), lambda: x, lambda: -x), np.stack([x[0], -x[1]]))


def test_batch_dot_and_dot_follow_keras2():
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    y = rng.normal(size=(2, 4, 5)).astype("float32")
    close(K.batch_dot(x, y), np.einsum("bij,bjk->bik", x, y))
    close(K.batch_dot(x, x, axes=[2, 2]), np.einsum("bik,bjk->bij", x, x))
    a, b = rng.normal(size=(2, 4)).astype("float32"), rng.normal(size=(2, 4)).astype("float32")
    close(K.batch_dot(a, b, axes=1), (a * b).sum(1, keepdims=True))  # [batch, 1], as Keras 2
    w = rng.normal(size=(5, 4, 6)).astype("float32")
    close(K.dot(x, w), np.dot(x, w))


def test_reshape_flatten_and_losses():
    x = rng.normal(size=(2, 6, 4)).astype("float32")
    close(K.reshape(x, (3, -1), 1), x.reshape(2, 3, 2, 4))  # bert4keras' (shape, axis) pairs
    close(K.flatten(x, 1), x.reshape(2, 24))
    close(K.flatten(x), x.reshape(-1))
    probs = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    labels = rng.integers(0, 4, size=(2, 6))
    want = -np.log(np.take_along_axis(probs, labels[..., None], -1))[..., 0]
    close(K.sparse_categorical_crossentropy(labels, probs), want)
    close(K.sparse_categorical_crossentropy(labels[..., None], probs), want)  # [b, n, 1] labels
    close(K.categorical_crossentropy(K.one_hot(labels, 4), probs), want)


def test_variables_and_impossible_names():
    v = K.variable(np.zeros((2, 2)))
    assert K.dtype(v) == "float32"
    K.set_value(v, np.ones((2, 2)))
    np.testing.assert_array_equal(K.eval(v), np.ones((2, 2)))
    for name, hint in [("gradients", "kerasformer.training"), ("function", "keras.Model"),
                       ("placeholder", "keras.Input"), ("update", "assign"), ("get_session", "session")]:
        with pytest.raises(KerasformerError, match=hint):
            getattr(K, name)()
    with pytest.raises(KerasformerError, match="training="):
        K.in_train_phase(1.0, 2.0)
    assert K.in_train_phase(1.0, 2.0, training=True) == 1.0
    with pytest.raises(AttributeError, match="keras.ops"):
        K.no_such_function  # noqa: B018


def test_sequence_masking_align_batch_gather():
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    close(backend.sequence_masking(x, mask, -1e4), np.where(mask[..., None], x, -1e4))
    scores = rng.normal(size=(2, 5, 4, 4)).astype("float32")
    want = np.where(mask[:, None, :, None] & mask[:, None, None, :], scores, 0)
    close(backend.sequence_masking(scores, mask, 0, [2, 3]), want)
    assert K.int_shape(backend.align(np.ones((2, 3)), [0, -1], 4)) == (2, 1, 1, 3)
    params = rng.normal(size=(2, 5, 3)).astype("float32")
    idx = np.array([[4, 0], [1, 1]])
    close(backend.batch_gather(params, idx), np.stack([params[0, [4, 0]], params[1, [1, 1]]]))


def test_positions_and_rotary():
    pos = np.arange(5, dtype="float32")[None]
    table = K.eval(backend.sinusoidal_embeddings(pos, 6))
    freqs = 10000.0 ** (-2 * np.arange(3) / 6)
    want = np.zeros((1, 5, 6))
    want[..., 0::2], want[..., 1::2] = np.sin(pos[..., None] * freqs), np.cos(pos[..., None] * freqs)
    close(table, want)
    q = rng.normal(size=(1, 5, 2, 6)).astype("float32")  # [b, n, heads, d]
    # bert4keras' formula: q * cos_pos + rotate(q) * sin_pos
    cos_pos = np.repeat(want[..., 1::2], 2, -1)[:, :, None]
    sin_pos = np.repeat(want[..., 0::2], 2, -1)[:, :, None]
    q2 = np.stack([-q[..., 1::2], q[..., ::2]], -1).reshape(q.shape)
    close(backend.apply_rotary_position_embeddings(table, q), q * cos_pos + q2 * sin_pos)
    a, b = backend.apply_rotary_position_embeddings(table, q, q)
    close(a, K.eval(b))


def test_losses_and_small_functions():
    y_pred = rng.normal(size=(3, 5)).astype("float32")
    y_true = rng.uniform(size=(3, 5)).astype("float32")  # soft labels (bert4keras 0.11.5)
    neg = np.log(1 + (np.exp(y_pred) * (1 - y_true)).sum(-1))
    pos = np.log(1 + (np.exp(-y_pred) * y_true).sum(-1))
    close(backend.multilabel_categorical_crossentropy(y_true, y_pred), neg + pos)
    close(backend.root_mean_square(y_pred, -1), np.sqrt((y_pred ** 2).mean(-1)))
    close(backend.piecewise_linear(np.float32(1500), {1000: 1, 2000: 0.1}), 0.55)
    a = rng.normal(size=(2, 3, 3)).astype("float32")
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    lengths = mask.sum(-1)[:, None, None]
    close(backend.attention_normalize(a, mask, -1, "squared_relu"),
          np.where(mask[:, None], np.maximum(a, 0) ** 2, 0) / lengths)
    want = np.where(mask[:, None], a * np.log(16) / np.log(512), -np.inf)
    want = np.exp(want - want.max(-1, keepdims=True))
    close(backend.attention_normalize(a, mask, -1, "softmax_plus"), want / want.sum(-1, keepdims=True))
    with pytest.raises(KerasformerError):
        backend.set_gelu("sigmoid")


def test_search_layer_walks_the_graph():
    inner_in = keras.Input((3,))
    inner = keras.Model(inner_in, keras.layers.Dense(2, name="deep")(inner_in), name="inner")
    x = keras.Input((3,))
    h = keras.layers.Dense(3, name="first")(x)
    out = keras.layers.Dense(1, name="last")(inner(h))
    model = keras.Model(x, out)
    assert backend.search_layer(out, "first").name == "first"
    assert backend.search_layer(out, "deep").name == "deep"  # inside the nested model
    assert backend.search_layer(model, "last") is model.get_layer("last")
    assert backend.search_layer(out, "nothing") is None
    with pytest.raises(KerasformerError, match="gradient_penalty"):
        backend.search_layer(keras.ops.ones((2,)), "first")


def test_set_gelu_switches_what_models_compute(tmp_path):
    from kerasformer import build_transformer_model
    from kerasformer.layers import gelu_erf, gelu_tanh

    config = str(tmp_path / "config.json")
    with open(config, "w") as f:
        json.dump(TINY_BERT, f)
    try:
        backend.set_gelu("erf")  # whatever an earlier test or script left set
        exact = build_transformer_model(config)
        # bert4keras' examples find the token embeddings from the model output
        assert backend.search_layer(exact.output, "Embedding-Token") is exact.get_layer("Embedding-Token")
        backend.set_gelu("tanh")
        approx = build_transformer_model(config)
        approx.set_weights(exact.get_weights())
        ffn = approx.get_layer("Transformer-0-FeedForward")
        assert [act for _, act in ffn.input_denses] == [gelu_tanh]
        h = rng.normal(size=(1, 4, 32)).astype("float32") * 3  # large pre-activations
        (k0, b0), (k1, b1) = ffn.i0_dense.get_weights(), ffn.o_dense.get_weights()
        pre = h @ k0 + b0
        tanh_gelu = 0.5 * pre * (1 + np.tanh(np.sqrt(2 / np.pi) * (pre + 0.044715 * pre ** 3)))
        close(ffn(h), tanh_gelu @ k1 + b1)
        assert np.abs(K.eval(exact.get_layer("Transformer-0-FeedForward")(h)) - K.eval(ffn(h))).max() > 0
    finally:
        backend.set_gelu("erf")
    again = build_transformer_model(config)
    assert [act for _, act in again.get_layer("Transformer-0-FeedForward").input_denses] == [gelu_erf]
