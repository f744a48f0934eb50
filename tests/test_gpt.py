"""model='gpt' (bert4keras' GPT: OpenAI's first GPT in bert4keras' TF layout) against Hugging
Face's ``OpenAIGPTLMHeadModel``, whose weights the test renames to bert4keras' names."""
import numpy as np
import pytest

import kerasformer  # noqa: F401
from keras import ops

from kerasformer import build_transformer_model
from kerasformer.errors import KerasformerError

from conftest import perturb_

H, LAYERS, HEADS, VOCAB, POSITIONS = 16, 2, 2, 37, 24


def to_bert4keras_names(state_dict):
    """HF openai-gpt tensors -> ``gpt/...`` names. HF's Conv1D weights are stored [in, out]
    like TF kernels; the fused c_attn splits into query, key, value."""
    sd = {k: v.detach().numpy() for k, v in state_dict.items()}
    out = {"gpt/embeddings/word_embeddings": sd["transformer.tokens_embed.weight"],
           "gpt/embeddings/position_embeddings": sd["transformer.positions_embed.weight"]}
    for i in range(LAYERS):
        h, g = f"transformer.h.{i}.", f"gpt/transformer/layer_{i}/"
        w, b = sd[h + "attn.c_attn.weight"], sd[h + "attn.c_attn.bias"]
        for j, part in enumerate(("query", "key", "value")):
            out[f"{g}attention/self/{part}/kernel"] = w[:, j * H:(j + 1) * H]
            out[f"{g}attention/self/{part}/bias"] = b[j * H:(j + 1) * H]
        pairs = [("attn.c_proj", "attention/output/dense"), ("mlp.c_fc", "intermediate/dense"),
                 ("mlp.c_proj", "output/dense")]
        for theirs, ours in pairs:
            out[f"{g}{ours}/kernel"] = sd[f"{h}{theirs}.weight"]
            out[f"{g}{ours}/bias"] = sd[f"{h}{theirs}.bias"]
        for theirs, ours in [("ln_1", "attention/output/LayerNorm"), ("ln_2", "output/LayerNorm")]:
            out[f"{g}{ours}/gamma"] = sd[f"{h}{theirs}.weight"]
            out[f"{g}{ours}/beta"] = sd[f"{h}{theirs}.bias"]
    return out


@pytest.fixture(scope="module")
def hf_gpt():
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.OpenAIGPTConfig(vocab_size=VOCAB, n_positions=POSITIONS, n_embd=H, n_layer=LAYERS,
                                          n_head=HEADS, afn="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                                          attn_pdrop=0.0, layer_norm_epsilon=1e-5)
    return perturb_(transformers.OpenAIGPTLMHeadModel(config)).eval()


def test_gpt_matches_hf_openai_gpt(hf_gpt, tmp_path):
    import torch

    from kerasformer.checkpoints.tf_bundle import write_tf_checkpoint

    write_tf_checkpoint(str(tmp_path / "gpt.ckpt"), to_bert4keras_names(hf_gpt.state_dict()))
    model = build_transformer_model(None, str(tmp_path / "gpt.ckpt"), model="gpt", vocab_size=VOCAB,
                                    hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                    intermediate_size=4 * H, hidden_act="gelu_new", max_position=POSITIONS,
                                    segment_vocab_size=0, layer_norm_eps=1e-5)
    ids = np.random.default_rng(0).integers(1, VOCAB, size=(2, 9)).astype("int32")
    with torch.no_grad():
        expected = torch.softmax(hf_gpt(torch.tensor(ids, dtype=torch.long)).logits, -1).numpy()
    got = ops.convert_to_numpy(model([ids, np.zeros_like(ids)]))
    assert np.abs(got - expected).max() <= 1e-4


def test_gpt_refuses_heads_and_other_applications():
    common = dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=1, num_attention_heads=HEADS,
                  intermediate_size=4 * H, max_position=POSITIONS)
    with pytest.raises(KerasformerError, match="with_mlm"):
        build_transformer_model(model="gpt", with_mlm=True, **common)
    with pytest.raises(KerasformerError, match="unilm"):
        build_transformer_model(model="gpt", application="unilm", **common)
