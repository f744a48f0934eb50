"""Activation names as they appear in checkpoint configs, mapped to functions."""

import keras


@keras.saving.register_keras_serializable(package="kerasformer")
def gelu_erf(x):
    """Exact GELU, x * Phi(x): Google BERT's and Hugging Face's ``gelu``."""
    return keras.activations.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="kerasformer")
def gelu_tanh(x):
    """The tanh approximation of GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))):
    GPT-2's ``gelu_new`` and HF's ``gelu_pytorch_tanh``. Keras' fused op computes exactly
    this formula on every backend (one kernel on torch instead of eight)."""
    return keras.activations.gelu(x, approximate=True)


_ACTIVATIONS = {
    "gelu": gelu_erf,
    "gelu_erf": gelu_erf,
    "gelu_tanh": gelu_tanh,
    "gelu_new": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": keras.activations.relu,
    "swish": keras.activations.silu,
    "silu": keras.activations.silu,
    "tanh": keras.activations.tanh,
    "linear": keras.activations.linear,
    "softmax": keras.activations.softmax,
}


def get_activation(name):
    """A callable for a config's activation name (or a callable, returned as is)."""
    if callable(name) or name is None:
        return name or keras.activations.linear
    if name in _ACTIVATIONS:
        return _ACTIVATIONS[name]
    return keras.activations.get(name)


def activation_name(name):
    """A serialisable identifier for ``name`` (Keras' own name where one exists)."""
    return name if isinstance(name, str) else keras.activations.serialize(name)
