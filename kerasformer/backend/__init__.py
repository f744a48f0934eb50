"""The one place where kerasformer branches on the Keras backend, one module per job:

* :mod:`~kerasformer.backend.dispatch`: what differs per backend (compiled inference,
  numpy conversion, in-place cache writes, noise inside a compiled loop, RNG state);
* :mod:`~kerasformer.backend.torch_graph`: torch's graph compiler (``traced``,
  ``CompiledLoop``: FX graphs with prepacked oneDNN matmuls);
* :mod:`~kerasformer.backend.train_step`: gradients and a custom ``fit`` step
  (``value_and_grad``, ``set_train_step``);
* :mod:`~kerasformer.backend.recompute`: gradient checkpointing (``recompute_call``);
* :mod:`~kerasformer.backend.fused_optimizers`: the Adam family's update through torch's fused
  Adam kernel, all variables in one call (``fused_update_step``);
* :mod:`~kerasformer.backend.private`: every private Keras / torch attribute kerasformer uses,
  checked against the versions it was written for;
* :mod:`~kerasformer.backend.bert4keras`: ``bert4keras.backend``'s helpers, so a ported script's
  ``from kerasformer.backend import keras, K, search_layer, ...`` works unchanged.

Model and layer code uses ``keras.ops`` only and imports what it needs from here.
"""
import keras  # noqa: F401 - ``from kerasformer.backend import keras`` (bert4keras scripts)

from kerasformer.backend.dispatch import (MAX_SIGNATURES, TRACE_AFTER, compiled_forward,  # noqa: F401
                                          fused_attention, global_rng_state, inference_mode, int8_matmul, jit,
                                          layer_norm, model_forward, name, predict, set_global_rng_state,
                                          stateless_function, to_numpy, uniform_noise, update_cache)
from kerasformer.backend.fused_optimizers import fused_update_step  # noqa: F401
from kerasformer.backend.recompute import recompute_call  # noqa: F401
from kerasformer.backend.torch_graph import CompiledLoop, traced  # noqa: F401
from kerasformer.backend.train_step import set_train_step, value_and_grad  # noqa: F401

from kerasformer import keras_compat  # noqa: E402

keras_compat.install()  # bert4keras' file names and nested lists on every keras.Model

# bert4keras.backend's names (kerasformer.backend.bert4keras; ``K`` is kerasformer/keras2.py, Keras 2's
# backend functions on keras.ops)
BERT4KERAS = (
    "K", "Sinusoidal", "align", "apply_rotary_position_embeddings", "attention_normalize",
    "batch_gather", "divisible_temporal_padding", "do_recompute", "dtype", "flatten", "gelu_erf",
    "gelu_tanh", "get_available_gpus", "graph_mode_decorator", "is_tf_keras", "leaky_relu",
    "multilabel_categorical_crossentropy", "piecewise_linear", "pool1d", "recompute_grad", "reshape",
    "root_mean_square", "search_layer", "sequence_masking", "set_gelu", "sinusoidal_embeddings",
    "sparse_multilabel_categorical_crossentropy", "swish", "symbolic", "where",
)


def __getattr__(attribute):
    # bert4keras' helpers load on first use: they import the layers, the losses and the
    # optimizers, which import this package (a cycle if it imported them itself)
    if attribute in BERT4KERAS:
        from kerasformer.backend import bert4keras

        return getattr(bert4keras, attribute)
    if attribute == "__all__":  # ``from kerasformer.backend import *``
        return [n for n in globals() if not n.startswith("_")] + list(BERT4KERAS)
    raise AttributeError(f"module 'kerasformer.backend' has no attribute {attribute!r}")
