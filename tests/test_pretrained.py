"""Model folders: the family comes from the checkpoint's own config (a Hugging Face RoBERTa
folder never loads silently as BERT), and save_pretrained writes folders that load back
here and in Hugging Face's from_pretrained with no missing or unexpected keys."""
import json
import os

import numpy as np
import pytest
import torch
import transformers

from kerasformer import build_transformer_model, save_pretrained
from kerasformer.backend import predict
from kerasformer.checkpoints.resolve import open_checkpoint
from kerasformer.errors import FamilyMismatchError, KerasformerError

from conftest import FIXTURES, perturb_, save_hf

SIZES = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
IDS = np.array([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16, 3, 3]], dtype="int32")


def hf_folder(tmp_path_factory, name, model):
    torch.manual_seed(0)
    return save_hf(perturb_(model).eval(), str(tmp_path_factory.mktemp(name)), "safetensors")


@pytest.fixture(scope="module")
def roberta(tmp_path_factory):
    """A bare RobertaModel saved by save_pretrained: no 'roberta.' prefix, so its names
    fit BERT's too -- only its config says what it is."""
    config = transformers.RobertaConfig(**SIZES, max_position_embeddings=40, pad_token_id=1,
                                        type_vocab_size=1)
    model = transformers.RobertaModel(config, add_pooling_layer=False)
    return model, hf_folder(tmp_path_factory, "roberta", model)


def roberta_reference(model):
    ids = IDS.copy()
    ids[ids == 3] = 1  # RoBERTa pads with 1
    with torch.no_grad():
        out = model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(ids != 1))
    return ids, out.last_hidden_state.numpy()


def test_hf_roberta_folder_loads_as_roberta_without_model(roberta):
    model, folder = roberta
    ids, expected = roberta_reference(model)
    for built in (build_transformer_model(folder, folder), build_transformer_model(folder),
                  build_transformer_model(folder, folder, model="RoBERTa")):
        got = predict(built, [ids, np.zeros_like(ids)])
        real = ids != 1
        assert np.abs(got - expected)[real].max() <= 1e-4


def test_hf_roberta_folder_refuses_model_bert(roberta):
    _, folder = roberta
    with pytest.raises(FamilyMismatchError, match="declares a 'roberta' model.*pass model='roberta'"):
        build_transformer_model(folder, folder, model="bert")
    # a Google-style config handed separately does not hide the folder's own config
    with pytest.raises(FamilyMismatchError, match="pass model='roberta'"):
        build_transformer_model(os.path.join(FIXTURES, "tf", "bert_tiny", "bert_config.json"), folder,
                                model="bert")


@pytest.mark.parametrize("config,wrong,right", [
    (transformers.ElectraConfig(**SIZES, embedding_size=16), "bert", "electra"),
    (transformers.AlbertConfig(**SIZES, embedding_size=16), "bert", "albert"),
    (transformers.RoFormerConfig(**SIZES), "bert", "roformer"),
    (transformers.BertConfig(**SIZES), "gpt2", "bert"),
    (transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99), "bert", "gpt2"),
    (transformers.T5Config(d_model=32, d_ff=37, num_layers=2, num_heads=4, vocab_size=99), "t5.1.1", "t5.1.0"),
    (transformers.T5Config(d_model=32, d_ff=37, num_layers=2, num_heads=4, vocab_size=99,
                           feed_forward_proj="gated-gelu"), "bert", "t5.1.1"),
    (transformers.MT5Config(d_model=32, d_ff=37, num_layers=2, num_heads=4, vocab_size=99), "gpt2", "mt5.1.1"),
], ids=lambda v: getattr(v, "model_type", v))
def test_config_naming_another_family_is_an_error(tmp_path, config, wrong, right):
    config.save_pretrained(str(tmp_path))
    with pytest.raises(KerasformerError, match=f"model={right!r}"):
        build_transformer_model(str(tmp_path), model=wrong)
    model = build_transformer_model(str(tmp_path), return_keras_model=False)  # no model=: right family
    assert model.settings["model"] == right


@pytest.mark.parametrize("config", [  # tiny: a regression must not build a 7B model
    transformers.LlamaConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                             num_attention_heads=4, vocab_size=99),
    transformers.BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37,
                            vocab_size=99)], ids=["llama", "bart"])
def test_unsupported_family_says_so(tmp_path, config):
    config.save_pretrained(str(tmp_path))
    with pytest.raises(KerasformerError, match=f"model_type '{config.model_type}' is not supported yet"):
        build_transformer_model(str(tmp_path))


def test_google_folders_keep_bert4keras_defaults():
    bert = build_transformer_model(os.path.join(FIXTURES, "tf", "bert_tiny"), return_keras_model=False)
    assert bert.settings["model"] == "bert" and bert.load_report.loaded  # folder alone loads weights
    albert = build_transformer_model(os.path.join(FIXTURES, "albert"), return_keras_model=False)
    assert albert.settings["model"] == "albert" and albert.load_report.loaded


# ------------------------------------------------------------------ save_pretrained

FAMILIES = {
    # name: (HF class, HF config, kerasformer heads, output to compare)
    "bert": (transformers.BertForPreTraining, transformers.BertConfig(**SIZES, max_position_embeddings=40),
             dict(with_nsp=True, with_mlm="linear")),
    "roberta": (transformers.RobertaForMaskedLM,
                transformers.RobertaConfig(**SIZES, max_position_embeddings=40, pad_token_id=1,
                                           type_vocab_size=1), dict(with_mlm="linear")),
    "electra": (transformers.ElectraForPreTraining,
                transformers.ElectraConfig(**SIZES, embedding_size=16, max_position_embeddings=40),
                dict(with_discriminator=True)),
    "gpt2": (transformers.GPT2LMHeadModel,
             transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99, n_positions=40),
             dict(with_lm="linear")),
    "t5": (transformers.T5ForConditionalGeneration,
           transformers.T5Config(d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, vocab_size=99,
                                 feed_forward_proj="gated-gelu", tie_word_embeddings=False), dict()),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    name = request.param
    cls, config, heads = FAMILIES[name]
    folder = hf_folder(tmp_path_factory, name, cls(config))
    ours = build_transformer_model(folder, return_keras_model=False, **heads)
    return name, cls, folder, ours, heads


def outputs(model, name):
    """Every output of ``model`` on IDS, concatenated (heads differ in shape)."""
    inputs = {"t5": [IDS, IDS[:, :4]], "gpt2": IDS}.get(name, [IDS, np.zeros_like(IDS)])
    out = predict(model, inputs)
    return np.concatenate([np.ravel(o) for o in (out if isinstance(out, (list, tuple)) else [out])])


def test_save_pretrained_loads_in_transformers_without_missing_keys(family, tmp_path):
    name, cls, folder, ours, heads = family
    target = str(tmp_path / "saved")
    save_pretrained(ours.model, target)
    with open(os.path.join(target, "config.json")) as f:
        assert json.load(f)["kerasformer_model"] == ours.settings["model"]
    reloaded, info = cls.from_pretrained(target, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    original = cls.from_pretrained(folder)
    for key, value in original.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    # and back here, family from the folder's own config
    again = build_transformer_model(target, **heads)
    np.testing.assert_allclose(outputs(again, name), outputs(ours.model, name), atol=1e-6)


@pytest.mark.parametrize("fmt", ["torch", "tf"])
def test_save_pretrained_formats_round_trip(family, tmp_path, fmt):
    name, _, _, ours, heads = family
    if name not in ("bert", "t5"):
        pytest.skip("two families cover the formats")
    target = str(tmp_path / fmt)
    ours.save_pretrained(target, format=fmt)
    assert open_checkpoint(target).format == ("torch" if fmt == "torch" else "tf")
    again = build_transformer_model(target, **heads)
    np.testing.assert_allclose(outputs(again, name), outputs(ours.model, name), atol=1e-6)


@pytest.mark.parametrize("fmt,dtype", [("safetensors", "float16"), ("torch", "float16"), ("tf", "float16"),
                                       ("safetensors", "bfloat16")])
def test_save_pretrained_half_precision(family, tmp_path, fmt, dtype):
    """Half-size folders: every weight is the float32 one rounded once, here and in HF."""
    import ml_dtypes

    name, cls, _, ours, heads = family
    if name != "bert":
        pytest.skip("one family covers the dtypes")
    target = str(tmp_path / f"{fmt}-{dtype}")
    save_pretrained(ours, target, format=fmt, dtype=dtype)
    assert oct(os.stat(target).st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode
    half = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    again = build_transformer_model(target, return_keras_model=False, **heads)
    for before, after in zip(ours.model.weights, again.model.weights):
        rounded = np.asarray(before.numpy()).astype(half).astype("float32")
        np.testing.assert_array_equal(np.asarray(after.numpy()), rounded, err_msg=before.path)
    assert np.abs(outputs(again.model, name) - outputs(ours.model, name)).max() > 0  # really rounded
    if fmt != "tf":
        reloaded = cls.from_pretrained(target, torch_dtype=torch.float32)
        state = ours.export_tensors("hf")
        for key, value in reloaded.state_dict().items():
            if key in state:
                expected = np.asarray(state[key]).astype(half).astype("float32")
                np.testing.assert_array_equal(value.numpy(), expected, err_msg=key)
    with pytest.raises(KerasformerError, match="cannot save weights as 'int8'"):
        save_pretrained(ours, str(tmp_path / "bad"), dtype="int8")


def test_save_pretrained_replaces_other_formats_and_writes_vocabulary(tmp_path):
    from kerasformer.tokenizers.wordpiece import Tokenizer

    source = os.path.join(FIXTURES, "tf", "bert_tiny")
    ours = build_transformer_model(source, return_keras_model=False)
    target = str(tmp_path / "out")
    ours.save_pretrained(target, format="tf")
    assert os.path.exists(os.path.join(target, "bert_config.json"))
    ours.save_pretrained(target)  # safetensors now: the TF files must not linger
    assert sorted(os.listdir(target)) == sorted(
        ["config.json", "bert_config.json", "model.safetensors"]
        + [n for n in os.listdir(source) if n in ("vocab.txt",)])
    tokenizer = Tokenizer({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4}, do_lower_case=True)
    save_pretrained(ours, target, tokenizer=tokenizer)
    with open(os.path.join(target, "vocab.txt")) as f:
        assert f.read().split() == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out.")]  # no staging left
