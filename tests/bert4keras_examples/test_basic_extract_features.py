"""bert4keras' basic_extract_features, ported (ports/basic_extract_features.py): encode a
sentence, predict the sequence output, save with ``model.save('test.model')`` and reload."""
import numpy as np

from .conftest import port_fixture


example = port_fixture("basic_extract_features")


def test_features_and_reload(example, tiny_bert):
    from kerasformer import build_transformer_model

    token_ids, segment_ids = example["token_ids"], example["segment_ids"]
    assert token_ids.shape == (1, 6)  # [CLS] 语 言 模 型 [SEP]
    reloaded = example["model"].predict([token_ids, segment_ids], verbose=0)
    fresh = build_transformer_model(str(tiny_bert / "bert_config.json"), str(tiny_bert / "bert_model.ckpt"))
    expected = fresh.predict([token_ids, segment_ids], verbose=0)
    assert reloaded.shape == (1, 6, 32)  # the reloaded model still computes BERT's features
    np.testing.assert_allclose(reloaded, expected, atol=1e-5)
