"""One entry point for every checkpoint format: ``open_checkpoint(path) -> CheckpointTensors``.

``path`` may be

* a Google TF checkpoint prefix (``.../bert_model.ckpt``, i.e. ``path + '.index'`` exists), or
  that checkpoint's ``.index`` / ``.data-NNNNN-of-NNNNN`` / ``.meta`` file;
* ``model.safetensors``, or a sharded ``model.safetensors.index.json``;
* ``pytorch_model.bin``, or a sharded ``pytorch_model.bin.index.json``;
* a directory holding one of these.  Preference order: ``model.safetensors``,
  ``model.safetensors.index.json``, ``pytorch_model.bin``, ``pytorch_model.bin.index.json``,
  then a TF checkpoint named by the ``checkpoint`` state file, else the only ``*.index``
  (several without a state file are an error).

Files with other names are recognised by their first bytes (zip / pickle -> torch,
8-byte length + ``{`` -> safetensors).

``CheckpointTensors`` is a lazy, read-only ``Mapping`` name -> numpy array: nothing but
headers / indexes / pickles is read until a tensor is asked for, and ``shape(name)`` never
reads tensor data.  bfloat16 tensors come back as float32 in every format (numpy has no
bfloat16; the widening is exact).  Everything that is wrong with the files raises
``CheckpointError`` naming the file.
"""

from __future__ import annotations

import collections.abc
import glob
import json
import math
import os
import re
import struct
from typing import Any, Iterator

import numpy as np

from kerasformer.checkpoints.torch_pickle import TorchBinReader, atomic_write
from kerasformer.errors import CheckpointError, KerasformerError, brief

__all__ = ["CheckpointTensors", "open_checkpoint", "save_safetensors"]

_DIRECTORY_FILES = (
    ("model.safetensors", "safetensors"),
    ("model.safetensors.index.json", "safetensors-index"),
    ("pytorch_model.bin", "torch"),
    ("pytorch_model.bin.index.json", "torch-index"),
)

# safetensors dtype -> numpy dtype of the values we hand out (BF16 is widened to float32).
_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "float32",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool", "C64": "complex64",
}
_SAFETENSORS_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "C64": 8,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}
_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library refuses larger headers too


# --------------------------------------------------------------------------------------
# Per-file sources.  Each has keys() / shape(name) / dtype(name) / get(name) / close().
# --------------------------------------------------------------------------------------


class _SafetensorsFile:
    """One ``.safetensors`` file.

    The header is parsed here (it gives shapes and dtypes without touching data, lets us say
    "truncated" precisely, and locates each tensor's bytes, read with one ``np.fromfile``);
    ``safetensors.safe_open`` validates the file as a whole when it is opened.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            file_size = os.path.getsize(path)
            with open(path, "rb") as fh:
                raw = fh.read(8)
                if len(raw) < 8:
                    raise CheckpointError(f"{path} is truncated or corrupt (shorter than a "
                                          "safetensors header)")
                (n,) = struct.unpack("<Q", raw)
                if n > _SAFETENSORS_MAX_HEADER or 8 + n > file_size:
                    raise CheckpointError(
                        f"{path} is truncated or corrupt (its header claims {n} bytes, the file "
                        f"has {file_size})")
                header = json.loads(fh.read(n))
        except KerasformerError:
            raise
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such file") from None
        except (ValueError, RecursionError) as exc:  # bad UTF-8 / JSON, 100k-deep nesting, huge ints
            raise CheckpointError(f"{path} is truncated or corrupt (header is not JSON: "
                                  f"{str(exc)[:200]})") from None
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read it ({exc})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path} is truncated or corrupt (header is not a JSON object)")
        self.metadata = header.pop("__metadata__", None) or {}
        if not isinstance(self.metadata, dict):
            raise CheckpointError(f"{path} is truncated or corrupt (__metadata__ is not a JSON "
                                  "object)")
        self._data_start = 8 + n
        self._entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        data_end = 0
        for name, info in header.items():
            try:
                dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
                # exact JSON integers only: int(1.5) or int(true) would silently accept nonsense
                if (not isinstance(dtype, str) or not isinstance(shape, list)
                        or not isinstance(offsets, list) or len(offsets) != 2
                        or not all(_is_count(v) for v in shape + offsets)):
                    raise ValueError(f"dtype {brief(dtype)}, shape {brief(shape)}, "
                                     f"data_offsets {brief(offsets)}")
                shape, (begin, end) = tuple(shape), offsets
                if begin > end:
                    raise ValueError(f"data_offsets {begin}..{end} run backwards")
                itemsize = _SAFETENSORS_ITEMSIZE.get(dtype)  # unknown dtypes fail on read only
                if itemsize and end - begin != itemsize * math.prod(shape):
                    raise ValueError(f"data_offsets {begin}..{end} do not fit shape {brief(shape)}")
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(
                    f"{path} is truncated or corrupt (bad header entry {brief(name)}: "
                    f"{str(exc)[:200]})") from None
            self._entries[name] = (dtype, shape, begin, end)
            data_end = max(data_end, end)
        if self._data_start + data_end > file_size:
            raise CheckpointError(
                f"{path} is truncated or corrupt (its header describes "
                f"{self._data_start + data_end} bytes, the file has {file_size})")
        from safetensors import safe_open

        try:
            self._handle = safe_open(path, framework="numpy")
        except Exception as exc:  # SafetensorError has no importable common base across versions
            raise CheckpointError(f"{path} is truncated or corrupt ({exc})") from None

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> np.dtype:
        code = self._entries[name][0]
        if code not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name!r} has dtype {code}, which "
                                  "kerasformer cannot represent in numpy")
        return np.dtype(_SAFETENSORS_DTYPES[code])

    def get(self, name: str) -> np.ndarray:
        code, shape, begin, end = self._entries[name]
        stored = np.dtype(self.dtype(name) if code != "BF16" else "u2").newbyteorder("<")
        # One read into a fresh array: no memory map, whose touched pages would stay resident
        # (a whole model's worth while loading), and no second copy (safe_open's get_tensor
        # copies out of its map). safe_open validated the layout when the file was opened.
        count = (end - begin) // stored.itemsize
        arr = np.fromfile(self.path, dtype=stored, count=count, offset=self._data_start + begin)
        if arr.size != count:
            raise CheckpointError(f"{self.path} is truncated or corrupt (tensor {brief(name)} "
                                  "ends past the end of the file)")
        if code == "BF16":  # bf16 is the top half of a float32: widen the bit pattern, exact
            return (arr.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return arr.reshape(shape)

    def close(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            handle.__exit__(None, None, None)


class _TorchFile:
    """One ``pytorch_model.bin`` (see ``torch_pickle.TorchBinReader``)."""

    def __init__(self, path: str):
        self.path = path
        self._reader = TorchBinReader(path)

    def keys(self):
        return self._reader.keys()

    def __contains__(self, name) -> bool:
        return name in self._reader

    def shape(self, name):
        return self._reader.shape(name)

    def dtype(self, name):
        return self._reader.dtype(name)

    def get(self, name):
        return self._reader.get(name)

    def close(self):
        self._reader.close()


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _open_tf(prefix: str):
    # Imported here so this module works (for the other formats) without tf_bundle.
    from kerasformer.checkpoints.tf_bundle import TFCheckpointReader

    return TFCheckpointReader(prefix)


# --------------------------------------------------------------------------------------
# The mapping
# --------------------------------------------------------------------------------------


class CheckpointTensors(collections.abc.Mapping):
    """Lazy, read-only mapping ``name -> numpy array`` over one checkpoint (maybe several files).

    Attributes:
        format: ``'tf'``, ``'safetensors'`` or ``'torch'``.
        path: what the caller passed to ``open_checkpoint``.
        files: the files the tensors live in (shards, TF index / data files are named by prefix).

    ``tensors[name]`` reads one tensor (a fresh array each time); ``shape(name)`` and
    ``dtype(name)`` read only headers.  Use as a context manager, or call ``close()``, to
    release open files early (a closed mapping reopens files if used again).
    """

    def __init__(self, path: str, format: str, where: dict[str, str], opener, files: list[str]):
        self.path = path
        self.format = format
        self.files = files
        self._where = where  # name -> file holding it
        self._opener = opener  # file -> source object
        self._open: dict[str, Any] = {}

    @classmethod
    def _single(cls, path: str, format: str, file: str, opener) -> "CheckpointTensors":
        source = opener(file)  # opened now: lists the names and validates the file up front
        obj = cls(path, format, dict.fromkeys(source.keys(), file), opener, [file])
        obj._open[file] = source
        return obj

    def _source(self, name: str):
        file = self._where[name]  # KeyError for unknown names, as a Mapping should
        source = self._open.get(file)
        if source is None:
            source = self._open[file] = self._opener(file)
        if name not in source:
            raise CheckpointError(f"{self.path} says {name!r} is in {file}, but that file does "
                                  "not hold it")
        return source

    def __getitem__(self, name: str) -> np.ndarray:
        source = self._source(name)
        try:
            return source.get(name)
        except KerasformerError:
            raise
        except Exception as exc:
            # whatever a forged file provokes in a reader, the user gets file + entry
            raise CheckpointError(f"{self._where[name]}: cannot read tensor {brief(name)}: "
                                  f"truncated or corrupt ({type(exc).__name__}: "
                                  f"{str(exc)[:200]})") from None

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape, read from the header / index / pickle only."""
        return tuple(self._source(name).shape(name))

    def dtype(self, name: str) -> np.dtype:
        """The numpy dtype ``self[name]`` will have (float32 for stored bfloat16)."""
        return np.dtype(self._source(name).dtype(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name) -> bool:
        return name in self._where

    def close(self) -> None:
        for source in self._open.values():
            source.close()
        self._open.clear()

    def __enter__(self) -> "CheckpointTensors":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointTensors(format={self.format!r}, path={self.path!r}, {len(self)} tensors)"


# --------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------

_TF_DATA_RE = re.compile(r"^(.*)\.data-\d{5}-of-\d{5}$")


def _tf_prefix(path: str) -> str | None:
    """The TF checkpoint prefix ``path`` names, or None if it names none."""
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    m = _TF_DATA_RE.match(path)
    if m and os.path.isfile(m.group(1) + ".index"):
        return m.group(1)
    if path.endswith(".meta") and os.path.isfile(path[: -len(".meta")] + ".index"):
        return path[: -len(".meta")]
    if os.path.isfile(path + ".index"):
        return path
    return None


def _tf_prefix_in_dir(directory: str) -> str | None:
    state = os.path.join(directory, "checkpoint")
    if os.path.isfile(state):
        # TF's text-format CheckpointState: model_checkpoint_path: "bert_model.ckpt".  The
        # path may be absolute from the training machine, so fall back to its base name here.
        with open(state, encoding="utf-8", errors="replace") as fh:
            m = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', fh.read(), re.MULTILINE)
        if m:
            named = m.group(1)
            for candidate in (os.path.join(directory, named),
                              os.path.join(directory, os.path.basename(named))):
                if os.path.isfile(candidate + ".index"):
                    return candidate
    # No usable state file: take the only *.index (Google's BERT zips ship bert_model.ckpt.*
    # and no state file).  Several are ambiguous, so refuse rather than guess.
    found = sorted(glob.glob(os.path.join(glob.escape(directory), "*.index")))
    if len(found) == 1:
        return found[0][: -len(".index")]
    if len(found) > 1:
        raise CheckpointError(
            f"{directory} holds several TF checkpoints "
            f"({', '.join(os.path.basename(f) for f in found)}) and no 'checkpoint' state "
            "file naming one of them; pass the prefix, e.g. "
            f"{found[0][: -len('.index')]}")
    return None


def _sniff(path: str) -> str | None:
    """'torch', 'safetensors' or None from the first bytes of a file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return None


def _opener(kind: str):
    return _SafetensorsFile if kind == "safetensors" else _TorchFile


def _open_index(user_path: str, index_path: str) -> CheckpointTensors:
    """A sharded checkpoint: ``{"weight_map": {name: shard file}}`` next to its shards."""
    try:
        with open(index_path, encoding="utf-8") as fh:
            index = json.load(fh)
    except FileNotFoundError:
        raise CheckpointError(f"{index_path}: no such file") from None
    except (ValueError, RecursionError) as exc:  # bad UTF-8 / JSON, 100k-deep nesting, huge ints
        raise CheckpointError(f"{index_path} is not valid JSON ({str(exc)[:200]})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(f"{index_path} has no 'weight_map' of tensor name -> shard file")
    if not weight_map:
        raise CheckpointError(f"{index_path} has an empty 'weight_map': it names no tensor and "
                              "no shard file")
    directory = os.path.dirname(os.path.abspath(index_path))
    shards: dict[str, str] = {}
    for shard in dict.fromkeys(weight_map.values()):
        # Shards live next to the index; a name reaching elsewhere is a broken (or hostile) index.
        norm = os.path.normpath(shard)
        if os.path.isabs(norm) or norm.split(os.sep)[0] == os.pardir:
            raise CheckpointError(f"{index_path} names shard {brief(shard)} outside its directory")
        shards[shard] = os.path.join(directory, norm)
    missing = [s for s, p in shards.items() if not os.path.isfile(p)]
    if missing:
        raise CheckpointError(
            f"{index_path} lists shard files that are missing: {brief(missing)}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    kinds = {}
    for shard, full in shards.items():
        kind = "safetensors" if shard.endswith(".safetensors") else _sniff(full)
        if kind is None:
            raise CheckpointError(f"{full}: unknown checkpoint format (shard of {index_path})")
        kinds[full] = kind
    fmt = "safetensors" if index_path.endswith(".safetensors.index.json") else (
        next(iter(kinds.values()), "torch"))
    where = {name: shards[shard] for name, shard in weight_map.items()}
    return CheckpointTensors(user_path, fmt, where, lambda f: _opener(kinds[f])(f),
                             list(shards.values()))


def _open_tf_checkpoint(user_path: str, prefix: str) -> CheckpointTensors:
    return CheckpointTensors._single(user_path, "tf", prefix, _open_tf)


def open_checkpoint(path) -> CheckpointTensors:
    """Open any supported checkpoint (file, prefix or directory) as a lazy name -> array mapping.

    See the module docstring for what ``path`` may be.  Raises ``CheckpointError`` when nothing
    usable is there (listing what was looked for), or when a file is missing, truncated, corrupt,
    or (for pickles) asks to run code (``UnsafeCheckpointError``).
    """
    user_path = os.fspath(path)
    if os.path.isdir(user_path):
        return _open_directory(user_path)
    if user_path.endswith(".json"):
        return _open_index(user_path, user_path)
    prefix = _tf_prefix(user_path)
    if prefix is not None:
        return _open_tf_checkpoint(user_path, prefix)
    if not os.path.exists(user_path):
        raise CheckpointError(
            f"{user_path}: no such file, directory or TF checkpoint prefix "
            f"(no {user_path}.index either)")
    kind = "safetensors" if user_path.endswith(".safetensors") else _sniff(user_path)
    if kind is None:
        raise CheckpointError(
            f"{user_path}: unknown checkpoint format (expected a TF checkpoint, safetensors or "
            "a PyTorch .bin)")
    return CheckpointTensors._single(user_path, kind, user_path, _opener(kind))


def _open_directory(directory: str) -> CheckpointTensors:
    for name, kind in _DIRECTORY_FILES:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            if kind.endswith("-index"):
                return _open_index(directory, candidate)
            return CheckpointTensors._single(directory, kind, candidate, _opener(kind))
    prefix = _tf_prefix_in_dir(directory)
    if prefix is not None:
        return _open_tf_checkpoint(directory, prefix)
    present = sorted(os.listdir(directory))
    shown = ", ".join(present[:20]) + (f", ... ({len(present)} entries)" if len(present) > 20 else "")
    raise CheckpointError(
        f"no checkpoint found in directory {directory}: looked for "
        f"{', '.join(n for n, _ in _DIRECTORY_FILES)}, and a TF checkpoint (a 'checkpoint' state "
        f"file or one *.index); it holds: {shown or 'nothing'}")


# --------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------


def save_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write ``{name: array}`` as one ``.safetensors`` file, atomically (temp file + rename).

    ``metadata`` (str -> str) goes into the header; ``{'format': 'pt'}`` is always included
    unless ``metadata`` sets another ``format``, because Hugging Face transformers refuses files
    without it.  ml_dtypes ``bfloat16`` arrays are written as BF16.
    """
    meta = {"format": "pt", **(metadata or {})}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise KerasformerError(f"safetensors metadata must map str to str, got {meta!r}")
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise KerasformerError(f"tensor names must be str, got {name!r}")
        arr = np.asarray(value)
        # This safetensors API reads each array's raw memory, so it must be C-contiguous.
        arrays[name] = arr if arr.flags.c_contiguous else arr.copy(order="C")
    from safetensors.numpy import save_file

    with atomic_write(path) as tmp:
        save_file(arrays, tmp, metadata=meta)
