"""Model inspection: intermediate outputs against a numpy re-computation from the weights,
attention probabilities (rows sum to 1, masks respected, block 0 recomputed by hand), and the
attention heat map written as a real PNG."""
import math

import keras
import numpy as np
import pytest

from kerasformer import Tokenizer, backend, build_transformer_model, utils
from kerasformer.errors import KerasformerError

CONFIG = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=24, max_position=32)


@pytest.fixture(scope="module")
def bert():
    keras.utils.set_random_seed(0)
    model = build_transformer_model(None, None, with_mlm=True, **CONFIG)
    rng = np.random.default_rng(0)  # non-trivial LayerNorms and biases
    for v in model.weights:
        v.assign(backend.to_numpy(v.value) + rng.normal(scale=0.2, size=v.shape).astype("float32"))
    return model


def batch():
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 30, (2, 7)).astype("int32")
    ids[1, 4:] = 0  # padding
    segments = np.zeros_like(ids)
    segments[0, 4:] = 1
    return ids, segments


def weight(model, path):
    return next(backend.to_numpy(v.value) for v in model.weights if v.path == path).astype("float64")


def layer_norm(x, gamma, beta, eps=1e-12):
    x = x - x.mean(-1, keepdims=True)
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * gamma + beta


def gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def test_intermediate_outputs_equal_a_manual_computation(bert):
    ids, segments = batch()
    probe = utils.intermediate_outputs(bert, ["Embedding-Norm", "Transformer-0-MultiHeadSelfAttention-Norm",
                                              "Transformer-0-FeedForward-Norm", "MLM-Norm",
                                              ("Embedding-Token", 1)])
    embeddings, attention_norm, block_0, mlm_norm, logits = backend.predict(probe, [ids, segments])

    w = lambda path: weight(bert, path)  # noqa: E731
    x = w("Embedding-Token/embeddings")[ids] + w("Embedding-Segment/embeddings")[segments]
    x = x + w("Embedding-Position/embeddings")[: ids.shape[1]]
    np.testing.assert_allclose(embeddings, layer_norm(x, w("Embedding-Norm/gamma"), w("Embedding-Norm/beta")),
                               atol=1e-4)

    # block 0's feed-forward half, from the attention half's output
    ff = "Transformer-0-FeedForward"
    h = gelu(attention_norm @ w(f"{ff}/i0_dense/kernel") + w(f"{ff}/i0_dense/bias"))
    h = h @ w(f"{ff}/o_dense/kernel") + w(f"{ff}/o_dense/bias")
    want = layer_norm(attention_norm + h, w(f"{ff}-Norm/gamma"), w(f"{ff}-Norm/beta"))
    np.testing.assert_allclose(block_0, want, atol=1e-4)

    # the second call of the shared token embedding: the MLM head's tied projection
    np.testing.assert_allclose(logits, mlm_norm @ w("Embedding-Token/embeddings").T, atol=1e-4)
    single = utils.intermediate_outputs(bert, "Embedding-Norm")  # one name: one output
    np.testing.assert_allclose(backend.predict(single, [ids, segments]), embeddings, atol=1e-6)


def test_intermediate_outputs_errors(bert):
    with pytest.raises(KerasformerError, match="no layer 'Transformer-9-FeedForward'"):
        utils.intermediate_outputs(bert, "Transformer-9-FeedForward")
    with pytest.raises(KerasformerError, match="called 2 time"):
        utils.intermediate_outputs(bert, [("Embedding-Token", 2)])


def test_attention_probabilities(bert):
    ids, segments = batch()
    named = utils.attention_probabilities(bert, [ids, segments], with_names=True)
    assert [name for name, _ in named] == ["Transformer-0-MultiHeadSelfAttention",
                                           "Transformer-1-MultiHeadSelfAttention"]
    for _, probs in named:
        assert probs.shape == (2, 2, 7, 7)  # [batch, heads, q, k]
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
        assert np.all(probs[1, :, :, 4:] == 0.0)  # nobody attends to padding
        assert probs[1, :, :, :4].min() > 0.0

    # block 0 by hand: softmax(q k^T / sqrt(d) + mask) from the embeddings
    x = backend.predict(utils.intermediate_outputs(bert, "Embedding-Norm"), [ids, segments]).astype("float64")
    a = "Transformer-0-MultiHeadSelfAttention"
    q = x @ weight(bert, f"{a}/q_dense/kernel") + weight(bert, f"{a}/q_dense/bias")
    k = x @ weight(bert, f"{a}/k_dense/kernel") + weight(bert, f"{a}/k_dense/bias")
    q = q.reshape(2, 7, 2, 8).transpose(0, 2, 1, 3)
    k = k.reshape(2, 7, 2, 8).transpose(0, 2, 1, 3)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(8)
    scores = np.where((ids != 0)[:, None, None, :], scores, -np.inf)
    want = np.exp(scores - scores.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(named[0][1], want, atol=1e-5)


def test_attention_probabilities_follow_the_unilm_mask():
    keras.utils.set_random_seed(0)
    model = build_transformer_model(None, None, application="unilm", **{**CONFIG, "num_hidden_layers": 1})
    ids, segments = batch()
    probs = utils.attention_probabilities(model, [ids, segments])[-1]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    # row 0: segment 1 starts at 4; source tokens never see it, target tokens see no future
    assert np.all(probs[0, :, :4, 4:] == 0.0)
    assert np.all(probs[0, :, 4:, :][np.broadcast_to(np.triu(np.ones((3, 7)), k=5) > 0, (2, 3, 7))] == 0.0)
    assert probs[0, :, 6, 6].min() > 0.0
    with pytest.raises(KerasformerError, match="takes 2 input"):
        utils.attention_probabilities(model, [ids])


@pytest.fixture
def tokenizer():
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxy")
    return Tokenizer({t: i for i, t in enumerate(tokens)})


def test_plot_attention_writes_a_png(bert, tokenizer, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    path = tmp_path / "attention.png"
    matrix = utils.plot_attention(bert, tokenizer, "a b c d", str(path), layer=-1, head=None)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(str(path))  # decodes: a valid PNG
    assert image.ndim == 3 and min(image.shape[:2]) > 100

    ids, segments = tokenizer.encode("a b c d")
    assert matrix.shape == (len(ids), len(ids))  # [CLS] a b c d [SEP]
    probs = utils.attention_probabilities(bert, [np.array([ids]), np.array([segments])])
    np.testing.assert_allclose(matrix, probs[-1][0].mean(0), atol=1e-6)
    one_head = utils.plot_attention(bert, tokenizer, "a b c d", str(tmp_path / "head.png"), layer=0, head=1)
    np.testing.assert_allclose(one_head, probs[0][0, 1], atol=1e-6)


def test_plot_attention_without_matplotlib(bert, tokenizer, tmp_path, monkeypatch):
    import sys

    for module in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(KerasformerError, match="pip install matplotlib"):
        utils.plot_attention(bert, tokenizer, "a b", str(tmp_path / "x.png"))


def test_plot_attention_draws_chinese_with_a_cjk_font(bert, tmp_path):
    """Chinese tokens get glyphs (defect 5: they were empty boxes, with matplotlib's
    'Glyph ... missing from font(s) DejaVu Sans' warning)."""
    pytest.importorskip("matplotlib")
    import warnings

    assert utils.cjk_font_family() is not None  # the plot extra ships Noto Sans CJK
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("我爱北京的中国") + list("abc")
    tokenizer = Tokenizer({t: i for i, t in enumerate(tokens)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        utils.plot_attention(bert, tokenizer, "我爱北京的中国", str(tmp_path / "zh.png"))
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing[:2]
