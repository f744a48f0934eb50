"""kerasformer's own Chinese model inside the package: it loads through the user's path with
nothing missing or left over, equals Hugging Face's BertForMaskedLM on the same folder, and
FillMask reads [MASK] placeholders as the model's mask token."""
import numpy as np
import pytest
import torch
import transformers

from kerasformer.embedded import FillMask, model_dir
from kerasformer.errors import KerasformerError

TEXTS = ["床前明月[MASK]，疑是地上霜。", "这家酒店的服务态度非常[MASK][MASK]。"]


@pytest.fixture(scope="module")
def fill():
    return FillMask()


def test_loads_whole_and_half_precision_is_only_storage(fill):
    from safetensors.numpy import load_file

    from kerasformer import build_transformer_model

    transformer = build_transformer_model(model_dir(), with_mlm=True, return_keras_model=False)
    report = transformer.load_report
    assert report.loaded and not report.missing and not report.unused
    stored = load_file(f"{model_dir()}/model.safetensors")
    assert {a.dtype for a in stored.values()} == {np.dtype("float16")}
    table = stored["bert.embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(fill.model.get_layer("Embedding-Token").embeddings.numpy(), table.astype("float32"))


def test_fill_mask_equals_transformers(fill):
    reference = transformers.BertForMaskedLM.from_pretrained(model_dir(), torch_dtype=torch.float32).eval()
    for text in TEXTS:
        ids, positions = fill.encode(text)
        assert [ids[p] for p in positions] == [fill.tokenizer.mask_id] * text.count("[MASK]")
        with torch.no_grad():
            logits = reference(torch.tensor([ids])).logits[0]
        expected = torch.softmax(logits, -1).numpy()
        (masks,) = fill([text], top=3)
        for p, candidates in zip(positions, masks):
            best = np.argsort(-expected[p])[:3]
            assert [fill.tokenizer.id_to_token(int(i)) for i in best] == [c[0] for c in candidates]
            np.testing.assert_allclose([c[1] for c in candidates], expected[p][best], atol=1e-4)


def test_fill_mask_refuses_text_without_a_placeholder(fill):
    with pytest.raises(KerasformerError, match=r"no \[MASK\]"):
        fill(["没有占位符"])
    with pytest.raises(KerasformerError, match="no embedded model"):
        model_dir("gpt-5")


def test_demo_sentence_vectors_share_the_fill_mask_weights_and_equal_transformers(fill):
    """The demo encodes sentences with the FillMask model's own encoder (no second load): its
    vectors are HF BertModel's last layer, mean-pooled over real tokens and L2-normalised."""
    from kerasformer.cli import SentenceEncoder

    sentences = ["今天天气很好。", "这家酒店的服务态度非常好，房间也很干净。"]
    encoder = SentenceEncoder(model_dir(), transformer=fill.transformer)
    ours = encoder.encode(sentences)
    reference = transformers.BertModel.from_pretrained(model_dir(), torch_dtype=torch.float32).eval()
    for sentence, vector in zip(sentences, ours):
        ids = encoder.tokenizer.encode(sentence)[0]
        with torch.no_grad():
            mean = reference(torch.tensor([ids])).last_hidden_state[0].mean(0).numpy()
        np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=1e-4)
