"""A model trained here loads elsewhere: export to Google TF checkpoints, safetensors and
pytorch_model.bin under the original names, and read them back (ours and HF's readers)."""
import os
import shutil

import numpy as np
import pytest
import torch

from kerasformer import build_transformer_model
from kerasformer.backend import predict
from kerasformer.checkpoints.tf_bundle import read_tf_checkpoint

from conftest import TINY_BERT, token_batch
from test_bert_equivalence import hf_bert_outputs, hf_from_google_tensors, max_diff


@pytest.fixture(scope="module")
def trained(tiny_hf_bert):
    """A kerasformer BERT with every head, loaded from the HF fixture and then changed, so
    the export carries values no reference file holds."""
    _, _, paths = tiny_hf_bert
    directory = paths["safetensors"]
    transformer = build_transformer_model(os.path.join(directory, "config.json"), directory,
                                          with_nsp=True, with_mlm=True, return_keras_model=False)
    rng = np.random.default_rng(3)
    for variable in transformer.model.weights:
        variable.assign(variable.numpy() + rng.normal(0, 0.05, variable.shape).astype("float32"))
    return transformer, os.path.join(directory, "config.json")


def test_tf_checkpoint_round_trip(trained, tmp_path):
    transformer, config_path = trained
    prefix = str(tmp_path / "bert_model.ckpt")
    transformer.save_weights_as_checkpoint(prefix, format="tf")
    tensors = read_tf_checkpoint(prefix)
    assert "bert/encoder/layer_1/attention/self/query/kernel" in tensors
    assert tensors["cls/seq_relationship/output_weights"].shape == (2, TINY_BERT["hidden_size"])
    # an independent reader of the Google names (HF via a name-by-name mapping) agrees
    hf = hf_from_google_tensors(config_path, tensors)
    ids, segments = token_batch(TINY_BERT["vocab_size"])
    expected = hf_bert_outputs(hf, ids, segments)
    nsp, mlm = predict(transformer.model, [ids, segments])
    assert max_diff(nsp, expected["nsp"]) <= 1e-4
    assert max_diff(mlm, expected["mlm"]) <= 1e-4
    # and our own loader reads it back into a fresh model
    reloaded = build_transformer_model(config_path, prefix, with_nsp=True, with_mlm=True)
    assert max_diff(predict(reloaded, [ids, segments])[1], mlm) <= 1e-6


@pytest.mark.parametrize("fmt,filename", [("safetensors", "model.safetensors"), ("torch", "pytorch_model.bin")])
def test_hf_formats_load_in_transformers(trained, tmp_path, fmt, filename):
    import transformers

    transformer, config_path = trained
    directory = tmp_path / fmt
    directory.mkdir()
    shutil.copy(config_path, directory / "config.json")
    transformer.save_weights_as_checkpoint(str(directory / filename), format=fmt)
    hf, info = transformers.BertForPreTraining.from_pretrained(str(directory), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids, segments = token_batch(TINY_BERT["vocab_size"])
    expected = hf_bert_outputs(hf.eval(), ids, segments)
    nsp, mlm = predict(transformer.model, [ids, segments])
    assert max_diff(nsp, expected["nsp"]) <= 1e-4
    assert max_diff(mlm, expected["mlm"]) <= 1e-4


def test_export_refuses_unknown_format(trained, tmp_path):
    from kerasformer import KerasformerError

    with pytest.raises(KerasformerError, match="unknown checkpoint format 'onnx'"):
        trained[0].save_weights_as_checkpoint(str(tmp_path / "x"), format="onnx")
