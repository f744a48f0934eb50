"""What a built model accepts, checked before Keras sees it.

bert4keras users call ``model.predict([[token_ids], [segment_ids]])`` with Python lists;
Keras 3 rejects nested lists. And a sequence longer than the position table must be
refused up front: when Keras' JAX ``predict`` fails inside its compiled step, the
model's variables stay detached (set to None) and every later call fails with
``'NoneType' object is not callable`` (an upstream Keras bug). So
:class:`~kerasformer.models.transformer.TransformerModel` runs its inputs through
:func:`standardize_inputs` and its ``predict`` / ``evaluate`` under
:func:`variables_kept_on_error`.
"""
import contextlib
import contextvars

import numpy as np

from kerasformer.backend import private
from kerasformer.errors import KerasformerError


def _is_python_nested(x):
    """A (nested) list/tuple of Python numbers, as opposed to a list of arrays."""
    while isinstance(x, (list, tuple)):
        if not x:
            return True
        x = x[0]
    return isinstance(x, (int, float, bool, np.generic))


def _to_array(x, spec, index):
    if not _is_python_nested(x):
        return x
    try:
        array = np.asarray(x)
    except ValueError:
        array = None
    if array is None or array.dtype == object:
        raise KerasformerError(
            f"model input {index} ('{spec.name}') has rows of different lengths; pad them to one "
            "length first, e.g. kerasformer.snippets.sequence_padding(rows)") from None
    if array.ndim == 1 and len(spec.shape) == 2:
        array = array[None]  # one sequence -> a batch of one, as bert4keras' to_array allows
    return array.astype(spec.dtype) if array.size else array.reshape((0,) * len(spec.shape))


def max_length(model):
    """The longest sequence the model's learned position tables hold (None: no limit),
    read once from its ``PositionEmbedding`` layers and kept on the model."""
    limit = getattr(model, "_kerasformer_max_length", False)
    if limit is False:
        from kerasformer.layers.embeddings import PositionEmbedding

        limits = [layer.input_dim - layer.offset for layer in private.sublayers(model)
                  if isinstance(layer, PositionEmbedding)]
        limit = min(limits) if limits else None
        model._kerasformer_max_length = limit
    return limit


# the model whose predict / fit / evaluate is running on inputs standardize_inputs already
# checked whole (arrays): Keras' torch trainer calls the model once per batch, on slices of them
_CHECKED = contextvars.ContextVar("kerasformer_checked_inputs", default=None)


@contextlib.contextmanager
def checked_whole(model, x):
    """Run the block with ``x`` (the result of :func:`standardize_inputs`) known to be checked,
    so ``model``'s own per-batch calls skip the check; generators and datasets are not
    (their batches are checked as they come)."""
    import keras

    leaves = keras.tree.flatten(x)
    whole = bool(leaves) and all(len(getattr(leaf, "shape", ())) > 0 for leaf in leaves)
    token = _CHECKED.set(model if whole else None)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def standardize_inputs(model, x):
    """``x`` with nested Python lists turned into arrays of the inputs' dtypes, after
    checking each sequence length against the model's position table and its fixed
    ``sequence_length``. Anything else (tensors, datasets, generators) passes through."""
    if _CHECKED.get() is model:
        return x
    specs = list(model.inputs or [])
    if not specs:
        return x
    if isinstance(x, dict):
        by_name = {spec.name: spec for spec in specs}
        pairs = [(x[k], by_name[k]) if k in by_name else (x[k], None) for k in x]
        arrays = [_to_array(v, s, i) if s is not None else v for i, (v, s) in enumerate(pairs)]
        _check_lengths(model, [(a, s) for a, (_, s) in zip(arrays, pairs) if s is not None])
        return dict(zip(x, arrays))
    if len(specs) == 1:
        if isinstance(x, (list, tuple)) and len(x) == 1 and not _is_python_nested(x):
            _check_lengths(model, [(x[0], specs[0])])  # [array]: Keras' own form
            return x
        array = _to_array(x, specs[0], 0)
        _check_lengths(model, [(array, specs[0])])
        return array
    if isinstance(x, (list, tuple)) and len(x) == len(specs):
        arrays = [_to_array(v, s, i) for i, (v, s) in enumerate(zip(x, specs))]
        _check_lengths(model, list(zip(arrays, specs)))
        return arrays
    return x


def _check_lengths(model, pairs):
    limit = None
    for array, spec in pairs:
        shape = getattr(array, "shape", None)
        if shape is None or len(shape) < 2 or len(spec.shape) < 2 or "int" not in str(spec.dtype):
            continue  # not a sequence of ids (T5's float encoder output is checked by Keras)
        length = shape[1]
        if not isinstance(length, (int, np.integer)):
            continue  # symbolic
        fixed = spec.shape[1]
        if fixed is not None and length != fixed:
            raise KerasformerError(
                f"model input '{spec.name}' has {length} tokens but the model was built with "
                f"sequence_length={fixed}; pad or truncate to {fixed} tokens")
        if limit is None:
            limit = max_length(model) or -1
        if limit > 0 and length > limit:
            raise KerasformerError(
                f"model input '{spec.name}' has {length} tokens but the model's position table "
                f"holds {limit}; truncate the text, e.g. Tokenizer.encode(text, maxlen={limit})")


@contextlib.contextmanager
def variables_kept_on_error(model):
    """Run the block; if it raises, give back to every variable the value it had before.

    Keras' JAX trainer detaches the variables' values during ``fit`` / ``predict`` /
    ``evaluate`` and reattaches them only at the end, so an exception in between (a bad
    input, an interrupt) leaves them None. The state of the last completed step is
    reattached first (what ``fit`` trained so far); anything still detached gets its old
    value back. Holding references to the old values costs nothing."""
    held = [(v, private.get(v, "_value")) for v in model.variables]
    try:
        yield
    except BaseException:
        if private.optional(model, "_jax_state") and hasattr(model, "jax_state_sync"):
            try:
                model.jax_state_sync()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        for variable, value in held:
            if value is not None and private.get(variable, "_value") is None:
                private.assign(variable, "_value", value)
        raise
