"""Training checkpoints: ``OUT/checkpoints/step-000100/`` holding every model variable
(weights and the layers' seed-generator states: the dropout RNG on JAX), the backend's global
RNG (torch's dropout draws from it), every optimizer variable (moments, iteration count,
EMA, accumulators) and ``state.json`` (step, loader position,
seeds). A checkpoint is written into a temporary directory, then renamed: a run killed at
any moment leaves the previous checkpoints intact and loses at most the work since the
last one. The newest ``keep`` are kept. With several processes, values are gathered to
every host and process 0 alone writes.
"""
import json
import os
import re
import shutil

import numpy as np

from kerasformer.backend import global_rng_state, set_global_rng_state
from kerasformer.errors import KerasformerError

PATTERN = re.compile(r"^step-(\d{9})$")


def _values(variables):
    import keras

    out = []
    for v in variables:
        value = v.value
        if keras.backend.backend() == "jax":
            import jax

            if jax.process_count() > 1 and not value.is_fully_addressable:
                from jax.experimental import multihost_utils

                value = multihost_utils.process_allgather(value, tiled=True)
        out.append(np.asarray(keras.ops.convert_to_numpy(value)))
    return out


def list_checkpoints(directory):
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), os.path.join(directory, name))
             for name in os.listdir(directory) if (m := PATTERN.match(name))]
    return [path for _, path in sorted(found)]


def save_checkpoint(directory, model, state, keep=3):
    """Write a checkpoint of ``model`` (compiled, with its optimizer) and ``state``."""
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()
    model_values = _values(model.variables)
    optimizer_values = _values(model.optimizer.variables)
    if _process_index() != 0:
        return None
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, f"step-{int(state['step']):09d}")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    np.savez(os.path.join(tmp, "model.npz"), *model_values)
    np.savez(os.path.join(tmp, "optimizer.npz"), *optimizer_values)
    rng = global_rng_state()
    if rng is not None:
        np.save(os.path.join(tmp, "rng.npy"), rng)
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f, indent=1)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path, model):
    """Restore ``model`` and its optimizer from ``path``; returns the saved state."""
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    for name, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        with np.load(os.path.join(path, f"{name}.npz")) as data:
            values = [data[f"arr_{i}"] for i in range(len(data.files))]
        if len(values) != len(variables) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
            raise KerasformerError(f"{path}: the {name} variables do not match this model "
                                   "(another config, objective or optimizer?)")
        for variable, value in zip(variables, values):
            variable.assign(value)
    rng = os.path.join(path, "rng.npy")
    if os.path.exists(rng):
        set_global_rng_state(np.load(rng))
    with open(os.path.join(path, "state.json")) as f:
        return json.load(f)


def _process_index():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index()
    return 0
