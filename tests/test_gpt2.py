"""GPT-2 and GPT2-ML built by kerasformer equal their references, in every checkpoint layout.

GPT-2 is compared with Hugging Face's GPT2LMHeadModel: from HF files (safetensors, .bin, a bare
GPT2Model), from OpenAI's TF layout (a fixture written by real TensorFlow, mapped into HF name
by name below) and from bert4keras' 'gpt/' names. GPT2-ML has no HF implementation: it is
compared with a numpy transcription of imcaspar/gpt2-ml's modeling.py.
"""
import json
import math
import os

import keras
import numpy as np
import pytest
import torch

from kerasformer import KerasformerError, WeightMismatchError, build_transformer_model
from kerasformer.backend import predict
from kerasformer.checkpoints.tf_bundle import read_tf_checkpoint, write_tf_checkpoint

from conftest import FIXTURES, perturb_, save_hf
from family_harness import FamilyCase, run_family_test

TOL = 1e-4
OPENAI_DIR = os.path.join(FIXTURES, "gpt2", "openai_tiny")
OPENAI_CKPT = os.path.join(OPENAI_DIR, "model.ckpt")
OPENAI_HPARAMS = os.path.join(OPENAI_DIR, "hparams.json")
GPT2_ML_DIR = os.path.join(FIXTURES, "gpt2", "gpt2_ml_tiny")
GPT2_ML_CKPT = os.path.join(GPT2_ML_DIR, "model.ckpt")

# n_inner != 4 * n_embd and a non-default epsilon, so that both config keys must be read
TINY_GPT2 = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=24, n_inner=48,
                 layer_norm_epsilon=1e-3, bos_token_id=98, eos_token_id=98)


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def batches(vocab_size, seed=1):
    """An unpadded batch, and a ragged right-padded one with its mask of real tokens. The pad
    id 0 is an ordinary GPT-2 token: nothing but the causal mask may keep it out."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(3, 10)).astype("int32")
    padded = ids.copy()
    real = np.ones_like(ids, dtype=bool)
    for row, length in enumerate([10, 7, 4]):
        padded[row, length:] = 0
        real[row, length:] = False
    return ids, padded, real


def hf_logits(hf, ids, mask=None, hidden=False):
    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": torch.tensor(mask).long()}
        out = hf(input_ids=torch.tensor(ids).long(), output_hidden_states=True, **kwargs)
    return out.hidden_states[-1].numpy() if hidden else out.logits.numpy()


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def assert_probs_match(probs, logits):
    """Our probabilities against reference logits, compared as probabilities and as log
    probabilities: small probabilities hide errors (a GELU variant mixed up moves the logits by
    1e-3 but these probabilities by less than 1e-4), their logarithms do not."""
    logits = np.asarray(logits, np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    assert max_diff(probs, np.exp(log_probs)) <= TOL
    assert max_diff(np.log(probs), log_probs) <= TOL


@pytest.fixture(scope="module")
def tiny_hf_gpt2(tmp_path_factory):
    """A perturbed random GPT2LMHeadModel saved as safetensors, as pytorch_model.bin, and its
    bare GPT2Model (names without 'transformer.') as safetensors."""
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(**TINY_GPT2)
    model = perturb_(transformers.GPT2LMHeadModel(config)).eval()
    root = tmp_path_factory.mktemp("gpt2")
    paths = {fmt: save_hf(model, str(root / fmt), fmt) for fmt in ("safetensors", "torch")}
    paths["bare"] = save_hf(model.transformer, str(root / "bare"), "safetensors")
    return model, paths


# ------------------------------------------------------------------ GPT-2, Hugging Face files
@pytest.mark.parametrize("fmt", ["safetensors", "torch", "bare"])
def test_gpt2_matches_hf(tiny_hf_gpt2, fmt):
    hf, paths = tiny_hf_gpt2
    directory = paths[fmt]
    model = build_transformer_model(os.path.join(directory, "config.json"), directory, model="gpt2")
    assert [tuple(i.shape) for i in model.inputs] == [(None, None)]
    ids, padded, real = batches(TINY_GPT2["vocab_size"])
    assert_probs_match(predict(model, [ids]), hf_logits(hf, ids))
    # right padding: every real token's output is what HF gives with the attention mask
    assert_probs_match(predict(model, [padded])[real], hf_logits(hf, padded, real)[real])


@pytest.fixture(scope="module")
def gpt2_logits(tiny_hf_gpt2):
    directory = tiny_hf_gpt2[1]["safetensors"]
    return build_transformer_model(os.path.join(directory, "config.json"), directory, model="gpt2",
                                   with_lm="linear")


def test_gpt2_logits_and_hidden_states(tiny_hf_gpt2, gpt2_logits):
    hf, paths = tiny_hf_gpt2
    directory = paths["safetensors"]
    config = os.path.join(directory, "config.json")
    ids, padded, real = batches(TINY_GPT2["vocab_size"])
    logits = gpt2_logits
    assert max_diff(predict(logits, [ids]), hf_logits(hf, ids)) <= TOL
    assert max_diff(predict(logits, [padded])[real], hf_logits(hf, padded, real)[real]) <= TOL
    # with_lm=False: the last hidden state after the final LayerNorm, as HF's
    hidden = build_transformer_model(config, directory, model="gpt2", with_lm=False)
    assert max_diff(predict(hidden, [ids]), hf_logits(hf, ids, hidden=True)) <= TOL


def test_gpt2_pad_token_id_masks_left_padding(tiny_hf_gpt2, gpt2_logits):
    """With a pad token, keys holding it are masked: a left-padded batch then equals HF with
    its attention mask (HF numbers positions 0..L-1 with the padding too, as we do)."""
    hf, paths = tiny_hf_gpt2
    directory = paths["safetensors"]
    config = os.path.join(directory, "config.json")
    ids, _, _ = batches(TINY_GPT2["vocab_size"])
    left = ids.copy()
    left[1, :3] = 0
    left[2, :6] = 0
    real = left != 0
    expected = hf_logits(hf, left, real)[real]
    masked = build_transformer_model(config, directory, model="gpt2", pad_token_id=0, with_lm="linear")
    assert max_diff(predict(masked, [left])[real], expected) <= TOL
    # without a pad token the padding is attended to, so the same comparison must fail
    assert max_diff(predict(gpt2_logits, [left])[real], expected) > 1e-2


def test_gpt2_keep_tokens(tiny_hf_gpt2):
    hf, paths = tiny_hf_gpt2
    directory = paths["safetensors"]
    keep = [98, 5, 17, 3, 60]
    model = build_transformer_model(os.path.join(directory, "config.json"), directory, model="gpt2",
                                    final_activation="linear", keep_tokens=keep)
    new_ids = np.array([[1, 2, 3, 4, 0, 2]], dtype="int32")
    old_ids = np.asarray(keep)[new_ids]
    assert max_diff(predict(model, [new_ids]), hf_logits(hf, old_ids)[..., keep]) <= TOL


# ------------------------------------------------------------------ GPT-2, OpenAI's TF layout
def openai_to_hf_state_dict(t, num_layers):
    """OpenAI's names -> GPT2LMHeadModel's, written out name by name and independently of the
    library. conv1d kernels [1, in, out] lose their leading axis; HF's Conv1D is [in, out]."""
    sd = {"transformer.wte.weight": t["model/wte"], "transformer.wpe.weight": t["model/wpe"],
          "transformer.ln_f.weight": t["model/ln_f/g"], "transformer.ln_f.bias": t["model/ln_f/b"],
          "lm_head.weight": t["model/wte"]}
    for i in range(num_layers):
        g, h = f"model/h{i}/", f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            sd[f"{h}{ln}.weight"] = t[f"{g}{ln}/g"]
            sd[f"{h}{ln}.bias"] = t[f"{g}{ln}/b"]
        for conv in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
            sd[h + conv.replace("/", ".") + ".weight"] = t[f"{g}{conv}/w"][0]
            sd[h + conv.replace("/", ".") + ".bias"] = t[f"{g}{conv}/b"]
    return {k: torch.tensor(np.ascontiguousarray(v)) for k, v in sd.items()}


def openai_to_bert4keras(t, num_layers):
    """OpenAI's names -> the 'gpt/' names bert4keras' GPT2 reads (as the DialoGPT / CPM
    conversion scripts write them: q, k, v split out of c_attn)."""
    out = {"gpt/embeddings/word_embeddings": t["model/wte"],
           "gpt/embeddings/position_embeddings": t["model/wpe"],
           "gpt/output/LayerNorm/gamma": t["model/ln_f/g"], "gpt/output/LayerNorm/beta": t["model/ln_f/b"]}
    for i in range(num_layers):
        g, b = f"model/h{i}/", f"gpt/transformer/layer_{i}/"
        for part, w, bias in zip(("query", "key", "value"), np.split(t[g + "attn/c_attn/w"][0], 3, axis=1),
                                 np.split(t[g + "attn/c_attn/b"], 3)):
            out[f"{b}attention/self/{part}/kernel"] = w
            out[f"{b}attention/self/{part}/bias"] = bias
        pairs = [("attn/c_proj", "attention/output/dense"), ("mlp/c_fc", "intermediate/dense"),
                 ("mlp/c_proj", "output/dense")]
        for theirs, ours in pairs:
            out[f"{b}{ours}/kernel"] = t[f"{g}{theirs}/w"][0]
            out[f"{b}{ours}/bias"] = t[f"{g}{theirs}/b"]
        for theirs, ours in [("ln_1", "attention/input/LayerNorm"), ("ln_2", "input/LayerNorm")]:
            out[f"{b}{ours}/gamma"] = t[f"{g}{theirs}/g"]
            out[f"{b}{ours}/beta"] = t[f"{g}{theirs}/b"]
    return out


@pytest.fixture(scope="module")
def openai_reference():
    """The OpenAI fixture's tensors, and HF's GPT2LMHeadModel holding them."""
    import transformers

    with open(OPENAI_HPARAMS) as f:
        hp = json.load(f)
    tensors = read_tf_checkpoint(OPENAI_CKPT)
    config = transformers.GPT2Config(vocab_size=hp["n_vocab"], n_positions=hp["n_ctx"],
                                     n_embd=hp["n_embd"], n_head=hp["n_head"], n_layer=hp["n_layer"],
                                     bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    missing, unexpected = hf.load_state_dict(openai_to_hf_state_dict(tensors, hp["n_layer"]), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return hp, tensors, hf


@pytest.fixture(scope="module")
def openai_gpt2():
    return build_transformer_model(OPENAI_HPARAMS, OPENAI_CKPT, model="gpt2", return_keras_model=False)


def test_gpt2_openai_tf_checkpoint_written_by_tensorflow_matches_hf(openai_reference, openai_gpt2):
    """The fixture was written by real TensorFlow (tests/fixtures/make_gpt2_fixtures.py)."""
    hp, _, hf = openai_reference
    transformer = openai_gpt2
    assert not transformer.load_report.unused and not transformer.load_report.ignored
    ids, padded, real = batches(hp["n_vocab"])
    assert_probs_match(predict(transformer.model, [ids]), hf_logits(hf, ids))
    assert_probs_match(predict(transformer.model, [padded])[real], hf_logits(hf, padded, real)[real])


def test_gpt2_bert4keras_names_match_hf(openai_reference, tmp_path):
    """bert4keras' 'gpt/' layout with a BERT-style config, as bert4keras loads CPM-LM."""
    hp, tensors, hf = openai_reference
    prefix = str(tmp_path / "gpt2_model.ckpt")
    write_tf_checkpoint(prefix, openai_to_bert4keras(tensors, hp["n_layer"]))
    config = {"vocab_size": hp["n_vocab"], "hidden_size": hp["n_embd"], "num_hidden_layers": hp["n_layer"],
              "num_attention_heads": hp["n_head"], "intermediate_size": 4 * hp["n_embd"],
              "max_position_embeddings": hp["n_ctx"], "hidden_act": "gelu_new"}
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    model = build_transformer_model(str(config_path), prefix, model="gpt2", with_lm="linear")
    ids, _, _ = batches(hp["n_vocab"])
    assert max_diff(predict(model, [ids]), hf_logits(hf, ids)) <= TOL


def test_gpt2_export_fuses_q_k_v_back(openai_reference, openai_gpt2, tmp_path):
    """Exports put q/k/v back into one c_attn tensor (and OpenAI's leading conv1d axis)."""
    import transformers

    hp, tensors, hf = openai_reference
    transformer = openai_gpt2
    google = transformer.export_tensors("google")
    assert sorted(google) == sorted(tensors)
    assert all(np.array_equal(google[n], tensors[n]) for n in tensors)
    hf_sd = {k: v.numpy() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    exported = transformer.export_tensors("hf")
    assert sorted(exported) == sorted(hf_sd)
    assert all(np.array_equal(exported[n], hf_sd[n]) for n in hf_sd)
    b4k = openai_to_bert4keras(tensors, hp["n_layer"])
    exported = transformer.export_tensors("bert4keras")
    assert sorted(exported) == sorted(b4k) and all(np.array_equal(exported[n], b4k[n]) for n in b4k)
    # the safetensors file loads in transformers and gives the same logits
    directory = tmp_path / "hf"
    directory.mkdir()
    hf.config.save_pretrained(str(directory))
    transformer.save_weights_as_checkpoint(str(directory / "model.safetensors"), format="safetensors")
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(str(directory)).eval()
    ids, _, _ = batches(hp["n_vocab"])
    assert max_diff(hf_logits(reloaded, ids), hf_logits(hf, ids)) <= 1e-6
    # a TF checkpoint written by us reads back into a fresh model
    prefix = str(tmp_path / "tf" / "model.ckpt")
    transformer.save_weights_as_checkpoint(prefix, format="tf")
    again = build_transformer_model(OPENAI_HPARAMS, prefix, model="gpt2")
    assert max_diff(predict(again, [ids]), predict(transformer.model, [ids])) <= 1e-6


def test_gpt2_missing_fused_tensor_is_named(openai_reference):
    hp, tensors, _ = openai_reference
    broken = {k: v for k, v in tensors.items() if k != "model/h1/attn/c_attn/w"}
    transformer = build_transformer_model(OPENAI_HPARAMS, model="gpt2", return_keras_model=False)
    with pytest.raises(WeightMismatchError, match=r"Transformer-1-MultiHeadSelfAttention/q_dense/kernel"
                                                  r" \(looked for model/h1/attn/c_attn/w\)"):
        transformer.load_weights_from_checkpoint(broken)


# ------------------------------------------------------------------ GPT2-ML
def gelu_erf(x):
    return x * 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def layer_norm(x, t, scope, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * t[scope + "/gamma"] + t[scope + "/beta"]


def gpt2_ml_reference(t, cfg, ids):
    """Logits of imcaspar/gpt2-ml's GroverModel (train/modeling.py) for one unpadded sequence,
    in float64 numpy: embed -> embed_norm; per layer h = h + attn(h);
    h = mlp_ln1(h + output(gelu(intermediate(mlp_ln0(h))))); logits = h @ word_embed.T."""
    t = {k: np.asarray(v, np.float64) for k, v in t.items() if k != "global_step"}
    n, heads = len(ids), cfg["num_attention_heads"]
    size = cfg["hidden_size"] // heads
    table = t["newslm/embeddings/word_embed"]
    h = table[ids] + t["newslm/embeddings/pos_embed"][:n]
    h = layer_norm(h, t, "newslm/embeddings/LayerNorm_embed_norm")
    causal = np.tril(np.ones((n, n)))
    for i in range(cfg["num_hidden_layers"]):
        s = f"newslm/layer{i:02d}/"

        def dense(x, name):
            return x @ t[s + name + "/kernel"] + t[s + name + "/bias"]

        q, k, v = (dense(h, name).reshape(n, heads, size).transpose(1, 0, 2)
                   for name in ("query_layer", "key_layer", "value_layer"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        scores = scores * causal - 1e10 * (1 - causal)  # mask_attention_for_ltr
        context = (softmax(scores) @ v).transpose(1, 0, 2).reshape(n, heads * size)
        h = h + dense(context, "context_projection_layer")
        x = layer_norm(h, t, s + "LayerNorm_mlp_ln0")
        x = dense(gelu_erf(dense(x, "intermediate")), "output")
        h = layer_norm(h + x, t, s + "LayerNorm_mlp_ln1")
    return h @ table.T


GPT2_ML_CONFIG = os.path.join(GPT2_ML_DIR, "config.json")


@pytest.fixture(scope="module")
def gpt2_ml():
    return build_transformer_model(GPT2_ML_CONFIG, GPT2_ML_CKPT, model="gpt2_ml", with_lm="linear",
                                   return_keras_model=False)


# The reference runs in float64 and we agree to ~1e-6, so the bar is set lower than 1e-4: at 1e-4
# GPT2-ML's LayerNorm epsilon (1e-5, hard-coded in its code) could be wrong unnoticed.
TOL_ML = 2e-5


def test_gpt2_ml_tf_checkpoint_matches_numpy_reference(gpt2_ml, tmp_path):
    """The fixture was written by real TensorFlow under GPT2-ML's names (make_gpt2_fixtures.py).
    Reference, export round trips (its names, and safetensors), .keras, cached == uncached
    decoding and GPT-2's refusal: the harness."""
    with open(GPT2_ML_CONFIG) as f:
        cfg = json.load(f)
    tensors = read_tf_checkpoint(GPT2_ML_CKPT)
    transformer = gpt2_ml
    assert transformer.load_report.ignored == ["global_step"] and not transformer.load_report.unused
    google = transformer.export_tensors("google")
    assert all(np.array_equal(google[n], tensors[n]) for n in google)
    ids, padded, real = batches(cfg["vocab_size"], seed=2)
    run_family_test(FamilyCase(
        model="gpt2_ml", config=GPT2_ML_CONFIG, checkpoints={"tf": GPT2_ML_CKPT}, inputs=[ids],
        expected=[np.stack([gpt2_ml_reference(tensors, cfg, row) for row in ids])], tol=TOL_ML,
        options={"with_lm": "linear"}, exported_names={n for n in tensors if n != "global_step"},
        export_formats=("tf", "safetensors"), wrong_families={"gpt2": "model='gpt2_ml'"},
        decode={"prompts": [[5, 9, 2], [7, 3, 11, 4, 8]], "max_new_tokens": 6}), tmp_path, transformer)
    # right padding: each real prefix equals the reference run on it alone
    logits = predict(transformer.model, [padded])
    for row in range(len(padded)):
        n = int(real[row].sum())
        assert max_diff(logits[row, :n], gpt2_ml_reference(tensors, cfg, padded[row, :n])) <= TOL_ML


# ------------------------------------------------------------------ both
SMALL = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=24, max_position=12)


@pytest.mark.parametrize("fixture", ["openai_gpt2"])  # gpt2_ml: through the harness
def test_keras_file_round_trip(request, tmp_path, fixture):
    model = request.getfixturevalue(fixture).model
    ids, _, _ = batches(model.output.shape[-1], seed=2)
    expected = predict(model, [ids])
    path = str(tmp_path / f"{fixture}.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(predict(restored, [ids]), expected, atol=1e-6)


@pytest.mark.parametrize("config,checkpoint,model,expected", [
    (os.path.join(FIXTURES, "tf", "bert_tiny", "bert_config.json"),
     os.path.join(FIXTURES, "tf", "bert_tiny", "bert_model.ckpt"), "gpt2", "model='bert'"),
    (OPENAI_HPARAMS, OPENAI_CKPT, "gpt2_ml", "model='gpt2'"),
])
def test_checkpoint_of_another_family_fails_clearly(config, checkpoint, model, expected):
    with pytest.raises(WeightMismatchError, match=expected):
        build_transformer_model(config, checkpoint, model=model)


def test_config_translation_and_refusals(tmp_path):
    from kerasformer.models.gpt2 import GPT2

    hf = GPT2.from_config({"vocab_size": 9, "n_embd": 8, "n_layer": 1, "n_head": 2,
                                "n_positions": 7, "n_inner": None, "activation_function": "relu",
                                "layer_norm_epsilon": 0.5})
    assert (hf["hidden_size"], hf["num_hidden_layers"], hf["num_attention_heads"], hf["max_position"],
            hf["intermediate_size"], hf["hidden_act"], hf["layer_norm_eps"]) == (8, 1, 2, 7, 32, "relu", 0.5)
    transformer = build_transformer_model(OPENAI_HPARAMS, model="gpt2", return_keras_model=False)
    assert (transformer.vocab_size, transformer.max_position, transformer.intermediate_size,
            transformer.hidden_act, transformer.layer_norm_eps) == (60, 16, 64, "gelu_new", 1e-5)
    with pytest.raises(KerasformerError, match="unilm"):
        build_transformer_model(**SMALL, model="gpt2", application="unilm")
    with pytest.raises(KerasformerError, match="embedding_size"):
        build_transformer_model(**SMALL, model="gpt2", embedding_size=8)
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({**TINY_GPT2, "scale_attn_by_inverse_layer_idx": True}))
    with pytest.raises(KerasformerError, match="scale_attn_by_inverse_layer_idx"):
        build_transformer_model(str(bad), model="gpt2")
