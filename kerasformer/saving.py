"""Atomic Keras saves, and bert4keras' file names for them.

Keras 3 opens the target of ``model.save`` / ``model.save_weights`` for writing and fills
it in place, so a process killed mid-save loses the previous file too. Here every save
goes to a temporary file next to the target and is renamed over it in one step (see
``checkpoints.torch_pickle.atomic_write``): a reader, or a resumed run, sees the old file
or the new one, never half of one.

bert4keras scripts write ``model.save_weights('best_model.weights')`` and
``model.save('x.model')``; Keras 3 only accepts ``.weights.h5`` and ``.keras``. The rule
(``keras_path``): a path already ending in the Keras suffix is used as is; otherwise the
suffix is completed -- ``best_model.weights`` -> ``best_model.weights.h5``, ``best_model.h5``
-> ``best_model.weights.h5``, ``x.model`` -> ``x.model.keras``, ``ckpt`` -> ``ckpt.weights.h5``
(names Keras 3 accepts, ``.keras`` / ``.h5`` models and ``.weights.h5`` weights, stay as
they are).
Loading applies the same rule, so the name that saved a file finds it again.

``TransformerModel`` (what ``build_transformer_model`` returns) routes its ``save``,
``save_weights`` and ``load_weights`` through here; ``save_model`` / ``save_weights`` /
``load_weights`` / ``load_model`` do the same for any Keras model.
"""
import os

from kerasformer.checkpoints.torch_pickle import atomic_write
from kerasformer.keras_compat import original

WEIGHTS_SUFFIX = ".weights.h5"
MODEL_SUFFIX = ".keras"


def keras_path(path, kind):
    """The file Keras 3 writes for ``path``: ``kind`` is ``'weights'`` or ``'model'``."""
    path = os.fspath(path)
    if kind == "weights":
        if path.endswith(WEIGHTS_SUFFIX):
            return path
        if path.endswith(".weights"):
            return path + ".h5"
        if path.endswith(".h5"):
            return path[: -len(".h5")] + WEIGHTS_SUFFIX
        return path + WEIGHTS_SUFFIX
    if kind == "model":
        return path if path.endswith((MODEL_SUFFIX, ".h5", ".hdf5")) else path + MODEL_SUFFIX
    raise ValueError(f"kind must be 'weights' or 'model', got {kind!r}")


def _atomic(save, path, suffix, overwrite):
    if not overwrite and os.path.exists(path):
        return save(path)  # Keras asks before overwriting; nothing is clobbered unasked
    with atomic_write(path, suffix=suffix) as tmp:
        save(tmp)
    return None


def save_weights(model, filepath, overwrite=True, **kwargs):
    """``model.save_weights`` to ``keras_path(filepath, 'weights')``, atomically."""
    path = keras_path(filepath, "weights")
    if kwargs.get("max_shard_size") is not None:  # several files: Keras writes them itself
        return original("save_weights")(model, path, overwrite=overwrite, **kwargs)
    return _atomic(lambda p: original("save_weights")(model, p, overwrite=True, **kwargs),
                   path, WEIGHTS_SUFFIX, overwrite)


def save_model(model, filepath, overwrite=True, **kwargs):
    """``model.save`` to ``keras_path(filepath, 'model')``, atomically."""
    path = keras_path(filepath, "model")
    return _atomic(lambda p: original("save")(model, p, overwrite=True, **kwargs),
                   path, os.path.splitext(path)[1], overwrite)  # Keras picks the format by suffix


def _existing(filepath, kind):
    """The file a load of ``filepath`` means: itself when it exists (or Keras reads its
    suffix), else the Keras-suffixed name a save of ``filepath`` wrote."""
    path = os.fspath(filepath)
    mapped = keras_path(path, kind)
    if os.path.exists(path) or not os.path.exists(mapped):
        readable = ((WEIGHTS_SUFFIX, ".weights.json", MODEL_SUFFIX, ".h5", ".hdf5") if kind == "weights"
                    else (MODEL_SUFFIX, ".h5", ".hdf5"))
        if os.path.exists(path) or path.endswith(readable):
            return path
    return mapped


def load_weights(model, filepath, **kwargs):
    """``model.load_weights`` of a file saved by ``save_weights(model, filepath)``."""
    return original("load_weights")(model, _existing(filepath, "weights"), **kwargs)


def load_model(filepath, *args, **kwargs):
    """``keras.saving.load_model`` of a file saved by ``save_model(model, filepath)``."""
    return original("load_model")(_existing(filepath, "model"), *args, **kwargs)
