"""bert4keras semantics that scripts rely on without saying so (issue: scripts port by an
import change and compute the same thing):

* ``application='lm'`` / ``'unilm'`` bring the MLM head (bert4keras: ``with_mlm or True``);
* the padding mask is born at the token embedding (``token_ids != 0``, the first position
  always real) and reaches the model outputs, where ``Loss.compute_loss(inputs, mask)`` and
  the CRF read it: a padded batch and the same rows unpadded give the same losses;
* conditional LayerNorm (``layer_norm_cond``, ``layer_norm_cond_hidden_size``,
  ``layer_norm_cond_hidden_act``) and ``additional_input_layers``.
"""
import numpy as np
import pytest

import kerasformer  # noqa: F401  (default backend)
import keras
from keras import ops

from kerasformer import build_transformer_model
from kerasformer.layers import ConditionalRandomField, LayerNorm
from kerasformer.training import Loss

CFG = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
           intermediate_size=24)
FAMILIES = [("bert", {}), ("roberta", {}), ("albert", {}), ("nezha", {}), ("electra", {}),
            ("roformer", {}), ("roformer_v2", {}), ("gpt2", {"pad_token_id": 0}),
            ("t5.1.1", {"relative_attention_num_buckets": 8})]


def _build(key, **kwargs):
    extra = dict(FAMILIES)[key]
    if not key.startswith("t5"):
        extra = {"max_position": 32, **extra}
    return build_transformer_model(model=key, **CFG, **extra, **kwargs)


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_lm_and_unilm_bring_the_mlm_head(application):
    probs = _build("bert", application=application)
    assert tuple(probs.output.shape) == (None, None, CFG["vocab_size"])
    assert probs.layers[-1].name == "MLM-Activation"
    logits = _build("bert", application=application, with_mlm="linear")
    assert logits.get_layer("MLM-Activation").get_config()["activation"] == "linear"
    assert _build("bert").output.shape[-1] == CFG["hidden_size"]  # an encoder stays bare


@pytest.mark.parametrize("key", [k for k, _ in FAMILIES])
def test_every_family_carries_the_padding_mask_to_its_outputs(key):
    model = _build(key)
    for output in model.outputs:
        assert getattr(output, "_keras_mask", None) is not None, f"{key}: the output lost the mask"


class _MaskedLM(Loss):
    """task_language_model's CrossEntropy, as bert4keras writes it: the mask of the model
    output (``mask[1]``) says which positions are real."""

    def compute_loss(self, inputs, mask=None):
        y_true, y_pred = inputs
        y_mask = ops.cast(mask[1], "float32")[:, 1:]
        loss = ops.sparse_categorical_crossentropy(y_true[:, 1:], y_pred[:, :-1])
        return ops.sum(loss * y_mask) / ops.sum(y_mask)


def _padded(rows, length):
    return np.array([list(r) + [0] * (length - len(r)) for r in rows], dtype="int32")


@pytest.fixture(scope="module")
def lm_with_loss():
    lm = _build("bert", application="lm")
    output = _MaskedLM(1)([lm.inputs[0], lm.outputs[0]])
    model = keras.Model(lm.inputs, output)
    model.compile(optimizer="adam")
    return model


def test_loss_layer_sees_the_padding_mask(lm_with_loss):
    """The same row alone and with three padding tokens appended gives the same loss:
    without the mask the padded positions would count as targets."""
    row = [2, 7, 9, 4, 11, 3]
    short, long = _padded([row], 6), _padded([row], 9)
    a = lm_with_loss.evaluate([short, np.zeros_like(short)], verbose=0)
    b = lm_with_loss.evaluate([long, np.zeros_like(long)], verbose=0)
    assert np.isfinite(a) and abs(a - b) < 1e-5


@pytest.fixture(scope="module")
def bert_crf():
    bert = _build("bert")
    crf = ConditionalRandomField(lr_multiplier=10)
    output = crf(keras.layers.Dense(4)(bert.output))
    model = keras.Model(bert.inputs, output)
    model.compile(loss=crf.sparse_loss, optimizer="adam")
    return model


def test_crf_sees_the_padding_mask(bert_crf):
    rows = [[2, 5, 7, 9, 3], [2, 8, 3]]
    tags = [[0, 1, 2, 3, 0], [0, 2, 0]]
    for row, tag in zip(rows, tags):
        short, long = _padded([row], len(row)), _padded([row], 8)
        a = bert_crf.evaluate([short, np.zeros_like(short)], _padded([tag], len(row)), verbose=0)
        b = bert_crf.evaluate([long, np.zeros_like(long)], _padded([tag], 8), verbose=0)
        assert np.isfinite(a) and abs(a - b) < 1e-4, (row, a, b)


def test_t5_decoder_output_mask_as_the_mt5_example_reads_it():
    """task_seq2seq_autotitle_csl_mt5: ``y_mask = mask[1]`` of the decoder's output; the
    decoder's first token is the padding id (its start token) and still counts as real."""
    t5 = _build("t5.1.1")
    seen = {}

    class Probe(Loss):
        def compute_loss(self, inputs, mask=None):
            seen["mask"] = mask[1]
            return ops.mean(inputs[1])

    model = keras.Model(t5.inputs, Probe(1)([t5.inputs[1], t5.outputs[0]]))
    decoder_ids = np.array([[0, 5, 6, 0, 0]], dtype="int32")
    model([np.array([[4, 5, 1]], dtype="int32"), decoder_ids])
    np.testing.assert_array_equal(ops.convert_to_numpy(seen["mask"]), [[True, True, True, False, False]])


# ------------------------------------------------------------------ conditional LayerNorm
def _conditional_layer_norm_reference(x, cond, gamma, beta, hidden, gamma_dense, beta_dense, eps):
    """bert4keras' LayerNormalization(conditional=True), in numpy."""
    if hidden is not None:
        cond = cond @ hidden
    cond = cond[:, None, :]
    g, b = gamma + cond @ gamma_dense, beta + cond @ beta_dense
    x = x - x.mean(-1, keepdims=True)
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * g + b


def test_conditional_layer_norm_equals_bert4keras_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    cond = rng.normal(size=(2, 3)).astype("float32")
    layer = LayerNorm(epsilon=1e-6, conditional=True, hidden_units=4)
    layer([x, cond])
    for w in layer.weights:  # the projections start at zero: make them matter
        w.assign(rng.normal(size=w.shape).astype("float32"))
    expected = _conditional_layer_norm_reference(
        x, cond, *(ops.convert_to_numpy(w) for w in (layer.gamma, layer.beta,
                                                     layer.hidden_dense.kernel,
                                                     layer.gamma_dense.kernel,
                                                     layer.beta_dense.kernel)), 1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(layer([x, cond])), expected, atol=1e-4)


def test_conditional_language_model_as_the_example_builds_it(tmp_path):
    """task_conditional_language_model: a label embedding conditions every LayerNorm; the
    label input joins the model inputs; the checkpoint loads (the new projections start at
    zero, so the loaded model first computes exactly what the plain one does)."""
    plain = build_transformer_model(**CFG, max_position=32, application="lm", return_keras_model=False)
    plain.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    c_in = keras.layers.Input(shape=(1,))
    c = keras.layers.Embedding(3, 8)(c_in)
    c = keras.layers.Reshape((8,))(c)
    model = build_transformer_model(config_path=None, checkpoint_path=str(tmp_path / "model.ckpt"),
                                    **CFG, max_position=32, application="lm",
                                    layer_norm_cond=c, layer_norm_cond_hidden_size=4,
                                    layer_norm_cond_hidden_act="swish", additional_input_layers=c_in)
    assert len(model.inputs) == 3 and model.inputs[2] is c_in
    ids = np.array([[2, 5, 7, 9]], dtype="int32")
    label = np.array([[1]], dtype="float32")
    expected = ops.convert_to_numpy(plain.model([ids, np.zeros_like(ids)]))
    got = ops.convert_to_numpy(model([ids, np.zeros_like(ids), label]))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the condition is live: with non-zero projections, labels change the distribution
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if getattr(layer, "conditional", False) or isinstance(layer, keras.layers.Embedding) and layer.name not in (
                "Embedding-Token", "Embedding-Segment"):
            for w in layer.weights:
                w.assign(rng.normal(size=w.shape).astype("float32"))
    other = ops.convert_to_numpy(model([ids, np.zeros_like(ids), np.array([[2]], "float32")]))
    again = ops.convert_to_numpy(model([ids, np.zeros_like(ids), label]))
    assert np.abs(other - again).max() > 1e-3


# ------------------------------------------------------------------ bert4keras' T5 part keys
@pytest.mark.parametrize("version", ["t5.1.0", "mt5.1.1"])
def test_t5_encoder_and_decoder_keys_load_a_full_checkpoint(version, tmp_path):
    cfg = dict(CFG, relative_attention_num_buckets=8)
    full = build_transformer_model(model=version, **cfg, return_keras_model=False)
    full.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    encoder = build_transformer_model(None, str(tmp_path / "model.ckpt"), model=f"{version}_encoder", **cfg)
    decoder = build_transformer_model(None, str(tmp_path / "model.ckpt"), model=f"{version}_decoder", **cfg)
    assert len(encoder.inputs) == 1 and len(decoder.inputs) == 2
    ids, decoder_ids = np.array([[4, 9, 3, 1]], "int32"), np.array([[0, 5, 7]], "int32")
    encodings = ops.convert_to_numpy(encoder(ids))
    np.testing.assert_allclose(encodings, ops.convert_to_numpy(full.encoder(ids)), atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(decoder([encodings, decoder_ids])),
                               ops.convert_to_numpy(full.model([ids, decoder_ids])), atol=1e-5)


# ------------------------------------------------------------------ MultiHeadAttention on its own
def test_attention_called_directly_reads_the_keras_mask():
    """bert4keras' MultiHeadAttention hides padded keys through the Keras mask (v_mask): a
    user layer stack Embedding(mask_zero=True) -> MultiHeadAttention gives the real
    positions of a padded row what the unpadded row gets."""
    from kerasformer.layers import MultiHeadAttention

    ids = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(20, 8, mask_zero=True)(ids)
    attention = MultiHeadAttention(heads=2, head_size=3)
    model = keras.Model(ids, attention([x, x, x]))
    assert model.output.shape[-1] == 6  # out_dim defaults to heads * head_size, as in bert4keras
    row = np.array([[3, 5, 7, 2]], "int32")
    padded = np.array([[3, 5, 7, 2, 0, 0]], "int32")
    np.testing.assert_allclose(ops.convert_to_numpy(model(padded))[:, :4],
                               ops.convert_to_numpy(model(row)), atol=1e-5)
    with pytest.raises(kerasformer.KerasformerError, match="attention_bias"):
        attention(np.zeros((1, 4, 8), "float32"), a_bias=True)
