"""Sequence-labelling and span heads against brute force and numpy formulas: CRF likelihood
over all tag paths, Viterbi against exhaustive search, MEMM, GlobalPointer / Efficient
GlobalPointer scores (RoPE and masks included), and the multi-label losses."""
import itertools
import os

import keras
import numpy as np
import pytest
from keras import ops

from kerasformer import losses
from kerasformer.backend import predict, to_numpy
from kerasformer.snippets import ViterbiDecoder
from kerasformer.layers.crf import ConditionalRandomField, MaximumEntropyMarkovModel
from kerasformer.layers.global_pointer import EfficientGlobalPointer, GlobalPointer

RNG = np.random.default_rng(0)


def compiled(fn):
    """``jax.jit(fn)`` on JAX, ``fn`` elsewhere: eager JAX compiles every op for every shape,
    which would dominate these small tests' run time. Build layers before calling."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


def logsumexp(x):
    x = np.asarray(x, dtype=np.float64)
    return x.max() + np.log(np.exp(x - x.max()).sum())


def path_score(emissions, trans, path):
    return sum(emissions[t, y] for t, y in enumerate(path)) + sum(
        trans[a, b] for a, b in zip(path[:-1], path[1:]))


# ----------------------------------------------------------------------------------- CRF

@pytest.fixture(scope="module")
def crf_case():
    emissions = RNG.normal(size=(3, 4, 3)).astype("float32")
    trans = RNG.normal(size=(3, 3)).astype("float32")
    lengths = [4, 2, 1]
    mask = np.array([[t < n for t in range(4)] for n in lengths])
    labels = np.array([[0, 2, 1, 1], [2, 0, -1, -1], [1, -1, -1, -1]])  # -1: padding labels
    expected = []
    for b, n in enumerate(lengths):
        e = emissions[b, :n].astype(np.float64)
        log_z = logsumexp([path_score(e, trans, p) for p in itertools.product(range(3), repeat=n)])
        expected.append(log_z - path_score(e, trans, labels[b, :n]))
    return emissions, trans, mask, labels, np.array(expected)


def _crf(trans, lr_multiplier=1):
    crf = ConditionalRandomField(lr_multiplier=lr_multiplier)
    crf.build((None, None, 3))
    crf._trans.assign(trans / lr_multiplier)
    return crf


@pytest.mark.parametrize("lr_multiplier", [1, 10])
def test_crf_loss_equals_brute_force(crf_case, lr_multiplier):
    emissions, trans, mask, labels, expected = crf_case
    crf = _crf(trans, lr_multiplier)
    np.testing.assert_allclose(to_numpy(crf.trans), trans, rtol=1e-6)
    y_pred = to_numpy(compiled(lambda e, m: crf(e, mask=m))(emissions, mask))
    assert np.all(y_pred[1, 2:] == -1e12)  # padded rows; the losses read the mask back from them
    sparse_loss = compiled(crf.sparse_loss)
    np.testing.assert_allclose(to_numpy(sparse_loss(labels, y_pred)), expected, rtol=1e-5)
    # explicit mask on raw emissions; one-hot labels (zero rows at padding)
    got = compiled(lambda y, e, m: crf.sparse_loss(y, e, mask=m))(labels, emissions, mask)
    np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-5)
    one_hot = np.eye(3, dtype="float32")[np.maximum(labels, 0)] * mask[..., None]
    np.testing.assert_allclose(to_numpy(compiled(crf.loss)(one_hot, y_pred)), expected, rtol=1e-5)
    # without any mask the whole length counts: the first row (no padding) is unchanged
    full = to_numpy(sparse_loss(np.maximum(labels, 0), emissions))
    np.testing.assert_allclose(full[0], expected[0], rtol=1e-5)
    assert abs(full[1] - expected[1]) > 1e-3


def test_crf_accuracy_ignores_padding(crf_case):
    emissions, trans, mask, labels, _ = crf_case
    crf = _crf(trans)
    y_pred = compiled(lambda e, m: crf(e, mask=m))(emissions, mask)
    expected = (emissions.argmax(-1) == labels)[mask].mean()
    np.testing.assert_allclose(to_numpy(compiled(crf.sparse_accuracy)(labels, y_pred)), expected, rtol=1e-6)


def test_viterbi_equals_brute_force():
    rng = np.random.default_rng(1)
    for case in range(6):
        nodes = rng.normal(size=(4, 3))
        trans = rng.normal(size=(3, 3))
        starts = [0, 2] if case % 2 else None
        ends = [1] if case % 3 == 0 else None
        paths = [p for p in itertools.product(range(3), repeat=4)
                 if (starts is None or p[0] in starts) and (ends is None or p[-1] in ends)]
        best = max(paths, key=lambda p: path_score(nodes, trans, p))
        decoded = ViterbiDecoder(trans, starts=starts, ends=ends).decode(nodes)
        assert tuple(decoded) == best
    assert list(ViterbiDecoder(trans).decode(nodes[:1])) == [int(nodes[0].argmax())]


def test_crf_trains_with_fit_and_decodes():
    # tag = a function of the token; sequences right-padded with token 0 (labels 0 there too)
    rng = np.random.default_rng(2)
    tokens = rng.integers(1, 7, size=(32, 6)).astype("int32")
    for row, length in enumerate(rng.integers(2, 7, size=32)):
        tokens[row, length:] = 0
    tags = np.where(tokens > 0, tokens % 3, 0).astype("int32")

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None,), dtype="int32")
    mask = ops.not_equal(inputs, 0)
    x = keras.layers.Embedding(7, 8)(inputs)
    x = keras.layers.Dense(3)(x)
    crf = ConditionalRandomField(lr_multiplier=10)
    outputs = crf(x, mask=mask)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
    history = model.fit(tokens, tags, batch_size=16, epochs=12, verbose=0).history
    assert history["loss"][-1] < 0.3 * history["loss"][0]
    assert history["sparse_accuracy"][-1] > 0.95

    scores = predict(model, tokens[:4])
    decoder = ViterbiDecoder(to_numpy(crf.trans))
    for row in range(4):
        n = int((tokens[row] > 0).sum())
        np.testing.assert_array_equal(decoder.decode(scores[row, :n]), tags[row, :n])


# ---------------------------------------------------------------------------------- MEMM

def _memm_reference(emissions, trans, labels, lengths):
    """bert4keras' bidirectional MEMM loss: mean of both directions' token-averaged CE."""
    def direction(backward):
        total, count = 0.0, 0
        for b, n in enumerate(lengths):
            e, y = emissions[b, :n].astype(np.float64), labels[b, :n]
            t = trans
            if backward:
                e, y, t = e[::-1], y[::-1], trans.T
            for i in range(n):
                logits = e[i] if i == 0 else (e[i] + t[y[i - 1]]) / 2
                total += logsumexp(logits) - logits[y[i]]
                count += 1
        return total / count
    return (direction(False) + direction(True)) / 2


@pytest.mark.parametrize("hidden_dim", [None, 2])
def test_memm_loss_equals_formula(crf_case, hidden_dim):
    emissions, _, mask, labels, _ = crf_case
    memm = MaximumEntropyMarkovModel(hidden_dim=hidden_dim)
    memm.build(emissions.shape)
    y_pred = compiled(lambda e, m: memm(e, mask=m))(emissions, mask)
    trans = to_numpy(memm.trans).astype(np.float64)
    if hidden_dim:
        np.testing.assert_allclose(trans, to_numpy(memm._l_trans.value) @ to_numpy(memm._r_trans.value).T,
                                   rtol=1e-5, atol=1e-6)
    expected = _memm_reference(emissions, trans, labels, mask.sum(1))
    np.testing.assert_allclose(to_numpy(compiled(memm.sparse_loss)(labels, y_pred)), expected, rtol=1e-5)


# ------------------------------------------------------------------------- GlobalPointer

def rope_np(x, positions):
    """RoFormer rotation of consecutive pairs along the last axis; x [length, ..., d]."""
    d = x.shape[-1]
    theta = np.power(10000.0, -2.0 * np.arange(d // 2) / d)
    angles = positions[:, None] * theta[None]  # [length, d/2]
    shape = (len(positions),) + (1,) * (x.ndim - 2) + (d // 2,)
    cos, sin = np.cos(angles).reshape(shape), np.sin(angles).reshape(shape)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = odd * cos + even * sin
    return out


def mask_np(logits, mask, tril):
    logits = logits.copy()
    for b in range(len(mask)):
        logits[b][:, ~mask[b], :] = -1e12
        logits[b][:, :, ~mask[b]] = -1e12
    if tril:
        n = logits.shape[-1]
        logits = logits - np.tril(np.ones((n, n)), -1) * 1e12
    return logits


GP_X = RNG.normal(size=(2, 5, 6)).astype("float32")
GP_MASK = np.array([[True] * 5, [True] * 3 + [False] * 2])


def _assert_scores(got, expected):
    got = np.asarray(got, dtype=np.float64)
    real = np.abs(expected) < 1e6
    np.testing.assert_allclose(got[real], expected[real], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[~real], expected[~real], rtol=1e-5)  # the -1e12 levels too


@pytest.mark.parametrize("rope,tril", [(True, True), (False, False)])
def test_global_pointer_equals_formula(rope, tril):
    heads, size = 2, 4
    layer = GlobalPointer(heads, size, RoPE=rope, tril_mask=tril, kernel_initializer="random_normal")
    layer.build(GP_X.shape)
    got = to_numpy(compiled(lambda x, m: layer(x, mask=m))(GP_X, GP_MASK))
    kernel, bias = (to_numpy(w.value).astype(np.float64) for w in layer.dense.weights)
    h = (GP_X.astype(np.float64) @ kernel + bias).reshape(2, 5, heads, 2 * size)
    q, k = h[..., :size], h[..., size:]
    if rope:
        q = np.stack([rope_np(q[b], np.arange(5.0)) for b in range(2)])
        k = np.stack([rope_np(k[b], np.arange(5.0)) for b in range(2)])
    logits = np.einsum("bmhd,bnhd->bhmn", q, k)
    expected = mask_np(logits, GP_MASK, tril) / np.sqrt(size)  # masked, then scaled (bert4keras)
    _assert_scores(got, expected)
    assert got.shape == (2, heads, 5, 5)
    if rope:  # RoPE makes the score depend on positions: shifting the input changes it
        assert not np.allclose(got[0, :, :2, :2], to_numpy(compiled(layer)(GP_X[:, 1:3]))[0])


@pytest.mark.parametrize("rope,tril", [(True, True), (False, False)])
def test_efficient_global_pointer_equals_formula(rope, tril):
    heads, size = 3, 4
    layer = EfficientGlobalPointer(heads, size, RoPE=rope, tril_mask=tril, kernel_initializer="random_normal")
    layer.build(GP_X.shape)
    got = to_numpy(compiled(lambda x, m: layer(x, mask=m))(GP_X, GP_MASK))
    pk, pb = (to_numpy(w.value).astype(np.float64) for w in layer.p_dense.weights)
    qk, qb = (to_numpy(w.value).astype(np.float64) for w in layer.q_dense.weights)
    p = GP_X.astype(np.float64) @ pk + pb  # [b, n, 2 * size]
    q, k = p[..., 0::2], p[..., 1::2]
    if rope:
        q = np.stack([rope_np(q[b], np.arange(5.0)) for b in range(2)])
        k = np.stack([rope_np(k[b], np.arange(5.0)) for b in range(2)])
    bias = p @ qk + qb  # [b, n, 2 * heads]
    logits = np.einsum("bmd,bnd->bmn", q, k)[:, None] / np.sqrt(size)
    logits = logits + bias[..., 0::2].transpose(0, 2, 1)[:, :, None, :] / 2  # end token j
    logits = logits + bias[..., 1::2].transpose(0, 2, 1)[:, :, :, None] / 2  # start token i
    _assert_scores(got, mask_np(logits, GP_MASK, tril))


# ---------------------------------------------------------------------------------- losses

def mcce_np(y_true, y_pred):
    """log(1 + sum_neg e^s) + log(1 + sum_pos e^-s) per row."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, np.float64)
    return np.array([np.log1p(np.exp(s[~t]).sum()) + np.log1p(np.exp(-s[t]).sum())
                     for t, s in zip(y_true.reshape(-1, y_true.shape[-1]), y_pred.reshape(-1, y_pred.shape[-1]))]
                    ).reshape(y_true.shape[:-1])


def test_multilabel_categorical_crossentropy_equals_formula():
    y_pred = RNG.normal(size=(5, 7)).astype("float32") * 3
    y_true = (RNG.random((5, 7)) < 0.3).astype("float32")
    y_true[0] = 0  # no positives
    y_true[1] = 1  # all positives
    np.testing.assert_allclose(to_numpy(compiled(losses.multilabel_categorical_crossentropy)(y_true, y_pred)),
                               mcce_np(y_true, y_pred), rtol=1e-5)


def test_sparse_multilabel_matches_dense():
    y_pred = RNG.normal(size=(4, 9)).astype("float32") * 2
    # every index a real positive
    positives = np.array([[3, 5], [1, 6], [2, 8], [0, 7]])
    dense = np.zeros((4, 9), "float32")
    np.put_along_axis(dense, positives, 1, axis=1)
    sparse = compiled(losses.sparse_multilabel_categorical_crossentropy)
    np.testing.assert_allclose(to_numpy(sparse(positives, y_pred)),
                               mcce_np(dense, y_pred), rtol=1e-4)
    # mask_zero: 0 pads rows with fewer positives, and class 0 is neither positive nor negative
    padded = np.array([[3, 5, 0], [1, 0, 0], [2, 4, 8], [0, 0, 0]])
    dense = np.zeros((4, 9), "float32")
    np.put_along_axis(dense, padded, 1, axis=1)
    got = compiled(lambda y, p: losses.sparse_multilabel_categorical_crossentropy(y, p, mask_zero=True))(padded, y_pred)
    np.testing.assert_allclose(to_numpy(got), mcce_np(dense[:, 1:], y_pred[:, 1:]), rtol=1e-4)


def test_global_pointer_losses_equal_formula():
    y_pred = RNG.normal(size=(2, 3, 4, 4)).astype("float32") * 2
    spans = np.zeros((2, 3, 2, 2), "int32")  # (start, end) pairs padded with (0, 0)
    spans[0, 0] = [[1, 2], [2, 3]]
    spans[0, 2, 0] = [0, 3]
    spans[1, 1, 0] = [3, 3]
    y_true = np.zeros((2, 3, 4, 4), "float32")
    for b, h, s in itertools.product(range(2), range(3), range(2)):
        if tuple(spans[b, h, s]) != (0, 0):
            y_true[b, h, spans[b, h, s, 0], spans[b, h, s, 1]] = 1
    per_head = mcce_np(y_true.reshape(2, 3, 16), y_pred.reshape(2, 3, 16))
    np.testing.assert_allclose(to_numpy(compiled(losses.global_pointer_crossentropy)(y_true, y_pred)), per_head.mean(),
                               rtol=1e-5)
    # sparse: flat index 0 (span (0, 0)) is padding and excluded; summed over heads, mean over batch
    per_head_sparse = mcce_np(y_true.reshape(2, 3, 16)[..., 1:], y_pred.reshape(2, 3, 16)[..., 1:])
    np.testing.assert_allclose(to_numpy(compiled(losses.sparse_global_pointer_crossentropy)(spans, y_pred)),
                               per_head_sparse.sum(1).mean(), rtol=1e-4)
    predicted = y_pred > 0
    f1 = 2 * (y_true * predicted).sum() / (y_true.sum() + predicted.sum())
    np.testing.assert_allclose(to_numpy(compiled(losses.global_pointer_f1_score)(y_true, y_pred)), f1, rtol=1e-6)


# ------------------------------------------------------------------------- serialisation

def test_heads_round_trip_keras_file(tmp_path):
    inputs = keras.Input((5, 6))
    mask = keras.Input((5,), dtype="bool")
    crf = ConditionalRandomField(lr_multiplier=4, name="CRF")
    outputs = [crf(keras.layers.Dense(3)(inputs), mask=mask),
               MaximumEntropyMarkovModel(hidden_dim=2, name="MEMM")(keras.layers.Dense(3)(inputs), mask=mask),
               GlobalPointer(2, 4, name="GP")(inputs, mask=mask),
               EfficientGlobalPointer(2, 4, name="EGP")(inputs, mask=mask)]
    model = keras.Model([inputs, mask], outputs)
    path = os.path.join(tmp_path, "heads.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("CRF").lr_multiplier == 4
    np.testing.assert_allclose(to_numpy(loaded.get_layer("CRF").trans), to_numpy(crf.trans), rtol=1e-6)
    for a, b in zip(predict(model, [GP_X, GP_MASK]), predict(loaded, [GP_X, GP_MASK])):
        np.testing.assert_allclose(a, b, rtol=1e-6)
