"""bert4keras' basic_masked_language_model, ported: MLM probabilities at masked positions."""
import numpy as np

from .conftest import port_fixture


example = port_fixture("basic_masked_language_model")


def test_mlm_probabilities_decode(example):
    probas, tokenizer = example["probas"], example["tokenizer"]
    token_ids = example["token_ids"]
    assert probas.shape == (token_ids.shape[1], tokenizer._vocab_size)
    np.testing.assert_allclose(probas.sum(axis=-1), 1.0, atol=1e-4)
    assert token_ids[0, 3] == token_ids[0, 4] == tokenizer._token_mask_id
    text = tokenizer.decode(probas[3:5].argmax(axis=1))
    assert isinstance(text, str)
