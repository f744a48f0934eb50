"""bert4keras' basic_gibbs_sampling_via_mlm, ported: Gibbs sampling with the MLM head."""

from .conftest import port_fixture


example = port_fixture("basic_gibbs_sampling_via_mlm")


def test_samples(example):
    sentences = example["sentences"]
    assert len(sentences) == example["steps"]
    assert all(isinstance(s, str) for s in sentences)
    # every sample keeps the sentence length ([CLS] and [SEP] are never resampled)
    assert len(example["token_ids"]) == example["length"] + 2
