"""Shared fixtures: tiny random reference models saved in every checkpoint format.

The suite runs on the backend named by KERAS_BACKEND (JAX unless set); CI runs it
once on JAX and once on PyTorch.
"""
import json
import os

import numpy as np
import pytest

import kerasformer  # noqa: F401  (sets the default Keras backend before keras loads)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
                 hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                 layer_norm_eps=1e-12, pad_token_id=0)


def perturb_(torch_model, seed=0, scale=0.2):
    """Add noise to every parameter: HF initialises LayerNorm to (1, 0) and biases to 0,
    which would let a swapped gamma/beta or a forgotten bias pass unnoticed."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in torch_model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return torch_model


def save_hf(torch_model, directory, fmt):
    """Save as 'safetensors' or 'torch' (pytorch_model.bin) with HF's own writer."""
    os.makedirs(directory, exist_ok=True)
    torch_model.save_pretrained(directory)
    if fmt == "torch":
        # transformers 5 ignores safe_serialization=False: write the .bin with torch itself
        import torch

        torch.save(torch_model.state_dict(), os.path.join(directory, "pytorch_model.bin"))
        os.remove(os.path.join(directory, "model.safetensors"))
    return directory


def token_batch(vocab_size, batch=3, length=12, seed=1, pad_id=0, first_id=1):
    """Token ids with ragged right padding and a two-segment layout."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(first_id, vocab_size, size=(batch, length)).astype("int32")
    ids[ids == pad_id] = first_id
    segments = np.zeros_like(ids)
    for row in range(batch):
        real = length - 3 * row
        ids[row, real:] = pad_id
        segments[row, real // 2: real] = 1
    return ids, segments


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    return path


@pytest.fixture(scope="session")
def tiny_hf_bert(tmp_path_factory):
    """A random BertForPreTraining and its config/safetensors/bin on disk."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(**TINY_BERT)
    model = perturb_(transformers.BertForPreTraining(config)).eval()
    root = tmp_path_factory.mktemp("bert")
    paths = {fmt: save_hf(model, str(root / fmt), fmt) for fmt in ("safetensors", "torch")}
    return model, config, paths


@pytest.fixture(scope="session")
def tiny_hf_roberta(tmp_path_factory):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.RobertaConfig(**{**TINY_BERT, "type_vocab_size": 1, "pad_token_id": 1,
                                           "max_position_embeddings": 66, "layer_norm_eps": 1e-5})
    model = perturb_(transformers.RobertaForMaskedLM(config)).eval()
    root = tmp_path_factory.mktemp("roberta")
    paths = {fmt: save_hf(model, str(root / fmt), fmt) for fmt in ("safetensors", "torch")}
    return model, config, paths
