"""Bad checkpoints fail loudly and usefully when loaded through build_transformer_model."""
import os
import shutil

import numpy as np
import pytest

from kerasformer import CheckpointError, WeightMismatchError, build_transformer_model

from conftest import FIXTURES

BERT_DIR = os.path.join(FIXTURES, "tf", "bert_tiny")
CONFIG = os.path.join(BERT_DIR, "bert_config.json")


def test_truncated_tf_data_file(tmp_path):
    for name in os.listdir(BERT_DIR):
        shutil.copy(os.path.join(BERT_DIR, name), tmp_path / name)
    data = tmp_path / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        build_transformer_model(CONFIG, str(tmp_path / "bert_model.ckpt"))


def test_truncated_safetensors(tiny_hf_bert, tmp_path):
    source = os.path.join(tiny_hf_bert[2]["safetensors"], "model.safetensors")
    target = tmp_path / "model.safetensors"
    target.write_bytes(open(source, "rb").read()[:-1000])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        build_transformer_model(CONFIG, str(target))


def test_missing_checkpoint_path():
    with pytest.raises(CheckpointError):
        build_transformer_model(CONFIG, "/nonexistent/bert_model.ckpt")


def test_wrong_family_is_named(tiny_hf_bert, tmp_path):
    """A checkpoint of another family (here: a BERT config with ALBERT-style names)."""
    from kerasformer.checkpoints.resolve import save_safetensors

    tensors = {"albert.embeddings.word_embeddings.weight": np.zeros((99, 8), "float32"),
               "albert.encoder.embedding_hidden_mapping_in.weight": np.zeros((32, 8), "float32")}
    path = str(tmp_path / "model.safetensors")
    save_safetensors(path, tensors)
    with pytest.raises(WeightMismatchError, match="looks like a 'albert' checkpoint.*model='albert'"):
        build_transformer_model(CONFIG, path)


def test_roberta_checkpoint_with_bert_model(tiny_hf_roberta):
    _, _, paths = tiny_hf_roberta
    with pytest.raises(WeightMismatchError, match="'roberta'.*pass model='roberta'"):
        build_transformer_model(os.path.join(paths["safetensors"], "config.json"), paths["safetensors"],
                                model="bert")
