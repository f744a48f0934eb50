"""Read and write PyTorch ``pytorch_model.bin`` checkpoints as numpy, without torch.

Why not ``torch.load``?  It would make torch a hard dependency of every backend,
and a ``.bin`` is a pickle: unpickling runs whatever callables the file names.
This module unpickles with an allowlist (``find_class`` knows a dozen harmless
names and refuses everything else) and never calls into torch: tensors come back
as placeholders and are rebuilt as numpy arrays from the raw storage bytes.

Two on-disk layouts exist, and both are still common for BERT-era checkpoints:

* zip (torch >= 1.6): ``<top>/data.pkl`` is the pickle, ``<top>/data/<key>`` holds
  the raw bytes of each storage, ``<top>/byteorder`` says ``little`` or ``big``
  (files from older torch have none: little, as torch assumes).  ``<top>`` is whatever name the file was
  saved under, so it is found, not assumed.
* legacy (torch < 1.6): five pickles in a row (magic number, protocol version,
  sys info, the object, the list of storage keys) followed by each storage in
  key-list order as an 8-byte little-endian element count and the raw bytes.

Tensors are rebuilt from (storage, offset, size, stride) with bounds checks, so
views, transposes, 0-d tensors and tensors sharing one storage come out exactly
as torch would give them; no returned array shares memory with another (expanded,
stride-0 tensors stay read-only views of their own bytes).  numpy has no
bfloat16, so bfloat16 tensors come back as float32 (exact: bf16 is the top half
of a float32).

Public API::

    load_torch_bin(path) -> {name: ndarray}     # whole state dict
    TorchBinReader(path)                        # lazy: .keys() .shape(n) .dtype(n) .get(n) .close()
    save_torch_bin(path, {name: ndarray})       # zip layout, torch.load(weights_only=True) reads it
    atomic_write(path)                          # context manager: temp file, then os.replace
"""

from __future__ import annotations

import collections
import codecs
import contextlib
import io
import itertools
import math
import os
import pickle
import pickletools
import struct
import sys
import uuid
import zipfile
from typing import Any, Callable, Iterator

import numpy as np

from kerasformer.errors import CheckpointError, KerasformerError, UnsafeCheckpointError, brief

__all__ = ["load_torch_bin", "save_torch_bin", "TorchBinReader", "atomic_write"]

# torch.serialization constants for the legacy (pre-1.6) layout.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Names under which a training script may have wrapped the real state dict.
_WRAPPER_KEYS = ("state_dict", "model", "module")

# torch dtype name -> (numpy dtype used to read the raw bytes, numpy dtype handed to the user).
# bfloat16 is read as uint16 bit patterns and widened to float32 (numpy has no bfloat16).
_DTYPES: dict[str, tuple[str, str]] = {
    "float32": ("f4", "float32"),
    "float64": ("f8", "float64"),
    "float16": ("f2", "float16"),
    "bfloat16": ("u2", "float32"),
    "int64": ("i8", "int64"),
    "int32": ("i4", "int32"),
    "int16": ("i2", "int16"),
    "int8": ("i1", "int8"),
    "uint8": ("u1", "uint8"),
    "uint16": ("u2", "uint16"),
    "uint32": ("u4", "uint32"),
    "uint64": ("u8", "uint64"),
    "bool": ("?", "bool"),
    "complex64": ("c8", "complex64"),
    "complex128": ("c16", "complex128"),
}

# Legacy typed-storage class names (what torch.save writes as the storage type) -> dtype.
# UntypedStorage holds bytes; a tensor on it carries its own dtype (_rebuild_tensor_v3).
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}

# Aliases under which torch pickles dtype objects (``torch float32`` etc.).
_TORCH_DTYPE_ALIASES: dict[str, str] = {
    **{name: name for name in _DTYPES},
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "cfloat": "complex64",
    "cdouble": "complex128",
}


# --------------------------------------------------------------------------------------
# Placeholders the restricted unpickler builds instead of torch objects.
# --------------------------------------------------------------------------------------


class _Frozen:
    """Base of everything the unpickler hands to the pickle: it cannot be modified from there.

    The BUILD opcode sets attributes on any object on the stack (through ``__setstate__``, or
    ``__dict__`` / ``setattr`` for slot state).  Without this a file could edit the shared
    allowlist objects (say, turn FloatStorage into int64 for every later load) or a tensor's
    size after its bounds were checked.  ``__slots__`` leave no ``__dict__``; ``__setstate__``
    refuses BUILD outright.
    """

    __slots__ = ()

    def __setstate__(self, state):
        raise _Hostile(f"modify {type(self).__name__.lstrip('_')} objects (pickle BUILD)")


class _Callable(_Frozen):
    """A frozen wrapper around one allowlisted function (plain functions accept BUILD: their
    ``__dict__`` and ``__defaults__`` could be rewritten process-wide)."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


class _StorageType(_Frozen):
    """Stands in for a ``torch.FloatStorage``-like class named by the pickle."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str):
        self.name = name
        self.dtype = dtype


class _DType(_Frozen):
    """Stands in for a ``torch.float32``-like dtype object named by the pickle."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _TypeMarker(_Frozen):
    """Stands in for ``torch.Tensor`` / ``torch.nn.Parameter`` (only passed to _rebuild_from_type_v2)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _StorageRef(_Frozen):
    """One storage of the file: which record/key holds it and how many bytes it spans.

    ``base`` is a byte offset into the stored bytes (non-zero only for legacy storage views).
    """

    __slots__ = ("key", "dtype", "nbytes", "base")

    def __init__(self, key: str, dtype: str, nbytes: int, base: int = 0):
        self.key = key
        self.dtype = dtype
        self.nbytes = nbytes
        self.base = base


class _TensorRef(_Frozen):
    """A tensor described by the pickle, not yet read: storage + element offset + size + stride."""

    __slots__ = ("storage", "offset", "shape", "stride", "dtype")

    def __init__(self, storage, offset, shape, stride, dtype: str):
        if not isinstance(storage, _StorageRef):
            raise _Corrupt(f"a tensor is built on {type(storage).__name__}, not on a storage")
        shape = _int_tuple(shape, "size")
        stride = _int_tuple(stride, "stride")
        if not isinstance(offset, int) or offset < 0:
            raise _Corrupt(f"bad storage offset {brief(offset)}")
        if len(shape) != len(stride):
            raise _Corrupt(f"size {shape} and stride {stride} have different lengths")
        itemsize = np.dtype(_DTYPES[dtype][0]).itemsize
        if all(shape):  # an empty tensor reads nothing, so any stride is fine
            # Bounds check: as_strided would happily read outside the buffer otherwise.
            last = offset + sum((d - 1) * s for d, s in zip(shape, stride))
            if (last + 1) * itemsize > storage.nbytes:
                raise _Corrupt(
                    f"a tensor of size {shape}, stride {stride}, offset {offset} reaches past "
                    f"its storage of {storage.nbytes} bytes"
                )
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride
        self.dtype = dtype


class _Corrupt(Exception):
    """Internal: the file is structurally wrong; turned into CheckpointError with the file name."""


class _Hostile(Exception):
    """Internal: the pickle does something no torch.save output does; UnsafeCheckpointError."""


def _int_tuple(value, what: str) -> tuple[int, ...]:
    # torch.Size is allowed through find_class and arrives as a plain tuple.
    if not isinstance(value, (tuple, list)):
        raise _Corrupt(f"tensor {what} is {type(value).__name__}, not a tuple")
    out = tuple(value)
    for v in out:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise _Corrupt(f"bad tensor {what} {brief(out)}")
    return out


# The stand-ins for torch's rebuild functions.  They only record what the pickle says.


def _rebuild_tensor(storage, storage_offset, size, stride):
    if not isinstance(storage, _StorageRef):
        raise _Corrupt("_rebuild_tensor got no storage")
    return _TensorRef(storage, storage_offset, size, stride, storage.dtype)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    # v3 is what torch writes for dtypes without a typed storage class (uint16/32/64, ...):
    # the storage is untyped bytes and the dtype comes separately.
    if not isinstance(dtype, _DType):
        raise _Corrupt(f"_rebuild_tensor_v3 got dtype {brief(dtype)}")
    if not isinstance(storage, _StorageRef):
        raise _Corrupt("_rebuild_tensor_v3 got no storage")
    return _TensorRef(storage, storage_offset, size, stride, dtype.name)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if not isinstance(data, _TensorRef):
        raise _Corrupt("_rebuild_parameter got no tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_REBUILD_FUNCTIONS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter,
                      _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func, new_type, args, state):
    # torch uses this for tensors with extra Python attributes; the attributes (state) are dropped.
    if (not isinstance(func, _Callable) or func.fn not in _REBUILD_FUNCTIONS
            or not isinstance(new_type, _TypeMarker)):
        raise _Corrupt("_rebuild_from_type_v2 with an unexpected function or type")
    if not isinstance(args, tuple):
        raise _Corrupt("_rebuild_from_type_v2 args are not a tuple")
    return func.fn(*args)


def _torch_size(*args):
    return tuple(*args)


def _codecs_encode(text, encoding="utf-8"):
    # Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1'); allow only that use.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Corrupt("_codecs.encode used for something other than bytes")
    return codecs.encode(text, "latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        # A C type: BUILD cannot set attributes on it, so it needs no wrapper.
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _Callable(_rebuild_tensor),
        ("torch._utils", "_rebuild_tensor_v2"): _Callable(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_tensor_v3"): _Callable(_rebuild_tensor_v3),
        ("torch._utils", "_rebuild_parameter"): _Callable(_rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"): _Callable(_rebuild_parameter_with_state),
        ("torch._tensor", "_rebuild_from_type_v2"): _Callable(_rebuild_from_type_v2),
        ("torch", "Tensor"): _TypeMarker("Tensor"),
        ("torch._tensor", "Tensor"): _TypeMarker("Tensor"),
        ("torch.nn.parameter", "Parameter"): _TypeMarker("Parameter"),
        ("torch", "Size"): _Callable(_torch_size),
        ("_codecs", "encode"): _Callable(_codecs_encode),
        ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", "uint8"),
        ("torch", "UntypedStorage"): _StorageType("UntypedStorage", "uint8"),
    }
    for name, dtype in _STORAGE_DTYPES.items():
        # Legacy files saved from a GPU may name torch.cuda.FloatStorage; the bytes are the same.
        for module in ("torch", "torch.cuda"):
            allowed[(module, name)] = _StorageType(name, dtype)
    for alias, dtype in _TORCH_DTYPE_ALIASES.items():
        allowed[("torch", alias)] = _DType(dtype)
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only allowlisted globals and never imports anything.

    Every way a pickle can reach a callable (GLOBAL, STACK_GLOBAL, INST, OBJ, EXT*) goes through
    ``find_class``; REDUCE/NEWOBJ/BUILD can only call what ``find_class`` returned, so the
    allowlist is the whole attack surface.
    """

    def __init__(self, file, filename: str, persistent_load: Callable[[Any], Any] | None = None):
        # torch.load uses encoding='utf-8' so Python-2 era str pickles decode to str.
        super().__init__(file, encoding="utf-8")
        self._filename = filename
        self._persistent = persistent_load

    def find_class(self, module, name):
        obj = _ALLOWED.get((module, name))
        if obj is not None:
            return obj
        if module == "torch" and isinstance(name, str) and name.startswith(("float8", "float4")):
            raise CheckpointError(
                f"{self._filename} holds torch.{str(name)[:100]} tensors, which numpy cannot represent; "
                "cast them to float16/float32 in torch and re-save"
            )
        hint = ""
        if isinstance(module, str) and module.startswith("torch"):
            hint = (" If this file is a whole pickled model rather than a state dict, load it in "
                    "torch and save model.state_dict() instead.")
        raise UnsafeCheckpointError(
            f"{self._filename} asks to call {str(module)[:100]}.{str(name)[:100]}; refusing to load it "
            f"(a checkpoint should hold only tensors).{hint}"
        )

    def persistent_load(self, pid):
        if self._persistent is None:
            raise _Corrupt("unexpected persistent id outside the object pickle")
        return self._persistent(pid)


class _Capped:
    """A file whose ``read(n)`` never asks for more than the file still holds: a pickle's
    declared length reaches ``read`` as is, and a buffered file allocates ``n`` bytes first."""

    def __init__(self, fh):
        self._fh = fh
        self._size = os.fstat(fh.fileno()).st_size

    def read(self, n=-1):
        left = max(0, self._size - self._fh.tell())
        return self._fh.read(left if n is None or n < 0 or n > left else n)

    def readline(self, limit=-1):
        return self._fh.readline(limit)

    def tell(self):
        return self._fh.tell()

    def seek(self, pos, whence=0):
        return self._fh.seek(pos, whence)

    def fileno(self):
        return self._fh.fileno()


def _prescan(stream):
    """Walk the pickle's opcodes (no object is built) and rewind: a length field that reaches
    past the data fails here, before the C unpickler allocates that many bytes for it."""
    start = stream.tell()
    try:
        for _ in pickletools.genops(stream):
            pass
    except (ValueError, EOFError) as exc:  # pickletools' words for malformed / truncated
        raise _Corrupt(f"malformed pickle ({str(exc)[:120]})") from None
    stream.seek(start)
    return stream


def _ascii(value) -> str:
    # Python-2 era files may hold bytes where newer ones hold str (torch: _maybe_decode_ascii).
    return value.decode("ascii") if isinstance(value, bytes) else value


# --------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------


class TorchBinReader:
    """Lazy reader over one ``pytorch_model.bin``: the pickle is parsed on open, data is read per tensor.

    ``keys()``, ``shape(name)`` and ``dtype(name)`` never read tensor data; ``get(name)`` reads one
    tensor's storage.  ``layout`` is ``'zip'`` or ``'legacy'``.  ``unwrapped_from`` is the key
    (``'state_dict'``, ``'model'`` or ``'module'``) the state dict was found under, or None.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.layout: str = ""
        self.sys_info: dict | None = None  # legacy layout only: the writer's sys info pickle
        self.unwrapped_from: str | None = None
        self._zip: zipfile.ZipFile | None = None
        self._fh: io.BufferedReader | None = None
        self._prefix = ""
        self._big_endian = False
        # legacy: storage key -> (file offset of its bytes, byte count)
        self._legacy_offsets: dict[str, tuple[int, int]] = {}
        self._cache: tuple[str, bytearray] | None = None  # last shared storage read
        try:
            self._fh = open(self.path, "rb")
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: no such file") from None
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot read it ({exc})") from None
        try:
            head = self._fh.read(4)
            self._fh.seek(0)
            if head.startswith(b"PK\x03\x04"):
                obj = self._open_zip()
            else:
                obj = self._open_legacy()
            self._tensors, self.unwrapped_from = self._pick_state_dict(obj)
        except BaseException as exc:
            self.close()
            if isinstance(exc, KerasformerError) or not isinstance(exc, Exception):
                raise
            if isinstance(exc, _Hostile):
                raise UnsafeCheckpointError(
                    f"{self.path} asks to {exc}; refusing to load it (a checkpoint should hold "
                    "only tensors)") from None
            raise _wrap_corrupt(self.path, exc) from exc
        # How many names use each storage: a storage used once can be handed out without a copy.
        self._users = collections.Counter(t.storage.key for t in self._tensors.values())

    # ---- opening ---------------------------------------------------------------------

    def _open_zip(self):
        self.layout = "zip"
        self._zip = zipfile.ZipFile(self._fh)
        names = self._zip.namelist()
        pickles = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
        if len(pickles) != 1:
            if any(n.endswith("constants.pkl") for n in names):
                raise CheckpointError(
                    f"{self.path} is a TorchScript archive (torch.jit.save), not a state dict"
                )
            raise _Corrupt(f"expected one <top>/data.pkl record, found {len(pickles)}")
        self._prefix = pickles[0][: -len("data.pkl")]
        byteorder = self._prefix + "byteorder"
        if byteorder in names:
            order = self._zip.read(byteorder).strip()
            if order not in (b"little", b"big"):
                raise _Corrupt(f"unknown byteorder record {brief(order)}")
            self._big_endian = order == b"big"
        storages: dict[str, _StorageRef] = {}
        archive_size = os.fstat(self._fh.fileno()).st_size

        def persistent_load(pid):
            if not isinstance(pid, tuple) or len(pid) != 5 or _ascii(pid[0]) != "storage":
                raise _Corrupt(f"unexpected persistent id {brief(pid)}")
            _, storage_type, key, _location, numel = pid
            key = _ascii(key)
            if key in storages:
                return storages[key]
            if not isinstance(storage_type, _StorageType):
                raise _Corrupt("persistent id without a storage type")
            if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
                raise _Corrupt(f"bad storage id {brief(pid)}")
            nbytes = numel * np.dtype(_DTYPES[storage_type.dtype][0]).itemsize
            try:
                info = self._zip.getinfo(f"{self._prefix}data/{key}")
            except KeyError:
                raise _Corrupt(f"storage record data/{brief(key)} is missing") from None
            _check_record_size(info, archive_size)
            if info.file_size < nbytes:
                raise _Corrupt(f"storage record data/{brief(key)} holds {info.file_size} bytes, "
                               f"needs {nbytes}")
            storages[key] = _StorageRef(key, storage_type.dtype, nbytes)
            return storages[key]

        _check_record_size(self._zip.getinfo(pickles[0]), archive_size)
        data = io.BytesIO(self._zip.read(pickles[0]))
        _prescan(data)
        return _RestrictedUnpickler(data, self.path, persistent_load).load()

    def _open_legacy(self):
        self.layout = "legacy"
        fh = _Capped(self._fh)
        if fh.read(1) != b"\x80":
            fh.seek(0)
            import tarfile

            if tarfile.is_tarfile(self._fh):
                raise CheckpointError(
                    f"{self.path} uses the tar layout of torch < 0.4, which kerasformer does not "
                    "read; re-save it with a newer torch"
                )
            if os.fstat(fh.fileno()).st_size == 0:
                raise CheckpointError(f"{self.path} is empty: truncated or corrupt")
            raise CheckpointError(
                f"{self.path} is not a PyTorch checkpoint (it starts neither like a zip archive "
                "nor like a pickle): truncated or corrupt, or another format")
        fh.seek(0)
        magic = _RestrictedUnpickler(_prescan(fh), self.path).load()
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(
                f"{self.path} is a pickle but not a PyTorch checkpoint (no torch magic number)"
            )
        protocol = _RestrictedUnpickler(_prescan(fh), self.path).load()
        if protocol != _LEGACY_PROTOCOL:
            raise _Corrupt(f"unknown legacy protocol version {brief(protocol)}")
        # sys info records the writer's byte order.  torch wrote the storage *data* little-endian
        # on every machine (writeFileRaw byte-swaps on big-endian hosts), so it does not change
        # how data is read; only the 8-byte element counts were native-order in old versions,
        # which the storage walk below allows for.
        self.sys_info = _RestrictedUnpickler(_prescan(fh), self.path).load()

        roots: dict[str, _StorageRef] = {}  # storage key -> the whole stored storage
        views: dict[str, _StorageRef] = {}

        def persistent_load(pid):
            if not isinstance(pid, tuple) or not pid or _ascii(pid[0]) != "storage" or len(pid) != 6:
                if isinstance(pid, tuple) and pid and _ascii(pid[0]) == "module":
                    raise UnsafeCheckpointError(
                        f"{self.path} holds a whole pickled module (with its source code), not a "
                        "state dict; refusing to load it (a checkpoint should hold only tensors)"
                    )
                raise _Corrupt(f"unexpected persistent id {brief(pid)}")
            _, storage_type, root_key, _location, numel, view_metadata = pid
            root_key = _ascii(root_key)
            if not isinstance(storage_type, _StorageType) or not isinstance(root_key, str):
                raise _Corrupt(f"bad storage id {brief(pid)}")
            itemsize = np.dtype(_DTYPES[storage_type.dtype][0]).itemsize
            if root_key not in roots:
                if not isinstance(numel, int) or numel < 0:
                    raise _Corrupt(f"bad storage size {brief(numel)}")
                roots[root_key] = _StorageRef(root_key, storage_type.dtype, numel * itemsize)
            root = roots[root_key]
            if view_metadata is None:
                return root
            # A view of part of a storage (old torch versions): same bytes, shifted window.
            view_key, offset, view_size = view_metadata
            view_key = _ascii(view_key)
            if view_key not in views:
                if not all(isinstance(v, int) and v >= 0 for v in (offset, view_size)):
                    raise _Corrupt(f"bad storage view {brief(view_metadata)}")
                if (offset + view_size) * itemsize > root.nbytes:
                    raise _Corrupt("a storage view reaches past its storage")
                views[view_key] = _StorageRef(root_key, root.dtype, view_size * itemsize,
                                              offset * itemsize)
            return views[view_key]

        obj = _RestrictedUnpickler(_prescan(fh), self.path, persistent_load).load()
        keys = _RestrictedUnpickler(_prescan(fh), self.path).load()
        if not isinstance(keys, list):
            raise _Corrupt("the storage key list is missing")
        # Walk the storages (count + bytes each) to learn where each one's bytes start.
        file_size = os.fstat(fh.fileno()).st_size
        pos = fh.tell()
        for key in keys:
            key = _ascii(key)
            if key not in roots:
                raise _Corrupt(f"storage {brief(key)} is listed but never used")
            fh.seek(pos)
            raw = fh.read(8)
            if len(raw) != 8:
                raise _Corrupt("file ends inside the storage data")
            itemsize = np.dtype(_DTYPES[roots[key].dtype][0]).itemsize
            expected = roots[key].nbytes // itemsize
            # Little-endian count (what torch writes now), or native big-endian (old torch on a
            # big-endian host); either way it must agree with the pickle.
            if expected not in struct.unpack("<q", raw) + struct.unpack(">q", raw):
                raise _Corrupt(f"storage {brief(key)} holds {struct.unpack('<q', raw)[0]} elements, "
                               f"the pickle says {expected}")
            self._legacy_offsets[key] = (pos + 8, roots[key].nbytes)
            pos += 8 + roots[key].nbytes
            if pos > file_size:
                raise _Corrupt("file ends inside the storage data")
        missing = set(roots) - set(self._legacy_offsets)
        if missing:
            raise _Corrupt(f"storages {brief(sorted(missing))} have no data")
        return obj

    def _pick_state_dict(self, obj) -> tuple[dict[str, _TensorRef], str | None]:
        def tensors_only(d):
            return isinstance(d, dict) and all(
                isinstance(k, str) and isinstance(v, _TensorRef) for k, v in d.items()
            )

        if tensors_only(obj):
            return dict(obj), None
        if isinstance(obj, dict):
            found = [k for k in _WRAPPER_KEYS if k in obj and tensors_only(obj[k])]
            if len(found) == 1:
                return dict(obj[found[0]]), found[0]
            keys = brief(list(itertools.islice(obj, 5)), 200)
            raise CheckpointError(
                f"{self.path} holds a dict that is not a state dict of tensors (top-level keys: "
                f"{keys}); expected name -> tensor, or one such dict under "
                f"{' / '.join(_WRAPPER_KEYS)}"
            )
        raise CheckpointError(
            f"{self.path} holds a {type(obj).__name__}, not a state dict (name -> tensor)"
        )

    # ---- access ----------------------------------------------------------------------

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name) -> bool:
        return name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._tensors[name].shape

    def torch_dtype(self, name: str) -> str:
        """The dtype as torch names it (``'bfloat16'``, ``'float32'``, ...)."""
        return self._tensors[name].dtype

    def dtype(self, name: str) -> np.dtype:
        """The numpy dtype ``get(name)`` returns (float32 for bfloat16)."""
        return np.dtype(_DTYPES[self._tensors[name].dtype][1])

    def get(self, name: str) -> np.ndarray:
        ref = self._tensors[name]  # KeyError for unknown names, like a dict
        key = ref.storage.key
        shared = self._users[key] > 1
        try:
            if shared and self._cache is not None and self._cache[0] == key:
                buf = self._cache[1]
            else:
                buf = self._read_storage(ref.storage)
                if shared:
                    self._cache = (key, buf)
            return _materialize(ref, buf, self._big_endian, exclusive=not shared)
        except KerasformerError:
            raise
        except Exception as exc:
            raise _wrap_corrupt(self.path, exc) from exc

    def _read_storage(self, storage: _StorageRef) -> bytearray:
        """All bytes of the stored storage ``storage.key`` (views index into it via ``base``)."""
        if self._zip is not None:
            name = f"{self._prefix}data/{storage.key}"
            # Only the bytes the pickle's storage spans (checked against the record and the
            # archive when the pickle was read), not what the record header claims.
            size = storage.nbytes
            buf = bytearray(size)
            view = memoryview(buf)
            # Read in chunks into one buffer (no second full-size copy) and to EOF, so that
            # zipfile checks the CRC and a damaged record is reported rather than returned.
            with self._zip.open(name) as src:
                done = 0
                while done < size:
                    chunk = src.read(min(1 << 24, size - done))
                    if not chunk:
                        raise _Corrupt(f"record {name} ends early")
                    view[done: done + len(chunk)] = chunk
                    done += len(chunk)
                while src.read(1 << 24):  # the rest (if any) is read only for the CRC check
                    pass
            return buf
        assert self._fh is not None, "reader is closed"
        # Legacy: read the whole root storage; views of it index in via ``storage.base``.
        offset, nbytes = self._legacy_offsets[storage.key]
        buf = bytearray(nbytes)
        self._fh.seek(offset)
        if self._fh.readinto(buf) != nbytes:
            raise _Corrupt("file ends inside the storage data")
        return buf

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._cache = None

    def __enter__(self) -> "TorchBinReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# deflate cannot expand data more than ~1032:1; a record claiming more is lying
_MAX_DEFLATE_RATIO = 1032


def _check_record_size(info: zipfile.ZipInfo, archive_size: int) -> None:
    """Refuse a zip record whose declared sizes the archive cannot hold, before allocating."""
    stored = info.compress_type == zipfile.ZIP_STORED
    if (info.header_offset + info.compress_size > archive_size
            or (stored and info.file_size != info.compress_size)
            or info.file_size > info.compress_size * _MAX_DEFLATE_RATIO + 1024):
        raise _Corrupt(f"record {brief(info.filename)} claims {info.file_size} bytes "
                       f"({info.compress_size} stored) in an archive of {archive_size} bytes")


def _wrap_corrupt(path: str, exc: BaseException) -> CheckpointError:
    detail = (str(exc) or type(exc).__name__)[:300]
    return CheckpointError(f"{path} is truncated or corrupt ({detail})")


def _materialize(ref: _TensorRef, buf: bytearray, big_endian: bool, exclusive: bool) -> np.ndarray:
    """Build the numpy array torch would build from (storage bytes, offset, size, stride).

    A tensor whose strides overlap (``expand``: stride 0) has more elements than bytes behind
    them; copying it out would turn a tiny file into gigabytes, so it comes back as a read-only
    strided view of its own bytes, as torch keeps it.  Everything else is a fresh array.
    """
    raw_code, out_code = _DTYPES[ref.dtype]
    raw = np.dtype(raw_code).newbyteorder(">" if big_endian else "<")
    itemsize = raw.itemsize
    start = ref.storage.base + ref.offset * itemsize
    numel = math.prod(ref.shape)
    if numel == 0:
        return np.empty(ref.shape, dtype=out_code)
    if _is_c_contiguous(ref.shape, ref.stride):
        arr = np.frombuffer(buf, dtype=raw, count=numel, offset=start).reshape(ref.shape)
        # A fresh buffer read for this tensor alone and covered exactly can be handed out as is;
        # otherwise copy, so the result neither aliases another tensor nor pins a bigger buffer.
        if not (exclusive and start == 0 and numel * itemsize == len(buf)):
            arr = arr.copy()
        return _to_user_dtype(arr, ref.dtype, out_code)
    span = 1 + sum((d - 1) * st for d, st in zip(ref.shape, ref.stride))  # elements it reaches
    # the elements it reaches, converted once (a copy: it must not pin or alias `buf`)
    flat = _to_user_dtype(np.frombuffer(buf, dtype=raw, count=span, offset=start).copy(),
                          ref.dtype, out_code)
    arr = np.lib.stride_tricks.as_strided(
        flat, shape=ref.shape, strides=[st * flat.itemsize for st in ref.stride], writeable=False)
    return arr if span < numel else arr.copy()  # bounds were checked when the tensor was parsed


def _to_user_dtype(arr: np.ndarray, torch_dtype: str, out_code: str) -> np.ndarray:
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if torch_dtype == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if arr.dtype != np.dtype(out_code):
        return arr.astype(out_code)
    return arr


def _is_c_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for d, s in zip(reversed(shape), reversed(stride)):
        if d != 1 and s != expected:  # the stride of a size-1 dimension never matters
            return False
        expected *= d
    return True


def load_torch_bin(path) -> dict[str, np.ndarray]:
    """Read a PyTorch ``.bin`` / ``.pt`` state dict into ``{name: numpy array}`` without torch.

    Works for the zip layout (torch >= 1.6) and the legacy layout (torch < 1.6).  The pickle is
    unpickled with an allowlist; a file that asks to call anything else raises
    ``UnsafeCheckpointError`` before anything is called.

    * The top-level object must be a dict of tensors.  If instead it is a dict holding exactly one
      dict of tensors under ``'state_dict'``, ``'model'`` or ``'module'`` (a training script's
      wrapper, e.g. ``{'model': ..., 'epoch': 3}``), that inner dict is returned.  Nested dicts
      are not flattened.
    * No two arrays share memory (views and shared storages are copied apart).  A tensor whose
      strides overlap (``expand``, stride 0) comes back as a read-only strided view of its own
      few bytes, as torch keeps it, not materialised.
    * bfloat16 tensors are returned as float32 (exact; numpy has no bfloat16).
    * Truncated or corrupt files raise ``CheckpointError`` naming the file.
    """
    with TorchBinReader(path) as reader:
        return {name: reader.get(name) for name in reader.keys()}


# --------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------

# numpy dtype name -> the torch storage class torch.load expects for it.
_NUMPY_TO_STORAGE = {
    "float32": "FloatStorage",
    "float64": "DoubleStorage",
    "float16": "HalfStorage",
    "bfloat16": "BFloat16Storage",  # ml_dtypes.bfloat16 arrays, as jax hands them out
    "int64": "LongStorage",
    "int32": "IntStorage",
    "int16": "ShortStorage",
    "int8": "CharStorage",
    "uint8": "ByteStorage",
    "bool": "BoolStorage",
    "complex64": "ComplexFloatStorage",
    "complex128": "ComplexDoubleStorage",
}

_ALIGNMENT = 64  # torch aligns storage data to 64 bytes so it can be mmap-ed in place


class _PickleWriter:
    """Emits the few protocol-2 opcodes a state-dict pickle needs (torch is not imported, so the
    stdlib Pickler cannot name torch's globals)."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2, as torch.save writes

    def global_(self, module: str, name: str) -> None:
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def str_(self, s: str) -> None:
        data = s.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(data)) + data

    def int_(self, v: int) -> None:
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])
        elif 0 <= v < 65536:
            self.out += b"M" + struct.pack("<H", v)
        elif -(2**31) <= v < 2**31:
            self.out += b"J" + struct.pack("<i", v)
        else:
            data = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(data)]) + data

    def int_tuple(self, values) -> None:
        self.out += b"("
        for v in values:
            self.int_(int(v))
        self.out += b"t"

    def empty_ordered_dict(self) -> None:
        self.global_("collections", "OrderedDict")
        self.out += b")R"  # EMPTY_TUPLE, REDUCE


def _little_endian_contiguous(arr: np.ndarray) -> np.ndarray:
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (np.ascontiguousarray would turn 0-d arrays into 1-d)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


@contextlib.contextmanager
def atomic_write(path, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` in one step.

    A crash or exception leaves any existing ``path`` untouched and removes the temporary file;
    a process killed mid-write leaves its temporary file behind, and the next save of the same
    ``path`` removes it (temporary names carry the writer's pid, so a live writer's file is
    kept).  The result has mode 0o666 minus the umask, like a plain ``open(path, 'w')``,
    whatever mode the writing library chose.  ``suffix`` ends the temporary name, for writers
    that insist on an extension (Keras: ``.keras``, ``.weights.h5``).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    _remove_stale_temps(directory, base)
    tmp = os.path.join(directory, f".{base}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{suffix}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    mode = os.fstat(fd).st_mode & 0o777  # 0o666 minus the umask, without touching the umask
    os.close(fd)
    try:
        yield tmp
        if os.stat(tmp).st_mode & 0o777 != mode:
            os.chmod(tmp, mode)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _remove_stale_temps(directory: str, base: str) -> None:
    """Remove temporary files of earlier writes of ``base`` whose writer process is gone."""
    prefix = f".{base}."
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        pid, dash, rest = name[len(prefix):].partition("-")
        if not (dash and pid.isdigit() and rest[12:16] == ".tmp") or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.remove(os.path.join(directory, name))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of ours may be writing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process: leave its file alone
    return True


def save_torch_bin(path, tensors: dict[str, np.ndarray]) -> None:
    """Write ``{name: array}`` as a zip-layout ``pytorch_model.bin`` without importing torch.

    ``torch.load(path, weights_only=True)`` returns an ``OrderedDict`` of CPU tensors with the same
    names, shapes, dtypes and values.  Arrays are stored contiguous and little-endian, each in its
    own storage, data aligned to 64 bytes as torch does.  ml_dtypes ``bfloat16`` arrays are
    stored as torch.bfloat16.  The file is written to a temporary name and moved into place.
    """
    entries = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise KerasformerError(f"tensor names must be str, got {name!r}")
        arr = np.asarray(value)
        storage = _NUMPY_TO_STORAGE.get(arr.dtype.name)
        if storage is None:
            raise KerasformerError(
                f"tensor {name!r} has dtype {arr.dtype}, which save_torch_bin does not write; "
                f"supported: {', '.join(_NUMPY_TO_STORAGE)}"
            )
        entries.append((name, storage, _little_endian_contiguous(arr)))

    pk = _PickleWriter()
    pk.empty_ordered_dict()
    if entries:
        pk.out += b"("  # MARK for SETITEMS
        for key, (name, storage, arr) in enumerate(entries):
            pk.str_(name)
            pk.global_("torch._utils", "_rebuild_tensor_v2")
            pk.out += b"("  # MARK: args of _rebuild_tensor_v2
            pk.out += b"("  # MARK: persistent id ('storage', type, key, location, numel)
            pk.str_("storage")
            pk.global_("torch", storage)
            pk.str_(str(key))
            pk.str_("cpu")
            pk.int_(arr.size)
            pk.out += b"tQ"  # TUPLE, BINPERSID
            pk.int_(0)  # storage offset
            pk.int_tuple(arr.shape)
            pk.int_tuple(_c_strides(arr.shape))
            pk.out += b"\x89"  # requires_grad=False
            pk.empty_ordered_dict()  # backward hooks
            pk.out += b"tR"  # TUPLE, REDUCE
        pk.out += b"u"  # SETITEMS
    pk.out += b"."  # STOP

    top = "archive"
    with atomic_write(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            _write_record(zf, f"{top}/data.pkl", bytes(pk.out))
            _write_record(zf, f"{top}/byteorder", b"little")
            for key, (_, _, arr) in enumerate(entries):
                data = memoryview(arr.reshape(-1).view(np.uint8))
                _write_record(zf, f"{top}/data/{key}", data, align=True)
            # No '.format_version' record: with it torch may compute storage offsets assuming
            # its own writer's layout (data descriptors), which zipfile does not produce.
            _write_record(zf, f"{top}/version", b"3\n")


def _c_strides(shape) -> list[int]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return strides[::-1]


def _write_record(zf: zipfile.ZipFile, name: str, data, align: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    if align:
        nbytes = len(data)
        # zipfile adds a 20-byte zip64 extra to the local header for records it deems large
        # (same rule as ZipFile._open_to_write); the data starts right after that header.
        zip64 = nbytes * 1.05 > zipfile.ZIP64_LIMIT
        header = 30 + len(name.encode("utf-8")) + (20 if zip64 else 0) + 4
        pad = -(zf.start_dir + header) % _ALIGNMENT
        # Padding goes in an extra field with torch's id 'FB' (0x4246); readers skip unknown ids.
        info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
    zf.writestr(info, data)
