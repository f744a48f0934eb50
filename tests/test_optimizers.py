"""The optimizer toolkit does exactly what it says: each extension against a hand-computed or
closed-form reference, through ``optimizer.apply`` and through ``model.fit`` (the JAX trainer
goes through ``stateless_apply``, which a plain ``apply`` would not exercise)."""
import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from kerasformer import optimizers as ko
from kerasformer.backend import to_numpy


def _layers_variables(*specs):
    """Variables with bert4keras-like paths: one built Dense per (name, in, out)."""
    rng = np.random.default_rng(len(specs))
    variables = []
    for name, n_in, n_out in specs:
        layer = keras.layers.Dense(n_out, name=name, kernel_initializer="zeros")
        layer.build((None, n_in))
        for variable in layer.trainable_variables:  # numpy values: no per-shape random kernels
            variable.assign(rng.normal(size=variable.shape).astype("float32"))
        variables.extend(layer.trainable_variables)
    return variables


def _values(variables):
    return [to_numpy(v.value).copy() for v in variables]


def compiled(fn):
    """``jax.jit(fn)`` on JAX, ``fn`` elsewhere: eager JAX compiles every op for every shape,
    which would dominate these small tests' run time."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


_STATELESS = {}


def apply(optimizer, grads, variables):
    """``optimizer.apply(grads, variables)``; on JAX compiled through ``stateless_apply`` (the
    path ``model.fit`` takes), with the results written back to the variables."""
    grads = [ops.convert_to_tensor(g) for g in grads]
    if keras.backend.backend() != "jax":
        optimizer.apply(grads, variables)
        return
    if not optimizer.built:
        optimizer.build(variables)
    if optimizer not in _STATELESS:
        _STATELESS[optimizer] = compiled(optimizer.stateless_apply)
    new_variables, new_state = _STATELESS[optimizer]([v.value for v in optimizer.variables], grads,
                                                     [v.value for v in variables])
    for variable, value in zip(variables, new_variables):
        variable.assign(value)
    for variable, value in zip(optimizer.variables, new_state):
        variable.assign(value)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from kerasformer import build_transformer_model

    config = dict(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=12, max_position_embeddings=16, type_vocab_size=2, hidden_act="gelu")
    path = tmp_path_factory.mktemp("bert") / "config.json"
    path.write_text(json.dumps(config))
    return build_transformer_model(str(path), None, model="bert")


# ------------------------------------------------------------------------- piecewise linear

def test_piecewise_linear_values():
    steps = np.array([0, 500, 1000, 1500, 2000, 3000])
    expected = np.array([0.0, 0.5, 1.0, 0.55, 0.1, 0.1])
    got = compiled(lambda t: ko.piecewise_linear(t, {1000: 1, 2000: 0.1}))(steps)
    np.testing.assert_allclose(to_numpy(got), expected, atol=1e-7)
    schedule = ko.PiecewiseLinear({1000: 1, 2000: 0.1}, learning_rate=2e-5)
    np.testing.assert_allclose(to_numpy(compiled(schedule)(steps)), expected * 2e-5, rtol=1e-6)
    np.testing.assert_allclose(float(to_numpy(schedule(1500))), 0.55 * 2e-5, rtol=1e-6)  # a scalar step
    # JSON round trip (keys become strings) keeps the schedule
    restored = keras.optimizers.schedules.deserialize(
        json.loads(json.dumps(keras.optimizers.schedules.serialize(schedule))))
    np.testing.assert_allclose(to_numpy(compiled(restored)(steps)), expected * 2e-5, rtol=1e-6)
    # without the implicit (0, 0) point the first value holds before the first key
    got = compiled(lambda t: ko.piecewise_linear(t, {100: 0.5, 200: 1}, from_zero=False))(np.array([0, 100, 150, 300]))
    np.testing.assert_allclose(to_numpy(got), [0.5, 0.5, 0.75, 1.0])


def test_piecewise_linear_lr_optimizer():
    # the multiplier is taken at the update counter before the update, as in bert4keras
    optimizer = ko.extend_with_piecewise_linear_lr(keras.optimizers.SGD)(learning_rate=0.1, lr_schedule={4: 1})
    w = keras.Variable(np.zeros(2, "float32"))
    rates, expected_w = [], 0.0
    for step in range(6):
        rates.append(float(to_numpy(optimizer.learning_rate)))
        apply(optimizer, [ops.ones(2)], [w])
        expected_w -= 0.1 * min(step / 4, 1.0)
        np.testing.assert_allclose(to_numpy(w.value), [expected_w] * 2, rtol=1e-6)
    np.testing.assert_allclose(rates, [0.0, 0.025, 0.05, 0.075, 0.1, 0.1], rtol=1e-6)


# ------------------------------------------------------------------------------------ EMA

def test_ema_equals_closed_form_after_fit():
    # Dense(1) without bias on MSE: SGD gives w_t = w* + (w_0 - w*) * (1 - 2 lr E[x^2])^t
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 1)).astype("float32")
    y = 3.0 * x + 0.1 * rng.normal(size=(16, 1)).astype("float32")
    lr, momentum, steps, w0 = 0.05, 0.8, 6, 0.5
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer=keras.initializers.Constant(w0))])
    optimizer = ko.extend_with_exponential_moving_average(keras.optimizers.SGD)(learning_rate=lr,
                                                                                ema_momentum=momentum)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=16, epochs=steps, shuffle=False, verbose=0)

    x2, xy = np.mean(x.astype("float64") ** 2), np.mean(x.astype("float64") * y)
    w_star = xy / x2
    trajectory = [w_star + (w0 - w_star) * (1 - 2 * lr * x2) ** t for t in range(1, steps + 1)]
    # Keras' average: the first update's weights, then avg = m avg + (1 - m) w
    average = momentum ** (steps - 1) * trajectory[0] + sum(
        (1 - momentum) * momentum ** (steps - t) * trajectory[t - 1] for t in range(2, steps + 1))

    kernel = model.layers[0].kernel
    np.testing.assert_allclose(to_numpy(kernel.value).item(), trajectory[-1], rtol=1e-5)  # fit kept them
    optimizer.apply_ema_weights()
    np.testing.assert_allclose(to_numpy(kernel.value).item(), average, rtol=1e-5)
    assert abs(average - trajectory[-1]) > 1e-2  # the two are distinguishable
    optimizer.reset_old_weights()
    np.testing.assert_allclose(to_numpy(kernel.value).item(), trajectory[-1], rtol=1e-5)


def test_ema_helpers_refuse_without_an_average():
    with pytest.raises(ko.KerasformerError, match="use_ema"):
        ko.apply_ema_weights(keras.optimizers.SGD(0.1))
    optimizer = ko.extend_with_exponential_moving_average(keras.optimizers.SGD)(learning_rate=0.1)
    optimizer.build([keras.Variable(np.ones(2, "float32"))])
    with pytest.raises(ko.KerasformerError, match="not made an update"):  # the averages are still zeros
        optimizer.apply_ema_weights()
    with pytest.raises(ko.KerasformerError, match="before apply_ema_weights"):
        optimizer.reset_old_weights()


# ------------------------------------------------------------------------ parameter-wise lr

# on PyTorch keras.optimizers.Adam() is an instance of torch's fused (foreach) Adam class
BACKEND_ADAM = type(keras.optimizers.Adam())
BASES = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}
if BACKEND_ADAM is not keras.optimizers.Adam:
    BASES["backend-adam"] = BACKEND_ADAM


@pytest.mark.parametrize("base", list(BASES.values()), ids=list(BASES))
def test_parameter_wise_lr_scales_each_update_exactly(base):
    specs = [("Embedding-Token", 3, 4), ("Transformer-0-FeedForward", 4, 4),
             ("Transformer-1-FeedForward", 4, 4), ("Head", 4, 2)]
    schedule = {"Transformer-0-": 0.5, "Transformer-1-": 2.0, "Embedding-": 0.1, "kernel": 3.0}
    kwargs = dict(learning_rate=0.01, momentum=0.9) if base is keras.optimizers.SGD else dict(learning_rate=0.01)
    plain_vars, scaled_vars = _layers_variables(*specs), _layers_variables(*specs)
    for a, b in zip(plain_vars, scaled_vars):
        b.assign(a.value)
    plain = base(**kwargs)
    scaled = ko.extend_with_parameter_wise_lr(base)(paramwise_lr_schedule=schedule, **kwargs)
    expected = {"Embedding-Token/kernel": 0.3, "Embedding-Token/bias": 0.1,
                "Transformer-0-FeedForward/kernel": 1.5, "Transformer-0-FeedForward/bias": 0.5,
                "Transformer-1-FeedForward/kernel": 6.0, "Transformer-1-FeedForward/bias": 2.0,
                "Head/kernel": 3.0, "Head/bias": 1.0}
    assert {v.path: scaled.lr_multiplier(v) for v in scaled_vars} == pytest.approx(expected)

    rng = np.random.default_rng(0)
    for _ in range(3):  # several steps: momentum / Adam moments carry over
        grads = [rng.normal(size=v.shape).astype("float32") for v in plain_vars]
        p0, s0 = _values(plain_vars), _values(scaled_vars)
        apply(plain, [ops.convert_to_tensor(g) for g in grads], plain_vars)
        apply(scaled, [ops.convert_to_tensor(g) for g in grads], scaled_vars)
        for v, pv, a, b in zip(scaled_vars, plain_vars, p0, s0):
            plain_delta = to_numpy(pv.value) - a
            scaled_delta = to_numpy(v.value) - b
            assert np.abs(plain_delta).max() > 1e-5
            np.testing.assert_allclose(scaled_delta, expected[v.path] * plain_delta, rtol=1e-4, atol=1e-7)


def test_parameter_wise_lr_scales_weight_decay_too():
    specs = [("Transformer-0-FeedForward", 3, 3)]
    plain_vars, scaled_vars = _layers_variables(*specs), _layers_variables(*specs)
    for a, b in zip(plain_vars, scaled_vars):
        b.assign(a.value)
    decayed = ko.extend_with_weight_decay(keras.optimizers.Adam)
    plain = decayed(learning_rate=0.1, weight_decay_rate=0.5)
    scaled = ko.extend_with_parameter_wise_lr(decayed)(learning_rate=0.1, weight_decay_rate=0.5,
                                                       paramwise_lr_schedule={"Transformer-0-": 0.25})
    grads = [ops.ones(v.shape) for v in plain_vars]
    p0, s0 = _values(plain_vars), _values(scaled_vars)
    apply(plain, grads, plain_vars)
    apply(scaled, grads, scaled_vars)
    for v, pv, a, b in zip(scaled_vars, plain_vars, p0, s0):
        np.testing.assert_allclose(to_numpy(v.value) - b, 0.25 * (to_numpy(pv.value) - a), rtol=1e-4, atol=1e-7)


def test_layerwise_lr_multipliers(tiny_bert):
    multipliers = ko.layerwise_lr_multipliers(tiny_bert, decay=0.9)
    assert multipliers == pytest.approx({"Transformer-0-": 0.81, "Transformer-1-": 0.9, "Embedding-": 0.729})
    optimizer = ko.extend_with_parameter_wise_lr(keras.optimizers.Adam)(paramwise_lr_schedule=multipliers)
    by_path = {v.path: optimizer.lr_multiplier(v) for v in tiny_bert.trainable_variables}
    assert by_path["Embedding-Token/embeddings"] == pytest.approx(0.729)
    assert by_path["Transformer-0-FeedForward-Norm/gamma"] == pytest.approx(0.81)
    assert by_path["Transformer-1-MultiHeadSelfAttention/q_dense/bias"] == pytest.approx(0.9)
    # 'Transformer-1-' must not match 'Transformer-11-'
    assert ko.layerwise_lr_multipliers([], num_layers=12)["Transformer-1-"] == pytest.approx(0.9 ** 11)


# ------------------------------------------------------------------- gradient accumulation

@pytest.mark.parametrize("base", [keras.optimizers.SGD, keras.optimizers.Adam], ids=["sgd", "adam"])
def test_gradient_accumulation_equals_large_batch(base):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 3)).astype("float32")
    y = rng.normal(size=(12, 2)).astype("float32")

    def make(optimizer):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer=optimizer, loss="mse")
        return model

    accumulated = make(ko.extend_with_gradient_accumulation(base)(learning_rate=0.1, grad_accum_steps=3))
    large = make(base(learning_rate=0.1))
    for a, b in zip(accumulated.weights, large.weights):
        np.testing.assert_array_equal(to_numpy(a.value), to_numpy(b.value))
    start = _values(large.weights)
    accumulated.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)  # 6 batches = 2 updates
    large.fit(x, y, batch_size=12, epochs=2, shuffle=False, verbose=0)  # 2 updates
    for a, b, s in zip(accumulated.weights, large.weights, start):
        assert np.abs(to_numpy(b.value) - s).max() > 1e-3
        np.testing.assert_allclose(to_numpy(a.value), to_numpy(b.value), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- lookahead

def test_lookahead_matches_hand_computed_trajectory():
    # Dense(1) without bias, x = 1, y = c, MSE: grad = 2 (w - c)
    lr, k, alpha, c, w0, steps = 0.1, 3, 0.5, 2.0, -1.0, 8
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer=keras.initializers.Constant(w0))])
    optimizer = ko.Lookahead(keras.optimizers.SGD(lr), steps_per_slow_update=k, slow_step_size=alpha)
    model.compile(optimizer=optimizer, loss="mse")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(to_numpy(self.model.layers[0].kernel.value).item())

    model.fit(np.ones((1, 1), "float32"), np.full((1, 1), c, "float32"), epochs=steps, verbose=0,
              callbacks=[Record()])
    fast = slow = w0
    expected = []
    for t in range(1, steps + 1):
        fast -= lr * 2 * (fast - c)
        if t % k == 0:
            slow += alpha * (fast - slow)
            fast = slow
        expected.append(fast)
    np.testing.assert_allclose(seen, expected, rtol=1e-5)


def test_lookahead_counts_real_updates_with_accumulation():
    Opt = ko.extend_with_lookahead(ko.extend_with_gradient_accumulation(keras.optimizers.SGD))
    optimizer = Opt(learning_rate=0.5, grad_accum_steps=2, steps_per_slow_update=2, slow_step_size=0.5)
    w = keras.Variable(np.zeros(1, "float32"))
    values = []
    for _ in range(4):  # 4 micro-batches = 2 updates of -0.5 each, then a slow step
        apply(optimizer, [ops.ones(1)], [w])
        values.append(to_numpy(w.value).item())
    np.testing.assert_allclose(values, [0.0, -0.5, -0.5, -0.5], atol=1e-6)  # -1.0 pulled half-way back


# ---------------------------------------------------------------------------- weight decay

def _decay_check(tiny_bert, optimizer):
    variables = tiny_bert.trainable_variables
    before = _values(variables)
    apply(optimizer, [ops.zeros(v.shape) for v in variables], variables)  # zero grads: only the decay moves
    decayed, kept = [], []
    for v, b in zip(variables, before):
        after = to_numpy(v.value)
        v.assign(b)  # leave the shared model as it was
        if "Norm" in v.path or v.path.endswith("bias"):
            np.testing.assert_array_equal(after, b, err_msg=v.path)
            kept.append(v.path)
        else:
            np.testing.assert_allclose(after, b * (1 - 0.1 * 0.5), rtol=1e-6, err_msg=v.path)
            decayed.append(v.path)
    assert "Transformer-0-FeedForward-Norm/gamma" in kept
    assert "Transformer-0-MultiHeadSelfAttention/q_dense/bias" in kept
    assert "Transformer-0-MultiHeadSelfAttention/q_dense/kernel" in decayed
    assert "Embedding-Token/embeddings" in decayed


def test_adamw_excludes_norm_and_bias(tiny_bert):
    _decay_check(tiny_bert, ko.AdamW(learning_rate=0.1, weight_decay_rate=0.5))


def test_exclude_from_weight_decay_helper_on_keras_adamw(tiny_bert):
    optimizer = ko.exclude_from_weight_decay(keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5))
    _decay_check(tiny_bert, optimizer)


# ---------------------------------------------------------------------- gradient transform

def test_gradient_transform_per_variable():
    variables = _layers_variables(("Transformer-0-FeedForward", 2, 2))
    transform = lambda g, v: ops.zeros_like(g) if v.path.endswith("bias") else 2.0 * g  # noqa: E731
    optimizer = ko.extend_with_gradient_transform(keras.optimizers.SGD)(learning_rate=0.1,
                                                                        gradient_transform=transform)
    before = _values(variables)
    apply(optimizer, [ops.ones(v.shape) for v in variables], variables)
    np.testing.assert_allclose(to_numpy(variables[0].value), before[0] - 0.2, rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(variables[1].value), before[1])


def test_gradient_transform_sees_accumulated_gradient():
    Opt = ko.extend_with_gradient_transform(ko.extend_with_gradient_accumulation(keras.optimizers.SGD))
    optimizer = Opt(learning_rate=1.0, grad_accum_steps=2, gradient_transform=lambda g, v: ops.clip(g, -1.0, 1.0))
    w = keras.Variable(np.zeros(1, "float32"))
    apply(optimizer, [ops.full((1,), 4.0)], [w])
    apply(optimizer, [ops.zeros((1,))], [w])
    # mean(4, 0) = 2, clipped to 1 (clipping each micro-batch first would give 0.5)
    np.testing.assert_allclose(to_numpy(w.value), [-1.0], atol=1e-6)


# ------------------------------------------------------------------------------------ Lion

def test_lion_follows_the_paper():
    lr, b1, b2, wd = 0.01, 0.9, 0.99, 0.1
    optimizer = ko.Lion(learning_rate=lr, beta_1=b1, beta_2=b2, weight_decay=wd)
    rng = np.random.default_rng(3)
    w_np = rng.normal(size=5)
    w = keras.Variable(w_np.astype("float32"))
    m = np.zeros(5)
    for _ in range(4):
        g = rng.normal(size=5)
        apply(optimizer, [ops.convert_to_tensor(g.astype("float32"))], [w])
        c = b1 * m + (1 - b1) * g  # Chen et al. 2023, Algorithm 2
        w_np = w_np - lr * (np.sign(c) + wd * w_np)
        m = b2 * m + (1 - b2) * g
        np.testing.assert_allclose(to_numpy(w.value), w_np, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- serialisation

def test_extended_optimizers_round_trip_config(tmp_path):
    Chain = ko.extend_with_piecewise_linear_lr(ko.extend_with_parameter_wise_lr(
        ko.extend_with_weight_decay(keras.optimizers.Adam)))
    optimizer = Chain(learning_rate=1e-3, weight_decay_rate=0.02, exclude_from_weight_decay=["Norm", "bias"],
                      paramwise_lr_schedule={"Transformer-0-": 0.5}, lr_schedule={100: 1, 200: 0.1})
    restored = keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(optimizer))))
    assert type(restored) is Chain
    assert restored.weight_decay == pytest.approx(0.02)
    assert restored._weight_decay_patterns == ("Norm", "bias")
    assert restored.paramwise_lr_schedule == {"Transformer-0-": 0.5}
    assert restored.lr_schedule == {100: 1.0, 200: 0.1}

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=ko.AdamW(learning_rate=0.01), loss="mse")
    model.fit(np.ones((2, 2), "float32"), np.ones((2, 1), "float32"), verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is ko.AdamW
    assert loaded.optimizer._weight_decay_patterns == ("Norm", "bias")


# ------------------------------------------------------------------ fused update (torch)

def _pretraining_optimizer(name, **kwargs):
    from kerasformer.pretraining.train import make_optimizer

    return make_optimizer(name, lr=1e-2, steps=10, warmup=2, weight_decay=0.1, **kwargs)


FUSED_CASES = {  # name -> (factory, fused on torch)
    "AdamW": (lambda: ko.AdamW(learning_rate=1e-2, weight_decay_rate=0.1), True),
    "pretraining adamw": (lambda: _pretraining_optimizer("adamw"), True),
    "pretraining lamb": (lambda: _pretraining_optimizer("lamb"), True),
    "pretraining adamw, accumulation, EMA": (lambda: _pretraining_optimizer("adamw", grad_accum=2, ema=0.9), True),
    "bert4keras Adam": (lambda: ko.Adam(learning_rate=1e-2), True),
    "bert4keras Adam, no bias correction, decay": (
        lambda: ko.extend_with_weight_decay(ko.Adam)(learning_rate=1e-2, bias_correction=False, weight_decay_rate=0.1,
                                                     exclude_from_weight_decay=["Norm", "bias"]), True),
    "AdamW, parameter-wise lr": (
        lambda: ko.extend_with_parameter_wise_lr(ko.AdamW)(learning_rate=1e-2, weight_decay_rate=0.1,
                                                           paramwise_lr_schedule={"Norm": 0.5}), True),
    "AdamW, lazy": (lambda: ko.extend_with_lazy_optimization(ko.AdamW)(
        learning_rate=1e-2, include_in_lazy_optimization=["Norm"]), True),
    "AdamW, amsgrad": (lambda: ko.AdamW(learning_rate=1e-2, amsgrad=True), False),
}


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the fused update exists on torch only")
@pytest.mark.parametrize("case", sorted(FUSED_CASES))
def test_fused_update_equals_per_variable_update(case, monkeypatch):
    """On torch, kerasformer's Adam-family optimizers update all variables in one fused call;
    that must be the update Keras' per-variable loop makes, for every extension stacked on them:
    decayed and excluded variables (paths with 'Norm' and 'bias'), gradients from 1e-6 to 1 (so
    epsilon's placement shows), several steps."""
    import kerasformer.optimizers as module

    factory, fused = FUSED_CASES[case]
    specs = [("Transformer-0-FeedForward", 6, 5), ("Transformer-0-FeedForward-Norm", 5, 4)]
    rng = np.random.default_rng(0)
    steps = []
    for _ in range(5):
        grads = [rng.normal(size=v.shape) * 10.0 ** rng.integers(-6, 1) for v in _layers_variables(*specs)]
        grads[-1][1:] = 0.0  # a bias with untouched rows (the lazy update keeps them)
        steps.append([g.astype("float32") for g in grads])

    calls = []
    real = module.fused_update_step

    def counted(*args):
        calls.append(real(*args))
        return calls[-1]

    results = []
    for use_fused in (True, False):
        monkeypatch.setattr(module, "fused_update_step", counted if use_fused else lambda *args: False)
        variables = _layers_variables(*specs)
        optimizer = factory()
        for grads in steps:
            apply(optimizer, grads, variables)
        results.append(_values(variables))
    assert any(calls) == fused
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(results[1], _values(_layers_variables(*specs))))
    assert moved > 1e-3
    for fused_value, loop_value in zip(*results):
        np.testing.assert_allclose(fused_value, loop_value, rtol=0, atol=1e-6)
