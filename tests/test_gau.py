"""GAU-alpha (model='gau_alpha') equals an independent numpy GAU-alpha of bert4keras'
semantics (``GAU_alpha`` in bojone/bert4keras: RoFormer-v2 with GatedAttentionUnit blocks)
on a TF checkpoint with Zhuiyi's names, through the shared family harness."""
import json
import math
import os

import numpy as np
import pytest

from kerasformer import KerasformerError, build_transformer_model
from kerasformer.checkpoints.tf_bundle import write_tf_checkpoint

from conftest import FIXTURES, token_batch
from family_harness import FamilyCase, build, run_family_test

CONFIG = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=1,
              intermediate_size=24, attention_key_size=8, hidden_act="swish", type_vocab_size=2,
              max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def random_checkpoint(config, seed=0):
    """Zhuiyi's names with weights of a healthy scale (float64 for the reference)."""
    rng = np.random.default_rng(seed)
    h, e, k = config["hidden_size"], config["intermediate_size"], config["attention_key_size"]
    values = {"bert/embeddings/word_embeddings": rng.normal(0, 1, (config["vocab_size"], h)),
              "bert/embeddings/token_type_embeddings": rng.normal(0, 1, (config["type_vocab_size"], h))}
    for i in range(config["num_hidden_layers"]):
        g = f"GAU_alpha/encoder/layer_{i}/gau/"
        values[g + "i_dense/kernel"] = rng.normal(0, 1.5 / h ** 0.5, (h, 2 * e + k))
        values[g + "o_dense/kernel"] = rng.normal(0, 1 / e ** 0.5, (e, h))
        values[g + "q_scaleoffset/gamma"] = 1 + rng.normal(0, 0.5, k)
        values[g + "k_scaleoffset/gamma"] = 1 + rng.normal(0, 0.5, k)
    return values


# ----------------------------------------------------------------- numpy reference
def scale_free_norm(x, eps=1e-7):
    """bert4keras' LayerNormalization(zero_mean=False, scale=False, offset=False), K.epsilon()."""
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps)


def rope(x):
    """RoPE on [B, L, d]: the pair (x_2j, x_2j+1) at position m turned by m * 10000^(-2j/d)."""
    length, d = x.shape[-2], x.shape[-1]
    angle = np.arange(length)[:, None] * np.power(10000.0, -2.0 * np.arange(d // 2) / d)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * angle)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def gau_alpha_reference(values, config, ids, segments):
    """(sequence output, MLM probabilities) of bert4keras' GAU_alpha, encoder application."""
    e, k = config["intermediate_size"], config["attention_key_size"]
    x = values["bert/embeddings/word_embeddings"][ids] + values["bert/embeddings/token_type_embeddings"][segments]
    x = scale_free_norm(x)
    real = ids != 0  # the Keras mask of the token embedding: padding keys are masked
    n = np.maximum(real.sum(-1), 16)[:, None, None]  # softmax_plus: the real length, at least 16
    for i in range(config["num_hidden_layers"]):
        g = f"GAU_alpha/encoder/layer_{i}/gau/"
        a = x @ values[g + "i_dense/kernel"]
        a = a / (1 + np.exp(-a))  # swish
        u, v, z = a[..., :e], a[..., e:2 * e], a[..., 2 * e:]
        q, kk = rope(z * values[g + "q_scaleoffset/gamma"]), rope(z * values[g + "k_scaleoffset/gamma"])
        scores = q @ kk.transpose(0, 2, 1) / math.sqrt(k) * np.log(n) / np.log(512)
        scores = np.where(real[:, None, :], scores, -np.inf)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        x = scale_free_norm(x + (u * (p @ v)) @ values[g + "o_dense/kernel"])
    logits = x @ values["bert/embeddings/word_embeddings"].T
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return x, probs / probs.sum(-1, keepdims=True)


# ----------------------------------------------------------------- the family
@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("gau_alpha")
    values = random_checkpoint(CONFIG)
    write_tf_checkpoint(str(root / "bert_model.ckpt"), {n: v.astype("float32") for n, v in values.items()})
    (root / "bert_config.json").write_text(json.dumps(CONFIG))
    ids, segments = token_batch(CONFIG["vocab_size"], length=20)  # 20, 17, 14 real tokens
    return FamilyCase(
        model="gau_alpha", config=str(root / "bert_config.json"),
        checkpoints={"tf": str(root / "bert_model.ckpt")}, inputs=[ids, segments],
        expected=list(gau_alpha_reference(values, CONFIG, ids, segments)),
        options={"with_mlm": True, "with_sequence_output": True}, exported_names=set(values),
        wrong_families={"roformer_v2": "'gau_alpha' checkpoint.*pass model='gau_alpha'",
                        "bert": "'gau_alpha' checkpoint.*pass model='gau_alpha'"})


@pytest.fixture(scope="module")
def gau(case):
    return build(case)


def test_gau_alpha_family(case, gau, tmp_path):
    run_family_test(case, tmp_path, gau)


def test_gau_alpha_has_no_bias_and_one_unit_per_block(gau):
    paths = [v.path for v in gau.model.weights]
    assert not any("bias" in p or "beta" in p for p in paths)
    assert sum(p.endswith("i_dense/kernel") for p in paths) == CONFIG["num_hidden_layers"]


def test_refusals(case, gau):
    with pytest.raises(KerasformerError, match="application='encoder' only"):
        build_transformer_model(case.config, model="gau_alpha", application="unilm")
    with pytest.raises(KerasformerError, match="format='tf'"):
        gau.save_weights_as_checkpoint("unused.safetensors", format="safetensors")
    # RoFormer-v2's checkpoint (same embeddings, standard attention) is not loaded as GAU-alpha
    v2 = os.path.join(FIXTURES, "roformer_v2")
    with pytest.raises(KerasformerError, match="not a GAU-alpha checkpoint"):
        build_transformer_model(os.path.join(v2, "bert_config.json"), os.path.join(v2, "bert_model.ckpt"),
                                model="gau_alpha")
