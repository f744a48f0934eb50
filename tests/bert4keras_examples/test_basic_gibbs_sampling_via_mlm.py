"""bert4keras' basic_gibbs_sampling_via_mlm, ported: Gibbs sampling with the MLM head."""
import pytest

from .conftest import run_port


@pytest.fixture(scope="module")
def example(example_root, tiny_bert, port_dir):
    return run_port("basic_gibbs_sampling_via_mlm", example_root, port_dir)


def test_samples(example):
    sentences = example["sentences"]
    assert len(sentences) == example["steps"]
    assert all(isinstance(s, str) for s in sentences)
    # every sample keeps the sentence length ([CLS] and [SEP] are never resampled)
    assert len(example["token_ids"]) == example["length"] + 2
