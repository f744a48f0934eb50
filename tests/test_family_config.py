"""Family configuration: the class hierarchy, one ``from_config(raw)`` per family owning its
foreign key names, and settings validated once. Nothing here builds a model."""
import os

import pytest

import kerasformer.validation
from kerasformer import KerasformerError
from kerasformer.models import get_family, make_transformer
from kerasformer.models.bert import BERT

from conftest import FIXTURES

NEZHA_CONFIG = os.path.join(FIXTURES, "nezha", "bert_config.json")
ALBERT_CONFIG = os.path.join(FIXTURES, "albert", "albert_config.json")


def test_nezha_and_roformer_are_siblings_under_bert():
    nezha, roformer = get_family("nezha"), get_family("roformer")
    assert issubclass(nezha, BERT) and issubclass(roformer, BERT)
    assert not issubclass(roformer, nezha) and not issubclass(nezha, roformer)
    # RoFormer has none of NEZHA's arguments to pop
    assert "max_relative_position" not in roformer.arguments()


def test_from_config_translates_foreign_names():
    bert = get_family("bert").from_config({"max_position_embeddings": 64, "hidden_dropout_prob": 0.1,
                                           "type_vocab_size": 1, "directionality": "bidi"})
    assert bert == {"max_position": 64, "dropout_rate": 0.1, "segment_vocab_size": 1}
    t5 = get_family("t5.1.1")
    hf = t5.from_config({"d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 24, "d_kv": 8,
                         "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-silu", "vocab_size": 9})
    assert hf == {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 24,
                  "attention_head_size": 8, "layer_norm_eps": 1e-6, "hidden_act": ["silu", "linear"],
                  "vocab_size": 9}
    # the constructor takes one vocabulary: HF names are the config's business, not an argument
    assert not {"d_model", "num_heads", "feed_forward_proj"} & t5.arguments()
    with pytest.raises(KerasformerError, match="unknown argument.*d_model"):
        make_transformer(model="t5", vocab_size=9, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=24, d_model=16)


def test_roformer_refuses_a_nezha_config():
    with pytest.raises(KerasformerError, match="NEZHA's.*model='nezha'"):
        get_family("roformer").from_config({"hidden_size": 8, "max_relative_position": 64})


def test_albert_unshared_has_its_own_key():
    transformer, _ = make_transformer(ALBERT_CONFIG, model=get_family("albert_unshared"))
    assert type(transformer).model_key == "albert_unshared"
    assert transformer.settings["model"] == "albert_unshared"  # a .keras file rebuilds it as itself


def test_settings_are_validated_once(monkeypatch):
    origins = []
    check = kerasformer.validation.check_config

    def counting(config, origin=""):
        origins.append(origin)
        return check(config, origin)

    monkeypatch.setattr(kerasformer.validation, "check_config", counting)
    monkeypatch.setattr("kerasformer.models.check_config", counting)
    make_transformer(NEZHA_CONFIG, model="nezha", with_mlm=True)
    assert origins == [NEZHA_CONFIG, "the keyword arguments"]
    origins.clear()
    get_family("nezha")(vocab_size=9, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16)
    assert origins == ["NEZHA()"]  # constructed directly: it checks its own arguments
    with pytest.raises(KerasformerError, match=r"hidden_size must be an integer >= 1 in BERT\(\)"):
        BERT(vocab_size=9, hidden_size=0, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
