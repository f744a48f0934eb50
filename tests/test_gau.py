"""GAU-alpha (model='gau_alpha') equals an independent numpy GAU-alpha of bert4keras'
semantics (``GAU_alpha`` in bojone/bert4keras: RoFormer-v2 with GatedAttentionUnit blocks)
on a TF checkpoint with Zhuiyi's names, through the shared family harness."""
import json
import math
import os

import numpy as np
import pytest

from kerasformer import KerasformerError, build_transformer_model, generate
from kerasformer.backend import predict
from kerasformer.checkpoints.tf_bundle import write_tf_checkpoint

from conftest import FIXTURES, token_batch
from family_harness import FamilyCase, as_list, build, max_diff, run_family_test

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


def visible_keys(ids, segments, application):
    """bool [B, L, L]: the keys each query may see -- real (non-padding) keys, and under
    bert4keras' LM_Mask / UniLM_Mask only the earlier ones / those of an earlier or equal
    cumulative segment."""
    length = ids.shape[1]
    allowed = np.broadcast_to((ids != 0)[:, None, :], (len(ids), length, length))
    if application == "lm":
        allowed = allowed & np.tril(np.ones((length, length), bool))
    elif application == "unilm":
        idx = np.cumsum(segments, axis=1)
        allowed = allowed & (idx[:, None, :] <= idx[:, :, None])
    return allowed


def gau_alpha_reference(values, config, ids, segments, application="encoder"):
    """(sequence output, MLM probabilities) of bert4keras' GAU_alpha. The mask reaches
    attention_normalize as the key mask plus (lm / unilm) a boolean a_bias, which
    sequence_masking combines into one mask before softmax_plus counts it: the length is
    the number of keys each query may see (at least 16)."""
    e, k = config["intermediate_size"], config["attention_key_size"]
    x = values["bert/embeddings/word_embeddings"][ids] + values["bert/embeddings/token_type_embeddings"][segments]
    x = scale_free_norm(x)
    allowed = visible_keys(ids, segments, application)
    n = np.maximum(allowed.sum(-1), 16)[..., None]  # softmax_plus: per query, at least 16
    for i in range(config["num_hidden_layers"]):
        g = f"GAU_alpha/encoder/layer_{i}/gau/"
        a = x @ values[g + "i_dense/kernel"]
        a = a / (1 + np.exp(-a))  # swish
        u, v, z = a[..., :e], a[..., e:2 * e], a[..., 2 * e:]
        q, kk = rope(z * values[g + "q_scaleoffset/gamma"]), rope(z * values[g + "k_scaleoffset/gamma"])
        scores = q @ kk.transpose(0, 2, 1) / math.sqrt(k) * np.log(n) / np.log(512)
        scores = np.where(allowed, scores, -np.inf)
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
    with pytest.raises(KerasformerError, match="format='tf'"):
        gau.save_weights_as_checkpoint("unused.safetensors", format="safetensors")
    # RoFormer-v2's checkpoint (same embeddings, standard attention) is not loaded as GAU-alpha
    v2 = os.path.join(FIXTURES, "roformer_v2")
    with pytest.raises(KerasformerError, match="not a GAU-alpha checkpoint"):
        build_transformer_model(os.path.join(v2, "bert_config.json"), os.path.join(v2, "bert_model.ckpt"),
                                model="gau_alpha")


# ----------------------------------------------------------------- lm / unilm and decoding
# a 14-token prompt and 8 new tokens: queries see more than 16 keys, where softmax_plus'
# length starts to count (below 16 it is clamped to 16, and any count would pass)
PROMPTS = [[5, 17, 23, 9, 30, 2, 3, 4, 5, 6, 7, 8, 9, 10], [7, 3], [11, 12, 13, 14, 15, 16, 17, 18, 19]]


@pytest.fixture(scope="module", params=["lm", "unilm"])
def decoder(request, case):
    return request.param, build_transformer_model(
        case.config, case.checkpoints["tf"], model="gau_alpha", application=request.param,
        with_mlm=True, with_sequence_output=True)


def test_lm_and_unilm_equal_the_reference(case, decoder):
    """The causal / UniLM mask, with bert4keras' per-query length in softmax_plus."""
    application, model = decoder
    ids, segments = case.inputs
    expected = gau_alpha_reference(random_checkpoint(CONFIG), CONFIG, ids, segments, application)
    for got, want in zip(predict(model, [ids, segments]), expected):
        assert max_diff(got, want) <= 1e-4


def full_probs(model, ids, segments, width=32):
    """Next-token probabilities at every position of ``ids``, from one full forward pass,
    right-padded to ``width`` (one compiled shape for every length): padding keys are
    masked, so the real positions are exact."""
    pad = width - len(ids)
    inputs = [np.array([list(ids) + [0] * pad], "int32"), np.array([list(segments) + [segments[-1]] * pad], "int32")]
    return as_list(predict(model, inputs))[-1][0, : len(ids)]


def test_cached_decoding_equals_the_full_forward_pass(decoder):
    """Greedy (a left-padded ragged batch) equals bert4keras' uncached decoding (the whole
    sequence through the model for every token), and every beam's score equals its
    log-probability under the full forward pass."""
    application, model = decoder
    new_segment = int(application == "unilm")
    batched = generate(model, PROMPTS, 8)
    assert len({tuple(t) for t in batched}) > 1  # not a degenerate model
    for prompt, tokens in zip(PROMPTS, batched):
        ids, segments = list(prompt), [0] * len(prompt)
        for _ in range(8):
            ids.append(int(full_probs(model, ids, segments)[-1].argmax()))
            segments.append(new_segment)
        assert tokens == ids[len(prompt):]
    for prompt, beams in zip(PROMPTS, generate(model, PROMPTS, 6, strategy="beam", num_beams=2,
                                                return_all_beams=True)):
        for tokens, score in beams:
            probs = full_probs(model, prompt + tokens, [0] * len(prompt) + [new_segment] * len(tokens))
            expected = sum(np.log(probs[len(prompt) - 1 + i, t]) for i, t in enumerate(tokens))
            assert abs(score - expected) <= 1e-4, (tokens, score, expected)


def test_decoding_after_a_keras_round_trip(decoder, tmp_path):
    """The unit's mask and cache arguments survive ``.keras`` saving: a reloaded model
    decodes the same."""
    import keras

    application, model = decoder
    if application != "lm":
        pytest.skip("one application is enough: the unit's call is the same")
    path = str(tmp_path / "gau_lm.keras")
    model.save(path)
    assert generate(keras.saving.load_model(path), PROMPTS, 8) == generate(model, PROMPTS, 8)


def test_the_length_counts_the_keys_each_query_sees():
    """attention_normalize with a boolean causal bias (bert4keras' LM mask) counts keys per
    query; a query that may see none stays finite with a finite fill value, compiled too."""
    from kerasformer.backend import attention_normalize, jit

    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 20, 20)).astype("float32")
    keys = np.ones((1, 20), bool)
    causal = np.tril(np.ones((20, 20), bool))[None]
    want = np.where(causal, a * np.log(np.maximum(np.arange(1, 21), 16))[:, None] / np.log(512), -np.inf)
    want = np.exp(want - want.max(-1, keepdims=True))
    got = attention_normalize(a, keys, -1, "softmax_plus", causal)
    assert max_diff(got, want / want.sum(-1, keepdims=True)) <= 1e-6
    none = causal.copy()
    none[0, 0] = False  # the first query sees no key (a left-padded prefill's padding)
    for method in ("softmax_plus", "squared_relu", "softmax"):
        compiled = jit(lambda a, keys, bias: attention_normalize(a, keys, -1, method, bias, value=-1e30))  # noqa: B023
        for got in (attention_normalize(a, keys, -1, method, none, value=-1e30), compiled(a, keys, none)):
            assert np.isfinite(np.asarray(got)).all(), method
