"""bert4keras' conveniences on every ``keras.Model``, for ported scripts.

bert4keras scripts wrap the model they build in plain Keras models
(``keras.models.Model(bert.model.input, output)``, or ``Model`` from ``keras.models``)
and then call ``model.save_weights('best_model.weights')``, ``model.save('x.model')``,
``keras.models.load_model('x.model')`` and ``model.predict([[token_ids], [segment_ids]])``.
Keras 3 refuses all four (file suffixes, nested Python lists). As bert4keras itself did
with Keras 2, kerasformer installs once, when its Keras side is imported, the meaning
bert4keras gave them on ``keras.Model`` and on Keras' ``load_model``. Only what Keras 3
itself would refuse changes meaning, so code written for Keras 3 runs as before:

* file names without the Keras suffix get it completed (``kerasformer.saving.keras_path``:
  ``best_model.weights`` -> ``best_model.weights.h5``, ``x.model`` -> ``x.model.keras``)
  and loading finds the file again; every save is atomic (a kill mid-save keeps the old
  file, see ``kerasformer.saving``);
* ``predict`` / ``predict_on_batch`` / ``fit`` / ``evaluate`` take nested Python lists
  (made arrays of the inputs' dtypes), refuse sequences longer than the model's position
  table before Keras sees them, and leave the model usable when a call fails
  (``kerasformer.models.inputs``).

The padding mask reaches the outputs of kerasformer's models as it does in bert4keras, so a
bert4keras-style ``Lambda(lambda x: x[:, 0])`` now receives a masked input; Keras 2's
``Lambda`` dropped such masks silently, Keras 3's warns on every build. That one warning
(``Lambda`` layers only) is silenced.
"""
import functools
import warnings

import keras

_ORIGINAL = {}


def original(name):
    """Keras' own ``keras.Model`` method ``name``, or its ``load_model`` (what
    ``kerasformer.saving`` calls underneath)."""
    if name == "load_model":
        return _ORIGINAL.get(name, keras.saving.load_model)
    return _ORIGINAL.get(name) or getattr(keras.Model, name)


def _with_inputs(method):
    @functools.wraps(method)
    def wrapped(self, x=None, *args, **kwargs):
        from kerasformer.models.inputs import checked_whole, standardize_inputs, variables_kept_on_error

        if x is not None:
            x = standardize_inputs(self, x)
        with variables_kept_on_error(self), checked_whole(self, x):
            return method(self, x, *args, **kwargs)

    return wrapped


def _save(self, filepath, overwrite=True, **kwargs):
    from kerasformer import saving

    return saving.save_model(self, filepath, overwrite=overwrite, **kwargs)


def _save_weights(self, filepath, overwrite=True, **kwargs):
    from kerasformer import saving

    return saving.save_weights(self, filepath, overwrite=overwrite, **kwargs)


def _load_weights(self, filepath, **kwargs):
    from kerasformer import saving

    return saving.load_weights(self, filepath, **kwargs)


def _load_model(filepath, *args, **kwargs):
    from kerasformer import saving

    return saving.load_model(filepath, *args, **kwargs)


def install():
    """Install the conveniences (idempotent)."""
    if _ORIGINAL:
        return
    for name in ("save", "save_weights", "load_weights", "predict", "predict_on_batch", "fit", "evaluate"):
        _ORIGINAL[name] = getattr(keras.Model, name)
    _ORIGINAL["load_model"] = keras.saving.load_model
    for name in ("predict", "predict_on_batch", "fit", "evaluate"):
        setattr(keras.Model, name, _with_inputs(_ORIGINAL[name]))
    keras.Model.save = functools.wraps(_ORIGINAL["save"])(_save)
    keras.Model.save_weights = functools.wraps(_ORIGINAL["save_weights"])(_save_weights)
    keras.Model.load_weights = functools.wraps(_ORIGINAL["load_weights"])(_load_weights)
    keras.saving.load_model = keras.models.load_model = functools.wraps(_ORIGINAL["load_model"])(_load_model)
    warnings.filterwarnings("ignore", message=r"Layer '.*' \(of type Lambda\) was passed an input with a mask")
