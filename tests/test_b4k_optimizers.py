"""bert4keras' optimizers (Adam, AdaFactor, Lion, LAMB, lazy optimization, *_v2 names): each
update rule against a numpy transcription of bert4keras 0.11.5's formula, a few steps."""
import keras
import numpy as np
import pytest

from kerasformer import optimizers as ko

STEPS = 3


def run(optimizer, values, grads):
    """Apply ``grads[t]`` for each step; returns the variables' values after every step."""
    variables = [keras.Variable(v, name=f"w{i}") for i, v in enumerate(values)]
    history = []
    for step_grads in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in step_grads], variables)
        history.append([keras.ops.convert_to_numpy(v.value) for v in variables])
    return history


def data(shapes, seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(STEPS)]
    return values, grads


def check(history, reference):
    for got_step, want_step in zip(history, reference):
        for got, want in zip(got_step, want_step):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def adam_reference(values, grads, lr, b1, b2, eps, bias_correction, update=None):
    ws = [v.astype("float64") for v in values]
    ms = [np.zeros_like(w) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    out = []
    for t, step in enumerate(grads, 1):
        for i, g in enumerate(step):
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            m, v = ms[i], vs[i]
            if bias_correction:
                m, v = m / (1 - b1 ** t), v / (1 - b2 ** t)
            new = ws[i] - lr * m / (np.sqrt(v) + eps)
            ws[i] = update(ws[i], new, g) if update else new
        out.append([w.copy() for w in ws])
    return out


@pytest.mark.parametrize("bias_correction", [True, False])
def test_adam_is_bert4keras_adam(bias_correction):
    values, grads = data([(3, 4), (4,)])
    got = run(ko.Adam(0.1, bias_correction=bias_correction), values, grads)
    check(got, adam_reference(values, grads, 0.1, 0.9, 0.999, 1e-6, bias_correction))
    # and not Keras' Adam, whose epsilon sits elsewhere (visible with a large epsilon)
    keras_adam = run(keras.optimizers.Adam(0.1, epsilon=0.5), values, grads)
    ours = run(ko.Adam(0.1, epsilon=0.5), values, grads)
    assert np.abs(keras_adam[-1][0] - ours[-1][0]).max() > 1e-3


def test_lion_defaults_and_formula():
    optimizer = ko.Lion()
    assert (float(optimizer.learning_rate), optimizer.beta_1, optimizer.beta_2) == pytest.approx((3e-4, 0.95, 0.98))
    assert ko.LionV2 is ko.Lion
    values, grads = data([(2, 3)])
    w, m, want = values[0].astype("float64"), np.zeros((2, 3)), []
    for (g,) in grads:
        w = w - 0.1 * np.sign(0.95 * m + 0.05 * g)
        m = 0.98 * m + 0.02 * g
        want.append([w.copy()])
    check(run(ko.Lion(0.1), values, grads), want)


def rms(x):
    return np.sqrt(np.mean(np.square(x)))


def adafactor_reference(values, grads, lr=1e-3, beta1=0.0, beta2=None, eps1=1e-30, eps2=1e-3,
                        scale=True, clip=1.0, min_dim=128):
    """bert4keras' AdaFactorV1.get_updates, step by step in numpy."""
    helper = ko.AdaFactor(min_dim_size_to_factor=min_dim)
    ws = [v.astype("float64") for v in values]
    state = [{} for _ in ws]
    out = []
    for t, step in enumerate(grads, 1):
        rate = lr if lr is not None else min(1 / np.sqrt(t), 0.01) * (1 if scale else 0.05)
        b2 = beta2 if beta2 is not None else 1 - t ** -0.8
        for i, g in enumerate(step):
            s, g2 = state[i], g * g + eps1
            factored = helper.factored_shape(ws[i].shape)
            if factored is None:
                s["v"] = b2 * s.get("v", 0) + (1 - b2) * g2
                v = s["v"]
            else:
                _, a1, _, a2 = factored
                s["vr"] = b2 * s.get("vr", 0) + (1 - b2) * g2.mean(axis=a1, keepdims=True)
                s["vc"] = b2 * s.get("vc", 0) + (1 - b2) * g2.mean(axis=a2, keepdims=True)
                v = s["vr"] * s["vc"] / s["vr"].mean(axis=a2, keepdims=True)
            u = g / np.sqrt(v + eps1)
            if clip is not None:
                u = u / max(1.0, rms(u) / clip)
            if beta1 > 0:
                s["m"] = beta1 * s.get("m", 0) + (1 - beta1) * u
                u = s["m"]
            if scale:
                u = u * max(rms(ws[i]), eps2)
            ws[i] = ws[i] - rate * u
        out.append([w.copy() for w in ws])
    return out


@pytest.mark.parametrize("settings", [
    dict(),  # the defaults: lr 1e-3, beta2 schedule, parameter scale, clipping
    dict(learning_rate=None, beta1=0.9, min_dim_size_to_factor=3),  # factored, momentum, lr schedule
    dict(learning_rate=0.01, beta2=0.9, multiply_by_parameter_scale=False, clipping_threshold=None,
         min_dim_size_to_factor=2),
])
def test_adafactor_is_bert4keras_adafactor(settings):
    values, grads = data([(4, 3), (5, 3, 2), (3,)])
    got = run(ko.AdaFactor(**settings), values, grads)
    names = dict(learning_rate="lr", multiply_by_parameter_scale="scale", clipping_threshold="clip",
                 min_dim_size_to_factor="min_dim")
    want = adafactor_reference(values, grads, **{names.get(k, k): v for k, v in settings.items()})
    check(got, want)
    assert ko.AdaFactorV1 is ko.AdaFactorV2 is ko.AdaFactor


def test_adafactor_factors_the_two_largest_axes():
    optimizer = ko.AdaFactor(min_dim_size_to_factor=3)
    assert optimizer.factored_shape((2, 5, 4)) == ((2, 1, 4), 1, (2, 5, 1), 2)
    assert optimizer.factored_shape((2, 5)) is None and optimizer.factored_shape((7,)) is None


def test_layer_adaptation_rescales_the_whole_update():
    values, grads = data([(3, 4), (4,)])
    lr = 0.05

    def lamb(old, new, g):
        dx = new - old
        x_norm, g_norm = np.linalg.norm(old), np.linalg.norm(dx / lr)
        return old + dx * (x_norm / g_norm if x_norm > 0 and g_norm > 0 else 1.0)

    cls = ko.extend_with_layer_adaptation(ko.Adam)
    got = run(cls(lr, exclude_from_layer_adaptation=["w1"]), values, grads)
    # w0 adapted, w1 (excluded) a plain Adam step
    want_adapted = adam_reference(values, grads, lr, 0.9, 0.999, 1e-6, True, update=lamb)
    want_plain = adam_reference(values, grads, lr, 0.9, 0.999, 1e-6, True)
    check([[s[0]] for s in got], [[s[0]] for s in want_adapted])
    check([[s[1]] for s in got], [[s[1]] for s in want_plain])
    assert ko.extend_with_layer_adaptation_v2 is ko.extend_with_layer_adaptation


def test_layer_adaptation_includes_weight_decay():
    values, grads = data([(3, 4)])
    lr, wd = 0.05, 0.1
    cls = ko.extend_with_layer_adaptation(ko.extend_with_weight_decay(ko.Adam))
    got = run(cls(lr, weight_decay_rate=wd), values, grads)
    w, m, v, want = values[0].astype("float64"), 0, 0, []
    for t, (g,) in enumerate(grads, 1):
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        new = w - lr * wd * w  # decay, then the Adam step (Keras' decoupled order)
        new = new - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-6)
        dx = new - w
        w = w + dx * np.linalg.norm(w) / np.linalg.norm(dx / lr)
        want.append([w.copy()])
    check(got, want)


def test_lazy_optimization_keeps_rows_without_gradient():
    values, grads = data([(5, 3), (3,)])
    for step in grads:
        step[0][[1, 3]] = 0.0  # embedding rows 1 and 3 unseen in every batch
    cls = ko.extend_with_lazy_optimization(ko.Adam)
    got = run(cls(0.1, include_in_lazy_optimization=["w0"]), values, grads)

    def lazy(old, new, g):
        return old + (new - old) * np.any(g != 0, axis=-1, keepdims=True)

    want_lazy = adam_reference(values, grads, 0.1, 0.9, 0.999, 1e-6, True, update=lazy)
    check([[s[0]] for s in got], [[s[0]] for s in want_lazy])
    np.testing.assert_array_equal(got[-1][0][[1, 3]], values[0][[1, 3]])
    # plain Adam would move them (momentum of the first step is zero here, but decay-free
    # Adam with zero gradients keeps m = 0: check the un-selected bias moved normally)
    check([[s[1]] for s in got], [[s[1]] for s in adam_reference(values, grads, 0.1, 0.9, 0.999, 1e-6, True)])


def test_lazy_optimization_with_nonzero_momentum():
    values, grads = data([(4, 2)])
    grads[1][0][2] = 0.0  # row 2 seen at step 1, not at step 2: Adam would still move it
    cls = ko.extend_with_lazy_optimization(ko.Adam)
    got = run(cls(0.1, include_in_lazy_optimization=["w0"]), values, grads)
    np.testing.assert_array_equal(got[1][0][2], got[0][0][2])
    plain = run(ko.Adam(0.1), values, grads)
    assert np.abs(plain[1][0][2] - plain[0][0][2]).max() > 1e-3


def test_v2_names_and_config_round_trip():
    for name in ["weight_decay", "layer_adaptation", "piecewise_linear_lr", "gradient_accumulation",
                 "lookahead", "lazy_optimization", "exponential_moving_average", "parameter_wise_lr"]:
        assert getattr(ko, f"extend_with_{name}_v2") is getattr(ko, f"extend_with_{name}")
    cls = ko.extend_with_lazy_optimization(ko.AdaFactor, name="LazyAdaFactor")
    optimizer = cls(learning_rate=None, include_in_lazy_optimization=["Embedding"])
    config = optimizer.get_config()
    again = cls.from_config(config)
    assert again.include_in_lazy_optimization == ["Embedding"] and again._adafactor_lr is None
    assert keras.saving.get_custom_objects()["LazyAdaFactor"] is cls


def test_extensions_stack_on_bert4keras_adam():
    """bert4keras' examples: extend_with_piecewise_linear_lr(Adam) / EMA on its Adam."""
    values, grads = data([(3, 2)])
    schedule = {1: 1.0, 3: 0.5}
    cls = ko.extend_with_exponential_moving_average(ko.extend_with_piecewise_linear_lr(ko.Adam))
    optimizer = cls(0.1, lr_schedule=schedule, ema_momentum=0.5)
    got = run(optimizer, values, grads)
    w, m, v, want = values[0].astype("float64"), 0, 0, []
    for t, (g,) in enumerate(grads, 1):
        multiplier = float(ko.piecewise_linear(t - 1, schedule))  # the counter before the update
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w = w - 0.1 * multiplier * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-6)
        want.append([w.copy()])
    check(got, want)
    average = keras.ops.convert_to_numpy(optimizer._model_variables_moving_average[0].value)
    assert np.all(np.isfinite(average)) and not np.allclose(average, got[-1][0])
