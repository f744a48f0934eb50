"""The compiled kernels of `_native.c` (radix sort, grouping, merging, the cut), via ctypes.

`pip install -e .` / `pip install .` builds them (setup.py; optional: an install without a C
compiler still succeeds). Without them every caller falls back to the numpy versions in
counting.py: the same results, about 2x slower. `AVAILABLE` says which path runs;
KERASFORMER_NO_NATIVE=1 forces numpy (the tests compare both).
"""
import ctypes
import importlib.util
import os

import numpy as np

_P = ctypes.c_void_p
_I64 = ctypes.c_int64


def _load():
    if os.environ.get("KERASFORMER_NO_NATIVE"):
        return None
    spec = importlib.util.find_spec("kerasformer.words._native")
    if spec is None or not spec.origin or not spec.origin.endswith((".so", ".pyd", ".dylib")):
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    lib.kf_sort.argtypes = [_P, _P, _I64, ctypes.c_int]
    lib.kf_sort.restype = ctypes.c_int
    lib.kf_group.argtypes = [_P, _I64, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, _P, _P, _P]
    lib.kf_group.restype = None
    lib.kf_merge.argtypes = [_P, _P, _I64, _P, _P, _I64, _P, _P]
    lib.kf_merge.restype = _I64
    lib.kf_slices.argtypes = [_P, _P, _I64, _P]
    lib.kf_slices.restype = _I64
    lib.kf_bincount.argtypes = [_P, _I64, _P]
    lib.kf_bincount.restype = None
    lib.kf_start_keys.argtypes = [_P, _I64, ctypes.c_int, ctypes.c_int, _P]
    lib.kf_start_keys.restype = _I64
    lib.kf_pieces.argtypes = [_P, _I64, ctypes.c_int, ctypes.c_int, _P, _P, _P, _P, _P]
    lib.kf_pieces.restype = _I64
    return lib


_LIB = _load()
AVAILABLE = _LIB is not None


def _ptr(a):
    return a.ctypes.data


def sort(keys, key_bits, copy=True):
    """uint64 `keys` (all below 2^key_bits) sorted: a sorted copy, or (copy=False, a
    contiguous uint64 array) sorted in place."""
    out = np.ascontiguousarray(keys, np.uint64)
    if copy or out is not keys:
        out = out.copy()
    tmp = np.empty_like(out)  # held here: a temporary's memory would be freed before the call
    if _LIB.kf_sort(_ptr(out), _ptr(tmp), len(out), int(key_bits)):
        raise MemoryError("radix sort: out of memory")
    return out


def group(sorted_keys, bits, order, first=1, whole=False):
    """`counting.group_prefixes` of sorted keys: [(keys, counts) for n in first..order]."""
    s = np.ascontiguousarray(sorted_keys, np.uint64)
    sizes = np.zeros(order - first + 1, np.int64)
    _LIB.kf_group(_ptr(s), len(s), bits, order, first, int(whole), _ptr(sizes), None, None)
    keys = [np.empty(k, np.uint64) for k in sizes.tolist()]
    counts = [np.empty(k, np.int64) for k in sizes.tolist()]
    key_ptrs = (ctypes.c_void_p * len(keys))(*[_ptr(k) for k in keys])
    count_ptrs = (ctypes.c_void_p * len(keys))(*[_ptr(c) for c in counts])
    _LIB.kf_group(_ptr(s), len(s), bits, order, first, int(whole), _ptr(sizes),
                  ctypes.cast(key_ptrs, _P), ctypes.cast(count_ptrs, _P))
    return list(zip(keys, counts))


def merge_two(a, b):
    """`counting._merge_two`: two (sorted unique keys, counts) summed into one."""
    ak, ac = np.ascontiguousarray(a[0], np.uint64), np.ascontiguousarray(a[1], np.int64)
    bk, bc = np.ascontiguousarray(b[0], np.uint64), np.ascontiguousarray(b[1], np.int64)
    keys = np.empty(len(ak) + len(bk), np.uint64)
    counts = np.empty(len(keys), np.int64)
    size = _LIB.kf_merge(_ptr(ak), _ptr(ac), len(ak), _ptr(bk), _ptr(bc), len(bk), _ptr(keys), _ptr(counts))
    return keys[:size], counts[:size]


def slices(codes, bounds):
    """The uint32 array of codes[s:e] for each (s, e) row of `bounds`, each followed by 10."""
    codes = np.ascontiguousarray(codes, np.uint32)
    bounds = np.ascontiguousarray(bounds, np.int64)
    out = np.empty(int((bounds[:, 1] - bounds[:, 0]).sum()) + len(bounds), np.uint32)
    _LIB.kf_slices(_ptr(codes), _ptr(bounds), len(bounds), _ptr(out))
    return out


def bincount(ids, minlength):
    """np.bincount of uint32 `ids` (without its cast of every id to int64 first)."""
    ids = np.ascontiguousarray(ids, np.uint32)
    out = np.zeros(max(int(ids.max()) + 1 if len(ids) else 0, minlength), np.int64)
    _LIB.kf_bincount(_ptr(ids), len(ids), _ptr(out))
    return out


def start_keys(ids, bits, order):
    """`counting.start_keys(ids, bits, order)[0]` of the positions whose `ahead` is >= 2."""
    ids = np.ascontiguousarray(ids, np.uint32)
    out = np.empty(len(ids), np.uint64)
    return out[:_LIB.kf_start_keys(_ptr(ids), len(ids), bits, order, _ptr(out))]


def pieces(ids, bits, order, sets):
    """(short piece keys, long piece (start, end) rows) of a chunk: `discovery.piece_bounds`
    and the packing of the pieces of <= order characters. `sets[n - 1]`: the `KeySet` of the
    solid n-grams (sets[0] unused)."""
    ids = np.ascontiguousarray(ids, np.uint32)
    tables = [None, None] + [s.bitmap if s.dense else s.table for s in sets[1:]]
    table_ptrs = (ctypes.c_void_p * (order + 1))(*[None if t is None else _ptr(t) for t in tables])
    hash_bits = np.array([0, 0] + [0 if s.dense else s.hash_bits for s in sets[1:]], np.int32)
    short = np.empty(len(ids), np.uint64)
    long_ = np.empty((len(ids), 2), np.int64)
    n_long = np.zeros(1, np.int64)
    n_short = _LIB.kf_pieces(_ptr(ids), len(ids), bits, order, ctypes.cast(table_ptrs, _P), _ptr(hash_bits),
                             _ptr(short), _ptr(long_), _ptr(n_long))
    return short[:n_short], long_[:n_long[0]]
