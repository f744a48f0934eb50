"""``save_pretrained``: a model folder that loads back here (``build_transformer_model(folder)``)
and in Hugging Face's ``from_pretrained``.

The folder holds a Hugging Face ``config.json`` (plus Google's ``bert_config.json`` /
``albert_config.json`` for the families released that way), the weights under the
original names (``model.safetensors`` by default, ``pytorch_model.bin``, or a Google TF
checkpoint), and the vocabulary when it is known. ``config.json`` also records
``kerasformer_model`` (the family key), so variants without a Hugging Face class
(``roformer_v2``, ``gpt2_ml``, ``albert_unshared``) come back as themselves.
"""
import json
import os
import shutil
import tempfile

from kerasformer.errors import KerasformerError

# our activation names -> the names Hugging Face configs use for the same function
_HF_ACTIVATIONS = {"gelu_erf": "gelu", "gelu_tanh": "gelu_new", "swish": "silu"}
# the file each format is written to (a TF checkpoint is a prefix)
_WEIGHT_FILES = {"safetensors": "model.safetensors", "torch": "pytorch_model.bin"}
# vocabulary files copied from the folder a model was loaded from
_VOCAB_FILES = ("vocab.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


def _hf_activation(name):
    if not isinstance(name, str):
        raise KerasformerError(f"activation {name!r} has no name a config can record")
    return _HF_ACTIVATIONS.get(name, name)


def _key(transformer):
    return (transformer.settings or {}).get("model") or type(transformer).model_key


def _initializer_range(transformer):
    return float(getattr(transformer.initializer, "stddev", 0.02))


def _bert_like_config(t):
    return {
        "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
        "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
        "intermediate_size": t.intermediate_size, "hidden_act": _hf_activation(t.hidden_act),
        "hidden_dropout_prob": t.dropout_rate, "attention_probs_dropout_prob": t.attention_dropout_rate,
        "max_position_embeddings": t.max_position, "type_vocab_size": t.segment_vocab_size,
        "layer_norm_eps": t.layer_norm_eps, "pad_token_id": t.pad_token_id,
        "initializer_range": _initializer_range(t),
    }


def hf_config(t):
    """``(config.json dict, Google config file name or None, Google config dict)`` for the
    built family object ``t``."""
    key = _key(t)
    family = type(t).model_key
    family = "albert" if family == "albert_unshared" else family  # the same files
    google_name, google = None, None
    if family == "t5":
        acts = t.hidden_act if isinstance(t.hidden_act, (list, tuple)) else [t.hidden_act]
        names = {"gelu_tanh": "gelu", "relu": "relu", "silu": "silu"}
        if acts[0] not in names:
            raise KerasformerError(f"T5 activation {acts[0]!r} has no Hugging Face feed_forward_proj")
        gated = len(acts) > 1
        mt5 = key.startswith("mt5")
        config = {
            "model_type": "mt5" if mt5 else "t5",
            "architectures": ["MT5ForConditionalGeneration" if mt5 else "T5ForConditionalGeneration"],
            "vocab_size": t.vocab_size, "d_model": t.hidden_size, "d_kv": t.attention_head_size,
            "d_ff": t.intermediate_size, "num_layers": t.num_hidden_layers,
            "num_decoder_layers": t.num_decoder_layers, "num_heads": t.num_attention_heads,
            "relative_attention_num_buckets": t.relative_attention_num_buckets,
            "relative_attention_max_distance": t.relative_attention_max_distance,
            "dropout_rate": t.dropout_rate, "layer_norm_epsilon": t.layer_norm_eps,
            "feed_forward_proj": ("gated-" if gated else "") + names[acts[0]],
            "tie_word_embeddings": not gated, "is_encoder_decoder": True,
            "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
            "initializer_factor": 1.0,
        }
    elif family in ("gpt2", "gpt2_ml"):
        config = {
            "vocab_size": t.vocab_size, "n_embd": t.hidden_size, "n_layer": t.num_hidden_layers,
            "n_head": t.num_attention_heads, "n_positions": t.max_position,
            "n_inner": t.intermediate_size, "activation_function": _hf_activation(t.hidden_act),
            "layer_norm_epsilon": t.layer_norm_eps, "resid_pdrop": t.dropout_rate,
            "embd_pdrop": t.dropout_rate, "attn_pdrop": t.attention_dropout_rate,
            "initializer_range": _initializer_range(t),
        }
        if family == "gpt2":  # GPT2-ML's layout has no Hugging Face class
            config.update(model_type="gpt2",
                          architectures=["GPT2LMHeadModel" if t.with_lm else "GPT2Model"])
    else:
        config = _bert_like_config(t)
        mlm, nsp = bool(t.with_mlm), bool(getattr(t, "with_nsp", False))
        if family in ("bert", "nezha") or (family == "roberta" and not t.hf_positions):
            # the Chinese RoBERTa-wwm releases are BERT checkpoints: saved as BERT, as released
            hf = "Nezha" if family == "nezha" else "Bert"
            google_name, google = "bert_config.json", dict(config)
            config["model_type"] = hf.lower()
        elif family == "roformer":
            hf = "RoFormer"
            config["model_type"] = "roformer"
        elif family == "roberta":
            hf = "Roberta"
            config["model_type"] = "roberta"
        elif family == "albert":
            config.update(embedding_size=t.embedding_size, num_hidden_groups=1, inner_group_num=1)
            google_name = "albert_config.json"
            google = dict(config, hidden_act="gelu" if t.hidden_act == "gelu_tanh" else config["hidden_act"])
            # every HF ALBERT projects its embeddings; a Google one with embedding_size ==
            # hidden_size has no projection, so its config.json stays kerasformer's own
            hf = "Albert" if t.always_map_embeddings or t.embedding_size != t.hidden_size else None
            if hf:
                config["model_type"] = "albert"
        elif family == "electra":
            hf = "Electra"
            config.update(model_type="electra", embedding_size=t.embedding_size)
            mlm, nsp = t.with_mlm, False
        elif family == "roformer_v2":
            hf = None  # no Hugging Face class: kerasformer_model below brings it back
        else:
            raise KerasformerError(f"save_pretrained does not know how to describe model {key!r}")
        if family == "nezha":
            config.update(use_relative_position=True, max_relative_position=t.max_relative_position)
            google.update(use_relative_position=True, max_relative_position=t.max_relative_position)
        if family in ("roformer", "roformer_v2"):
            config.update(embedding_size=t.embedding_size, rotary_value=t.rotary_value)
        if hf:
            if family == "electra" and t.with_discriminator:
                head = "ForPreTraining"
            else:
                head = {(True, True): "ForPreTraining", (True, False): "ForMaskedLM",
                        (False, True): "ForNextSentencePrediction" if family == "bert" else "Model",
                        (False, False): "Model"}[(mlm, nsp)]
            config["architectures"] = [hf + head]
    if t.attention_head_size * t.num_attention_heads != t.hidden_size and family != "t5":
        config["attention_head_size"] = t.attention_head_size
    # a BERT-format RoBERTa is a BERT (model='bert' must keep loading it)
    config["kerasformer_model"] = "bert" if family == "roberta" and not t.hf_positions else key
    return config, google_name, google


def _transformer_of(model):
    from kerasformer.models.transformer import Transformer, built_transformer

    if isinstance(model, Transformer):
        if not model.built:
            model.build()
        return model
    transformer = built_transformer(model)
    if transformer is None:
        raise KerasformerError("save_pretrained needs a model built by build_transformer_model "
                               "(or its family object)")
    return transformer


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _write_vocabulary(transformer, tokenizer, directory):
    """Write the tokenizer's vocabulary; with none given, copy the one beside the config
    the model was loaded from (unless keep_tokens / compound_tokens changed the rows)."""
    if tokenizer is None:
        source = getattr(transformer, "source_dir", None)
        if source is None or transformer.keep_tokens is not None or transformer.compound_tokens is not None:
            return []
        written = []
        for name in _VOCAB_FILES:
            if os.path.isfile(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(directory, name))
                written.append(name)
        return written
    if hasattr(tokenizer, "sp_model_path"):  # SpTokenizer
        shutil.copyfile(tokenizer.sp_model_path, os.path.join(directory, "spiece.model"))
        return ["spiece.model"]
    token_dict = getattr(tokenizer, "token_dict", None)
    if token_dict is None:
        raise KerasformerError(f"cannot save the vocabulary of a {type(tokenizer).__name__}: pass a "
                               "kerasformer Tokenizer or SpTokenizer")
    from kerasformer.tokenizers.wordpiece import save_vocab

    save_vocab(os.path.join(directory, "vocab.txt"), token_dict)
    _write_json(os.path.join(directory, "tokenizer_config.json"),
                {"do_lower_case": bool(tokenizer.do_lower_case), "tokenizer_class": "BertTokenizer"})
    return ["vocab.txt", "tokenizer_config.json"]


def save_pretrained(model, folder, format="safetensors", tokenizer=None, dtype=None):
    """Write ``model`` (a model from ``build_transformer_model``, or its family object) as a
    model folder: ``config.json`` (+ Google's config for BERT-style families), the weights
    (``format='safetensors'`` -> ``model.safetensors``, ``'torch'`` -> ``pytorch_model.bin``,
    ``'tf'`` -> a Google TF checkpoint) and the vocabulary (``tokenizer``'s, or the files
    next to the config the model was loaded from). ``dtype='float16'`` / ``'bfloat16'``
    stores the floating-point weights at half the size (``config.json`` records it as
    ``torch_dtype``); loading casts them back to the model's dtype.

    The folder is written in a temporary sibling and moved into place: a crash leaves the
    old folder or the new one, never a mix. Weight files of other formats already in
    ``folder`` are removed, so the folder cannot load stale weights. Returns ``folder``.
    """
    if format not in ("safetensors", "torch", "tf"):
        raise KerasformerError(f"unknown format {format!r}; use 'safetensors', 'torch' or 'tf'")
    transformer = _transformer_of(model)
    config, google_name, google = hf_config(transformer)
    if dtype is not None:
        config["torch_dtype"] = dtype
    folder = os.path.abspath(os.fspath(folder))
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.", dir=parent)
    try:
        _write_json(os.path.join(staging, "config.json"), config)
        if google_name:
            _write_json(os.path.join(staging, google_name), google)
        if format == "tf":
            prefix = "bert_model.ckpt" if google_name == "bert_config.json" else "model.ckpt"
            transformer.save_weights_as_checkpoint(os.path.join(staging, prefix), format="tf", dtype=dtype)
            with open(os.path.join(staging, "checkpoint"), "w", encoding="utf-8") as f:
                f.write(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
        else:
            transformer.save_weights_as_checkpoint(os.path.join(staging, _WEIGHT_FILES[format]),
                                                   format=format, dtype=dtype)
        _write_vocabulary(transformer, tokenizer, staging)
        _move_into(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _weight_files(directory):
    names = set(os.listdir(directory))
    weights = {n for n in names if n in _WEIGHT_FILES.values() or n == "checkpoint"
               or n.endswith((".safetensors", ".index.json"))
               or ".ckpt" in n and n.endswith((".index", ".meta")) or ".data-" in n}
    return weights


def _move_into(staging, folder):
    if not os.path.exists(folder):
        # mkdtemp made it 0o700; a folder made by os.makedirs gets 0o777 minus the umask
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        os.rename(staging, folder)  # the whole folder appears at once
        return
    if not os.path.isdir(folder):
        raise KerasformerError(f"{folder} exists and is not a directory")
    stale = _weight_files(folder) - set(os.listdir(staging))
    for name in os.listdir(staging):
        os.replace(os.path.join(staging, name), os.path.join(folder, name))
    for name in stale:  # another format's weights would be preferred by the loader
        os.remove(os.path.join(folder, name))
