"""kerasformer.backend: the torch graph path (traced once, prepacked matmuls, eager
fallback) and the per-backend helpers the rest of the code relies on."""
import keras
import numpy as np
import pytest

from kerasformer import backend
from kerasformer.backend import predict

torch_only = pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch graph path")


def dense_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, 16))
    x = keras.layers.Dense(32, activation="gelu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(8)(x))


@torch_only
def test_traced_graph_prepacks_weight_matmuls_and_matches_eager():
    import torch

    model = dense_model()
    x = np.random.default_rng(0).normal(size=(3, 5, 16)).astype("float32")
    graph = backend.traced(lambda t: model(t, training=False))
    out = graph(torch.from_numpy(x))
    if torch.backends.mkldnn.is_available():
        assert len(graph.packed) == 2  # both Dense kernels
        assert "mkldnn._linear_pointwise" in graph.graph.code and "aten.mm" not in graph.graph.code
    np.testing.assert_allclose(out.numpy(), keras.ops.convert_to_numpy(model(x)), atol=1e-5)


@torch_only
def test_linear_epilogues_fold_into_the_onednn_linear():
    """Bias add, GELU and a residual add run inside oneDNN's linear, with the same result."""
    import torch

    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, 16))
    hidden = keras.layers.Dense(32, activation="gelu")(inputs)
    tanh = keras.layers.Dense(32, activation=lambda t: keras.activations.gelu(t, approximate=True))(hidden)
    model = keras.Model(inputs, keras.layers.Add()([inputs, keras.layers.Dense(16)(tanh)]))
    x = np.random.default_rng(0).normal(size=(3, 5, 16)).astype("float32")
    graph = backend.traced(lambda t: model(t, training=False))
    out = graph(torch.from_numpy(x))
    code = graph.graph.code
    assert code.count("'gelu', [], 'none'") == 1 and code.count("'gelu', [], 'tanh'") == 1
    assert "_linear_pointwise.binary" in code and "aten.add" not in code and "aten.gelu" not in code
    np.testing.assert_allclose(out.numpy(), keras.ops.convert_to_numpy(model(x)), atol=1e-5)


@torch_only
def test_untraceable_code_runs_eagerly_with_a_warning():
    class HostRead(keras.layers.Layer):  # reads a value on the host: not trace-safe
        def call(self, x):
            return x * 2 if float(keras.ops.sum(x)) > 0 else x * 3

    inputs = keras.Input((3,))
    model = keras.Model(inputs, HostRead()(inputs))
    with pytest.warns(UserWarning, match="could not trace"):
        assert np.allclose(warm(model, np.ones((1, 3), "float32")), 2)
    assert np.allclose(predict(model, -np.ones((1, 3), "float32")), -3)  # nothing was frozen


def warm(model, x):
    """Enough calls that a torch predict runs its traced graph from now on."""
    for _ in range(backend.TRACE_AFTER):
        out = predict(model, x)
    return out


def test_predict_sees_weights_assigned_after_the_first_call():
    model, other = dense_model(0), dense_model(1)
    x = np.ones((2, 5, 16), "float32")
    first = warm(model, x)
    model.set_weights(other.get_weights())
    np.testing.assert_allclose(predict(model, x), warm(other, x), atol=1e-6)
    assert not np.allclose(first, predict(model, x))


def test_predict_compiles_per_input_shape():
    model = dense_model()
    for length in (5, 5, 3, 5, 3, 3, 5):
        x = np.random.default_rng(length).normal(size=(2, length, 16)).astype("float32")
        np.testing.assert_allclose(predict(model, x), keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_traced_bert_equals_eager_bert():
    """The traced, prepacked graph of a whole BERT (with MLM head) against the eager model,
    which the equivalence tests hold to Hugging Face."""
    from kerasformer import build_transformer_model

    model = build_transformer_model(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=48, with_mlm=True,
                                    with_pool=True)
    rng = np.random.default_rng(0)
    x = [rng.integers(1, 50, (3, 9)).astype("int32"), rng.integers(0, 2, (3, 9)).astype("int32")]
    eager = [keras.ops.convert_to_numpy(t) for t in model(x, training=False)]
    for ours, theirs in zip(warm(model, x), eager):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("change", ["lora", "int8"])
def test_model_predict_follows_a_change_of_the_variables(change):
    """``model.predict`` (the traced graph on torch, whose weights are constants) after
    ``enable_lora`` / ``quantize`` gives the changed model's output, not the old graph's."""
    from kerasformer import build_transformer_model

    model = build_transformer_model(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=4, intermediate_size=48)
    rng = np.random.default_rng(0)
    x = [rng.integers(1, 50, (2, 7)).astype("int32"), np.zeros((2, 7), "int32")]
    for _ in range(backend.TRACE_AFTER + 1):
        before = model.predict(x, verbose=0)
    np.testing.assert_allclose(before, keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-5)
    if change == "lora":
        for layer in model._flatten_layers():
            if type(layer) is keras.layers.Dense:
                layer.enable_lora(2)
                layer.lora_kernel_b.assign(rng.normal(size=layer.lora_kernel_b.shape) * 0.1)
    else:
        model.quantize("int8")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.abs(expected - before).max() > 1e-4  # the change matters
    for _ in range(backend.TRACE_AFTER + 1):
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize("variant", ["plain", "bias-unscaled", "key-size", "bfloat16"])
def test_fused_attention_equals_the_spelled_out_attention(variant):
    """The fused kernel (torch's scaled_dot_product_attention) against the keras.ops path
    that ``return_attention_scores`` takes, with padding and a fully masked query row."""
    from kerasformer.layers import MultiHeadAttention

    keras.utils.set_random_seed(0)
    dtype = "bfloat16" if variant == "bfloat16" else "float32"
    layer = MultiHeadAttention(4, 8, key_size=6 if variant == "key-size" else None,
                               attention_scale=variant != "bias-unscaled", dtype=dtype)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 32)).astype("float32")
    mask = np.ones((2, 1, 5, 5), bool)
    mask[0, :, :, 3:] = False  # padding
    mask[1, :, 2, :] = False  # a query that may attend nowhere: uniform, as in the ops path
    bias = rng.normal(size=(1, 4, 5, 5)).astype("float32") if variant == "bias-unscaled" else None
    fused = layer(x, attention_mask=mask, attention_bias=bias)
    spelled, _ = layer(x, attention_mask=mask, attention_bias=bias, return_attention_scores=True)
    fused, spelled = (keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")) for t in (fused, spelled))
    np.testing.assert_allclose(fused, spelled, atol=2e-2 if dtype == "bfloat16" else 1e-5)


def test_bfloat16_model_predicts_within_tolerance_of_float32():
    """``dtype_policy='bfloat16'`` through ``model.predict`` (on torch the traced graph:
    bf16 oneDNN linears, fused attention, layer norm in bf16 with float accumulation)
    stays within bf16's rounding of the float32 model with the same weights: measured
    max 0.05 / mean 0.004 on outputs of mean magnitude 0.8 (2 layers), max 0.08 at 12."""
    from kerasformer import build_transformer_model

    config = dict(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=256, max_position=64)
    keras.utils.set_random_seed(0)
    full = build_transformer_model(**config)
    half = build_transformer_model(**config, dtype_policy="bfloat16")
    half.set_weights(full.get_weights())
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, (4, 32)).astype("int32")
    ids[1, 20:] = 0  # with padding
    x = [ids, np.zeros_like(ids)]
    expected = full.predict(x, verbose=0)
    for _ in range(backend.TRACE_AFTER + 1):
        out = half.predict(x, verbose=0)
        assert out.dtype == "bfloat16"
        error = np.abs(out.astype("float32") - expected)
        assert error.max() < 0.1 and error.mean() < 0.01, (error.max(), error.mean())


def test_models_are_freed_after_predict_and_generate():
    """Compiled functions and engines live on the model / family object, not in global
    tables that would keep every model ever used alive."""
    import gc
    import weakref

    from kerasformer import build_transformer_model, generate

    model = build_transformer_model(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=16, application="lm",
                                    with_mlm=True)
    x = [np.ones((1, 4), "int32"), np.zeros((1, 4), "int32")]
    for _ in range(backend.TRACE_AFTER):
        predict(model, x)
    generate(model, [[1, 2, 3]], 2)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


# ---------------------------------------------------------------- private attributes (backend.private)

def test_every_private_attribute_exists_in_the_installed_versions():
    backend.private.check()


def test_a_private_attribute_gone_in_a_new_keras_is_a_clear_error(monkeypatch):
    """The user's path: a training trick's loss asks Keras whether the model's call takes
    ``training``; if a Keras release drops that attribute, the error names it and both versions."""
    from kerasformer import training
    from kerasformer.errors import KerasformerError

    model = dense_model()
    model.compile(loss="mse", optimizer="sgd")
    monkeypatch.delitem(vars(model), "_call_has_training_arg")  # as if Keras had renamed it
    x = np.zeros((2, 3, 16), "float32")
    with pytest.raises(KerasformerError) as error:
        training.stateless_loss(model, *training.Trick("t", model, None).state(), x, np.zeros((2, 3, 8), "float32"))
    message = str(error.value)
    assert "_call_has_training_arg" in message and keras.__version__ in message
    assert backend.private.WRITTEN_FOR["keras"] in message


def test_an_override_of_a_renamed_optimizer_method_is_refused(monkeypatch):
    """An extension overriding a method Keras renamed would silently never run."""
    from kerasformer import optimizers
    from kerasformer.errors import KerasformerError

    owner = next(c for c in keras.optimizers.SGD.__mro__ if "_clip_gradients" in vars(c))
    monkeypatch.delattr(owner, "_clip_gradients")  # as if Keras had renamed it
    with pytest.raises(KerasformerError, match="_clip_gradients.*keras"):
        optimizers.extend_with_gradient_transform(keras.optimizers.SGD)


@torch_only
def test_a_private_torch_attribute_gone_is_a_clear_error(monkeypatch):
    import torch

    from kerasformer.errors import KerasformerError

    monkeypatch.setattr(backend.private, "ATTRIBUTES", {**backend.private.ATTRIBUTES})
    with pytest.raises(KerasformerError, match=r"_no_such_op of torch's torch.ops.mkldnn.*torch 2"):
        backend.private.ATTRIBUTES["_no_such_op"] = ("torch", "torch.ops.mkldnn")
        backend.private.get(torch.ops.mkldnn, "_no_such_op")


def test_an_unlisted_private_attribute_is_refused():
    with pytest.raises(KeyError, match="not listed"):
        backend.private.get(keras.layers.Dense(2), "_trainable")
