"""Moving tensors between a Keras model and a checkpoint, by name.

A model family describes, for every model variable, where it lives in a checkpoint:
a :class:`WeightSource` with candidate names (the first is the canonical one, used
when writing) and whether the matrix is stored transposed. One generic routine
here does the rest: it loads every variable or fails naming the variable and both
shapes, and it reports what the checkpoint holds that the model did not use.
"""
import collections.abc
import dataclasses
import logging
import re

import numpy as np

from kerasformer.errors import WeightMismatchError

logger = logging.getLogger("kerasformer")

# Checkpoint entries that are never model weights: training counters, optimizer
# slots, and buffers Hugging Face saves (position_ids) or ties to another tensor.
NON_WEIGHT_PATTERNS = [
    r"(^|/)global_step$", r"/adam_[mv]$", r"_power$", r"(^|/)Adam(_\d+)?$",
    r"\.position_ids$", r"(^|\.)decoder\.weight$", r"predictions\.decoder\.bias$",
    r"generator_lm_head\.weight$",
    r"_slot_v[rc]?$", r"(^|\.)(encoder|decoder)\.embed_tokens\.weight$",
]


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where one model variable lives in a checkpoint."""

    names: tuple  # candidate checkpoint names; names[0] is canonical
    transpose: bool = False

    @property
    def name(self):
        return self.names[0]


@dataclasses.dataclass
class LoadReport:
    """What a load did: variable path -> checkpoint name, and the leftovers."""

    loaded: dict
    missing: list
    unused: list
    ignored: list

    def summary(self):
        lines = [f"{len(self.loaded)} variables loaded"]
        if self.missing:
            lines.append(f"{len(self.missing)} missing: " + ", ".join(self.missing))
        if self.unused:
            lines.append(f"{len(self.unused)} checkpoint tensors unused: " + ", ".join(self.unused))
        return "; ".join(lines)


def _is_non_weight(name):
    return any(re.search(p, name) for p in NON_WEIGHT_PATTERNS)


def load_weights(variables, sources, tensors, transforms=None, ignore_missing=False):
    """Assign checkpoint ``tensors`` to ``variables``, all or nothing.

    Args:
        variables: ``{variable path: keras.Variable}``.
        sources: ``{variable path: WeightSource}``; variables without a source keep
            their initial values only if ``ignore_missing`` (e.g. a new head).
        tensors: a mapping ``name -> np.ndarray`` (see ``open_checkpoint``); when it has
            ``shape(name)`` / ``dtype(name)`` (every checkpoint reader does), they are used
            to check the whole load before any tensor is read.
        transforms: ``{variable path: fn(np.ndarray) -> np.ndarray}`` applied after
            transposition (keep_tokens, compound_tokens, fused-matrix slices).
    Raises:
        WeightMismatchError naming every missing variable and every shape mismatch, before
        any variable is changed.

    Memory: the check runs on metadata (a transform is tried on a zero-cost broadcast
    stand-in of the stored shape), then tensors are read and assigned one at a time, without
    a copy when the dtype already matches, so the peak is about one tensor on top of the
    model (plus the page cache of memory-mapped files).
    """
    transforms = transforms or {}
    available = set(tensors.keys())
    loaded, missing, mismatched, plan = {}, [], [], []
    for path, variable in variables.items():
        source = sources.get(path)
        found = None if source is None else next((n for n in source.names if n in available), None)
        if found is None:
            wanted = "no checkpoint name" if source is None else " or ".join(source.names)
            missing.append(f"{path} (looked for {wanted})")
            continue
        problem = _check(path, variable, source, found, tensors, transforms.get(path))
        if problem:
            mismatched.append(problem)
            continue
        plan.append((path, source, found))
        loaded[path] = found
    if mismatched or (missing and not ignore_missing):
        problems = []
        if mismatched:
            problems.append("shape mismatch:\n  " + "\n  ".join(mismatched))
        if missing and not ignore_missing:
            problems.append("missing from the checkpoint:\n  " + "\n  ".join(missing)
                            + "\n(pass ignore_invalid_weights=True to keep these initialised randomly)")
        raise WeightMismatchError("cannot load checkpoint into the model:\n" + "\n".join(problems))
    for path, source, found in plan:  # one tensor alive at a time
        variable = variables[path]
        value = _oriented(np.asarray(tensors[found]), source, transforms.get(path))
        variable.assign(value.astype(variable.dtype, copy=False))
        del value
    used = set(loaded.values())
    leftovers = sorted(available - used)
    ignored = [n for n in leftovers if _is_non_weight(n)]
    unused = [n for n in leftovers if not _is_non_weight(n)]
    report = LoadReport(loaded=loaded, missing=missing, unused=unused, ignored=ignored)
    if missing:
        logger.warning("variables left at their initial values: %s", ", ".join(missing))
    if unused:
        logger.warning("checkpoint tensors not used by the model: %s", ", ".join(unused))
    return report


def _oriented(value, source, transform):
    if source.transpose:
        value = value.T
    return transform(value) if transform is not None else value


def _check(path, variable, source, found, tensors, transform):
    """What is wrong with loading ``found`` into ``variable`` (None if nothing), from metadata."""
    if hasattr(tensors, "shape") and hasattr(tensors, "dtype"):
        shape, dtype = tuple(tensors.shape(found)), np.dtype(tensors.dtype(found))
    else:  # a plain dict of arrays: already in memory
        value = np.asarray(tensors[found])
        shape, dtype = value.shape, value.dtype
    if dtype.kind not in "biuf":
        return f"{path}: checkpoint tensor {found!r} holds {dtype}, not numbers"
    stand_in = np.broadcast_to(np.zeros((), dtype), shape)  # the shape, no data
    try:
        shape = _oriented(stand_in, source, transform).shape
    except (IndexError, ValueError) as e:  # e.g. keep_tokens past the checkpoint's vocabulary
        return f"{path}: cannot transform checkpoint tensor {found!r} of shape {shape}: {e}"
    if tuple(shape) != tuple(variable.shape):
        return (f"{path}: model expects {tuple(variable.shape)}, checkpoint "
                f"tensor {found!r} gives {tuple(shape)}"
                + (" after transposing" if source.transpose else ""))
    return None


def export_weights(variables, sources):
    """``{canonical checkpoint name: np.ndarray}`` for every variable with a source."""
    out = {}
    for path, variable in variables.items():
        source = sources.get(path)
        if source is None:
            raise WeightMismatchError(f"variable {path} has no checkpoint name to be saved under")
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        if source.transpose:
            value = value.T
        out[source.name] = np.ascontiguousarray(value)
    return out


class TensorsWithout(collections.abc.Mapping):
    """A read-only view of a checkpoint without the names ``hide(name)`` is true for (tensors
    a family derives instead of loading, such as attention-mask buffers). Shapes and dtypes
    pass through, so loading still checks everything from metadata before reading data."""

    def __init__(self, tensors, hide):
        self.tensors = tensors
        self.hidden = [n for n in tensors.keys() if hide(n)]
        self._hidden = set(self.hidden)

    def __getitem__(self, name):
        if name in self._hidden:
            raise KeyError(name)
        return self.tensors[name]

    def __iter__(self):
        return (n for n in self.tensors.keys() if n not in self._hidden)

    def __len__(self):
        return len(self.tensors) - len(self._hidden)

    def shape(self, name):
        if hasattr(self.tensors, "shape"):
            return self.tensors.shape(name)
        return np.shape(self[name])

    def dtype(self, name):
        if hasattr(self.tensors, "dtype"):
            return self.tensors.dtype(name)
        return np.asarray(self[name]).dtype
