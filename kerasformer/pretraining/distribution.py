"""``keras.distribution`` set-ups for pretraining (JAX only).

``data_parallel(n)`` replicates the model over ``n`` devices and splits the batch.
``model_parallel(data, model)`` builds a ``data x model`` mesh whose ``model`` axis shards,
in every family (BERT/RoBERTa, ALBERT, NEZHA, RoFormer/v2, GPT-2, GPT), Megatron-style:

* token / position embeddings along the hidden size,
* attention q/k/v and feed-forward input kernels (``i0``/``i1`` of gated FFNs) by columns
  (heads / intermediate units), their biases alike,
* attention and feed-forward output kernels (``o_dense``) by rows,

so a model larger than one device trains; XLA inserts the collectives. Variable paths
are the families' layer names ('Transformer-3-MultiHeadSelfAttention/q_dense/kernel',
ALBERT without the index). Other variables (norms, the MLM head) are replicated.
"""
import os

from kerasformer.errors import KerasformerError

# regular expressions matching whole variable paths (Keras uses re.fullmatch) -> layout
# over the (batch, model) mesh axes; they must not overlap (Keras refuses a path matched twice)
MODEL_PARALLEL_RULES = {
    r"(.*/)?Embedding-(Token|Position)/embeddings": (None, "model"),
    r".*(Attention|FeedForward)/(q|k|v|i\d*)_dense/kernel": (None, "model"),
    r".*(Attention|FeedForward)/(q|k|v|i\d*)_dense/bias": ("model",),
    r".*(Attention|FeedForward)/o_dense/kernel": ("model", None),
}


def _require_jax(what):
    import keras

    if keras.backend.backend() != "jax":
        raise KerasformerError(f"{what} runs on the JAX backend (keras.distribution); on "
                               f"{keras.backend.backend()} pretraining runs on one device: drop the option "
                               "or set KERAS_BACKEND=jax")


def initialize_multihost():
    """``jax.distributed.initialize()`` when the environment describes a multi-process run
    (``KERASFORMER_COORDINATOR=host:port``, ``KERASFORMER_NUM_PROCESSES``,
    ``KERASFORMER_PROCESS_ID``; on TPU pods / SLURM JAX finds these itself with ``--multihost``)."""
    import jax

    address = os.environ.get("KERASFORMER_COORDINATOR")
    if address:
        jax.distributed.initialize(address, int(os.environ["KERASFORMER_NUM_PROCESSES"]),
                                   int(os.environ["KERASFORMER_PROCESS_ID"]))
    else:
        jax.distributed.initialize()


def data_parallel(n=None):
    _require_jax("--data-parallel")
    import jax
    import keras

    devices = jax.devices()
    n = len(devices) if not n else int(n)
    if n > len(devices):
        raise KerasformerError(f"--data-parallel {n}: only {len(devices)} devices are visible")
    return keras.distribution.DataParallel(devices=devices[:n])


def parse_mesh(text):
    try:
        data, model = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise KerasformerError(f"--mesh takes DATAxMODEL, e.g. 2x2; got {str(text)[:50]!r}") from None
    if data < 1 or model < 1:
        raise KerasformerError(f"--mesh sizes must be positive, got {text}")
    return data, model


def model_parallel(data, model):
    _require_jax("--mesh")
    import jax
    import keras

    devices = jax.devices()
    if data * model > len(devices):
        raise KerasformerError(f"a {data}x{model} mesh needs {data * model} devices; {len(devices)} are visible")
    mesh = keras.distribution.DeviceMesh((data, model), ["batch", "model"], devices[:data * model])
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, axes in MODEL_PARALLEL_RULES.items():
        layout_map[pattern] = axes
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def check_divisible(transformer, model_axis):
    """A clear error where the model axis does not divide a sharded dimension."""
    if model_axis <= 1:
        return
    dims = {"hidden_size": transformer.hidden_size, "intermediate_size": transformer.intermediate_size}
    bad = {k: v for k, v in dims.items() if v % model_axis}
    if bad:
        raise KerasformerError(f"the model axis ({model_axis}) must divide {', '.join(f'{k}={v}' for k, v in bad.items())}")
