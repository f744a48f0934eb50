"""Bad values fail clearly (issue 11, generate and configs): token ids, sampling arguments,
the decode length of models without a position table, and every config field a family reads."""
import json

import numpy as np
import pytest

from kerasformer import build_transformer_model, generate, validation
from kerasformer.errors import KerasformerError

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=24, max_position=32)


@pytest.fixture(scope="module")
def lm():
    return build_transformer_model(**TINY, application="lm", with_mlm=True)


@pytest.fixture(scope="module")
def t5():
    return build_transformer_model(model="t5", vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=24,
                                   attention_head_size=8, relative_attention_num_buckets=8,
                                   return_keras_model=False)


# ---- 10. token ids -------------------------------------------------------------------------


@pytest.mark.parametrize("prompts, message", [
    ([[5, 60]], r"prompts\[0\]\[1\] must be an integer token id in 0..59.*got 60"),
    ([[5, -1]], r"prompts\[0\]\[1\].*got -1"),
    ([[5, 2.7]], r"prompts\[0\]\[1\].*got 2.7"),
    ([[5, 2.0]], r"prompts\[0\]\[1\].*got 2.0"),
    ([[5, True]], r"prompts\[0\]\[1\].*got True"),
    ([5, 6], "flat list of ids; for one prompt pass \\[ids\\]"),
    ("hello", "the prompts are text: pass tokenizer="),  # text without a tokenizer
    ([[5], []], r"prompts\[1\] must be a non-empty list"),
    ([np.array([1.0, 2.0])], r"prompts\[0\] must be a 1-d integer array"),
    (np.array([1, 2]), "2-d array"),
])
def test_bad_token_ids_are_named(lm, prompts, message):
    with pytest.raises(KerasformerError, match=message):
        generate(lm, prompts, 2)


def test_t5_checks_its_vocabulary(t5):
    with pytest.raises(KerasformerError, match="0..39"):
        generate(t5, [[5, 40]], 2)


def test_integer_arrays_are_accepted(lm):
    ids = np.array([[5, 6, 7]], dtype=np.int64)
    assert generate(lm, ids, 3) == generate(lm, [[5, 6, 7]], 3)
    assert generate(lm, [np.array([5, 6, 7], dtype=np.int32)], 3) == generate(lm, [[5, 6, 7]], 3)


# ---- 11. sampling arguments -----------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(strategy="sample", temperature=float("nan")), "temperature must be a finite number"),
    (dict(strategy="sample", temperature=float("inf")), "temperature"),
    (dict(strategy="sample", temperature=0), "temperature"),
    (dict(repetition_penalty=0), "repetition_penalty"),
    (dict(repetition_penalty=-1.5), "repetition_penalty"),
    (dict(repetition_penalty=float("nan")), "repetition_penalty"),
    (dict(strategy="sample", top_k=0), "top_k must be an integer >= 1"),
    (dict(strategy="sample", top_k=2.5), "top_k"),
    (dict(strategy="sample", top_p=float("nan")), "top_p"),
    (dict(strategy="sample", top_p=0), "top_p"),
    (dict(max_new_tokens=2.5), "max_new_tokens must be an integer"),
    (dict(max_new_tokens=True), "max_new_tokens"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(strategy="sample", seed=2 ** 32), "seed must be an integer in 0..4294967295"),
    (dict(strategy="sample", seed=-1), "seed"),
    (dict(strategy="sample", seed=1.5), "seed"),
    (dict(strategy="beam", num_beams=0), "num_beams"),
    (dict(end_id=60), "end_id must be an integer in 0..59"),
    (dict(min_new_tokens=-1), "min_new_tokens"),
])
def test_bad_sampling_arguments_are_named(lm, kwargs, message):
    args = dict(max_new_tokens=3)
    args.update(kwargs)
    with pytest.raises(KerasformerError, match=message):
        generate(lm, [[5, 6]], **args)


def test_top_k_past_the_vocabulary_keeps_every_token(lm):
    a = generate(lm, [[5, 6]], 4, strategy="sample", top_k=10 ** 6, seed=3)
    b = generate(lm, [[5, 6]], 4, strategy="sample", top_k=60, seed=3)
    assert a == b


# ---- 12. decode length without a position table ---------------------------------------------


def test_encoder_decoder_decode_length_is_bounded(t5, monkeypatch):
    with pytest.raises(KerasformerError, match="MAX_DECODE_LENGTH"):
        generate(t5, [[5, 6]], 10 ** 9)
    monkeypatch.setattr(validation, "MAX_DECODE_LENGTH", 8)
    with pytest.raises(KerasformerError, match="exceeds 8 positions"):
        generate(t5, [[5, 6]], 7)
    assert len(generate(t5, [[5, 6]], 6)[0]) == 6  # the cap is a limit, not a shift


# ---- 13. configs ----------------------------------------------------------------------------

BASE = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 24, "max_position_embeddings": 32, "type_vocab_size": 2,
        "hidden_act": "gelu", "layer_norm_eps": 1e-12}


@pytest.mark.parametrize("field, value", [
    ("num_attention_heads", 0), ("num_attention_heads", -1), ("num_hidden_layers", 0),
    ("num_hidden_layers", -1), ("num_hidden_layers", 1.5), ("max_position_embeddings", 0),
    ("type_vocab_size", -1), ("layer_norm_eps", "x"), ("layer_norm_eps", 0),
    ("vocab_size", "50"), ("hidden_size", None), ("intermediate_size", True),
    ("hidden_dropout_prob", 1.0), ("attention_probs_dropout_prob", -0.1),
    ("initializer_range", float("nan")), ("hidden_act", 3), ("hidden_act", "nope"),
    ("pad_token_id", -1),
])
def test_malformed_config_fields_are_named(tmp_path, field, value):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps({**BASE, field: value}))
    renamed = {"max_position_embeddings": "max_position", "type_vocab_size": "segment_vocab_size",
               "hidden_dropout_prob": "dropout_rate",
               "attention_probs_dropout_prob": "attention_dropout_rate"}.get(field, field)
    with pytest.raises(KerasformerError, match=f"{renamed} must .*bert_config.json") as info:
        build_transformer_model(str(path))
    assert "got" in str(info.value)


def test_absurd_sizes_are_refused_before_allocating(tmp_path, monkeypatch):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps({**BASE, "vocab_size": 10 ** 12}))
    with pytest.raises(KerasformerError, match="MAX_PARAMETERS.*vocab_size"):
        build_transformer_model(str(path))
    path.write_text(json.dumps(BASE))
    monkeypatch.setattr(validation, "MAX_PARAMETERS", 1000)  # the cap is the caller's to move
    with pytest.raises(KerasformerError, match="bert_config.json describes about"):
        build_transformer_model(str(path))


def test_keyword_arguments_are_checked_too():
    with pytest.raises(KerasformerError, match="num_hidden_layers must .*keyword arguments.*got 0"):
        build_transformer_model(**{**TINY, "num_hidden_layers": 0})


def test_direct_family_construction_is_checked():
    from kerasformer.models import BERT

    with pytest.raises(KerasformerError, match=r"num_attention_heads must .*BERT\(\).*got 0"):
        BERT(**{**TINY, "num_attention_heads": 0})


def test_config_files_that_are_not_json_objects(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(KerasformerError, match="must hold a JSON object"):
        build_transformer_model(str(path))
    path.write_bytes(b'{"vocab_size": "\xff\xfe"}')
    with pytest.raises(KerasformerError, match="not UTF-8"):
        build_transformer_model(str(path))
    path.write_text("[" * 100000)
    with pytest.raises(KerasformerError, match="not valid JSON"):
        build_transformer_model(str(path))


def test_valid_configs_still_build(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps({**BASE, "pad_token_id": None, "type_vocab_size": 0}))
    assert build_transformer_model(str(path)).count_params() > 0
