"""BERT and RoBERTa built by kerasformer equal Hugging Face's, in every checkpoint format."""
import os

import numpy as np
import pytest
import torch

from kerasformer import build_transformer_model
from kerasformer.backend import predict

from conftest import FIXTURES, TINY_BERT, token_batch

TOL = 1e-4


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def hf_bert_outputs(hf, ids, segments):
    with torch.no_grad():
        t_ids, t_seg = torch.tensor(ids, dtype=torch.long), torch.tensor(segments, dtype=torch.long)
        mask = (t_ids != 0).long()
        out = hf(input_ids=t_ids, token_type_ids=t_seg, attention_mask=mask, output_hidden_states=True)
        pooled = hf.bert(input_ids=t_ids, token_type_ids=t_seg, attention_mask=mask).pooler_output
    return dict(sequence=out.hidden_states[-1].numpy(), pooled=pooled.numpy(),
                mlm=torch.softmax(out.prediction_logits, -1).numpy(),
                nsp=torch.softmax(out.seq_relationship_logits, -1).numpy())


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_bert_matches_hf(tiny_hf_bert, fmt):
    hf, _, paths = tiny_hf_bert
    directory = paths[fmt]
    ids, segments = token_batch(TINY_BERT["vocab_size"])
    expected = hf_bert_outputs(hf, ids, segments)

    model = build_transformer_model(os.path.join(directory, "config.json"), directory,
                                    with_pool=True, with_mlm=True, with_sequence_output=True)
    sequence, pooled, mlm = predict(model, [ids, segments])
    assert max_diff(sequence, expected["sequence"]) <= TOL
    assert max_diff(pooled, expected["pooled"]) <= TOL
    assert max_diff(mlm, expected["mlm"]) <= TOL

    nsp_model = build_transformer_model(os.path.join(directory, "config.json"), directory, with_nsp=True)
    assert max_diff(predict(nsp_model, [ids, segments]), expected["nsp"]) <= TOL


def test_mlm_logits_with_linear_activation(tiny_hf_bert):
    hf, _, paths = tiny_hf_bert
    ids, segments = token_batch(TINY_BERT["vocab_size"])
    model = build_transformer_model(os.path.join(paths["safetensors"], "config.json"),
                                    paths["safetensors"], with_mlm="linear")
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor(ids).long(), token_type_ids=torch.tensor(segments).long(),
                    attention_mask=torch.tensor(ids != 0).long()).prediction_logits.numpy()
    assert max_diff(predict(model, [ids, segments]), logits) <= TOL


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_roberta_matches_hf(tiny_hf_roberta, fmt):
    hf, config, paths = tiny_hf_roberta
    directory = paths[fmt]
    ids, _ = token_batch(config.vocab_size, pad_id=1, first_id=2)
    segments = np.zeros_like(ids)
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(ids != 1).long(),
                 output_hidden_states=True)
    model = build_transformer_model(os.path.join(directory, "config.json"), directory, model="roberta",
                                    with_mlm=True, with_sequence_output=True)
    sequence, mlm = predict(model, [ids, segments])
    assert max_diff(sequence, out.hidden_states[-1].numpy()) <= TOL
    assert max_diff(mlm, torch.softmax(out.logits, -1).numpy()) <= TOL


def google_to_hf_state_dict(tensors, num_layers):
    """Reference mapping, written out name by name and independently of the library's
    translation rules, from Google BERT names to a HF BertForPreTraining state dict."""
    sd = {
        "bert.embeddings.word_embeddings.weight": tensors["bert/embeddings/word_embeddings"],
        "bert.embeddings.token_type_embeddings.weight": tensors["bert/embeddings/token_type_embeddings"],
        "bert.embeddings.position_embeddings.weight": tensors["bert/embeddings/position_embeddings"],
        "bert.embeddings.LayerNorm.weight": tensors["bert/embeddings/LayerNorm/gamma"],
        "bert.embeddings.LayerNorm.bias": tensors["bert/embeddings/LayerNorm/beta"],
        "bert.pooler.dense.weight": tensors["bert/pooler/dense/kernel"].T,
        "bert.pooler.dense.bias": tensors["bert/pooler/dense/bias"],
        "cls.predictions.transform.dense.weight": tensors["cls/predictions/transform/dense/kernel"].T,
        "cls.predictions.transform.dense.bias": tensors["cls/predictions/transform/dense/bias"],
        "cls.predictions.transform.LayerNorm.weight": tensors["cls/predictions/transform/LayerNorm/gamma"],
        "cls.predictions.transform.LayerNorm.bias": tensors["cls/predictions/transform/LayerNorm/beta"],
        "cls.predictions.bias": tensors["cls/predictions/output_bias"],
        "cls.seq_relationship.weight": tensors["cls/seq_relationship/output_weights"],
        "cls.seq_relationship.bias": tensors["cls/seq_relationship/output_bias"],
    }
    for i in range(num_layers):
        g, h = f"bert/encoder/layer_{i}/", f"bert.encoder.layer.{i}."
        pairs = [("attention/self/query", "attention.self.query"), ("attention/self/key", "attention.self.key"),
                 ("attention/self/value", "attention.self.value"),
                 ("attention/output/dense", "attention.output.dense"),
                 ("intermediate/dense", "intermediate.dense"), ("output/dense", "output.dense")]
        for gn, hn in pairs:
            sd[h + hn + ".weight"] = tensors[g + gn + "/kernel"].T
            sd[h + hn + ".bias"] = tensors[g + gn + "/bias"]
        for gn, hn in [("attention/output/LayerNorm", "attention.output.LayerNorm"), ("output/LayerNorm", "output.LayerNorm")]:
            sd[h + hn + ".weight"] = tensors[g + gn + "/gamma"]
            sd[h + hn + ".bias"] = tensors[g + gn + "/beta"]
    return {k: torch.tensor(np.ascontiguousarray(v)) for k, v in sd.items()}


def hf_from_google_tensors(config_path, tensors):
    import transformers

    config = transformers.BertConfig.from_json_file(config_path)
    hf = transformers.BertForPreTraining(config).eval()
    sd = google_to_hf_state_dict(tensors, config.num_hidden_layers)
    sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"]
    sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"]
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all("position_ids" in m for m in missing), (missing, unexpected)
    return hf


def test_bert_tf_checkpoint_written_by_tensorflow_matches_hf():
    """The fixture was written by real TensorFlow (tests/fixtures/make_tf_fixtures.py)."""
    from kerasformer.checkpoints.tf_bundle import read_tf_checkpoint

    directory = os.path.join(FIXTURES, "tf", "bert_tiny")
    config_path = os.path.join(directory, "bert_config.json")
    ckpt = os.path.join(directory, "bert_model.ckpt")
    hf = hf_from_google_tensors(config_path, read_tf_checkpoint(ckpt))
    ids, segments = token_batch(99)
    expected = hf_bert_outputs(hf, ids, segments)
    model = build_transformer_model(config_path, ckpt, with_pool=True, with_mlm=True,
                                    with_sequence_output=True)
    sequence, pooled, mlm = predict(model, [ids, segments])
    assert max_diff(sequence, expected["sequence"]) <= TOL
    assert max_diff(pooled, expected["pooled"]) <= TOL
    assert max_diff(mlm, expected["mlm"]) <= TOL
