"""T5 (t5.1.0), T5 v1.1 and mT5 (t5.1.1) built by kerasformer equal Hugging Face's.

References: T5ForConditionalGeneration (ReLU, tied, scaled output), T5 v1.1 and
MT5ForConditionalGeneration (gated GELU, untied lm_head), on small random configs saved
as model.safetensors (HF's own writer) and as pytorch_model.bin (torch.save of the state
dict, which is what HF 4.x wrote; HF 5 writes safetensors only). The Mesh-TF-named
checkpoints under fixtures/t5/ were written by real TensorFlow (make_t5_fixtures.py) and
are compared with HF loaded from the same arrays through a mapping written out here.
"""
import os

import keras
import numpy as np
import pytest
import torch

from kerasformer import build_transformer_model
from kerasformer.backend import predict
from kerasformer.errors import FamilyMismatchError, KerasformerError

from conftest import FIXTURES, perturb_

TOL = 1e-4
T5_FIXTURES = os.path.join(FIXTURES, "t5")

# tiny, but with every axis distinct (d_model 16, heads*d_kv 12, d_ff 24) and more decoder
# than encoder layers (HF allows it); 8 buckets up to distance 20 puts the 12-token batch into
# log buckets. The Mesh TF fixtures have the same sizes: on JAX every new weight shape costs a
# compile of its initializer, so the suite stays fast by reusing them.
HF_CONFIG = dict(vocab_size=64, d_model=16, d_kv=6, d_ff=24, num_layers=1, num_decoder_layers=2,
                 num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                 dropout_rate=0.0, layer_norm_epsilon=1e-6, pad_token_id=0, eos_token_id=1,
                 decoder_start_token_id=0)
VARIANTS = {  # model key -> (HF config class, HF model class, feed_forward_proj, tied)
    "t5.1.0": ("T5Config", "T5ForConditionalGeneration", "relu", True),
    "t5.1.1": ("T5Config", "T5ForConditionalGeneration", "gated-gelu", False),
    "mt5.1.1": ("MT5Config", "MT5ForConditionalGeneration", "gated-gelu", False),
}


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def batches(vocab_size, seed=1):
    """Encoder ids with ragged right padding (pad id 0) and decoder ids starting with 0."""
    rng = np.random.default_rng(seed)
    encoder = rng.integers(2, vocab_size, size=(3, 12)).astype("int32")
    encoder[1, 9:] = 0
    encoder[2, 5:] = 0
    decoder = rng.integers(2, vocab_size, size=(3, 7)).astype("int32")
    decoder[:, 0] = 0  # T5's decoder start token is the pad id
    return encoder, decoder


def untie_(hf, seed=5):
    """A separate lm_head: HF 5 always ties it to shared.weight, v1.1 / mT5 never did."""
    g = torch.Generator().manual_seed(seed)
    hf.lm_head.weight = torch.nn.Parameter(torch.randn(hf.lm_head.weight.shape, generator=g))
    return hf


def hf_outputs(hf, encoder_ids, decoder_ids):
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(encoder_ids).long(),
                 attention_mask=torch.tensor(encoder_ids != 0).long(),
                 decoder_input_ids=torch.tensor(decoder_ids).long())
    return out.encoder_last_hidden_state.numpy(), torch.softmax(out.logits, -1).numpy()


@pytest.fixture(scope="module", params=list(VARIANTS))
def hf_t5(request, tmp_path_factory):
    """(model key, HF model, directory with config.json + model.safetensors, directory
    with config.json + pytorch_model.bin, kerasformer's T5 built from the safetensors)."""
    import transformers

    key = request.param
    config_cls, model_cls, proj, tied = VARIANTS[key]
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**HF_CONFIG, feed_forward_proj=proj,
                                               tie_word_embeddings=tied)
    hf = getattr(transformers, model_cls)(config)
    if not tied:
        untie_(hf)
    hf = perturb_(hf).eval()
    root = tmp_path_factory.mktemp(key.replace(".", "_"))
    safetensors_dir, bin_dir = str(root / "safetensors"), str(root / "bin")
    hf.save_pretrained(safetensors_dir)
    hf.save_pretrained(bin_dir)
    os.remove(os.path.join(bin_dir, "model.safetensors"))
    torch.save(hf.state_dict(), os.path.join(bin_dir, "pytorch_model.bin"))
    t5 = build_transformer_model(os.path.join(safetensors_dir, "config.json"), safetensors_dir,
                                 model=key, return_keras_model=False)
    return key, hf, safetensors_dir, bin_dir, t5


def test_relative_position_buckets_match_hf():
    from transformers.models.t5.modeling_t5 import T5Attention

    from kerasformer.models.t5 import relative_position_buckets

    for buckets, distance in [(32, 128), (8, 20), (64, 256)]:
        for bidirectional in (True, False):
            relative = torch.arange(-3 * distance, 3 * distance + 1)
            expected = T5Attention._relative_position_bucket(
                relative, bidirectional=bidirectional, num_buckets=buckets, max_distance=distance)
            table = relative_position_buckets(bidirectional, buckets, distance)
            ours = table[np.clip(relative.numpy(), -distance, distance) + distance]
            np.testing.assert_array_equal(ours, expected.numpy())


def test_matches_hf_safetensors_and_bin(hf_t5):
    key, hf, _, bin_dir, t5 = hf_t5
    encoder_ids, decoder_ids = batches(HF_CONFIG["vocab_size"])
    encodings_hf, probs_hf = hf_outputs(hf, encoder_ids, decoder_ids)
    real = encoder_ids != 0

    assert not t5.load_report.unused  # HF 5 saves shared + lm_head (when untied) only
    encodings = predict(t5.encoder, encoder_ids)
    assert max_diff(encodings[real], encodings_hf[real]) <= TOL
    assert not np.any(encodings[~real])  # bert4keras' encoder zeroes padding
    # the joined model (the decoder alone is checked on the Mesh TF fixtures)
    assert max_diff(predict(t5.model, [encoder_ids, decoder_ids]), probs_hf) <= TOL

    # the same model, scrambled, then loaded from pytorch_model.bin
    saved = [v.numpy() for v in t5.model.weights]
    for variable in t5.model.weights:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    report = t5.load_weights_from_checkpoint(os.path.join(bin_dir, "pytorch_model.bin"))
    assert max_diff(predict(t5.model, [encoder_ids, decoder_ids]), probs_hf) <= TOL
    # torch.save of the state dict also holds HF's tied aliases, left unused (reported)
    assert set(report.unused) <= {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                                  "lm_head.weight"}
    for variable, value in zip(t5.model.weights, saved):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_export_uses_hf_names_and_layouts(hf_t5):
    """Export under HF names gives back HF's own state dict, tensor by tensor."""
    key, hf, _, _, t5 = hf_t5
    exported = t5.export_tensors("hf")
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    aliases = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    if key == "t5.1.0":
        aliases.add("lm_head.weight")  # tied: the embedding itself
    assert set(exported) == set(state) - aliases
    for name, value in exported.items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)


def test_keep_tokens_slice_embedding_and_untied_output(hf_t5):
    key, hf, safetensors_dir, _, _ = hf_t5
    if key != "mt5.1.1":
        pytest.skip("one variant with an untied output layer is enough")
    keep = [0, 1, 2, 7, 30, 63]
    t5 = build_transformer_model(os.path.join(safetensors_dir, "config.json"), safetensors_dir,
                                 model=key, keep_tokens=keep, return_keras_model=False)
    weights = {v.path: v.numpy() for v in t5.model.weights}
    np.testing.assert_array_equal(weights["Embedding-Token/embeddings"],
                                  hf.shared.weight.detach().numpy()[keep])
    np.testing.assert_array_equal(weights["Decoder-Output-LM/kernel"],
                                  hf.lm_head.weight.detach().numpy()[keep].T)


# ------------------------------------------------------------------ Mesh TF checkpoints
def mesh_tf_to_hf_state_dict(tensors, num_layers, v11):
    """Reference mapping, written out name by name as HF's load_tf_weights_in_t5 does it:
    every matrix except the embedding is transposed, 'rms_norm' is HF's 'layer_norm'."""
    t = lambda name: np.ascontiguousarray(tensors[name].T)  # noqa: E731
    norm = "rms_norm" if v11 else "layer_norm"
    sd = {"shared.weight": tensors["shared/embedding"]}
    for stack in ("encoder", "decoder"):
        final = "rms_norm" if v11 else "final_layer_norm"
        sd[f"{stack}.final_layer_norm.weight"] = tensors[f"{stack}/{final}/scale"]
        sd[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = t(
            f"{stack}/block_000/layer_000/SelfAttention/relative_attention_bias")
        for i in range(num_layers):
            g, h = f"{stack}/block_{i:03d}/", f"{stack}.block.{i}."
            attentions = ["SelfAttention"] + (["EncDecAttention"] if stack == "decoder" else [])
            for j, kind in enumerate(attentions):
                for w in "qkvo":
                    sd[f"{h}layer.{j}.{kind}.{w}.weight"] = t(f"{g}layer_{j:03d}/{kind}/{w}")
                sd[f"{h}layer.{j}.layer_norm.weight"] = tensors[f"{g}layer_{j:03d}/{norm}/scale"]
            j = len(attentions)
            for w in (["wi_0", "wi_1", "wo"] if v11 else ["wi", "wo"]):
                sd[f"{h}layer.{j}.DenseReluDense.{w}.weight"] = t(
                    f"{g}layer_{j:03d}/DenseReluDense/{w}/kernel")
            sd[f"{h}layer.{j}.layer_norm.weight"] = tensors[f"{g}layer_{j:03d}/{norm}/scale"]
    sd["lm_head.weight"] = t("decoder/logits/kernel") if v11 else sd["shared.weight"]
    return {k: torch.tensor(np.ascontiguousarray(v)) for k, v in sd.items()}


def hf_from_mesh_tf(config, tensors, v11):
    import transformers

    hf_config = (transformers.MT5Config if v11 else transformers.T5Config)(
        vocab_size=config["vocab_size"], d_model=config["hidden_size"], d_kv=config["attention_head_size"],
        d_ff=config["intermediate_size"], num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        relative_attention_num_buckets=config.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=config.get("relative_attention_max_distance", 128),
        feed_forward_proj="gated-gelu" if v11 else "relu", tie_word_embeddings=not v11, dropout_rate=0.0)
    cls = transformers.MT5ForConditionalGeneration if v11 else transformers.T5ForConditionalGeneration
    hf = cls(hf_config).eval()
    if v11:
        untie_(hf)
    missing, unexpected = hf.load_state_dict(
        mesh_tf_to_hf_state_dict(tensors, config["num_hidden_layers"], v11), strict=False)
    assert not unexpected and set(missing) <= {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    return hf


MESH_TF = {"t5_1_0_tiny": "t5.1.0", "t5_1_1_tiny": "mt5.1.1"}


@pytest.fixture(scope="module")
def mesh_t5():
    """Fixture name -> kerasformer's T5 built from it (each built once per module)."""
    built = {}

    def get(name):
        if name not in built:
            directory = os.path.join(T5_FIXTURES, name)
            built[name] = build_transformer_model(os.path.join(directory, "config.json"),
                                                  os.path.join(directory, "model.ckpt-1000000"),
                                                  model=MESH_TF[name], return_keras_model=False)
        return built[name]

    return get


@pytest.mark.parametrize("name", list(MESH_TF))
def test_mesh_tf_checkpoint_written_by_tensorflow_matches_hf(mesh_t5, name):
    import json

    from kerasformer.checkpoints.tf_bundle import read_tf_checkpoint

    directory = os.path.join(T5_FIXTURES, name)
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    v11 = MESH_TF[name] != "t5.1.0"
    tensors = read_tf_checkpoint(os.path.join(directory, "model.ckpt-1000000"))
    # the fixture has Mesh TF's layouts: kernels [in, out], relative bias [heads, buckets]
    heads = config["num_attention_heads"]
    inner = heads * config["attention_head_size"]
    assert tensors["encoder/block_000/layer_000/SelfAttention/q"].shape == (config["hidden_size"], inner)
    assert tensors["decoder/block_000/layer_000/SelfAttention/relative_attention_bias"].shape[0] == heads
    hf = hf_from_mesh_tf(config, tensors, v11)
    encoder_ids, decoder_ids = batches(config["vocab_size"], seed=2)
    encodings_hf, probs_hf = hf_outputs(hf, encoder_ids, decoder_ids)

    t5 = mesh_t5(name)
    unused = set(t5.load_report.unused) | set(t5.load_report.ignored)
    slots = {"encoder/block_000/layer_000/SelfAttention/q_slot_vr",
             "encoder/block_000/layer_000/SelfAttention/q_slot_vc"}
    assert unused == {"global_step"} | (slots if v11 else set())
    real = encoder_ids != 0
    encodings = predict(t5.encoder, encoder_ids)
    assert max_diff(encodings[real], encodings_hf[real]) <= TOL
    assert max_diff(predict(t5.decoder, [encodings, decoder_ids]), probs_hf) <= TOL

    # written back under Mesh TF names, the tensors are the fixture's own
    exported = t5.export_tensors("google")
    assert set(exported) == set(tensors) - unused
    for tensor_name, value in exported.items():
        np.testing.assert_array_equal(value, tensors[tensor_name], err_msg=tensor_name)


def test_keras_round_trip(mesh_t5, tmp_path):
    t5 = mesh_t5("t5_1_1_tiny")
    encoder_ids, decoder_ids = batches(64, seed=3)
    # the joined (training) model equals the encoder followed by the decoder
    expected = predict(t5.decoder, [predict(t5.encoder, encoder_ids), decoder_ids])
    path = str(tmp_path / "mt5.keras")
    t5.model.save(path)
    loaded = keras.saving.load_model(path)
    assert max_diff(predict(loaded, [encoder_ids, decoder_ids]), expected) <= 1e-6


# ------------------------------------------------------------------ clear failures
def test_bert_checkpoint_fails_clearly():
    t5_config = os.path.join(T5_FIXTURES, "t5_1_1_tiny", "config.json")
    bert_ckpt = os.path.join(FIXTURES, "tf", "bert_tiny", "bert_model.ckpt")
    with pytest.raises(FamilyMismatchError, match="looks like a 'bert' checkpoint.*model='bert'"):
        build_transformer_model(t5_config, bert_ckpt, model="t5.1.1")


def test_other_t5_version_fails_clearly():
    v10, v11 = (os.path.join(T5_FIXTURES, n) for n in ("t5_1_0_tiny", "t5_1_1_tiny"))
    # the config already tells: a gated feed-forward is v1.1
    with pytest.raises(KerasformerError, match="gated feed-forward.*pass model='t5.1.1'"):
        build_transformer_model(v11, None, model="t5")
    # a config that does not say (no hidden_act): the checkpoint tells
    with pytest.raises(FamilyMismatchError, match="T5 v1.1 / mT5.*pass model='t5.1.1'"):
        build_transformer_model(None, os.path.join(v11, "model.ckpt-1000000"), model="t5.1.0",
                                vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                attention_head_size=6, intermediate_size=24)
    with pytest.raises(FamilyMismatchError, match="T5 v1.0.*pass model='t5.1.0'"):
        build_transformer_model(None, os.path.join(v10, "model.ckpt-1000000"), model="mt5.1.1",
                                vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                attention_head_size=6, intermediate_size=24)


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_application_is_not_supported(application):
    with pytest.raises(KerasformerError, match="encoder-decoder.*not supported"):
        build_transformer_model(os.path.join(T5_FIXTURES, "t5_1_0_tiny"), None, model="t5",
                                application=application)
