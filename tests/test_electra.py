"""ELECTRA built by kerasformer equals Hugging Face's: the discriminator
(ElectraForPreTraining) and the generator (ElectraForMaskedLM), from HF files and from a
Google pre-training checkpoint, holding both networks, written by real TensorFlow
(tests/fixtures/make_albert_electra_fixtures.py)."""
import functools
import json
import os

import keras
import numpy as np
import pytest
import torch

from kerasformer import KerasformerError, WeightMismatchError, build_transformer_model
from kerasformer.backend import predict

from conftest import FIXTURES, perturb_, save_hf, token_batch

TOL = 1e-4
COMMON = dict(vocab_size=60, embedding_size=8, max_position_embeddings=24, type_vocab_size=2,
              hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
DISCRIMINATOR = dict(COMMON, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=24)
GENERATOR = dict(COMMON, hidden_size=12, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=20)
TF_DIR = os.path.join(FIXTURES, "electra")
TF_CKPT = os.path.join(TF_DIR, "model.ckpt")
TF_DISCRIMINATOR = os.path.join(TF_DIR, "discriminator_config.json")
TF_GENERATOR = os.path.join(TF_DIR, "generator_config.json")


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def batch():
    return token_batch(COMMON["vocab_size"])


def hf_run(hf, ids, segments):
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids).long(), token_type_ids=torch.tensor(segments).long(),
                  attention_mask=torch.tensor(ids != 0).long(), output_hidden_states=True)


def discriminator_outputs(hf, ids, segments):
    out = hf_run(hf, ids, segments)
    return out.hidden_states[-1].numpy(), torch.sigmoid(out.logits).numpy()


def generator_outputs(hf, ids, segments):
    out = hf_run(hf, ids, segments)
    return out.hidden_states[-1].numpy(), out.logits.numpy()


@functools.lru_cache(maxsize=None)
def built(config_path, checkpoint, **options):
    """A model and its outputs on batch(), built once per checkpoint and options
    (building and compiling dominate these tests' time)."""
    transformer = build_transformer_model(config_path, checkpoint, model="electra",
                                          with_sequence_output=True, return_keras_model=False,
                                          **options)
    return transformer, predict(transformer.model, list(batch()))


def check_discriminator(config_path, checkpoint, expected):
    sequence, probs = built(config_path, checkpoint, with_discriminator=True)[1]
    assert probs.shape == batch()[0].shape + (1,)  # bert4keras' Dense(1, sigmoid)
    assert max_diff(sequence, expected[0]) <= TOL
    assert max_diff(probs[..., 0], expected[1]) <= TOL


def check_generator(config_path, checkpoint, expected, with_mlm=True):
    sequence, probs = built(config_path, checkpoint, with_mlm=with_mlm)[1]
    assert max_diff(sequence, expected[0]) <= TOL
    if with_mlm == "linear":  # logits, as bert4keras' with_mlm='linear'
        assert max_diff(probs, expected[1]) <= TOL
    else:
        assert max_diff(probs, torch.softmax(torch.tensor(expected[1]), -1).numpy()) <= TOL


@pytest.fixture(scope="module")
def hf_electra(tmp_path_factory):
    import transformers

    torch.manual_seed(0)
    discriminator = perturb_(transformers.ElectraForPreTraining(
        transformers.ElectraConfig(**DISCRIMINATOR))).eval()
    generator = perturb_(transformers.ElectraForMaskedLM(transformers.ElectraConfig(**GENERATOR))).eval()
    root = tmp_path_factory.mktemp("electra")
    paths = {}
    for fmt in ("safetensors", "torch"):
        paths["discriminator", fmt] = save_hf(discriminator, str(root / f"d-{fmt}"), fmt)
        paths["generator", fmt] = save_hf(generator, str(root / f"g-{fmt}"), fmt)
    paths["bare"] = save_hf(discriminator.electra, str(root / "bare"), "safetensors")  # ElectraModel
    return discriminator, generator, paths


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_discriminator_matches_hf(hf_electra, fmt):
    discriminator, _, paths = hf_electra
    directory = paths["discriminator", fmt]
    check_discriminator(os.path.join(directory, "config.json"), directory,
                        discriminator_outputs(discriminator, *batch()))


@pytest.mark.parametrize("fmt,with_mlm", [("safetensors", True), ("torch", "linear")])
def test_generator_matches_hf(hf_electra, fmt, with_mlm):
    _, generator, paths = hf_electra
    directory = paths["generator", fmt]
    check_generator(os.path.join(directory, "config.json"), directory,
                    generator_outputs(generator, *batch()), with_mlm=with_mlm)


def test_default_is_the_encoder_output(hf_electra):
    """As in bert4keras, no head by default; a bare ElectraModel file loads too."""
    discriminator, _, paths = hf_electra
    ids, segments = batch()
    model = build_transformer_model(os.path.join(paths["bare"], "config.json"), paths["bare"],
                                    model="electra")
    expected = discriminator_outputs(discriminator, ids, segments)[0]
    assert max_diff(predict(model, [ids, segments]), expected) <= TOL


# ----------------------------------------------------------- Google TF checkpoint
def encoder_state_dict(t, scope, num_layers, project):
    """Google names of one network (scope 'electra' or 'generator') -> HF 'electra.' names,
    written out name by name, independently of the library."""
    sd = {
        "electra.embeddings.word_embeddings.weight": t["electra/embeddings/word_embeddings"],
        "electra.embeddings.position_embeddings.weight": t["electra/embeddings/position_embeddings"],
        "electra.embeddings.token_type_embeddings.weight": t["electra/embeddings/token_type_embeddings"],
        "electra.embeddings.LayerNorm.weight": t["electra/embeddings/LayerNorm/gamma"],
        "electra.embeddings.LayerNorm.bias": t["electra/embeddings/LayerNorm/beta"],
    }
    if project:
        sd["electra.embeddings_project.weight"] = t[f"{scope}/embeddings_project/kernel"].T
        sd["electra.embeddings_project.bias"] = t[f"{scope}/embeddings_project/bias"]
    for i in range(num_layers):
        g, h = f"{scope}/encoder/layer_{i}/", f"electra.encoder.layer.{i}."
        for gn, hn in [("attention/self/query", "attention.self.query"),
                       ("attention/self/key", "attention.self.key"),
                       ("attention/self/value", "attention.self.value"),
                       ("attention/output/dense", "attention.output.dense"),
                       ("intermediate/dense", "intermediate.dense"), ("output/dense", "output.dense")]:
            sd[h + hn + ".weight"] = t[g + gn + "/kernel"].T
            sd[h + hn + ".bias"] = t[g + gn + "/bias"]
        for gn, hn in [("attention/output/LayerNorm", "attention.output.LayerNorm"),
                       ("output/LayerNorm", "output.LayerNorm")]:
            sd[h + hn + ".weight"] = t[g + gn + "/gamma"]
            sd[h + hn + ".bias"] = t[g + gn + "/beta"]
    return sd


def hf_from_google_fixture(network):
    import transformers

    with open(TF_DISCRIMINATOR if network == "discriminator" else TF_GENERATOR) as f:
        cfg = json.load(f)
    config = transformers.ElectraConfig(**{**cfg, "hidden_dropout_prob": 0.0,
                                           "attention_probs_dropout_prob": 0.0})
    t = dict(np.load(os.path.join(TF_DIR, "expected.npz")))  # the arrays TF saved
    scope = "electra" if network == "discriminator" else "generator"
    sd = encoder_state_dict(t, scope, cfg["num_hidden_layers"], cfg["embedding_size"] != cfg["hidden_size"])
    if network == "discriminator":
        hf = transformers.ElectraForPreTraining(config).eval()
        sd.update({
            "discriminator_predictions.dense.weight": t["discriminator_predictions/dense/kernel"].T,
            "discriminator_predictions.dense.bias": t["discriminator_predictions/dense/bias"],
            "discriminator_predictions.dense_prediction.weight":
                t["discriminator_predictions/dense_1/kernel"].T,
            "discriminator_predictions.dense_prediction.bias": t["discriminator_predictions/dense_1/bias"],
        })
    else:
        hf = transformers.ElectraForMaskedLM(config).eval()
        sd.update({
            "generator_predictions.dense.weight": t["generator_predictions/dense/kernel"].T,
            "generator_predictions.dense.bias": t["generator_predictions/dense/bias"],
            "generator_predictions.LayerNorm.weight": t["generator_predictions/LayerNorm/gamma"],
            "generator_predictions.LayerNorm.bias": t["generator_predictions/LayerNorm/beta"],
            "generator_lm_head.weight": t["electra/embeddings/word_embeddings"],  # tied
            "generator_lm_head.bias": t["generator_predictions/output_bias"],
        })
    sd = {k: torch.tensor(np.ascontiguousarray(v)) for k, v in sd.items()}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all("position_ids" in m or "token_type_ids" in m for m in missing), \
        (missing, unexpected)
    return hf


def test_tf_discriminator_written_by_tensorflow_matches_hf():
    hf = hf_from_google_fixture("discriminator")
    check_discriminator(TF_DISCRIMINATOR, TF_CKPT, discriminator_outputs(hf, *batch()))


def test_tf_generator_written_by_tensorflow_matches_hf():
    """The generator's own encoder lives under generator/, its embeddings under electra/."""
    hf = hf_from_google_fixture("generator")
    check_generator(TF_GENERATOR, TF_CKPT, generator_outputs(hf, *batch()))


# --------------------------------------------------------------------- saving
def test_keras_file_round_trip(tmp_path):
    transformer, outputs = built(TF_DISCRIMINATOR, TF_CKPT, with_discriminator=True)
    path = str(tmp_path / "electra.keras")
    transformer.model.save(path)
    restored = keras.saving.load_model(path)
    for a, b in zip(outputs, predict(restored, list(batch()))):
        assert max_diff(a, b) <= 1e-6


def test_export_round_trip(tmp_path):
    """A generator saved as a Google checkpoint reloads; saved as safetensors it loads in
    transformers' ElectraForMaskedLM with every key accounted for."""
    import transformers

    transformer, (_, probs) = built(TF_GENERATOR, TF_CKPT, with_mlm=True)
    ids, segments = batch()
    prefix = str(tmp_path / "model.ckpt")
    transformer.save_weights_as_checkpoint(prefix, format="tf")
    again = build_transformer_model(TF_GENERATOR, prefix, model="electra", with_mlm=True)
    assert max_diff(predict(again, [ids, segments]), probs) <= 1e-6

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    transformer.save_weights_as_checkpoint(str(hf_dir / "model.safetensors"), format="safetensors")
    hf_from_google_fixture("generator").config.save_pretrained(str(hf_dir))
    hf, info = transformers.ElectraForMaskedLM.from_pretrained(str(hf_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    logits = generator_outputs(hf.eval(), ids, segments)[1]
    assert max_diff(probs, torch.softmax(torch.tensor(logits), -1).numpy()) <= TOL


# --------------------------------------------------------------- wrong inputs
def bert_checkpoint(tmp_path, **sizes):
    """A Google BERT checkpoint of the discriminator's sizes, written by our BERT."""
    bert = build_transformer_model(TF_DISCRIMINATOR, model="bert", return_keras_model=False, **sizes)
    prefix = str(tmp_path / "bert_model.ckpt")
    bert.save_weights_as_checkpoint(prefix, format="tf")
    return prefix


def test_bert_checkpoint_with_electra_model_is_named(tmp_path):
    prefix = bert_checkpoint(tmp_path, embedding_size=DISCRIMINATOR["hidden_size"])
    with pytest.raises(WeightMismatchError, match="looks like a 'bert' checkpoint.*model='bert'"):
        build_transformer_model(TF_DISCRIMINATOR, prefix, model="electra")


def test_bert_checkpoint_with_embedding_mapping_is_not_called_albert(tmp_path):
    prefix = bert_checkpoint(tmp_path)  # embedding_size 8 != hidden_size 16
    with pytest.raises(WeightMismatchError, match="looks like a 'bert' checkpoint.*model='bert'"):
        build_transformer_model(TF_DISCRIMINATOR, prefix, model="electra")


def test_albert_checkpoint_with_electra_model_is_named():
    albert = os.path.join(FIXTURES, "albert", "model.ckpt")
    with pytest.raises(WeightMismatchError, match="'albert'.*pass model='albert'"):
        build_transformer_model(TF_DISCRIMINATOR, albert, model="electra")


def test_electra_checkpoint_with_bert_model_is_named():
    with pytest.raises(WeightMismatchError, match="looks like a 'electra' checkpoint.*model='electra'"):
        build_transformer_model(TF_DISCRIMINATOR, TF_CKPT, model="bert")


def test_discriminator_file_has_no_generator(hf_electra):
    _, _, paths = hf_electra
    directory = paths["discriminator", "safetensors"]
    with pytest.raises(WeightMismatchError, match="with_mlm asks for the generator's MLM head"):
        build_transformer_model(os.path.join(directory, "config.json"), directory, model="electra",
                                with_mlm=True)


def test_generator_weights_with_discriminator_config_fail_on_shapes():
    """with_mlm on the discriminator's config reads generator/ weights of another width."""
    with pytest.raises(WeightMismatchError, match="model expects .* checkpoint tensor 'generator/"):
        build_transformer_model(TF_DISCRIMINATOR, TF_CKPT, model="electra", with_mlm=True)


@pytest.mark.parametrize("option", ["with_pool", "with_nsp"])
def test_no_pooler(option):
    with pytest.raises(KerasformerError, match="no pooler"):
        build_transformer_model(TF_DISCRIMINATOR, model="electra", **{option: True})
