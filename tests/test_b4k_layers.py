"""``kerasformer.layers``' bert4keras layers against numpy transcriptions of bert4keras
0.11.5's formulas; masks checked by perturbing padded positions."""
import keras
import numpy as np
import pytest

from kerasformer import layers as kl
from kerasformer.backend import K

rng = np.random.default_rng(0)


def close(a, b, atol=1e-5):
    np.testing.assert_allclose(K.eval(a), b, rtol=1e-4, atol=atol)


def randomize(layer, scale=0.5):
    layer.set_weights([rng.normal(size=w.shape).astype("float32") * scale for w in layer.get_weights()])


def masked_model(layer, dim=4, length=5, extra_inputs=()):
    """ids -> Embedding(mask_zero) -> layer: the layer sees the padding mask."""
    ids = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(20, dim, mask_zero=True, name="emb")(ids)
    return keras.Model(ids, layer(x))


def test_layer_normalization_formula():
    x = rng.normal(size=(2, 3, 6)).astype("float32")
    ln = kl.LayerNormalization()
    ln(x)
    randomize(ln)
    beta, gamma = ln.beta.numpy() if hasattr(ln.beta, "numpy") else K.eval(ln.beta), K.eval(ln.gamma)
    centred = x - x.mean(-1, keepdims=True)
    want = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-7) * gamma + beta
    close(ln(x), want)
    # RMS form (zero_mean=False) without offset, and a constant scale
    ln2 = kl.LayerNormalization(zero_mean=False, offset=False, scale=2.0, epsilon=1e-6)
    close(ln2(x), 2.0 * x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6))
    assert ln2.weights == []


def test_conditional_layer_normalization_formula():
    x = rng.normal(size=(2, 3, 6)).astype("float32")
    cond = rng.normal(size=(2, 5)).astype("float32")
    ln = kl.LayerNormalization(conditional=True, hidden_units=4, hidden_activation="tanh")
    ln([x, cond])
    randomize(ln)
    hidden = np.tanh(cond @ K.eval(ln.hidden_dense.kernel))[:, None]
    gamma = K.eval(ln.gamma) + hidden @ K.eval(ln.gamma_dense.kernel)
    beta = K.eval(ln.beta) + hidden @ K.eval(ln.beta_dense.kernel)
    centred = x - x.mean(-1, keepdims=True)
    close(ln([x, cond]), centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-7) * gamma + beta)
    # zero-initialised projections: a fresh conditional LN is the plain one
    fresh = kl.LayerNormalization(conditional=True)
    plain = kl.LayerNormalization()
    close(fresh([x, cond]), K.eval(plain(x)))


@pytest.mark.parametrize("pool", ["average", "max"])
def test_global_pooling_respects_the_mask(pool):
    layer = kl.GlobalAveragePooling1D() if pool == "average" else kl.GlobalMaxPooling1D()
    model = masked_model(layer)
    ids = np.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 0]])
    emb = K.eval(model.get_layer("emb").embeddings)[ids]
    mask = (ids != 0)[..., None]
    if pool == "average":
        want = (emb * mask).sum(1) / mask.sum(1)
    else:
        want = np.where(mask, emb, -np.inf).max(1)
    close(model(ids), want)
    # padding content does not matter: change the padded tokens' embedding row
    emb_layer = model.get_layer("emb")
    table = K.eval(emb_layer.embeddings)
    table[0] = 100.0
    emb_layer.embeddings.assign(table)
    close(model(ids), want)
    # as bert4keras, keras.layers' names are these layers once kerasformer.layers is imported
    assert keras.layers.GlobalMaxPooling1D is kl.GlobalMaxPooling1D
    assert keras.layers.GlobalAveragePooling1D is kl.GlobalAveragePooling1D
    unmasked = keras.Input((5, 4))
    assert K.int_shape(kl.GlobalMaxPooling1D(keepdims=True)(unmasked)) == (None, 1, 4)


def test_concatenate1d_masks():
    a = keras.Input((3,), dtype="int32")
    b = keras.Input((2, 4))
    ea = keras.layers.Embedding(10, 4, mask_zero=True)(a)
    out = kl.Concatenate1D()([ea, b])
    mask_model = keras.Model([a, b], out._keras_mask if hasattr(out, "_keras_mask") else out)
    got = K.eval(mask_model([np.array([[1, 2, 0]]), np.ones((1, 2, 4), "float32")]))
    np.testing.assert_array_equal(got, [[True, True, False, True, True]])


def gau_reference(layer, x, mask, sinusoidal=None):
    w = {v.path.split("/", 1)[1]: K.eval(v) for v in layer.weights}
    h = x @ w["i_dense/kernel"] + w["i_dense/bias"]
    h = h / (1 + np.exp(-h)) * 1.0  # swish
    u, v, z = h[..., :layer.units], h[..., layer.units:2 * layer.units], h[..., 2 * layer.units:]
    q = z * w["q_scaleoffset/gamma"] + w["q_scaleoffset/beta"]
    k = z * w["k_scaleoffset/gamma"] + w["k_scaleoffset/beta"]
    if sinusoidal is not None:
        def rotate(t):
            cos_pos = np.repeat(sinusoidal[..., 1::2], 2, -1)
            sin_pos = np.repeat(sinusoidal[..., ::2], 2, -1)
            t2 = np.stack([-t[..., 1::2], t[..., ::2]], -1).reshape(t.shape)
            return t * cos_pos + t2 * sin_pos
        q, k = rotate(q), rotate(k)
    a = np.einsum("bmd,bnd->bmn", q, k) / np.sqrt(layer.key_size)
    lengths = mask.sum(-1)[:, None, None]
    A = np.where(mask[:, None], np.maximum(a, 0) ** 2, 0) / lengths  # squared_relu
    o = u * np.einsum("bmn,bnd->bmd", A, v)
    return o @ w["o_dense/kernel"] + w["o_dense/bias"]


def test_gated_attention_unit_formula_and_mask():
    gau = kl.GatedAttentionUnit(units=6, key_size=4)
    model = masked_model(gau, dim=5)
    randomize(gau)
    ids = np.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 0]])
    x = K.eval(model.get_layer("emb").embeddings)[ids]
    want = gau_reference(gau, x, ids != 0)
    close(model(ids), want, atol=1e-4)
    # rotary positions as bert4keras' p_bias='rotary'
    from kerasformer.backend import sinusoidal_embeddings

    table = K.eval(sinusoidal_embeddings(np.arange(5, dtype="float32")[None], 4))
    got = gau([x, table], mask=[ids != 0, None], p_bias="rotary")
    close(got, gau_reference(gau, x, ids != 0, table), atol=1e-4)


def test_position_embeddings_merge_modes_and_hierarchical():
    x = rng.normal(size=(2, 4, 6)).astype("float32")
    pe = kl.PositionEmbedding(5, 6, merge_mode="mul")
    pe(x)
    randomize(pe)
    table = K.eval(pe.embeddings)
    close(pe(x), x * (table[None, :4] + 1))
    concat = kl.PositionEmbedding(5, 3, merge_mode="concat", embeddings_initializer="ones")
    assert K.int_shape(concat(x)) == (2, 4, 9)
    hier = kl.PositionEmbedding(3, 6, merge_mode="zero", hierarchical=True, custom_position_ids=True)
    ids = np.array([[0, 4, 8]])
    hier([x[:1, :3], ids])
    randomize(hier)
    e = K.eval(hier.embeddings)
    u = (e - 0.4 * e[:1]) / 0.6
    close(hier([x[:1, :3], ids]), 0.4 * u[ids // 3] + 0.6 * u[ids % 3])


def test_sinusoidal_position_embedding_default_adds():
    from kerasformer.backend import sinusoidal_embeddings

    x = rng.normal(size=(2, 4, 6)).astype("float32")
    table = K.eval(sinusoidal_embeddings(np.arange(4, dtype="float32")[None], 6))
    close(kl.SinusoidalPositionEmbedding(6)(x), x + table)  # bert4keras' default merge_mode='add'
    close(kl.SinusoidalPositionEmbedding(6, "zero")(x), table)
    restored = kl.SinusoidalPositionEmbedding.from_config({"output_dim": 6, "name": "old"})
    assert restored.merge_mode == "zero"  # configs saved before merge_mode: the rotary table


def test_relative_position_embedding_learned_form():
    layer = kl.RelativePositionEmbedding(5, 3)  # bert4keras' (input_dim, output_dim)
    q, v = np.zeros((1, 4, 2)), np.zeros((1, 3, 2))
    layer([q, v])
    randomize(layer)
    table = K.eval(layer.embeddings)
    ids = np.clip(np.arange(3)[None] - np.arange(4)[:, None], -2, 2) + 2
    close(layer([q, v]), table[ids])
    assert layer.trainable and kl.RelativePositionEmbedding(max_relative_position=2, output_dim=4).weights == []


def test_feed_forward_defaults_to_relu_and_keras_names_served():
    ff = kl.FeedForward(3)
    x = rng.normal(size=(2, 4)).astype("float32")
    ff(x)
    randomize(ff)
    (k0, b0), (k1, b1) = ff.i0_dense.get_weights(), ff.o_dense.get_weights()
    close(ff(x), np.maximum(x @ k0 + b0, 0) @ k1 + b1)
    assert kl.Dense is keras.layers.Dense and kl.Lambda is keras.layers.Lambda
    assert kl.Loss.__module__ == "kerasformer.training"
    assert kl.Layer is not keras.layers.Layer and kl.Layer().supports_masking
    assert kl.integerize_shape(len) is len
    with pytest.raises(AttributeError):
        kl.NoSuchLayer  # noqa: B018
