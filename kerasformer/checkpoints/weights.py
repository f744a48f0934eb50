"""Moving tensors between a Keras model and a checkpoint, by name.

A model family describes its weights once, as a list of :class:`WeightRow`: for every
model variable, where it lives under each naming a checkpoint may use ('google' for TF
checkpoints, 'hf' for Hugging Face files, and family-specific ones such as GPT-2's
'bert4keras'), each a :class:`WeightSource` (candidate names, canonical first; stored
transposed; stored with OpenAI's leading conv1d axis; one part of a fused tensor), plus
which axis is the vocabulary. The generic routines here do the rest for every family:
``load_rows`` loads every variable or fails naming the variable and both shapes, and
reports what the checkpoint holds that the model did not use; ``export_rows`` writes the
variables back under their canonical names, fusing parts again.
"""
import dataclasses
import logging
import os
import re

import numpy as np

from kerasformer.errors import KerasformerError, WeightMismatchError

logger = logging.getLogger("kerasformer")

# Checkpoint entries that are never model weights in any family: training counters,
# optimizer slots, and the buffers and tied copies Hugging Face saves beside the weights.
# (A family lists the tensors it derives itself in ``Transformer.derived_tensors``.)
NON_WEIGHT_PATTERNS = [
    r"(^|/)global_step$", r"/adam_[mv]$", r"_power$", r"(^|/)Adam(_\d+)?$",
    r"\.position_ids$", r"(^|\.)decoder\.weight$", r"predictions\.decoder\.bias$",
    r"generator_lm_head\.weight$",
    r"_slot_v[rc]?$", r"(^|\.)(encoder|decoder)\.embed_tokens\.weight$",
]


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """How one model variable is stored under one naming.

    names: candidate checkpoint names; ``names[0]`` is the canonical one, written on export.
    transpose: stored transposed (a Hugging Face ``[out, in]`` matrix).
    squeeze: stored with a leading axis of 1 (OpenAI's conv1d kernels ``[1, in, out]``).
    part: ``(index, count)``: the variable is one of ``count`` equal slices of the stored
        tensor's last axis (GPT-2's query|key|value fused in ``c_attn``); variables sharing
        a name are concatenated back on export.
    """

    names: tuple
    transpose: bool = False
    squeeze: bool = False
    part: tuple = None

    @property
    def name(self):
        return self.names[0]

    def load(self, value):
        """The stored tensor (or a metadata stand-in of it) in the variable's layout."""
        if self.squeeze and value.ndim == 3 and value.shape[0] == 1:
            value = value.reshape(value.shape[1:])
        if self.transpose:
            value = value.T
        if self.part:
            index, count = self.part
            if value.shape[-1] % count:
                raise ValueError(f"its last axis ({value.shape[-1]}) does not split into {count} "
                                 "equal parts")
            size = value.shape[-1] // count
            value = value[..., index * size:(index + 1) * size]
        return value

    def save(self, value):
        """The inverse of ``load`` (for a fused tensor: after its parts are joined)."""
        if self.transpose:
            value = value.T
        return value[None] if self.squeeze else value


@dataclasses.dataclass(frozen=True)
class WeightRow:
    """One model variable: its path, ``{naming: WeightSource}`` (a naming without an
    entry cannot hold it), and the axis of the stored value that is the vocabulary
    (``keep_tokens`` / ``compound_tokens`` select rows along it), or None."""

    variable: str
    sources: dict
    vocab_axis: int = None


def row(variable, vocab_axis=None, **namings):
    """A :class:`WeightRow`; each naming's value is a name, a tuple of candidate names or a
    :class:`WeightSource` (None: not stored under that naming)."""
    sources = {}
    for naming, where in namings.items():
        if where is None:
            continue
        if isinstance(where, str):
            where = WeightSource((where,))
        elif not isinstance(where, WeightSource):
            where = WeightSource(tuple(where))
        sources[naming] = where
    return WeightRow(variable, sources, vocab_axis)


def renamed(name, renames):
    """``name`` with the first matching ``(old prefix, new prefix)`` of ``renames`` applied."""
    for old, new in renames:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def open_tensors(checkpoint):
    """``checkpoint`` as a name -> array mapping: a path is opened lazily
    (:func:`~kerasformer.checkpoints.resolve.open_checkpoint`), a mapping is kept."""
    if isinstance(checkpoint, (str, os.PathLike)):
        from kerasformer.checkpoints.resolve import open_checkpoint

        return open_checkpoint(os.fspath(checkpoint))
    return checkpoint


def detect_naming(names):
    """'google' when names are slash-separated TF scopes, else 'hf' (dotted)."""
    names = list(names)
    if not names:
        raise KerasformerError("the checkpoint holds no tensors")
    slashed = sum("/" in n for n in names)
    return "google" if slashed * 2 >= len(names) else "hf"


def sources_for(rows, naming, what="the model"):
    """``{variable path: WeightSource}`` of ``rows`` under ``naming``; an error when no row
    has a name under it (the family does not read that naming at all)."""
    sources = {r.variable: r.sources[naming] for r in rows if naming in r.sources}
    if rows and not sources:
        raise KerasformerError(f"{what} has no weight names in the {naming!r} naming; it reads "
                               + ", ".join(sorted({n for r in rows for n in r.sources})))
    return sources


def load_rows(variables, rows, tensors, naming, vocabulary=None, ignore=(), ignore_missing=False):
    """Load ``tensors`` (named as ``naming``) into ``variables`` as ``rows`` say: the generic
    load of every family. ``vocabulary(value)`` selects vocabulary rows (keep_tokens) along
    each row's ``vocab_axis``; ``ignore`` are patterns of derived tensors reported as ignored."""
    transforms = {}
    if vocabulary is not None:
        for r in rows:
            if r.vocab_axis == 0:
                transforms[r.variable] = vocabulary
            elif r.vocab_axis is not None:
                axis = r.vocab_axis
                transforms[r.variable] = lambda v, a=axis: np.moveaxis(vocabulary(np.moveaxis(v, a, 0)), 0, a)
    return load_weights(variables, sources_for(rows, naming), tensors, transforms,
                        ignore_missing=ignore_missing, ignore=ignore)


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


def load_weights(variables, sources, tensors, transforms=None, ignore_missing=False, ignore=()):
    """Assign checkpoint ``tensors`` to ``variables``, all or nothing.

    Args:
        variables: ``{variable path: keras.Variable}``.
        sources: ``{variable path: WeightSource}``; variables without a source keep
            their initial values only if ``ignore_missing`` (e.g. a new head).
        tensors: a mapping ``name -> np.ndarray`` (see ``open_checkpoint``); when it has
            ``shape(name)`` / ``dtype(name)`` (every checkpoint reader does), they are used
            to check the whole load before any tensor is read.
        transforms: ``{variable path: fn(np.ndarray) -> np.ndarray}`` applied after the
            source's own reorientation (keep_tokens, compound_tokens).
        ignore: patterns of leftover tensors that are not weights (reported as ignored,
            besides ``NON_WEIGHT_PATTERNS``).
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
    not_weight = re.compile("|".join(f"(?:{p})" for p in list(NON_WEIGHT_PATTERNS) + list(ignore)))
    ignored = [n for n in leftovers if not_weight.search(n)]
    unused = [n for n in leftovers if not not_weight.search(n)]
    report = LoadReport(loaded=loaded, missing=missing, unused=unused, ignored=ignored)
    if missing:
        logger.warning("variables left at their initial values: %s", ", ".join(missing))
    if unused:
        logger.warning("checkpoint tensors not used by the model: %s", ", ".join(unused))
    return report


def _oriented(value, source, transform):
    value = source.load(value)
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
    """``{canonical checkpoint name: np.ndarray}`` for every variable with a source: parts
    of a fused tensor are joined again; variables sharing a name (ALBERT's one block, read
    by every block of ALBERT_Unshared) must hold the same value."""
    out, parts, owners = {}, {}, {}
    for path, variable in variables.items():
        source = sources.get(path)
        if source is None:
            raise WeightMismatchError(f"variable {path} has no checkpoint name to be saved under")
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        if source.part:
            parts.setdefault(source.name, (source, {}))[1][source.part[0]] = value
            continue
        if source.name in owners:
            if not np.array_equal(out[source.name], np.ascontiguousarray(source.save(value))):
                raise KerasformerError(
                    f"cannot save under {source.name!r}: {owners[source.name]} and {path} both map to "
                    "it but hold different values (blocks that share one checkpoint tensor have "
                    "diverged)")
            continue
        owners[source.name] = path
        out[source.name] = np.ascontiguousarray(source.save(value))
    for name, (source, pieces) in parts.items():
        if sorted(pieces) != list(range(source.part[1])):
            raise WeightMismatchError(f"cannot save {name!r}: only parts {sorted(pieces)} of "
                                      f"{source.part[1]} are model variables")
        joined = np.concatenate([pieces[i] for i in range(source.part[1])], axis=-1)
        out[name] = np.ascontiguousarray(source.save(joined))
    return out


def export_rows(variables, rows, naming):
    """``{canonical checkpoint name: np.ndarray}`` of ``variables`` under ``naming``."""
    return export_weights(variables, sources_for(rows, naming))
