"""Read and write TensorFlow checkpoints (the V2 "tensor bundle" format) without TensorFlow.

A checkpoint with prefix ``P`` (Google's BERT calls it ``.../bert_model.ckpt``) is

* ``P.index`` -- a LevelDB-style sorted string table (SSTable).  The empty key ``""`` holds a
  ``BundleHeaderProto`` (number of data shards, endianness, format version); every other key is a
  variable name whose value is a ``BundleEntryProto`` (dtype, shape, shard id, offset, size,
  crc32c, and for partitioned variables a list of slices).
* ``P.data-00000-of-0000N`` ... -- the raw tensor bytes, concatenated, one file per shard.

Everything here is numpy plus the standard library: the SSTable, the few protobuf messages, the
masked crc32c and snappy are all implemented below, so no ``tensorflow`` or ``protobuf`` import is
needed.  The format facts come from TensorFlow's ``tensor_bundle.cc``, ``lib/io/format.cc``,
``lib/io/block_builder.cc``, ``lib/strings/ordered_code.cc`` and the ``.proto`` files.

Public API::

    TFCheckpointReader(prefix)      # .keys() .shape(n) .dtype(n) .get(n) .close(), context manager
    read_tf_checkpoint(prefix)      # -> {name: ndarray}
    write_tf_checkpoint(prefix, d)  # single shard, atomic, readable by tf.train.load_checkpoint
    is_tf_checkpoint(path)

Returned dtypes: every stored dtype comes back as the matching numpy dtype, except ``bfloat16``
(numpy has none), which is widened *exactly* to ``float32``, and ``string``, which comes back as a
numpy object array of ``bytes``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import struct

import numpy as np

from kerasformer.errors import CheckpointError, KerasformerError, brief

__all__ = [
    "TFCheckpointReader",
    "read_tf_checkpoint",
    "write_tf_checkpoint",
    "is_tf_checkpoint",
    "crc32c",
    "snappy_decompress",
]

# ----------------------------------------------------------------------------------------------
# crc32c (Castagnoli polynomial, reflected), as used by TF for tensor data and SSTable blocks.
# ----------------------------------------------------------------------------------------------

_CRC_POLY = 0x82F63B78  # reflected form of 0x1EDC6F41
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def _make_byte_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _CRC_POLY if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_byte_table()

# Below this many bytes the plain byte-at-a-time Python loop is faster than setting up numpy.
_NUMPY_CRC_MIN_BYTES = 2048
_NUMPY_CRC_PIECE = 1 << 20


def _crc32c_update_py(crc: int, data) -> int:
    """Standard table-driven crc32c update (pre/post inverted), one byte per step."""
    table = _CRC_TABLE
    crc ^= _U32
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


# --- Fast path --------------------------------------------------------------------------------
# A CRC is a linear map over GF(2), which lets numpy do the work in parallel:
#   1. cut the message into K equal "lanes" (zero bytes are prepended so it divides evenly: with
#      a zero register, leading zeros do not change a CRC);
#   2. run the CRC of all K lanes side by side, 4 bytes per step: with a 32-bit reflected CRC,
#      feeding 4 data bytes w to register r gives Z4(r ^ w), where Z4 = "advance over 4 zero
#      bytes" is linear, so it is two lookups in 65536-entry tables (low / high 16 bits);
#   3. merge neighbouring lanes pairwise: crc(A || B) = Zn(crc(A)) ^ crc(B) with n = len(B).
# Linear operators are kept as their 32 column images (the image of each input bit).

_IDENTITY_OP = tuple(1 << k for k in range(32))


def _op_apply(cols, x: int) -> int:
    r = 0
    k = 0
    while x:
        if x & 1:
            r ^= cols[k]
        x >>= 1
        k += 1
    return r


def _op_compose(a, b):
    """The operator "b, then a"."""
    return tuple(_op_apply(a, c) for c in b)


_ZERO_BYTE_OP = tuple(_CRC_TABLE[(1 << k) & 0xFF] ^ ((1 << k) >> 8) for k in range(32))
_ZERO_POW2_OPS = [_ZERO_BYTE_OP]  # _ZERO_POW2_OPS[i] advances over 2**i zero bytes


@functools.lru_cache(maxsize=64)
def _zeros_op(n: int):
    """Operator that advances a raw CRC register over ``n`` zero bytes."""
    result = _IDENTITY_OP
    i = 0
    while n:
        while len(_ZERO_POW2_OPS) <= i:
            _ZERO_POW2_OPS.append(_op_compose(_ZERO_POW2_OPS[-1], _ZERO_POW2_OPS[-1]))
        if n & 1:
            result = _op_compose(_ZERO_POW2_OPS[i], result)
        n >>= 1
        i += 1
    return result


def _op_tables(cols, chunk_bits: int) -> list[np.ndarray]:
    """Lookup tables applying operator ``cols`` to ``chunk_bits``-bit pieces of a uint32."""
    cols = np.asarray(cols, dtype=np.uint32).reshape(32 // chunk_bits, chunk_bits)
    values = np.arange(1 << chunk_bits, dtype=np.uint32)
    bits = ((values[:, None] >> np.arange(chunk_bits, dtype=np.uint32)) & 1).astype(bool)
    return [
        np.bitwise_xor.reduce(np.where(bits, piece[None, :], np.uint32(0)), axis=1).astype(np.uint32)
        for piece in cols
    ]


@functools.lru_cache(maxsize=1)
def _word_tables():
    return _op_tables(_zeros_op(4), 16)


@functools.lru_cache(maxsize=16)
def _merge_tables(lane_bytes: int, levels: int):
    """Byte tables of the operators Z(lane_bytes * 2**level), level = 0..levels-1."""
    out = []
    op = _zeros_op(lane_bytes)
    for _ in range(levels):
        out.append(_op_tables(op, 8))
        op = _op_compose(op, op)
    return out


def _crc32c_update_np(crc: int, data: np.ndarray) -> int:
    n = data.size
    lanes = 1 << min(12, (n // 64).bit_length() - 1)  # 4096 lanes for big inputs, >=16 words each
    unit = 4 * lanes
    padded = np.zeros(-(-n // unit) * unit, dtype=np.uint8)
    padded[padded.size - n:] = data
    # Fold the incoming register into the first 4 real bytes (the same trick as step 2 above), so
    # the lanes can all start from a zero register.
    head = padded[padded.size - n: padded.size - n + 4]
    head ^= np.frombuffer(struct.pack("<I", crc ^ _U32), dtype=np.uint8)
    words = padded.view("<u4").reshape(lanes, -1)
    lo, hi = _word_tables()
    reg = np.zeros(lanes, dtype=np.uint32)
    x = np.empty(lanes, dtype=np.uint32)
    t = np.empty(lanes, dtype=np.uint32)
    a = np.empty(lanes, dtype=np.uint32)
    b = np.empty(lanes, dtype=np.uint32)
    step = 256  # transpose 256 columns at a time so each step reads contiguous memory
    for j in range(0, words.shape[1], step):
        for column in np.ascontiguousarray(words[:, j: j + step].T):
            np.bitwise_xor(reg, column, out=x)
            np.bitwise_and(x, 0xFFFF, out=t)
            np.take(lo, t, out=a)
            np.right_shift(x, 16, out=t)
            np.take(hi, t, out=b)
            np.bitwise_xor(a, b, out=reg)
    # Merge lanes pairwise; the lane length doubles at each level.
    for t0, t1, t2, t3 in _merge_tables(words.shape[1] * 4, lanes.bit_length() - 1):
        left, right = reg[0::2], reg[1::2]
        reg = (t0[left & 0xFF] ^ t1[(left >> 8) & 0xFF] ^ t2[(left >> 16) & 0xFF]
               ^ t3[left >> 24] ^ right)
    return int(reg[0]) ^ _U32


def _as_byte_array(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def crc32c(data, crc: int = 0) -> int:
    """crc32c of ``data`` (bytes-like or numpy array), continuing from ``crc`` (like TF's Extend)."""
    arr = _as_byte_array(data)
    if arr.size < _NUMPY_CRC_MIN_BYTES:
        return _crc32c_update_py(crc, arr.tobytes())
    # Big inputs go in fixed-size pieces: the working set stays in cache and the lane-merge
    # tables (which depend on the piece size) are built once.
    for start in range(0, arr.size, _NUMPY_CRC_PIECE):
        piece = arr[start: start + _NUMPY_CRC_PIECE]
        if piece.size < _NUMPY_CRC_MIN_BYTES:
            crc = _crc32c_update_py(crc, piece.tobytes())
        else:
            crc = _crc32c_update_np(crc, piece)
    return crc


def _mask_crc(crc: int) -> int:
    # TF/LevelDB store "masked" CRCs so that a CRC of data that itself contains CRCs stays robust.
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def _unmask_crc(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


# ----------------------------------------------------------------------------------------------
# Protobuf wire format: just enough to read and write the bundle messages.
# ----------------------------------------------------------------------------------------------


class _FormatError(CheckpointError):
    """Malformed bytes; the reader re-raises it as a CheckpointError naming the file."""


def _read_varint(buf, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise _FormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _FormatError("varint longer than 10 bytes")


def _signed64(v: int) -> int:
    # int32/int64 fields store negative numbers as 10-byte two's complement varints.
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _iter_fields(buf):
    """Yields (field_number, wire_type, value): int for varint/fixed, bytes for length-delimited."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise _FormatError("truncated fixed64")
            value = int.from_bytes(buf[pos: pos + 8], "little")
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise _FormatError("truncated length-delimited field")
            value = bytes(buf[pos: pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise _FormatError("truncated fixed32")
            value = int.from_bytes(buf[pos: pos + 4], "little")
            pos += 4
        else:
            raise _FormatError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _encode_varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_varint(field: int, v: int) -> bytes:
    # proto3: fields equal to their default (0) are not written, as TF's serializer does.
    return _encode_varint(field << 3) + _encode_varint(v) if v else b""


def _pb_bytes(field: int, payload: bytes) -> bytes:
    return _encode_varint((field << 3) | 2) + _encode_varint(len(payload)) + payload


def _pb_fixed32(field: int, v: int) -> bytes:
    return _encode_varint((field << 3) | 5) + struct.pack("<I", v) if v else b""


# ----------------------------------------------------------------------------------------------
# Snappy (raw block format, as used by LevelDB-style tables).
# ----------------------------------------------------------------------------------------------


def snappy_decompress(data: bytes) -> bytes:
    """Decompress a raw snappy block (varint length, then literal / copy elements)."""
    data = bytes(data)
    expected, pos = _read_varint(data, 0)
    out = bytearray()
    end = len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal; lengths >= 61 keep (len - 1) in the next 1..4 bytes
            length = tag >> 2
            if length >= 60:
                nbytes = length - 59
                if pos + nbytes > end:
                    raise _FormatError("snappy: truncated literal length")
                length = int.from_bytes(data[pos: pos + nbytes], "little")
                pos += nbytes
            length += 1
            if pos + length > end:
                raise _FormatError("snappy: literal runs past the end of the input")
            out += data[pos: pos + length]
            pos += length
            continue
        if kind == 1:  # copy, 11-bit offset, length 4..11
            if pos + 1 > end:
                raise _FormatError("snappy: truncated copy")
            length = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:  # copy with 2- or 4-byte offset, length 1..64
            nbytes = 2 if kind == 2 else 4
            if pos + nbytes > end:
                raise _FormatError("snappy: truncated copy")
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos: pos + nbytes], "little")
            pos += nbytes
        if offset == 0 or offset > len(out):
            raise _FormatError("snappy: copy offset out of range")
        start = len(out) - offset
        if offset >= length:
            out += out[start: start + length]
        else:  # the copy overlaps its own output: it repeats the last `offset` bytes
            pattern = bytes(out[start:])
            out += (pattern * (length // offset + 1))[:length]
        if len(out) > expected:
            raise _FormatError("snappy: output longer than its declared length")
    if len(out) != expected:
        raise _FormatError(f"snappy: got {len(out)} bytes, header says {expected}")
    return bytes(out)


# ----------------------------------------------------------------------------------------------
# SSTable (TF's lib/io/table, same layout as LevelDB's).
#
#   [data block 1][trailer] ... [data block N][trailer] [metaindex block][trailer]
#   [index block][trailer] [footer: 48 bytes]
#
# block   = entries, then uint32 restart offsets, then uint32 number of restarts.
# entry   = varint shared_key_len, varint unshared_len, varint value_len, key[shared:], value;
#           keys are prefix-compressed against the previous key, except at restart points.
# trailer = 1 byte compression type + uint32 masked crc32c of (block bytes + type byte).
# index   = one entry per data block: key >= every key in that block, value = BlockHandle
#           (varint64 offset, varint64 size) of the block.
# footer  = metaindex handle, index handle, zero padding to 40 bytes, uint64 magic.
# ----------------------------------------------------------------------------------------------

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_BLOCK_TRAILER_LEN = 5
_NO_COMPRESSION = 0
_SNAPPY_COMPRESSION = 1


def _read_block(raw: bytes, offset: int, size: int) -> bytes:
    if offset < 0 or size < 0 or offset + size + _BLOCK_TRAILER_LEN > len(raw):
        raise _FormatError(
            f"block at offset {offset} (size {size}) runs past the end of the file "
            f"({len(raw)} bytes): the file is truncated or not an index file"
        )
    contents = raw[offset: offset + size]
    kind = raw[offset + size]
    stored = int.from_bytes(raw[offset + size + 1: offset + size + 5], "little")
    if _unmask_crc(stored) != crc32c(raw[offset: offset + size + 1]):
        raise _FormatError(f"block at offset {offset} is corrupt (crc32c mismatch)")
    if kind == _NO_COMPRESSION:
        return contents
    if kind == _SNAPPY_COMPRESSION:
        return snappy_decompress(contents)
    raise _FormatError(
        f"block at offset {offset} uses compression type {kind}, which is not supported "
        f"(supported: 0 = none, 1 = snappy)"
    )


def _iter_block(block: bytes):
    """Yields (key, value) of one block, undoing the key prefix compression."""
    if len(block) < 4:
        raise _FormatError("block too small")
    num_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 * (num_restarts + 1)
    if limit < 0:
        raise _FormatError("bad restart count in block")
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = _read_varint(block, pos)
        unshared, pos = _read_varint(block, pos)
        value_len, pos = _read_varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise _FormatError("bad entry in block")
        key = key[:shared] + block[pos: pos + unshared]
        pos += unshared
        yield key, block[pos: pos + value_len]
        pos += value_len


def _read_table(raw: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of an SSTable held in memory, in key order."""
    if len(raw) < _FOOTER_LEN:
        raise _FormatError(
            f"file is {len(raw)} bytes, smaller than the {_FOOTER_LEN}-byte table footer"
        )
    footer = raw[-_FOOTER_LEN:]
    magic = int.from_bytes(footer[-8:], "little")
    if magic != _TABLE_MAGIC:
        raise _FormatError(
            f"bad table magic 0x{magic:016x} (expected 0x{_TABLE_MAGIC:016x}): not a TensorFlow "
            f"V2 checkpoint index"
        )
    _meta_offset, pos = _read_varint(footer, 0)
    _meta_size, pos = _read_varint(footer, pos)
    index_offset, pos = _read_varint(footer, pos)
    index_size, pos = _read_varint(footer, pos)
    # The metaindex block only names filter blocks, which TF tables never have: skip it.
    items = []
    for _, handle in _iter_block(_read_block(raw, index_offset, index_size)):
        offset, p = _read_varint(handle, 0)
        size, _ = _read_varint(handle, p)
        items.extend(_iter_block(_read_block(raw, offset, size)))
    for (k1, _), (k2, _) in zip(items, items[1:]):
        if k1 >= k2:
            raise _FormatError("keys are not in increasing order")
    return items


class _BlockBuilder:
    def __init__(self, restart_interval: int):
        self.restart_interval = restart_interval
        self.buf = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""
        self.num_entries = 0

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.restart_interval:
            limit = min(len(key), len(self.last_key))
            while shared < limit and key[shared] == self.last_key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buf))
            self.counter = 0
        self.buf += _encode_varint(shared) + _encode_varint(len(key) - shared)
        self.buf += _encode_varint(len(value)) + key[shared:] + value
        self.last_key = key
        self.counter += 1
        self.num_entries += 1

    def size_estimate(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        tail = b"".join(struct.pack("<I", r) for r in self.restarts)
        return bytes(self.buf) + tail + struct.pack("<I", len(self.restarts))


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key k with start <= k < limit (TF's FindShortestSeparator), for index entries."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i < n and start[i] < 0xFF and start[i] + 1 < limit[i]:
        return start[:i] + bytes([start[i] + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """A short key >= key (TF's FindShortSuccessor), for the last index entry."""
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes([b + 1])
    return key


def _build_table(items, block_size: int = 262144, restart_interval: int = 16,
                 compress=None) -> bytes:
    """Serialize sorted (key, value) pairs as an SSTable, the way TF's TableBuilder does.

    The defaults are TF's (256 KiB blocks, a restart every 16 keys, no compression), so for
    the same entries the bytes match a TF-written .index.  ``compress`` (tests only) is
    ``(type_byte, fn)`` to store every block compressed.
    """
    out = bytearray()

    def write_block(contents: bytes) -> bytes:
        kind = _NO_COMPRESSION
        if compress is not None:
            kind, fn = compress
            contents = fn(contents)
        handle = _encode_varint(len(out)) + _encode_varint(len(contents))
        trailer = bytes([kind])
        out.extend(contents + trailer)
        out.extend(struct.pack("<I", _mask_crc(crc32c(contents + trailer))))
        return handle

    index = _BlockBuilder(restart_interval=1)
    block = _BlockBuilder(restart_interval)
    pending = None  # (last key, handle) of a written block whose index entry waits for the next key
    for key, value in items:
        if block.num_entries and len(key) + len(value) >= 2 * block_size:
            # an oversized entry gets a block of its own
            pending = (block.last_key, write_block(block.finish()))
            block = _BlockBuilder(restart_interval)
        if pending is not None:
            index.add(_shortest_separator(pending[0], key), pending[1])
            pending = None
        block.add(key, value)
        if block.size_estimate() >= block_size:
            pending = (block.last_key, write_block(block.finish()))
            block = _BlockBuilder(restart_interval)
    if block.num_entries:
        pending = (block.last_key, write_block(block.finish()))
    meta_handle = write_block(_BlockBuilder(restart_interval).finish())
    if pending is not None:
        index.add(_short_successor(pending[0]), pending[1])
    index_handle = write_block(index.finish())
    footer = (meta_handle + index_handle).ljust(_FOOTER_LEN - 8, b"\0")
    out.extend(footer + struct.pack("<Q", _TABLE_MAGIC))
    return bytes(out)


# ----------------------------------------------------------------------------------------------
# Bundle messages (tensorflow/core/protobuf/tensor_bundle.proto).
# ----------------------------------------------------------------------------------------------

_BUNDLE_VERSION = 1  # kTensorBundleVersion: what we produce and the consumer version we are

# DataType enum (tensorflow/core/framework/types.proto) -> little-endian numpy dtype.
_DT_FLOAT, _DT_STRING, _DT_BFLOAT16 = 1, 7, 14
_DTYPES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    8: np.dtype("<c8"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    14: np.dtype("<u2"),  # bfloat16: the raw 16 bits; widened to float32 on read
    17: np.dtype("<u2"),
    18: np.dtype("<c16"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}
_DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32",
    14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16", 18: "complex128", 19: "float16",
    20: "resource", 21: "variant", 22: "uint32", 23: "uint64", 24: "float8_e5m2",
    25: "float8_e4m3fn", 29: "int4", 30: "uint4",
}
# numpy dtype -> enum, for the writer (bfloat16 and strings are special-cased).
_ENUM_OF_NUMPY = {
    np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3,
    np.dtype(np.uint8): 4, np.dtype(np.int16): 5, np.dtype(np.int8): 6,
    np.dtype(np.complex64): 8, np.dtype(np.int64): 9, np.dtype(np.bool_): 10,
    np.dtype(np.uint16): 17, np.dtype(np.complex128): 18, np.dtype(np.float16): 19,
    np.dtype(np.uint32): 22, np.dtype(np.uint64): 23,
}


def _dtype_label(enum: int) -> str:
    return f"DataType enum {enum} ({_DTYPE_NAMES.get(enum, 'unknown')})"


class _Entry:
    __slots__ = ("dtype", "shape", "shard_id", "offset", "size", "crc32c", "slices")

    def __init__(self):
        self.dtype = 0
        self.shape: tuple[int, ...] = ()
        self.shard_id = 0
        self.offset = 0
        self.size = 0
        self.crc32c = 0
        # one [(start, length or None for "whole dimension"), ...] list per stored slice
        self.slices: list[list[tuple[int, int | None]]] = []


def _parse_shape(buf) -> tuple[int, ...]:
    dims = []
    for field, _, value in _iter_fields(buf):
        if field == 2:  # Dim
            size = 0
            for f, _, v in _iter_fields(value):
                if f == 1:
                    size = _signed64(v)
            dims.append(size)
        elif field == 3 and value:
            raise _FormatError("tensor shape of unknown rank")
    if any(d < 0 for d in dims):
        raise _FormatError(f"invalid tensor shape {dims}")
    return tuple(dims)


def _parse_slice(buf) -> list[tuple[int, int | None]]:
    extents = []
    for field, _, value in _iter_fields(buf):
        if field == 1:  # Extent {start = 1; oneof {length = 2}}; no length = whole dimension
            start, length = 0, None
            for f, _, v in _iter_fields(value):
                if f == 1:
                    start = _signed64(v)
                elif f == 2:
                    length = _signed64(v)
            extents.append((start, length))
    return extents


def _parse_entry(buf) -> _Entry:
    e = _Entry()
    for field, _, value in _iter_fields(buf):
        if field == 1:
            e.dtype = value
        elif field == 2:
            e.shape = _parse_shape(value)
        elif field == 3:
            e.shard_id = _signed64(value)
        elif field == 4:
            e.offset = _signed64(value)
        elif field == 5:
            e.size = _signed64(value)
        elif field == 6:
            e.crc32c = value
        elif field == 7:
            e.slices.append(_parse_slice(value))
    return e


def _encode_entry(dtype: int, shape, offset: int, size: int, crc: int, shard: int = 0) -> bytes:
    shape_pb = b"".join(_pb_bytes(2, _pb_varint(1, d)) for d in shape)
    return (
        _pb_varint(1, dtype)
        + _pb_bytes(2, shape_pb)
        + _pb_varint(3, shard)  # shard_id
        + _pb_varint(4, offset)
        + _pb_varint(5, size)
        + _pb_fixed32(6, _mask_crc(crc))
    )


def _encode_header(num_shards: int) -> bytes:
    version = _pb_varint(1, _BUNDLE_VERSION)  # producer; min_consumer 0 is the default
    return _pb_varint(1, num_shards) + _pb_varint(2, 0) + _pb_bytes(3, version)


# Keys of the pieces of a partitioned variable (checkpoint::EncodeTensorNameSlice) use TF's
# "OrderedCode": <num 0> <escaped name> <num rank> then <signed start> <signed length> per dim.


def _ordered_num(v: int) -> bytes:
    # Unsigned: one length byte, then the big-endian value without leading zero bytes.
    body = v.to_bytes((v.bit_length() + 7) // 8, "big")
    return bytes([len(body)]) + body


def _ordered_string(s: bytes) -> bytes:
    # 0x00 -> 00 ff, 0xff -> ff 00, terminated by 00 01, so that the encoding sorts like s.
    escaped = bytearray()
    for b in s:
        escaped += b"\x00\xff" if b == 0 else b"\xff\x00" if b == 0xFF else bytes([b])
    return bytes(escaped) + b"\x00\x01"


_SIGNED_HEADER = [(0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0),
                  (0xFE, 0), (0xFF, 0), (0xFF, 0x80), (0xFF, 0xC0)]


def _ordered_signed(v: int) -> bytes:
    # Big-endian two's complement, with the sign bit and a unary byte count XOR-ed into the
    # leading bits; n bytes hold values in [-2**(7n-1), 2**(7n-1)).
    magnitude = ~v if v < 0 else v
    length = magnitude.bit_length() // 7 + 1
    buf = bytearray(v.to_bytes(10, "big", signed=True)[-length:])
    h0, h1 = _SIGNED_HEADER[length]
    buf[0] ^= h0
    if length > 1:
        buf[1] ^= h1
    return bytes(buf)


def _slice_key(name: bytes, extents) -> bytes:
    key = _ordered_num(0) + _ordered_string(name) + _ordered_num(len(extents))
    for start, length in extents:
        # TensorSlice keeps a whole dimension as start 0, length -1.
        key += _ordered_signed(start if length is not None else 0)
        key += _ordered_signed(length if length is not None else -1)
    return key


# ----------------------------------------------------------------------------------------------
# Reader
# ----------------------------------------------------------------------------------------------


def _data_filename(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def _resolve_prefix(path) -> str:
    path = os.fspath(path)
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    if os.path.isdir(path):
        # A checkpoint directory: follow TF's "checkpoint" state file, else a lone *.index.
        state = os.path.join(path, "checkpoint")
        if os.path.isfile(state):
            with open(state, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("model_checkpoint_path:"):
                        name = line.split(":", 1)[1].strip().strip('"')
                        # the state file may hold an absolute path from the machine that
                        # trained; fall back to the same file name in this directory
                        for candidate in (os.path.join(path, name),
                                          os.path.join(path, os.path.basename(name))):
                            if os.path.isfile(candidate + ".index"):
                                return candidate
        found = sorted(p[: -len(".index")] for p in os.listdir(path) if p.endswith(".index"))
        if len(found) == 1:
            return os.path.join(path, found[0])
        raise CheckpointError(
            f"{path} is a directory with {len(found)} checkpoint index files "
            f"({', '.join(found) or 'none'}); pass the checkpoint prefix, e.g. "
            f"{os.path.join(path, 'bert_model.ckpt')}"
        )
    return path


class TFCheckpointReader:
    """Random access to the tensors of a TensorFlow V2 checkpoint.

    ``prefix`` is the checkpoint prefix (``.../bert_model.ckpt``); the ``.index`` file path or a
    directory holding a single checkpoint are accepted too.  The index is read when the reader
    is created (missing or short data shards are reported then); ``get`` reads only the bytes of
    the tensor asked for and, when ``verify`` is true (the default), checks their crc32c.

    Values come back as numpy arrays of the stored dtype, except that ``bfloat16`` is widened
    (exactly) to ``float32`` and strings come back as an object array of ``bytes``.
    Partitioned variables are reassembled from their slices.
    """

    def __init__(self, prefix, verify: bool = True):
        self.prefix = _resolve_prefix(prefix)
        self.verify = verify
        self.index_path = self.prefix + ".index"
        self._files: dict[int, object] = {}
        if not os.path.isfile(self.index_path):
            hint = ""
            if os.path.isfile(self.prefix):
                hint = (" (a file exists at the prefix itself: TF V1 checkpoints, a single file "
                        "without .index, are not supported)")
            raise CheckpointError(
                f"TensorFlow checkpoint index not found: {self.index_path}{hint}"
            )
        with open(self.index_path, "rb") as f:
            raw = f.read()
        try:
            items = _read_table(raw)
        except _FormatError as exc:
            raise CheckpointError(f"{self.index_path}: {exc}") from None

        self._entries: dict[str, _Entry] = {}
        self._slice_entries: dict[bytes, _Entry] = {}
        header = None
        for key, value in items:
            try:
                if key == b"":
                    header = value
                elif key[:1] == b"\x00":  # a piece of a partitioned variable
                    self._slice_entries[key] = _parse_entry(value)
                else:
                    self._entries[key.decode("utf-8", "surrogateescape")] = _parse_entry(value)
            except (_FormatError, TypeError, ValueError, OverflowError) as exc:
                raise CheckpointError(
                    f"{self.index_path}: entry {brief(key)} is corrupt: {str(exc)[:200]}"
                ) from None
        if header is None:
            raise CheckpointError(f"{self.index_path}: no bundle header (the entry with key '')")
        self._parse_header(header)
        self._check_shards()

    def _parse_header(self, buf: bytes) -> None:
        num_shards, endianness, min_consumer, bad = 0, 0, 0, []
        try:
            for field, wire, value in _iter_fields(buf):
                if field == 1:
                    num_shards = _signed64(value)
                elif field == 2:
                    endianness = value
                elif field == 3:  # VersionDef {producer = 1; min_consumer = 2; bad_consumers = 3}
                    for f, w, v in _iter_fields(value):
                        if f == 2:
                            min_consumer = _signed64(v)
                        elif f == 3 and w == 0:
                            bad.append(_signed64(v))
                        elif f == 3 and w == 2:  # packed repeated
                            p = 0
                            while p < len(v):
                                x, p = _read_varint(v, p)
                                bad.append(_signed64(x))
        except (_FormatError, TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{self.index_path}: bundle header is corrupt: {str(exc)[:200]}") from None
        if num_shards < 1 or endianness not in (0, 1):
            raise CheckpointError(
                f"{self.index_path}: bad bundle header (num_shards={num_shards}, "
                f"endianness={endianness})"
            )
        if min_consumer > _BUNDLE_VERSION or _BUNDLE_VERSION in bad:
            raise CheckpointError(
                f"{self.index_path}: written by a newer TensorFlow checkpoint format "
                f"(min_consumer={min_consumer}, bad_consumers={bad}); this reader is version "
                f"{_BUNDLE_VERSION}"
            )
        self.num_shards = num_shards
        self._byteorder = ">" if endianness == 1 else "<"

    def _data_entries(self):
        for name, e in self._entries.items():
            if not e.slices:
                yield name, e
        for key, e in self._slice_entries.items():
            yield repr(key), e

    def _check_shards(self) -> None:
        # Report missing or short data files now, with names, rather than at the first get().
        needed: dict[int, tuple[int, str]] = {}
        for name, e in self._data_entries():
            if not 0 <= e.shard_id < self.num_shards or e.offset < 0 or e.size < 0:
                raise CheckpointError(
                    f"{self.index_path}: entry {name!r} points at shard {e.shard_id}, offset "
                    f"{e.offset}, size {e.size}, which is invalid for a {self.num_shards}-shard "
                    f"checkpoint"
                )
            end = e.offset + e.size
            if end > needed.get(e.shard_id, (0, ""))[0]:
                needed[e.shard_id] = (end, name)
        for shard in range(self.num_shards):
            path = _data_filename(self.prefix, shard, self.num_shards)
            if not os.path.isfile(path):
                if shard in needed:
                    raise CheckpointError(
                        f"checkpoint data shard missing: {path} (listed by {self.index_path})"
                    )
                continue
            end, name = needed.get(shard, (0, ""))
            actual = os.path.getsize(path)
            if actual < end:
                raise CheckpointError(
                    f"checkpoint data file {path} is truncated: expected at least {end} bytes "
                    f"(for {name!r}), found {actual}"
                )

    # --- metadata ---------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Variable names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise KeyError(f"{name!r} is not in checkpoint {self.prefix}") from None

    def shape(self, name) -> tuple[int, ...]:
        return self._entry(name).shape

    def dtype(self, name) -> np.dtype:
        """The numpy dtype ``get(name)`` returns (float32 for bfloat16, object for strings)."""
        enum = self._entry(name).dtype
        if enum == _DT_STRING:
            return np.dtype(object)
        if enum == _DT_BFLOAT16:
            return np.dtype(np.float32)
        if enum not in _DTYPES:
            raise CheckpointError(f"{self.index_path}: variable {name!r} has unsupported "
                                  f"{_dtype_label(enum)}")
        return _DTYPES[enum].newbyteorder("=")

    def tf_dtype(self, name) -> str:
        """The dtype as TensorFlow names it (e.g. ``"bfloat16"``, ``"string"``)."""
        enum = self._entry(name).dtype
        return _DTYPE_NAMES.get(enum, f"enum {enum}")

    # --- data --------------------------------------------------------------------------------

    def _file(self, shard: int):
        f = self._files.get(shard)
        if f is None:
            path = _data_filename(self.prefix, shard, self.num_shards)
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                raise CheckpointError(f"checkpoint data shard missing: {path}") from None
            self._files[shard] = f
        return f

    def _read_bytes(self, name: str, e: _Entry) -> bytearray:
        f = self._file(e.shard_id)
        buf = bytearray(e.size)
        f.seek(e.offset)
        got = f.readinto(buf)
        if got != e.size:
            path = _data_filename(self.prefix, e.shard_id, self.num_shards)
            raise CheckpointError(
                f"checkpoint data file {path} is truncated: {name!r} needs bytes "
                f"[{e.offset}, {e.offset + e.size}) but the file has {e.offset + got} bytes"
            )
        return buf

    def _corrupt(self, name: str, e: _Entry, what: str) -> CheckpointError:
        path = _data_filename(self.prefix, e.shard_id, self.num_shards)
        return CheckpointError(f"checkpoint data file {path} is corrupt: {name!r} {what}")

    def _decode(self, name: str, e: _Entry) -> np.ndarray:
        if e.dtype == _DT_STRING:
            return self._decode_strings(name, e)
        if e.dtype not in _DTYPES:
            raise CheckpointError(
                f"{self.index_path}: variable {name!r} has unsupported {_dtype_label(e.dtype)}"
            )
        dt = _DTYPES[e.dtype].newbyteorder(self._byteorder)
        count = math.prod(e.shape)
        if e.size != count * dt.itemsize:
            raise CheckpointError(
                f"{self.index_path}: entry {name!r} says {e.size} bytes, but shape {e.shape} of "
                f"{_DTYPE_NAMES[e.dtype]} needs {count * dt.itemsize}"
            )
        buf = self._read_bytes(name, e)
        if self.verify:
            actual = crc32c(buf)
            if actual != _unmask_crc(e.crc32c):
                raise self._corrupt(
                    name, e, f"fails its crc32c check (stored {_unmask_crc(e.crc32c):08x}, "
                             f"computed {actual:08x})"
                )
        arr = np.frombuffer(buf, dtype=dt).reshape(e.shape)
        if e.dtype == _DT_BFLOAT16:
            # bfloat16 is the top half of a float32: widening is exact.
            return (arr.astype(np.uint32) << 16).view(np.float32)
        if e.dtype == 10:
            return arr.view(np.uint8) != 0
        if dt.byteorder == ">" and dt.itemsize > 1:
            arr = arr.astype(dt.newbyteorder("="))
        return arr

    def _decode_strings(self, name: str, e: _Entry) -> np.ndarray:
        # [varint64 len]*n [uint32 masked crc of the lengths] [string bytes]*n.  The checksums
        # cover each length as a fixed uint32 (uint64 when > 4 GiB), not its varint bytes.
        count = math.prod(e.shape)
        # every string costs at least its one-byte length, so a forged shape is caught here,
        # before an object array of that many elements is allocated
        if count > max(e.size, 1 << 16):
            raise self._corrupt(name, e, f"has shape {brief(e.shape)}: {count} strings cannot fit "
                                         f"in {e.size} bytes")
        out = np.empty(count, dtype=object)
        if e.size == 0:  # TF itself reads a zero-size string entry as all-empty strings
            out[:] = b""
            return out.reshape(e.shape)
        buf = bytes(self._read_bytes(name, e))
        order = "little" if self._byteorder == "<" else "big"
        lengths = []
        crc = 0
        pos = 0
        try:
            for _ in range(count):
                n, pos = _read_varint(buf, pos)
                if n > len(buf):
                    raise _FormatError("string longer than its entry")
                lengths.append(n)
                width = 4 if n <= _U32 else 8
                crc = crc32c(n.to_bytes(width, order), crc)
        except _FormatError:
            raise self._corrupt(name, e, "has unreadable string lengths") from None
        if pos + 4 > len(buf):
            raise self._corrupt(name, e, "has string lengths running past its size")
        stored = int.from_bytes(buf[pos: pos + 4], order)
        if self.verify and _unmask_crc(stored) != crc:
            raise self._corrupt(name, e, "fails the crc32c check of its string lengths")
        crc = crc32c(buf[pos: pos + 4], crc)
        pos += 4
        if pos + sum(lengths) != len(buf):
            raise self._corrupt(name, e, "has string lengths that do not add up to its size")
        for i, n in enumerate(lengths):
            out[i] = buf[pos: pos + n]
            pos += n
        if self.verify:
            crc = crc32c(buf[pos - sum(lengths): pos], crc)
            if crc != _unmask_crc(e.crc32c):
                raise self._corrupt(name, e, "fails its crc32c check")
        return out.reshape(e.shape)

    def _assemble(self, name: str, e: _Entry) -> np.ndarray:
        # A partitioned variable: the entry under `name` only lists slices; each slice is
        # stored as its own entry under a key made by _slice_key.
        rank = len(e.shape)
        dtype = self.dtype(name)
        raw_name = name.encode("utf-8", "surrogateescape")
        parts = []
        for extents in e.slices:
            extents = extents or [(0, None)] * rank
            if len(extents) != rank:
                raise CheckpointError(
                    f"{self.index_path}: slice of {brief(name)} has rank {len(extents)}, the "
                    f"variable has rank {rank}"
                )
            part = self._slice_entries.get(_slice_key(raw_name, extents))
            if part is None:
                raise CheckpointError(
                    f"{self.index_path}: slice {brief(extents)} of partitioned variable "
                    f"{brief(name)} is listed but not stored"
                )
            parts.append((extents, part))
        # the stored slices (their sizes were checked against the data files) must hold enough
        # elements to cover the shape, so a forged shape fails before the allocation
        if math.prod(e.shape) > sum(math.prod(part.shape) for _, part in parts):
            raise CheckpointError(
                f"{self.index_path}: the stored slices of {brief(name)} do not cover its shape "
                f"{brief(e.shape)}")
        full = np.empty(e.shape, dtype=dtype)
        covered = np.zeros(e.shape, dtype=bool)
        for extents, part in parts:
            index = tuple(
                slice(start, start + length) if length is not None else slice(None)
                for start, length in extents
            )
            value = self._decode(f"{name}{extents}", part)
            if value.shape != full[index].shape:
                raise CheckpointError(
                    f"{self.index_path}: slice {extents} of {brief(name)} has shape {value.shape}"
                )
            full[index] = value
            covered[index] = True
        if not covered.all():
            raise CheckpointError(
                f"{self.index_path}: the stored slices of {brief(name)} do not cover its shape "
                f"{e.shape}"
            )
        return full

    def get(self, name) -> np.ndarray:
        """The tensor ``name`` as a numpy array (its crc32c checked when ``verify``)."""
        e = self._entry(name)
        try:
            if e.slices:
                return self._assemble(name, e)
            return self._decode(name, e)
        except KerasformerError:
            raise
        except (TypeError, ValueError, OverflowError, IndexError) as exc:
            # a forged entry that slipped past the checks above: still name file and entry
            raise CheckpointError(f"{self.index_path}: entry {brief(name)} is corrupt "
                                  f"({type(exc).__name__}: {str(exc)[:200]})") from None

    def __getitem__(self, name) -> np.ndarray:
        return self.get(name)

    def close(self) -> None:
        files, self._files = self._files, {}
        for f in files.values():
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"TFCheckpointReader({self.prefix!r}, {len(self._entries)} variables)"


def read_tf_checkpoint(prefix, verify: bool = True) -> dict[str, np.ndarray]:
    """Every variable of a TensorFlow checkpoint, as ``{name: ndarray}`` (see TFCheckpointReader)."""
    with TFCheckpointReader(prefix, verify=verify) as reader:
        return {name: reader.get(name) for name in reader.keys()}


def is_tf_checkpoint(path) -> bool:
    """True when ``path`` is a checkpoint prefix (``path + ".index"`` exists) or a .index file."""
    path = os.fspath(path)
    return os.path.isfile(path + ".index") or (path.endswith(".index") and os.path.isfile(path))


# ----------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------


def _to_string_elements(name: str, arr: np.ndarray) -> list[bytes]:
    out = []
    for item in arr.reshape(-1).tolist():
        if isinstance(item, str):
            item = item.encode("utf-8")
        if not isinstance(item, (bytes, bytearray, memoryview)):
            raise CheckpointError(
                f"cannot write {name!r}: string tensors must hold bytes or str, found "
                f"{type(item).__name__}"
            )
        out.append(bytes(item))
    return out


def _serialize(name: str, value) -> tuple[int, tuple[int, ...], list, int]:
    """(dtype enum, shape, chunks to write (bytes or uint8 arrays), crc32c of the entry)."""
    arr = np.asarray(value)
    shape = tuple(int(d) for d in arr.shape)
    if arr.dtype.kind in "SUO":
        # Layout as in _decode_strings: the checksum covers each length as a fixed-width
        # integer, not the varint bytes that are written.
        strings = _to_string_elements(name, arr)
        lengths = b"".join(_encode_varint(len(s)) for s in strings)
        crc = 0
        for s in strings:
            crc = crc32c(struct.pack("<I" if len(s) <= _U32 else "<Q", len(s)), crc)
        length_crc = struct.pack("<I", _mask_crc(crc))
        crc = crc32c(length_crc, crc)
        for s in strings:
            crc = crc32c(s, crc)
        return _DT_STRING, shape, [lengths, length_crc] + strings, crc
    if arr.dtype.name == "bfloat16" and arr.dtype.itemsize == 2:  # ml_dtypes.bfloat16
        enum, le = _DT_BFLOAT16, arr.view(np.uint16).astype("<u2")
    else:
        enum = _ENUM_OF_NUMPY.get(arr.dtype.newbyteorder("="))
        if enum is None:
            raise CheckpointError(
                f"cannot write {name!r}: dtype {arr.dtype} has no TensorFlow checkpoint "
                f"equivalent here"
            )
        le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    data = np.ascontiguousarray(le).reshape(-1).view(np.uint8)
    return enum, shape, [data], crc32c(data)


def write_tf_checkpoint(prefix, tensors) -> None:
    """Write ``{name: array}`` as a TensorFlow V2 checkpoint at ``prefix``, atomically.

    Produces ``prefix.index`` and one data file that ``tf.train.load_checkpoint`` reads.
    Accepts numeric and bool arrays, bytes/str arrays (stored as TF strings) and
    ``ml_dtypes.bfloat16`` arrays (stored as bfloat16).

    Atomic across the two files: the index is the one pointer that is switched.  The data goes
    to a file the current index does not use -- ``prefix.data-00000-of-00001``, or, when that is
    the live one, ``prefix.data-00001-of-00002`` under an index saying "2 shards, all data in
    shard 1" (TF opens only the shards its entries name) -- and only then is the new index
    renamed over the old one.  A kill at any moment leaves the old or the new checkpoint whole;
    the old data file is removed after the switch.
    """
    prefix = os.fspath(prefix)
    names = []
    for name in tensors:
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"checkpoint variable names must be non-empty str, got {brief(name)}")
        names.append(name)
    names.sort(key=lambda n: n.encode("utf-8"))  # the table is sorted bytewise

    from kerasformer.checkpoints.torch_pickle import atomic_write

    directory = os.path.dirname(prefix) or "."
    os.makedirs(directory, exist_ok=True)
    live = _live_num_shards(prefix)
    num_shards = 2 if live == 1 else 1
    shard = num_shards - 1
    items = [(b"", _encode_header(num_shards))]
    with atomic_write(_data_filename(prefix, shard, num_shards)) as tmp:
        offset = 0
        with open(tmp, "wb") as f:
            for name in names:
                enum, shape, chunks, crc = _serialize(name, tensors[name])
                size = 0
                for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk)
                entry = _encode_entry(enum, shape, offset, size, crc, shard)
                items.append((name.encode("utf-8"), entry))
                offset += size
    with atomic_write(prefix + ".index") as tmp:  # the switch
        with open(tmp, "wb") as f:
            f.write(_build_table(items))
    if live is not None and live != num_shards:
        for old in range(live):
            with contextlib.suppress(OSError):
                os.remove(_data_filename(prefix, old, live))


def _live_num_shards(prefix: str):
    """How many shards the checkpoint now at ``prefix`` has, or None (none, or unreadable)."""
    try:
        with TFCheckpointReader(prefix, verify=False) as reader:
            return reader.num_shards
    except CheckpointError:
        return None
