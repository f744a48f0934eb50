"""NEZHA built by kerasformer equals an independent numpy NEZHA, fed from a checkpoint that real
TensorFlow wrote with Huawei's names (tests/fixtures/make_nezha_roformer_fixtures.py).

Hugging Face no longer ships NEZHA (transformers >= 4.41), so the reference is written here
from the NEZHA paper and Huawei's released code, in plain numpy and float64, reading the
arrays from variables.npz (numpy's own file, not kerasformer's TF reader). The numpy helpers
below are shared with test_roformer.py.
"""
import json
import math
import os

import numpy as np
import pytest

from kerasformer import KerasformerError, WeightMismatchError, build_transformer_model
from kerasformer.backend import predict

from conftest import FIXTURES, token_batch
from family_harness import FamilyCase, max_diff, run_family_test  # noqa: F401 (max_diff: test_roformer's too)

TOL = 1e-4
NEZHA_DIR = os.path.join(FIXTURES, "nezha")
NEZHA_CONFIG = os.path.join(NEZHA_DIR, "bert_config.json")
NEZHA_CKPT = os.path.join(NEZHA_DIR, "model.ckpt-900000")


# ----------------------------------------------------------------- numpy reference pieces
def load_fixture(directory):
    with open(os.path.join(directory, "bert_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    with np.load(os.path.join(directory, "variables.npz")) as npz:
        values = {k: npz[k].astype(np.float64) for k in npz.files}
    return config, values


_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def relu(x):
    return np.maximum(x, 0.0)


def layer_norm(x, gamma, beta, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def attention_allowed(ids, segments, application="encoder", pad_id=0):
    """[B, 1, L, L] booleans: may query i see key j (padding; causal; UniLM's seq2seq)."""
    B, L = ids.shape
    allowed = np.broadcast_to((ids != pad_id)[:, None, None, :], (B, 1, L, L))
    i, j = np.arange(L)[:, None], np.arange(L)[None, :]
    if application == "lm":
        allowed = allowed & (j <= i)
    elif application == "unilm":
        idx = np.cumsum(segments, axis=1)
        allowed = allowed & (idx[:, None, None, :] <= idx[:, None, :, None])
    return allowed


def dense(values, scope, x, bias=True):
    y = x @ values[scope + "/kernel"]
    return y + values[scope + "/bias"] if bias else y


def heads(x, n):
    B, L, H = x.shape
    return x.reshape(B, L, n, H // n).transpose(0, 2, 1, 3)  # [B, n, L, d]


def merge(x):
    B, n, L, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, L, n * d)


def nezha_relative(length, depth, K):
    """NEZHA's functional relative encoding, from its definition: entry (i, j) is a sinusoid
    of p = clip(j - i, -K, K) + K, a[2k] = sin(p / 10000^(2k/depth)), a[2k+1] = cos(...).
    (The paper prints j - i; Huawei's code, which trained the checkpoints, shifts by K.)"""
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    p = (np.clip(j - i, -K, K) + K).astype(np.float64)
    k = np.arange(depth // 2)
    angle = p[..., None] / np.power(10000.0, 2.0 * k / depth)
    r = np.zeros((length, length, depth))
    r[..., 0::2], r[..., 1::2] = np.sin(angle), np.cos(angle)
    return r


def nezha_reference(values, config, ids, segments, application="encoder", K=64):
    """NEZHA forward pass: returns sequence output, NSP probabilities and MLM probabilities."""
    n, L = config["num_attention_heads"], ids.shape[1]
    d = config["hidden_size"] // n
    r = nezha_relative(L, d, K)
    allowed = attention_allowed(ids, segments, application)
    x = values["bert/embeddings/word_embeddings"][ids] + values["bert/embeddings/token_type_embeddings"][segments]
    x = layer_norm(x, values["bert/embeddings/LayerNorm/gamma"], values["bert/embeddings/LayerNorm/beta"])
    for layer in range(config["num_hidden_layers"]):
        g = f"bert/encoder/layer_{layer}/"
        q = heads(dense(values, g + "attention/self/query", x), n)
        k = heads(dense(values, g + "attention/self/key", x), n)
        v = heads(dense(values, g + "attention/self/value", x), n)
        # e_ij = (q_i k_j + q_i r_ij) / sqrt(d);  z_i = sum_j p_ij (v_j + r_ij)
        scores = (q @ k.transpose(0, 1, 3, 2) + np.einsum("bhid,ijd->bhij", q, r)) / math.sqrt(d)
        p = softmax(np.where(allowed, scores, -np.inf))
        z = p @ v + np.einsum("bhij,ijd->bhid", p, r)
        h = dense(values, g + "attention/output/dense", merge(z))
        x = layer_norm(x + h, values[g + "attention/output/LayerNorm/gamma"],
                       values[g + "attention/output/LayerNorm/beta"])
        h = dense(values, g + "output/dense", gelu(dense(values, g + "intermediate/dense", x)))
        x = layer_norm(x + h, values[g + "output/LayerNorm/gamma"], values[g + "output/LayerNorm/beta"])
    return x, bert_heads(values, x)


def bert_heads(values, x):
    """BERT's pooler + NSP and MLM heads (NEZHA and RoFormer v1 keep them)."""
    pooled = np.tanh(dense(values, "bert/pooler/dense", x[:, 0]))
    nsp = softmax(pooled @ values["cls/seq_relationship/output_weights"].T
                  + values["cls/seq_relationship/output_bias"])
    h = gelu(dense(values, "cls/predictions/transform/dense", x))
    h = layer_norm(h, values["cls/predictions/transform/LayerNorm/gamma"],
                   values["cls/predictions/transform/LayerNorm/beta"])
    mlm = softmax(h @ values["bert/embeddings/word_embeddings"].T + values["cls/predictions/output_bias"])
    return nsp, mlm


# ----------------------------------------------------------------- tests
NEZHA_OPTIONS = {"with_nsp": True, "with_mlm": True, "with_sequence_output": True}


@pytest.fixture(scope="module")
def nezha():
    config, values = load_fixture(NEZHA_DIR)
    transformer = build_transformer_model(NEZHA_CONFIG, NEZHA_CKPT, model="nezha",
                                          return_keras_model=False, **NEZHA_OPTIONS)
    return transformer, config, values


def test_tf_checkpoint_matches_numpy_reference(nezha, tmp_path):
    """Against the numpy reference; Huawei's names exported and read back, .keras, RoFormer's
    refusal of the config: the harness."""
    transformer, config, values = nezha
    assert transformer.load_report.unused == [] and transformer.load_report.ignored == ["global_step"]
    ids, segments = token_batch(config["vocab_size"])
    sequence, (nsp, mlm) = nezha_reference(values, config, ids, segments)
    run_family_test(FamilyCase(
        model="nezha", config=NEZHA_CONFIG, checkpoints={"tf": NEZHA_CKPT}, inputs=[ids, segments],
        expected=[sequence, nsp, mlm], exported_names=set(values), options=NEZHA_OPTIONS,
        wrong_families={"roformer": "NEZHA's.*model='nezha'"}), tmp_path, transformer)


def test_distances_beyond_max_relative_position_are_clipped(nezha):
    """70 tokens: distances up to 69 use the K = 64 row, as in Huawei's code."""
    transformer, config, values = nezha
    ids, segments = token_batch(config["vocab_size"], batch=2, length=70, seed=5)
    sequence = predict(transformer.model, [ids, segments])[0]
    expected = nezha_reference(values, config, ids, segments)[0]
    assert max_diff(sequence, expected) <= TOL


def test_max_relative_position_option():
    config, values = load_fixture(NEZHA_DIR)
    ids, segments = token_batch(config["vocab_size"])
    expected = nezha_reference(values, config, ids, segments, K=3)[0]
    # not vacuous: K changes the output of a 12-token input
    assert max_diff(expected, nezha_reference(values, config, ids, segments)[0]) > 1e-2
    model = build_transformer_model(NEZHA_CONFIG, NEZHA_CKPT, model="nezha", max_relative_position=3)
    assert max_diff(predict(model, [ids, segments]), expected) <= TOL


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_applications_match_reference(application):
    config, values = load_fixture(NEZHA_DIR)
    ids, segments = token_batch(config["vocab_size"])
    # lm / unilm bring the MLM head (bert4keras): compare the sequence output before it
    model = build_transformer_model(NEZHA_CONFIG, NEZHA_CKPT, model="nezha", application=application,
                                    with_sequence_output=True)
    expected = nezha_reference(values, config, ids, segments, application=application)[0]
    assert max_diff(predict(model, [ids, segments])[0], expected) <= TOL


# Hugging Face NezhaForPreTraining's state-dict keys (transformers 4.40, modeling_nezha.py),
# written out by hand; the buffers are computed, not loaded
def hf_nezha_names(num_layers):
    names = ["nezha.embeddings.word_embeddings.weight", "nezha.embeddings.token_type_embeddings.weight",
             "nezha.embeddings.LayerNorm.weight", "nezha.embeddings.LayerNorm.bias",
             "nezha.pooler.dense.weight", "nezha.pooler.dense.bias",
             "cls.predictions.bias", "cls.predictions.transform.dense.weight",
             "cls.predictions.transform.dense.bias", "cls.predictions.transform.LayerNorm.weight",
             "cls.predictions.transform.LayerNorm.bias", "cls.seq_relationship.weight",
             "cls.seq_relationship.bias"]
    for i in range(num_layers):
        for part in ["attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                     "output.dense", "output.LayerNorm"]:
            names += [f"nezha.encoder.layer.{i}.{part}.weight", f"nezha.encoder.layer.{i}.{part}.bias"]
    return set(names)


def test_exports_under_original_names_and_reads_them_back(nezha, tmp_path):
    from kerasformer.checkpoints.resolve import save_safetensors
    from kerasformer.checkpoints.tf_bundle import read_tf_checkpoint

    transformer, config, values = nezha
    prefix = str(tmp_path / "model.ckpt")
    transformer.save_weights_as_checkpoint(prefix, format="tf")
    written = read_tf_checkpoint(prefix)
    assert set(written) == set(values)  # exactly Huawei's names, nothing more, nothing less
    assert all(np.allclose(written[k], values[k], atol=1e-7) for k in values)

    hf = transformer.export_tensors("hf")
    assert set(hf) == hf_nezha_names(config["num_hidden_layers"])
    # a HF file also carries each layer's sinusoid buffer: skipped, and reported as ignored
    buffer = "nezha.encoder.layer.0.attention.self.relative_positions_encoding.positions_encoding"
    hf[buffer] = np.zeros((512, 512, 8), "float32")
    save_safetensors(str(tmp_path / "model.safetensors"), hf)
    reloaded = build_transformer_model(NEZHA_CONFIG, str(tmp_path / "model.safetensors"), model="nezha",
                                       with_nsp=True, with_mlm=True, with_sequence_output=True,
                                       return_keras_model=False)
    assert buffer in reloaded.load_report.ignored and not reloaded.load_report.unused
    assert same_weights(reloaded.model, transformer.model)


def same_weights(a, b):
    """Every variable of ``a`` equals ``b``'s of the same path (cheaper than running both)."""
    theirs = {v.path: v.numpy() for v in b.weights}
    return len(a.weights) == len(theirs) and all(np.array_equal(v.numpy(), theirs[v.path]) for v in a.weights)


def error_text(info):
    """The message and the one it was raised from (build_transformer_model may add a family
    hint on top of the family's own diagnosis)."""
    return f"{info.value} | {info.value.__cause__ or ''}"


def test_bert_checkpoint_is_refused():
    """Google BERT's names are NEZHA's plus an absolute position table: refuse, don't drop it."""
    bert = os.path.join(FIXTURES, "tf", "bert_tiny")
    with pytest.raises(WeightMismatchError) as info:
        build_transformer_model(os.path.join(bert, "bert_config.json"), os.path.join(bert, "bert_model.ckpt"),
                                model="nezha")
    assert "absolute position embeddings" in error_text(info) and "model='bert'" in error_text(info)


def test_configs_of_other_families_are_refused():
    with pytest.raises(KerasformerError, match="use_relative_position=false.*model='bert'"):
        build_transformer_model(NEZHA_CONFIG, model="nezha", use_relative_position=False)
    with pytest.raises(KerasformerError, match="NEZHA's.*model='nezha'"):
        build_transformer_model(NEZHA_CONFIG, model="roformer")
