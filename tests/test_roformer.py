"""RoFormer (v1) equals Hugging Face's RoFormerModel / RoFormerForMaskedLM in safetensors and
pytorch_model.bin, and an independent numpy RoFormer on a checkpoint TensorFlow wrote with
ZhuiyiTechnology's names; RoFormer-v2 (not in Hugging Face) equals an independent numpy
RoFormer-v2 on a TF checkpoint with Zhuiyi's v2 names.

The numpy reference rotates queries and keys with complex numbers, (q_2k + i q_2k+1) *
exp(i m theta_k), straight from the RoFormer paper; it is itself checked against HF once.
"""
import math
import os
import re

import numpy as np
import pytest
import torch

from kerasformer import KerasformerError, WeightMismatchError, build_transformer_model
from kerasformer.backend import predict

from conftest import FIXTURES, TINY_BERT, save_hf, token_batch
from family_harness import FamilyCase, run_family_test
from test_nezha import (attention_allowed, bert_heads, dense, error_text, gelu, heads, layer_norm,
                        load_fixture, max_diff, merge, relu, same_weights, softmax)

TOL = 1e-4
V1_DIR = os.path.join(FIXTURES, "roformer")
V2_DIR = os.path.join(FIXTURES, "roformer_v2")


def ckpt(directory):
    return os.path.join(directory, "bert_model.ckpt")


def config_file(directory):
    return os.path.join(directory, "bert_config.json")


# ----------------------------------------------------------------- numpy reference
def rotate(x):
    """RoFormer's rotary embedding on [B, heads, L, d]: pair (x_2k, x_2k+1) at position m is
    rotated by the angle m * 10000^(-2k/d)."""
    L, d = x.shape[-2], x.shape[-1]
    theta = np.power(10000.0, -2.0 * np.arange(d // 2) / d)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * np.arange(L)[:, None] * theta)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def rms(x, eps=1e-7):
    """RoFormer-v2's norm: no centring, no gamma, no beta."""
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps)


def roformer_reference(values, config, ids, segments, application="encoder", rotary_value=False,
                       v2=False):
    """Sequence output and head outputs (v1: (nsp, mlm) where present; v2: mlm)."""
    n = config["num_attention_heads"]
    d = config["hidden_size"] // n
    allowed = attention_allowed(ids, segments, application)
    bias = not v2
    x = values["bert/embeddings/word_embeddings"][ids]
    if config.get("type_vocab_size", 2) > 0:
        x = x + values["bert/embeddings/token_type_embeddings"][segments]
    if v2:
        norm = rms
    else:
        def norm(y, scope):
            return layer_norm(y, values[scope + "/LayerNorm/gamma"], values[scope + "/LayerNorm/beta"])
    x = norm(x) if v2 else norm(x, "bert/embeddings")
    if "bert/encoder/embedding_hidden_mapping_in/kernel" in values:
        x = dense(values, "bert/encoder/embedding_hidden_mapping_in", x, bias)
    act = relu if config["hidden_act"] == "relu" else gelu
    for layer in range(config["num_hidden_layers"]):
        g = f"bert/encoder/layer_{layer}/"
        q = rotate(heads(dense(values, g + "attention/self/query", x, bias), n))
        k = rotate(heads(dense(values, g + "attention/self/key", x, bias), n))
        v = heads(dense(values, g + "attention/self/value", x, bias), n)
        if rotary_value:
            v = rotate(v)
        p = softmax(np.where(allowed, q @ k.transpose(0, 1, 3, 2) / math.sqrt(d), -np.inf))
        h = dense(values, g + "attention/output/dense", merge(p @ v), bias)
        x = norm(x + h) if v2 else norm(x + h, g + "attention/output")
        h = dense(values, g + "output/dense", act(dense(values, g + "intermediate/dense", x, bias)), bias)
        x = norm(x + h) if v2 else norm(x + h, g + "output")
    if v2:
        return x, softmax(x @ values["bert/embeddings/word_embeddings"].T)
    if "bert/pooler/dense/kernel" in values:
        return x, bert_heads(values, x)
    h = gelu(dense(values, "cls/predictions/transform/dense", x))
    h = layer_norm(h, values["cls/predictions/transform/LayerNorm/gamma"],
                   values["cls/predictions/transform/LayerNorm/beta"])
    return x, softmax(h @ values["bert/embeddings/word_embeddings"].T + values["cls/predictions/output_bias"])


def hf_to_google(state_dict, num_layers):
    """A HF RoFormerForMaskedLM state dict under Zhuiyi's TF names, written out name by name."""
    sd = {k: v.detach().double().numpy() for k, v in state_dict.items()}
    t = {
        "bert/embeddings/word_embeddings": sd["roformer.embeddings.word_embeddings.weight"],
        "bert/embeddings/token_type_embeddings": sd["roformer.embeddings.token_type_embeddings.weight"],
        "bert/embeddings/LayerNorm/gamma": sd["roformer.embeddings.LayerNorm.weight"],
        "bert/embeddings/LayerNorm/beta": sd["roformer.embeddings.LayerNorm.bias"],
        "cls/predictions/transform/dense/kernel": sd["cls.predictions.transform.dense.weight"].T,
        "cls/predictions/transform/dense/bias": sd["cls.predictions.transform.dense.bias"],
        "cls/predictions/transform/LayerNorm/gamma": sd["cls.predictions.transform.LayerNorm.weight"],
        "cls/predictions/transform/LayerNorm/beta": sd["cls.predictions.transform.LayerNorm.bias"],
        "cls/predictions/output_bias": sd["cls.predictions.bias"],
    }
    if "roformer.embeddings_project.weight" in sd:
        t["bert/encoder/embedding_hidden_mapping_in/kernel"] = sd["roformer.embeddings_project.weight"].T
        t["bert/encoder/embedding_hidden_mapping_in/bias"] = sd["roformer.embeddings_project.bias"]
    for i in range(num_layers):
        g, h = f"bert/encoder/layer_{i}/", f"roformer.encoder.layer.{i}."
        for gn, hn in [("attention/self/query", "attention.self.query"), ("attention/self/key", "attention.self.key"),
                       ("attention/self/value", "attention.self.value"),
                       ("attention/output/dense", "attention.output.dense"),
                       ("intermediate/dense", "intermediate.dense"), ("output/dense", "output.dense")]:
            t[g + gn + "/kernel"] = sd[h + hn + ".weight"].T
            t[g + gn + "/bias"] = sd[h + hn + ".bias"]
        for gn, hn in [("attention/output", "attention.output"), ("output", "output")]:
            t[g + gn + "/LayerNorm/gamma"] = sd[h + hn + ".LayerNorm.weight"]
            t[g + gn + "/LayerNorm/beta"] = sd[h + hn + ".LayerNorm.bias"]
    return t


# ----------------------------------------------------------------- Hugging Face fixtures
def perturbed_hf_roformer(seed, **overrides):
    """A random RoFormerForMaskedLM with every trainable parameter shifted off its init (the
    frozen sinusoid embed_positions is left alone: HF recomputes nothing from it)."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.RoFormerConfig(**{**TINY_BERT, **overrides})
    model = transformers.RoFormerForMaskedLM(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model


@pytest.fixture(scope="module")
def hf_roformer(tmp_path_factory):
    root = tmp_path_factory.mktemp("roformer")
    plain = perturbed_hf_roformer(0)
    # HF options bert4keras lacks: values rotated too; embeddings narrower than the hidden size
    variant = perturbed_hf_roformer(1, rotary_value=True, embedding_size=24)
    paths = {fmt: save_hf(plain, str(root / fmt), fmt) for fmt in ("safetensors", "torch")}
    paths["variant"] = save_hf(variant, str(root / "variant"), "safetensors")
    paths["bare"] = save_hf(plain.roformer, str(root / "bare"), "safetensors")  # a RoFormerModel
    return {"plain": plain, "variant": variant}, paths


def hf_outputs(hf, ids, segments):
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids).long(), token_type_ids=torch.tensor(segments).long(),
                 attention_mask=torch.tensor(ids != 0).long(), output_hidden_states=True)
    return out.hidden_states[-1].numpy(), torch.softmax(out.logits, -1).numpy()


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_roformer_matches_hf(hf_roformer, fmt):
    models, paths = hf_roformer
    ids, segments = token_batch(TINY_BERT["vocab_size"])
    sequence_hf, mlm_hf = hf_outputs(models["plain"], ids, segments)
    transformer = build_transformer_model(os.path.join(paths[fmt], "config.json"), paths[fmt],
                                          model="roformer", with_mlm=True, with_sequence_output=True,
                                          return_keras_model=False)
    # the saved sinusoid is recognised as derived, not silently dropped as "unused"
    ignored = set(transformer.load_report.ignored)
    assert "roformer.encoder.embed_positions.weight" in ignored
    # a torch.save'd .bin also holds the tied decoder copies; nothing else may be ignored
    assert ignored <= {"roformer.encoder.embed_positions.weight", "cls.predictions.decoder.weight",
                       "cls.predictions.decoder.bias"}
    assert transformer.load_report.unused == []
    sequence, mlm = predict(transformer.model, [ids, segments])
    assert max_diff(sequence, sequence_hf) <= TOL
    assert max_diff(mlm, mlm_hf) <= TOL


def test_bare_roformer_model_matches_hf(hf_roformer):
    """RoFormerModel saves its names without the 'roformer.' prefix."""
    models, paths = hf_roformer
    ids, segments = token_batch(TINY_BERT["vocab_size"])
    transformer = build_transformer_model(os.path.join(paths["bare"], "config.json"), paths["bare"],
                                          model="roformer", return_keras_model=False)
    assert transformer.load_report.ignored == ["encoder.embed_positions.weight"]
    assert max_diff(predict(transformer.model, [ids, segments]),
                    hf_outputs(models["plain"], ids, segments)[0]) <= TOL


def test_rotary_value_and_embedding_size_match_hf(hf_roformer):
    models, paths = hf_roformer
    ids, segments = token_batch(TINY_BERT["vocab_size"])
    sequence_hf, mlm_hf = hf_outputs(models["variant"], ids, segments)
    model = build_transformer_model(os.path.join(paths["variant"], "config.json"), paths["variant"],
                                    model="roformer", with_mlm=True, with_sequence_output=True)
    sequence, mlm = predict(model, [ids, segments])
    assert max_diff(sequence, sequence_hf) <= TOL
    assert max_diff(mlm, mlm_hf) <= TOL


def test_numpy_reference_matches_hf(hf_roformer):
    """The reference the TF and v2 tests trust is itself right (values rotated too)."""
    models, _ = hf_roformer
    hf = models["variant"]
    ids, segments = token_batch(TINY_BERT["vocab_size"])
    values = hf_to_google(hf.state_dict(), TINY_BERT["num_hidden_layers"])
    config = {**TINY_BERT, "hidden_act": "gelu"}
    sequence, mlm = roformer_reference(values, config, ids, segments, rotary_value=True)
    sequence_hf, mlm_hf = hf_outputs(hf, ids, segments)
    assert max_diff(sequence, sequence_hf) <= TOL
    assert max_diff(mlm, mlm_hf) <= TOL
    # and the rotation matters: without it the reference is far off
    assert max_diff(roformer_reference(values, config, ids, segments)[0], sequence_hf) > 1e-2


def test_tf_checkpoint_matches_numpy_reference(tmp_path):
    """Against the numpy reference; export (Zhuiyi's names), .keras, v2's refusal: the harness."""
    config, values = load_fixture(V1_DIR)
    ids, segments = token_batch(config["vocab_size"])
    sequence, (nsp, mlm) = roformer_reference(values, config, ids, segments)
    run_family_test(FamilyCase(
        model="roformer", config=config_file(V1_DIR), checkpoints={"tf": ckpt(V1_DIR)},
        inputs=[ids, segments], expected=[sequence, nsp, mlm], exported_names=set(values),
        options={"with_nsp": True, "with_mlm": True, "with_sequence_output": True},
        # v1 names are v2's plus LayerNorms and biases: refuse instead of dropping them
        wrong_families={"roformer_v2": re.escape("RoFormer v1 (model='roformer')")}), tmp_path)


# the masks are generic (tests/test_masks.py, and both in test_nezha.py); here: they meet rotary
@pytest.mark.parametrize("model_key,directory,application",
                         [("roformer", V1_DIR, "unilm"), ("roformer_v2", V2_DIR, "lm")])
def test_applications_match_reference(model_key, directory, application):
    config, values = load_fixture(directory)
    ids, segments = token_batch(config["vocab_size"])
    # lm / unilm bring the MLM head (bert4keras): compare the sequence output before it
    model = build_transformer_model(config_file(directory), ckpt(directory), model=model_key,
                                    application=application, with_sequence_output=True)
    expected = roformer_reference(values, config, ids, segments, application=application,
                                  v2=model_key == "roformer_v2")[0]
    assert max_diff(predict(model, [ids, segments])[0], expected) <= TOL


# ----------------------------------------------------------------- RoFormer-v2
def test_v2_tf_checkpoint_matches_numpy_reference(tmp_path):
    """Against the numpy reference; .keras, Zhuiyi's TF names and HF-style names all come back
    to the same model; v1 refuses the checkpoint: the harness."""
    config, values = load_fixture(V2_DIR)
    ids, segments = token_batch(config["vocab_size"])
    transformer = run_family_test(FamilyCase(
        model="roformer_v2", config=config_file(V2_DIR), checkpoints={"tf": ckpt(V2_DIR)},
        inputs=[ids, segments], expected=list(roformer_reference(values, config, ids, segments, v2=True)),
        options={"with_mlm": True, "with_sequence_output": True}, exported_names=set(values),
        export_formats=("tf", "safetensors"), wrong_families={"roformer": "model='roformer_v2'"}),
        tmp_path)
    assert not any("beta" in v.path or "gamma" in v.path or "bias" in v.path
                   for v in transformer.model.weights)


def test_v2_without_segment_embedding():
    config, values = load_fixture(V2_DIR)
    config = {**config, "type_vocab_size": 0}
    ids, segments = token_batch(config["vocab_size"])
    model = build_transformer_model(config_file(V2_DIR), ckpt(V2_DIR), model="roformer_v2",
                                    segment_vocab_size=0)
    assert not any("Segment" in v.path for v in model.weights)
    expected = roformer_reference(values, config, ids, segments, v2=True)[0]
    assert max_diff(predict(model, [ids, segments]), expected) <= TOL


def test_v2_has_no_pooler():
    with pytest.raises(KerasformerError, match="no pooler or NSP"):
        build_transformer_model(config_file(V2_DIR), model="roformer_v2", with_pool=True)


# ----------------------------------------------------------------- wrong families
def test_bert_checkpoints_are_refused(tiny_hf_bert):
    bert = os.path.join(FIXTURES, "tf", "bert_tiny")
    with pytest.raises(WeightMismatchError) as info:
        build_transformer_model(os.path.join(bert, "bert_config.json"), os.path.join(bert, "bert_model.ckpt"),
                                model="roformer")
    assert "absolute position embeddings" in error_text(info) and "model='bert'" in error_text(info)
    directory = tiny_hf_bert[2]["safetensors"]
    with pytest.raises(WeightMismatchError) as info:
        build_transformer_model(os.path.join(directory, "config.json"), directory, model="roformer")
    assert "model='bert'" in error_text(info)


def test_roformer_checkpoint_is_refused_by_bert(hf_roformer):
    directory = hf_roformer[1]["safetensors"]
    with pytest.raises(WeightMismatchError, match="'roformer'.*pass model='roformer'"):
        build_transformer_model(os.path.join(directory, "config.json"), directory, model="bert")
