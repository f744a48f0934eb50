"""ALBERT and ALBERT_Unshared built by kerasformer equal Hugging Face's ALBERT, from HF
files (safetensors, pytorch_model.bin, bare AlbertModel) and from a Google TF checkpoint
written by real TensorFlow (tests/fixtures/make_albert_electra_fixtures.py)."""
import functools
import os

import keras
import numpy as np
import pytest
import torch

from kerasformer import KerasformerError, WeightMismatchError, build_transformer_model
from kerasformer.backend import predict

from conftest import FIXTURES, perturb_, save_hf, token_batch

TOL = 1e-4
TINY_ALBERT = dict(vocab_size=60, embedding_size=8, hidden_size=16, num_hidden_layers=3,
                   num_attention_heads=2, intermediate_size=24, max_position_embeddings=24,
                   type_vocab_size=2, hidden_act="gelu_new", hidden_dropout_prob=0.0,
                   attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0)
TF_DIR = os.path.join(FIXTURES, "albert")
TF_CONFIG = os.path.join(TF_DIR, "albert_config.json")
TF_CKPT = os.path.join(TF_DIR, "model.ckpt")


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def batch():
    return token_batch(TINY_ALBERT["vocab_size"])


def hf_outputs(hf, ids, segments):
    """Sequence, pooled, SOP probabilities and MLM probabilities of AlbertForPreTraining."""
    with torch.no_grad():
        kw = dict(input_ids=torch.tensor(ids).long(), token_type_ids=torch.tensor(segments).long(),
                  attention_mask=torch.tensor(ids != 0).long())
        out = hf(**kw)
        base = hf.albert(**kw)
    return dict(sequence=base.last_hidden_state.numpy(), pooled=base.pooler_output.numpy(),
                sop=torch.softmax(out.sop_logits, -1).numpy(),
                mlm=torch.softmax(out.prediction_logits, -1).numpy())


@functools.lru_cache(maxsize=None)
def full_model(config_path, checkpoint, model="albert"):
    """Sequence output, SOP probabilities and MLM probabilities, built once per checkpoint
    (building and compiling dominate these tests' time), with its outputs on batch()."""
    transformer = build_transformer_model(config_path, checkpoint, model=model, with_nsp=True,
                                          with_mlm=True, with_sequence_output=True,
                                          return_keras_model=False)
    return transformer, predict(transformer.model, list(batch()))


def check_all_heads(checkpoint, config_path, expected, model="albert"):
    sequence, sop, mlm = full_model(config_path, checkpoint, model)[1]
    assert max_diff(sequence, expected["sequence"]) <= TOL
    assert max_diff(sop, expected["sop"]) <= TOL  # the SOP head sits on the pooler
    assert max_diff(mlm, expected["mlm"]) <= TOL


@pytest.fixture(scope="module")
def hf_albert(tmp_path_factory):
    import transformers

    torch.manual_seed(0)
    config = transformers.AlbertConfig(**TINY_ALBERT)
    hf = perturb_(transformers.AlbertForPreTraining(config)).eval()
    root = tmp_path_factory.mktemp("albert")
    paths = {fmt: save_hf(hf, str(root / fmt), fmt) for fmt in ("safetensors", "torch")}
    paths["bare"] = save_hf(hf.albert, str(root / "bare"), "safetensors")  # AlbertModel alone
    return hf, paths, hf_outputs(hf, *batch())


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_albert_matches_hf(hf_albert, fmt):
    _, paths, expected = hf_albert
    check_all_heads(paths[fmt], os.path.join(paths[fmt], "config.json"), expected)


def test_bare_albert_model_matches_hf(hf_albert):
    """AlbertModel saves without the 'albert.' prefix and without heads."""
    _, paths, expected = hf_albert
    model = build_transformer_model(os.path.join(paths["bare"], "config.json"), paths["bare"],
                                    model="albert", with_pool=True, with_sequence_output=True)
    sequence, pooled = predict(model, list(batch()))
    assert max_diff(sequence, expected["sequence"]) <= TOL
    assert max_diff(pooled, expected["pooled"]) <= TOL


def test_albert_shares_one_block(hf_albert):
    _, paths, _ = hf_albert
    config = os.path.join(paths["safetensors"], "config.json")
    shared = build_transformer_model(config, paths["safetensors"], model="albert")
    unshared = build_transformer_model(config, paths["safetensors"], model="albert_unshared")
    names = [layer.name for layer in shared.layers]
    assert "Transformer-MultiHeadSelfAttention" in names and "Transformer-FeedForward-Norm" in names
    assert "Transformer-2-FeedForward" in [layer.name for layer in unshared.layers]
    block = 8 + 2 + 4 + 2  # q/k/v/o kernels+biases, LN, FFN kernels+biases, LN
    layers = TINY_ALBERT["num_hidden_layers"]
    assert len(unshared.weights) - len(shared.weights) == (layers - 1) * block


def test_albert_unshared_equals_albert(hf_albert):
    _, paths, expected = hf_albert
    check_all_heads(paths["safetensors"], os.path.join(paths["safetensors"], "config.json"),
                    expected, model="albert_unshared")


def test_hf_config_with_equal_sizes_still_projects(tmp_path):
    """HF's AlbertTransformer applies embedding_hidden_mapping_in even when embedding_size
    equals hidden_size (Google's code skips it); a HF file must load and agree."""
    import transformers

    torch.manual_seed(1)
    config = transformers.AlbertConfig(**{**TINY_ALBERT, "embedding_size": 16})
    hf = perturb_(transformers.AlbertForPreTraining(config)).eval()
    directory = save_hf(hf, str(tmp_path), "safetensors")
    model = build_transformer_model(os.path.join(directory, "config.json"), directory, model="albert")
    ids, segments = batch()
    assert max_diff(predict(model, [ids, segments]), hf_outputs(hf, ids, segments)["sequence"]) <= TOL


# ----------------------------------------------------------- Google TF checkpoint
def google_to_hf_state_dict(t):
    """Reference mapping, written name by name and independently of the library, from
    Google ALBERT names to a HF AlbertForPreTraining state dict."""
    g = "bert/encoder/transformer/group_0/inner_group_0/"
    h = "albert.encoder.albert_layer_groups.0.albert_layers.0."
    sd = {
        "albert.embeddings.word_embeddings.weight": t["bert/embeddings/word_embeddings"],
        "albert.embeddings.position_embeddings.weight": t["bert/embeddings/position_embeddings"],
        "albert.embeddings.token_type_embeddings.weight": t["bert/embeddings/token_type_embeddings"],
        "albert.embeddings.LayerNorm.weight": t["bert/embeddings/LayerNorm/gamma"],
        "albert.embeddings.LayerNorm.bias": t["bert/embeddings/LayerNorm/beta"],
        "albert.encoder.embedding_hidden_mapping_in.weight":
            t["bert/encoder/embedding_hidden_mapping_in/kernel"].T,
        "albert.encoder.embedding_hidden_mapping_in.bias": t["bert/encoder/embedding_hidden_mapping_in/bias"],
        h + "attention.query.weight": t[g + "attention_1/self/query/kernel"].T,
        h + "attention.query.bias": t[g + "attention_1/self/query/bias"],
        h + "attention.key.weight": t[g + "attention_1/self/key/kernel"].T,
        h + "attention.key.bias": t[g + "attention_1/self/key/bias"],
        h + "attention.value.weight": t[g + "attention_1/self/value/kernel"].T,
        h + "attention.value.bias": t[g + "attention_1/self/value/bias"],
        h + "attention.dense.weight": t[g + "attention_1/output/dense/kernel"].T,
        h + "attention.dense.bias": t[g + "attention_1/output/dense/bias"],
        h + "attention.LayerNorm.weight": t[g + "LayerNorm/gamma"],
        h + "attention.LayerNorm.bias": t[g + "LayerNorm/beta"],
        h + "ffn.weight": t[g + "ffn_1/intermediate/dense/kernel"].T,
        h + "ffn.bias": t[g + "ffn_1/intermediate/dense/bias"],
        h + "ffn_output.weight": t[g + "ffn_1/intermediate/output/dense/kernel"].T,
        h + "ffn_output.bias": t[g + "ffn_1/intermediate/output/dense/bias"],
        h + "full_layer_layer_norm.weight": t[g + "LayerNorm_1/gamma"],
        h + "full_layer_layer_norm.bias": t[g + "LayerNorm_1/beta"],
        "albert.pooler.weight": t["bert/pooler/dense/kernel"].T,
        "albert.pooler.bias": t["bert/pooler/dense/bias"],
        "predictions.dense.weight": t["cls/predictions/transform/dense/kernel"].T,
        "predictions.dense.bias": t["cls/predictions/transform/dense/bias"],
        "predictions.LayerNorm.weight": t["cls/predictions/transform/LayerNorm/gamma"],
        "predictions.LayerNorm.bias": t["cls/predictions/transform/LayerNorm/beta"],
        "predictions.bias": t["cls/predictions/output_bias"],
        "predictions.decoder.weight": t["bert/embeddings/word_embeddings"],
        "predictions.decoder.bias": t["cls/predictions/output_bias"],
        "sop_classifier.classifier.weight": t["cls/seq_relationship/output_weights"],
        "sop_classifier.classifier.bias": t["cls/seq_relationship/output_bias"],
    }
    return {k: torch.tensor(np.ascontiguousarray(v)) for k, v in sd.items()}


def hf_from_google_fixture(hidden_act):
    import json

    import transformers

    with open(TF_CONFIG) as f:
        cfg = json.load(f)
    keys = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size")
    config = transformers.AlbertConfig(**{k: cfg[k] for k in keys}, hidden_act=hidden_act,
                                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                       classifier_dropout_prob=0.0)
    hf = transformers.AlbertForPreTraining(config).eval()
    tensors = dict(np.load(os.path.join(TF_DIR, "expected.npz")))  # the arrays TF saved
    missing, unexpected = hf.load_state_dict(google_to_hf_state_dict(tensors), strict=False)
    assert not unexpected and all("position_ids" in m or "token_type_ids" in m for m in missing), \
        (missing, unexpected)
    return hf


@pytest.mark.parametrize("model", ["albert", "albert_unshared"])
def test_tf_checkpoint_written_by_tensorflow_matches_hf(model):
    # Google's ALBERT "gelu" is the tanh approximation: HF's name for it is gelu_new
    expected = hf_outputs(hf_from_google_fixture("gelu_new"), *batch())
    check_all_heads(TF_CKPT, TF_CONFIG, expected, model=model)


def test_google_albert_gelu_is_the_tanh_approximation():
    """The test above would not notice exact GELU if the two were this close: they are not."""
    exact = hf_outputs(hf_from_google_fixture("gelu"), *batch())["sequence"]
    ours = full_model(TF_CONFIG, TF_CKPT)[1][0]
    assert max_diff(ours, exact) > 2 * TOL


# --------------------------------------------------------------------- saving
def test_keras_file_round_trip(tmp_path):
    transformer, outputs = full_model(TF_CONFIG, TF_CKPT)
    path = str(tmp_path / "albert.keras")
    transformer.model.save(path)
    restored = keras.saving.load_model(path)
    assert "Transformer-MultiHeadSelfAttention" in [layer.name for layer in restored.layers]
    for a, b in zip(outputs, predict(restored, list(batch()))):
        assert max_diff(a, b) <= 1e-6


def test_export_round_trip(tmp_path):
    """Google TF checkpoint and HF safetensors written by us load back (the HF one in
    transformers itself, every key accounted for)."""
    import shutil

    import transformers

    transformer, (_, sop, mlm) = full_model(TF_CONFIG, TF_CKPT)
    ids, segments = batch()
    prefix = str(tmp_path / "model.ckpt")
    transformer.save_weights_as_checkpoint(prefix, format="tf")
    again = build_transformer_model(TF_CONFIG, prefix, model="albert", with_nsp=True, with_mlm=True)
    assert max_diff(predict(again, [ids, segments])[1], mlm) <= 1e-6

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    transformer.save_weights_as_checkpoint(str(hf_dir / "model.safetensors"), format="safetensors")
    hf_from_google_fixture("gelu_new").config.save_pretrained(str(hf_dir))
    hf, info = transformers.AlbertForPreTraining.from_pretrained(str(hf_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    expected = hf_outputs(hf.eval(), ids, segments)
    assert max_diff(sop, expected["sop"]) <= TOL and max_diff(mlm, expected["mlm"]) <= TOL
    shutil.rmtree(hf_dir)


def test_unshared_blocks_that_diverged_refuse_albert_export(tmp_path):
    transformer = build_transformer_model(TF_CONFIG, TF_CKPT, model="albert_unshared",
                                          return_keras_model=False)
    transformer.save_weights_as_checkpoint(str(tmp_path / "same.ckpt"), format="tf")  # still equal
    kernel = transformer.model.get_layer("Transformer-1-FeedForward").o_dense.kernel
    kernel.assign(kernel.numpy() + 0.01)
    with pytest.raises(KerasformerError, match="Transformer-1-FeedForward.*diverged"):
        transformer.save_weights_as_checkpoint(str(tmp_path / "diverged.ckpt"), format="tf")


# --------------------------------------------------------------- wrong inputs
def test_bert_checkpoint_with_albert_model_is_named():
    """Google's BERT (the TF-written fixture of make_tf_fixtures.py) given to ALBERT."""
    bert = os.path.join(FIXTURES, "tf", "bert_tiny")
    with pytest.raises(WeightMismatchError, match="looks like a 'bert' checkpoint.*model='bert'"):
        build_transformer_model(os.path.join(bert, "bert_config.json"),
                                os.path.join(bert, "bert_model.ckpt"), model="albert")


def test_hf_bert_file_with_albert_model_is_named(tiny_hf_bert):
    _, _, paths = tiny_hf_bert
    directory = paths["safetensors"]
    with pytest.raises(WeightMismatchError, match="looks like a 'bert' checkpoint.*model='bert'"):
        build_transformer_model(os.path.join(directory, "config.json"), directory, model="albert")


def test_albert_checkpoint_with_bert_model_is_named():
    with pytest.raises(WeightMismatchError, match="'albert'.*pass model='albert'"):
        build_transformer_model(TF_CONFIG, TF_CKPT, model="bert")


def test_unsupported_group_layout_is_refused():
    with pytest.raises(KerasformerError, match="num_hidden_groups=2"):
        build_transformer_model(TF_CONFIG, model="albert", num_hidden_groups=2)
