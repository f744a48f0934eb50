"""The training toolkit against closed forms: FGM's perturbation and gradients, the gradient
penalty (value and second-order gradient, by finite differences), R-Drop's objective; each trick
through ``model.fit``; the ``Loss`` layer with layer metrics and no ``y``; the build switches
``recompute=True`` (same outputs and gradients, checkpointing really used) and
``dtype_policy='mixed_bfloat16'``."""
import math

import keras
import numpy as np
import pytest
from keras import ops

from kerasformer import backend, build_transformer_model, training
from kerasformer.errors import KerasformerError

VOCAB, DIM, CLASSES, LENGTH = 11, 6, 3, 5


def compiled(fn):
    """``jax.jit`` on JAX (eager JAX compiles op by op), ``fn`` elsewhere."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


def toy_model(dropout=0.0, seed=0):
    """ids -> Embedding-Token -> mean over time -> (dropout) -> Dense softmax: small enough for
    closed-form gradients."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, DIM, name="Embedding-Token")(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    out = keras.layers.Dense(CLASSES, activation="softmax", name="Classifier")(x)
    model = keras.Model(ids, out)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(0.1),
                  metrics=["acc"])
    return model


def toy_data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, VOCAB, (n, LENGTH)).astype("int32"),
            rng.integers(0, CLASSES, (n,)).astype("int32"))


def numpy_loss_and_grads(E, W, b, ids, labels):
    """Mean cross-entropy of the toy model and its gradients (E, W, b), in float64."""
    E, W, b = (np.asarray(a, "float64") for a in (E, W, b))
    n, length = ids.shape
    h = E[ids].mean(axis=1)
    z = h @ W + b
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), labels]).mean()
    dz = p.copy()
    dz[np.arange(n), labels] -= 1
    dz /= n
    dW, db, dh = h.T @ dz, dz.sum(0), dz @ W.T
    dE = np.zeros_like(E)
    np.add.at(dE, ids, np.repeat(dh[:, None, :] / length, length, axis=1))
    return loss, [dE, dW, db]


def weights(model):
    return [backend.to_numpy(v.value).astype("float64") for v in model.trainable_variables]


def run(trick, x, y):
    return compiled(trick.gradients)(*trick.state(), x, y, None)


# --------------------------------------------------------------------------------- FGM

@pytest.mark.parametrize("accumulate", [True, False])
def test_fgm_perturbation_is_epsilon_along_the_gradient(accumulate):
    model = toy_model()
    trick = training.adversarial_training(model, "Embedding-Token", epsilon=0.7, accumulate=accumulate)
    ids, labels = toy_data()
    E, W, b = weights(model)
    grads, aux = run(trick, ids, labels)

    loss, (g_E, _, _) = numpy_loss_and_grads(E, W, b, ids, labels)
    delta = backend.to_numpy(aux["perturbation"]).astype("float64")
    assert np.linalg.norm(delta) == pytest.approx(0.7, rel=1e-5)
    np.testing.assert_allclose(delta, 0.7 * g_E / np.linalg.norm(g_E), atol=1e-6)
    # the update: gradients at E + delta (plus those at E when accumulating), for every weight
    adversarial_loss, adversarial = numpy_loss_and_grads(E + delta, W, b, ids, labels)
    # logged: the clean loss when accumulating, else the perturbed one (bert4keras' example)
    assert float(aux["loss"]) == pytest.approx(loss if accumulate else adversarial_loss, rel=1e-5)
    _, clean = numpy_loss_and_grads(E, W, b, ids, labels)
    expected = [a + c for a, c in zip(adversarial, clean)] if accumulate else adversarial
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(backend.to_numpy(got), want, atol=1e-6)
    # nothing was written into the model
    np.testing.assert_array_equal(weights(model)[0], E)


def test_fgm_defaults_are_bert4keras_example():
    """bert4keras' example: delta from an inference-mode gradient (its K.function ran without
    the learning phase: dropout off), the update from the perturbed training pass alone."""
    model = toy_model(dropout=0.5)
    trick = training.adversarial_training(model, "Embedding-Token", epsilon=0.5)
    assert trick.settings == {"embedding_name": "Embedding-Token", "epsilon": 0.5, "accumulate": False}
    ids, labels = toy_data()
    E, W, b = weights(model)
    _, aux = run(trick, ids, labels)
    _, (g_E, _, _) = numpy_loss_and_grads(E, W, b, ids, labels)  # no dropout: inference mode
    delta = backend.to_numpy(aux["perturbation"]).astype("float64")
    np.testing.assert_allclose(delta, 0.5 * g_E / (np.linalg.norm(g_E) + 1e-8), atol=1e-6)


def test_fgm_needs_a_compiled_model_and_a_real_embedding():
    model = toy_model()
    with pytest.raises(KerasformerError, match="no layer or variable 'Nope'"):
        training.adversarial_training(model, "Nope")
    fresh = keras.Model(model.inputs, model.outputs)
    with pytest.raises(KerasformerError, match="compiled model"):
        training.adversarial_training(fresh)


# ---------------------------------------------------------------------- gradient penalty

@pytest.mark.parametrize("per_token", [True, False])
def test_gradient_penalty_value_and_second_order_gradient(per_token):
    model = toy_model()
    trick = training.gradient_penalty(model, epsilon=2.0, per_token=per_token)
    ids, labels = toy_data()
    E, W, b = weights(model)

    def objective(E, W, b):
        loss, (g_E, _, _) = numpy_loss_and_grads(E, W, b, ids, labels)
        if per_token:
            # bert4keras' K.gradients(loss, [embeddings])[0].values: one gradient per looked-up
            # token, d loss / d E[ids[n, t]] = dh[n] / length (repeated tokens not summed)
            h = E[ids].mean(axis=1)
            z = h @ W + b
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(ids)), labels] -= 1
            dh = p / len(ids) @ W.T
            squared = np.sum(dh ** 2) * LENGTH / LENGTH ** 2
        else:
            squared = np.sum(g_E ** 2)
        return loss + 2.0 / 2 * squared, squared

    grads, aux = run(trick, ids, labels)
    total, squared_norm = objective(E, W, b)
    assert float(aux["penalty"]) == pytest.approx(squared_norm, rel=1e-4)
    assert float(aux["loss"]) == pytest.approx(total, rel=1e-5)
    assert squared_norm > 1e-4  # the penalty really weighs in this check
    if per_token:  # the two forms differ here (tokens repeat in the batch)
        assert abs(objective(E, W, b)[1] - np.sum(numpy_loss_and_grads(E, W, b, ids, labels)[1][0] ** 2)) > 1e-4

    # central differences of the float64 closed form, for W, b and the used embedding rows
    params = [E, W, b]
    used = np.unique(ids)
    for which, got in enumerate(grads):
        got = backend.to_numpy(got)
        index_set = ([(i, j) for i in used[:3] for j in range(DIM)] if which == 0
                     else list(np.ndindex(params[which].shape)))
        for index in index_set:
            up = [p.copy() for p in params]
            down = [p.copy() for p in params]
            up[which][index] += 1e-5
            down[which][index] -= 1e-5
            numeric = (objective(*up)[0] - objective(*down)[0]) / 2e-5
            assert got[index] == pytest.approx(numeric, abs=2e-5), (which, index)


def test_gradient_penalty_per_token_needs_a_direct_lookup():
    ids = keras.Input((LENGTH,), dtype="int32")
    shifted = keras.layers.Lambda(lambda t: t + 0)(ids)
    x = keras.layers.Embedding(VOCAB, DIM, name="Embedding-Token")(shifted)
    out = keras.layers.Dense(CLASSES, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(ids, out)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    with pytest.raises(KerasformerError, match="per_token=False"):
        training.gradient_penalty(model)
    training.gradient_penalty(model, per_token=False)


# -------------------------------------------------------------------------------- R-Drop

def numpy_symmetric_kl(p, q):
    p, q = np.asarray(p, "float64"), np.asarray(q, "float64")
    kl_pq = np.sum(p * np.log(p / q), axis=-1)
    kl_qp = np.sum(q * np.log(q / p), axis=-1)
    return np.mean(kl_pq + kl_qp)


def test_symmetric_kl_formula():
    rng = np.random.default_rng(3)
    logits_p, logits_q = rng.normal(size=(2, 4, 7)), rng.normal(size=(2, 4, 7))
    p = np.exp(logits_p) / np.exp(logits_p).sum(-1, keepdims=True)
    q = np.exp(logits_q) / np.exp(logits_q).sum(-1, keepdims=True)
    want = numpy_symmetric_kl(p, q)
    got = backend.to_numpy(training.symmetric_kl(p.astype("float32"), q.astype("float32")))
    assert float(got) == pytest.approx(want, rel=1e-5)
    got = backend.to_numpy(training.symmetric_kl(logits_p.astype("float32"), logits_q.astype("float32"),
                                                 from_logits=True))
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(backend.to_numpy(training.symmetric_kl(p, p))) == pytest.approx(0.0, abs=1e-7)


def test_rdrop_objective():
    model = toy_model(dropout=0.5)
    trick = training.rdrop(model, alpha=4.0)
    ids, labels = toy_data()
    _, aux = run(trick, ids, labels)
    p1 = backend.to_numpy(aux["y_pred"]).astype("float64")
    p2 = backend.to_numpy(aux["y_pred_2"]).astype("float64")
    assert np.abs(p1 - p2).max() > 1e-3  # two different dropout masks
    ce = [-np.log(p[np.arange(len(labels)), labels]).mean() for p in (p1, p2)]
    kl = numpy_symmetric_kl(p1, p2)
    assert float(aux["kl"]) == pytest.approx(kl, rel=1e-4)
    assert float(aux["loss"]) == pytest.approx((ce[0] + ce[1]) / 2 + 4.0 / 4 * kl, rel=1e-5)


def test_rdrop_multi_output_needs_an_index():
    ids = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, DIM)(ids))
    model = keras.Model(ids, [keras.layers.Dense(2, activation="softmax")(x), x])
    model.compile(loss=["sparse_categorical_crossentropy", None], optimizer="sgd")
    with pytest.raises(KerasformerError, match="output_index"):
        training.rdrop(model)


# --------------------------------------------------------------------------- model.fit

@pytest.mark.parametrize("install", [
    lambda m: training.adversarial_training(m, epsilon=0.5),
    lambda m: training.gradient_penalty(m, epsilon=0.5),
    lambda m: training.rdrop(m, alpha=1.0),
], ids=["fgm", "gradient_penalty", "rdrop"])
def test_each_trick_trains_through_fit(install):
    model = toy_model(dropout=0.1)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(0.05),
                  metrics=["acc"])
    install(model)
    ids, labels = toy_data(n=32, seed=1)
    labels = ids[:, 0] % CLASSES  # learnable: the class is in the first token
    history = model.fit(ids, labels, batch_size=8, epochs=6, verbose=0).history
    assert set(history) == {"loss", "acc"}  # loss tracker and compiled metrics still report
    assert history["loss"][-1] < history["loss"][0] - 0.1
    logs = model.evaluate(ids, labels, verbose=0, return_dict=True)  # evaluation is untouched
    assert logs["acc"] > 0.5


# --------------------------------------------------------------------------- Loss layer

class SeqCrossEntropy(training.Loss):
    """UniLM: predict segment-1 tokens from everything before them."""

    metric_names = ("accuracy",)

    def compute_loss(self, inputs, mask=None):
        token_ids, segment_ids, probs = inputs
        y_true, y_pred = token_ids[:, 1:], probs[:, :-1]
        y_mask = ops.cast(segment_ids[:, 1:], "float32")
        loss = ops.sparse_categorical_crossentropy(y_true, y_pred)
        hits = ops.cast(ops.equal(y_true, ops.cast(ops.argmax(y_pred, axis=-1), y_true.dtype)), "float32")
        self.add_metric(ops.sum(hits * y_mask) / ops.sum(y_mask), "accuracy")
        return ops.sum(loss * y_mask) / ops.sum(y_mask)


def unilm_data(vocab=20):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, vocab, (16, 8)).astype("int32")
    segments = np.zeros_like(ids)
    segments[:, 4:] = 1
    ids[:, 4:] = ids[:, :4]  # the target copies the source: learnable in a few steps
    return ids, segments


def numpy_unilm_accuracy(probs, ids, segments):
    hits = (probs[:, :-1].argmax(-1) == ids[:, 1:]) * segments[:, 1:]
    return hits.sum() / segments[:, 1:].sum()


def test_unilm_loss_layer_trains_without_y():
    keras.utils.set_random_seed(0)
    bert = build_transformer_model(None, None, vocab_size=20, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=24, application="unilm",
                                   with_mlm=True)
    output = SeqCrossEntropy(output_axis=2)(bert.inputs + bert.outputs)
    model = keras.Model(bert.inputs, output)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))  # no loss=: the layer's loss is the loss
    training.enable_layer_metrics(model)
    ids, segments = unilm_data()
    history = model.fit([ids, segments], batch_size=8, epochs=5, verbose=0).history  # no y
    assert set(history) == {"loss", "accuracy"}
    assert history["loss"][-1] < history["loss"][0] - 0.1


def toy_seq_model():
    """ids, segments -> per-position softmax: a Loss-layer model small enough to compile fast."""
    keras.utils.set_random_seed(0)
    ids = keras.Input((8,), dtype="int32")
    segments = keras.Input((8,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 8, name="Embedding-Token")(ids)
    x = keras.layers.Conv1D(8, 2, padding="causal", activation="tanh")(x)
    probs = keras.layers.Dense(VOCAB, activation="softmax")(x)
    output = SeqCrossEntropy(output_axis=2)([ids, segments, probs])
    return keras.Model([ids, segments], output)


def test_layer_metric_reports_the_batch_value():
    model = toy_seq_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    assert model.metrics_names == ["loss"]  # hidden until enabled: it would never update
    training.enable_layer_metrics(model)
    ids, segments = unilm_data(VOCAB)
    model.fit([ids, segments], batch_size=8, epochs=2, verbose=0)
    # one evaluation batch: the reported metric is exactly that batch's accuracy
    logs = model.evaluate([ids, segments], batch_size=16, verbose=0, return_dict=True)
    probs = backend.predict(model, [ids, segments])  # output_axis=2: the probabilities
    assert probs.shape == (16, 8, VOCAB)
    assert logs["accuracy"] == pytest.approx(numpy_unilm_accuracy(probs, ids, segments), abs=1e-6)

    # a trick on top: the Loss layer's loss is what it differentiates, metrics still report
    before = model.evaluate([ids, segments], batch_size=16, verbose=0, return_dict=True)["loss"]
    training.adversarial_training(model, "Embedding-Token", epsilon=0.1)
    history = model.fit([ids, segments], batch_size=8, epochs=3, verbose=0).history
    assert set(history) == {"loss", "accuracy"}
    assert history["loss"][-1] < before


def test_loss_layer_undeclared_metric_is_a_clear_error():
    class Undeclared(training.Loss):
        def compute_loss(self, inputs, mask=None):
            self.add_metric(ops.mean(inputs), "oops")
            return ops.mean(inputs)

    with pytest.raises(KerasformerError, match="metric_names"):
        Undeclared()(keras.Input((3,)))


# ------------------------------------------------------------------------ build switches

SMALL = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=24, with_mlm=True)


def small_batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 30, (2, 7)).astype("int32")
    ids[1, 5:] = 0
    return [ids, np.zeros_like(ids)]


def loss_and_grads(model, inputs, seed):
    """A loss of the training-mode outputs and its gradients; ``seed`` fixes dropout."""
    non_trainable = [v.value for v in model.non_trainable_variables]
    weights_ = ops.arange(SMALL["vocab_size"], dtype="float32")

    def loss(trainable):
        y, state = model.stateless_call(trainable, non_trainable, inputs, training=True)
        return ops.sum(y * weights_), (y, state)

    keras.utils.set_random_seed(seed)  # torch's dropout draws from torch's global generator
    (value, (y, state)), grads = compiled(backend.value_and_grad(loss, has_aux=True))(
        [v.value for v in model.trainable_variables])
    return (backend.to_numpy(y), [backend.to_numpy(g) for g in grads],
            [backend.to_numpy(s) for s in state])


def test_recompute_gives_the_same_outputs_and_gradients(monkeypatch):
    config = dict(SMALL, dropout_rate=0.1, attention_dropout_rate=0.1)
    keras.utils.set_random_seed(0)
    plain = build_transformer_model(None, None, **config)
    keras.utils.set_random_seed(0)
    recomputed = build_transformer_model(None, None, recompute=True, **config)
    recomputed.set_weights(plain.get_weights())
    inputs = small_batch()

    checkpoints = []
    if keras.backend.backend() == "torch":
        import torch.utils.checkpoint

        original = torch.utils.checkpoint.checkpoint
        monkeypatch.setattr(torch.utils.checkpoint, "checkpoint",
                            lambda *a, **k: checkpoints.append(1) or original(*a, **k))
    outputs, grads, state = loss_and_grads(plain, inputs, seed=3)
    outputs_r, grads_r, state_r = loss_and_grads(recomputed, inputs, seed=3)
    np.testing.assert_allclose(outputs_r, outputs, atol=1e-6)  # training mode, dropout active
    for g, g_r in zip(grads, grads_r):  # the recomputation reuses the forward's dropout masks
        np.testing.assert_allclose(g_r, g, atol=1e-5, rtol=1e-5)
    for s, s_r in zip(state, state_r):  # and moves the seeds on once, as without recompute
        np.testing.assert_array_equal(s_r, s)

    # and the checkpointing is really there: attention + feed-forward of the one block
    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in recomputed.trainable_variables]
        non_trainable = [v.value for v in recomputed.non_trainable_variables]
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda t: ops.sum(recomputed.stateless_call(
            t, non_trainable, inputs, training=True)[0])))(trainable))
        assert jaxpr.count("checkpoint[") + jaxpr.count("remat") >= 2
    else:
        assert len(checkpoints) == 2

    if keras.backend.backend() == "torch":
        # Keras' torch train step is stateful (no StatelessScope): the other path through the
        # checkpointed layers. (On JAX, Keras' step is the jitted stateless gradient above.)
        recomputed.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(1e-2))
        ids = np.tile(inputs[0], (4, 1))
        history = recomputed.fit([ids, np.zeros_like(ids)], ids, batch_size=4, epochs=4, verbose=0).history
        assert history["loss"][-1] < history["loss"][0]


def test_mixed_bfloat16_policy():
    keras.utils.set_random_seed(0)
    reference = build_transformer_model(None, None, with_sequence_output=True, **SMALL)
    mixed = build_transformer_model(None, None, with_sequence_output=True,
                                    dtype_policy="mixed_bfloat16", **SMALL)
    mixed.set_weights(reference.get_weights())
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert {v.dtype for v in mixed.weights} == {"float32"}
    attention = mixed.get_layer("Transformer-0-MultiHeadSelfAttention")
    assert attention.compute_dtype == "bfloat16" and attention.q_dense.compute_dtype == "bfloat16"
    assert mixed.get_layer("Transformer-0-FeedForward-Norm").compute_dtype == "bfloat16"
    assert mixed.get_layer("MLM-Activation").compute_dtype == "float32"  # the softmax head
    sequence, probs = mixed.outputs
    assert sequence.dtype == "bfloat16" and probs.dtype == "float32"

    inputs = small_batch()
    got = backend.predict(mixed, inputs)
    want = backend.predict(reference, inputs)
    np.testing.assert_allclose(got[0].astype("float32"), want[0], atol=2e-2 * max(1.0, np.abs(want[0]).max()))
    np.testing.assert_allclose(got[1], want[1], atol=2e-2)
    assert np.abs(got[1].sum(-1) - 1).max() < 1e-5
    assert not math.isclose(float(np.abs(got[0].astype("float32") - want[0]).max()), 0.0)  # really bf16
