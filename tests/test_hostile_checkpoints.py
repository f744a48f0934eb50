"""Hostile checkpoint files (issue 11, loaders): no hang, no memory bomb, no raw Python error.

Each test crafts the smallest file that triggered the problem and checks the cheap, clear
outcome: a CheckpointError naming the file (and the entry), or a lazily kept view.
"""
import json
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

from kerasformer.checkpoints.resolve import open_checkpoint, save_safetensors
from kerasformer.checkpoints.tf_bundle import (TFCheckpointReader, _build_table, _encode_entry,
                                               _encode_header, _pb_bytes, _pb_varint,
                                               write_tf_checkpoint)
from kerasformer.checkpoints.torch_pickle import load_torch_bin
from kerasformer.errors import CheckpointError, brief

import kerasformer

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(kerasformer.__file__)))


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _zip_checkpoint(path, pickle_bytes, records=()):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        for name, data in records:
            zf.writestr(f"archive/{name}", data)


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    except CheckpointError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


# ---- 1. repr bombs -------------------------------------------------------------------------


def test_brief_is_bounded():
    nested = [0]
    for _ in range(60):
        nested = [nested, nested]  # repr would be 2**60 items
    assert len(brief(nested)) <= 80
    assert "bits" in brief(10 ** 10000)  # repr would raise (int max str digits)


def test_shared_nested_persistent_id_fails_fast(tmp_path):
    """A 1 kB pickle whose persistent id is 2**40 shared nested lists: repr never finishes."""
    nested = [0]
    for _ in range(40):
        nested = [nested, nested]
    body = pickle.dumps(nested, protocol=2)[:-1] + b"Q."  # BINPERSID on it, STOP
    path = tmp_path / "bomb.bin"
    _zip_checkpoint(path, body)
    # in a child process, so that a regression hangs one test for 60 s, not the suite
    code = ("import sys; from kerasformer.checkpoints.torch_pickle import load_torch_bin\n"
            "from kerasformer.errors import CheckpointError\n"
            "try:\n    load_torch_bin(sys.argv[1])\nexcept CheckpointError as e:\n"
            "    print('ERR', len(str(e)))\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": SOURCE_ROOT})
    assert out.stdout.startswith("ERR"), out.stderr[-2000:]
    assert int(out.stdout.split()[1]) < 1000


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_pickle_length_fields_are_checked_before_allocating(tmp_path, layout):
    """BINBYTES declaring 1 GiB in a 20-byte pickle: the C unpickler allocates first."""
    body = b"\x80\x02B\xff\xff\xff\x3f" + b"x" * 12
    path = tmp_path / "liar.bin"
    if layout == "zip":
        _zip_checkpoint(path, body)
    else:
        path.write_bytes(body)
    peak = _peak_bytes(lambda: load_torch_bin(path))
    assert peak < 16 << 20, peak
    with pytest.raises(CheckpointError, match="liar.bin"):
        load_torch_bin(path)


# ---- 2. stride-0 tensors --------------------------------------------------------------------


def test_expanded_tensor_is_a_view_not_a_copy(torch, tmp_path):
    path = tmp_path / "expand.bin"
    torch.save({"w": torch.arange(4.0).expand(2048, 4096, 4)[..., 1]}, path)  # 32 MiB logical
    box = {}
    peak = _peak_bytes(lambda: box.update(load_torch_bin(path)))
    w = box["w"]
    assert w.shape == (2048, 4096) and w.dtype == np.float32 and not w.flags.writeable
    assert float(w[1234, 567]) == 1.0 and float(w.sum()) == 2048 * 4096
    assert peak < 1 << 20, peak  # the storage (16 bytes), not 32 MiB


def test_expanded_bfloat16_stays_a_view(torch, tmp_path):
    path = tmp_path / "expand16.bin"
    torch.save({"w": torch.ones(1, dtype=torch.bfloat16).expand(1024, 1024)}, path)
    box = {}
    peak = _peak_bytes(lambda: box.update(load_torch_bin(path)))
    assert box["w"].dtype == np.float32 and float(box["w"][5, 7]) == 1.0
    assert peak < 1 << 20, peak


# ---- 3. lying zip sizes ---------------------------------------------------------------------


def _lie_about_sizes(path, record, file_size, compress_size=None):
    """Patch the central directory entry of ``record``: uncompressed (and compressed) size."""
    raw = bytearray(path.read_bytes())
    pos = raw.index(b"PK\x01\x02" + raw[raw.index(b"PK\x01\x02") + 4: raw.index(b"PK\x01\x02") + 4])
    while True:
        name_len = struct.unpack_from("<H", raw, pos + 28)[0]
        name = bytes(raw[pos + 46: pos + 46 + name_len]).decode()
        if name.endswith(record):
            struct.pack_into("<I", raw, pos + 24, file_size)
            if compress_size is not None:
                struct.pack_into("<I", raw, pos + 20, compress_size)
            break
        extra, comment = struct.unpack_from("<HH", raw, pos + 30)
        pos = raw.index(b"PK\x01\x02", pos + 46 + name_len + extra + comment)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("also_compressed", [False, True])
def test_lying_record_size_is_refused_before_allocating(torch, tmp_path, also_compressed):
    path = tmp_path / "liar.bin"
    torch.save({"w": torch.zeros(4)}, path)
    lie = 1 << 28  # 256 MiB
    _lie_about_sizes(path, "data/0", lie, lie if also_compressed else None)
    peak = _peak_bytes(lambda: load_torch_bin(path))
    assert peak < 16 << 20, peak
    with pytest.raises(CheckpointError, match="liar.bin"):
        load_torch_bin(path)


# ---- 4. forged headers ----------------------------------------------------------------------


def _tf_checkpoint(tmp_path, entries, data=b""):
    """A hand-made single-shard bundle: ``entries`` is [(name, entry bytes)]."""
    prefix = str(tmp_path / "forged.ckpt")
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(data)
    items = [(b"", _encode_header(1))] + sorted((n.encode(), e) for n, e in entries)
    with open(prefix + ".index", "wb") as f:
        f.write(_build_table(items))
    return prefix


def _shape(*dims):
    return b"".join(_pb_bytes(2, _pb_varint(1, d)) for d in dims)


@pytest.mark.parametrize("case", ["string-shape", "string-length", "numeric-overflow",
                                  "partitioned-shape", "wire-type"])
def test_forged_tf_entries_give_checkpoint_errors(tmp_path, case):
    if case == "string-shape":  # 2**32 strings in 5 bytes: an object array of 32 GiB
        entry = _pb_varint(1, 7) + _pb_bytes(2, _shape(1 << 32)) + _pb_varint(5, 5)
        data = b"\x00" * 5
    elif case == "string-length":  # one string whose length varint is 2**69
        entry = _pb_varint(1, 7) + _pb_bytes(2, _shape(1)) + _pb_varint(5, 14)
        data = bytes([0xFF] * 9 + [0x7F]) + b"\x00" * 4
    elif case == "numeric-overflow":  # 2**64 elements: int64 product wraps to 0 == size
        entry = _pb_varint(1, 1) + _pb_bytes(2, _shape(1 << 32, 1 << 32)) + _pb_varint(5, 0)
        data = b""
    elif case == "partitioned-shape":  # a 2**34-element float32 variable with no slices stored
        entry = _pb_varint(1, 1) + _pb_bytes(2, _shape(1 << 17, 1 << 17)) + _pb_bytes(7, b"")
        data = b""
    else:  # a shape given as a varint instead of a message
        entry = _pb_varint(1, 1) + _pb_varint(2, 5)
        data = b""
    prefix = _tf_checkpoint(tmp_path, [("v", entry)], data)
    box = {}

    def read():
        with TFCheckpointReader(prefix) as reader:
            box["v"] = reader.get("v")

    with pytest.raises(CheckpointError, match="forged.ckpt") as info:
        peak = _peak_bytes(read)
        read()
    assert peak < 16 << 20
    assert "'v'" in str(info.value) or "entry" in str(info.value)


def _safetensors_with_header(path, header, data=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("entry", [
    {"dtype": "F32", "shape": [1 << 32, 1 << 32], "data_offsets": [0, 0]},  # int64 product wraps
    {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]},  # int(1.5) == 1 was accepted
    {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]},
    {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]},
    {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]},
])
def test_forged_safetensors_entries(tmp_path, entry):
    path = tmp_path / "forged.safetensors"
    _safetensors_with_header(path, {"x" * 10000: entry}, b"\x00" * 4)
    with pytest.raises(CheckpointError, match="forged.safetensors") as info:
        open_checkpoint(str(path))
    assert len(str(info.value)) < 1000  # the 10 kB name is not echoed whole


def test_deeply_nested_safetensors_header(tmp_path):
    path = tmp_path / "deep.safetensors"
    raw = b"[" * 100000 + b"]" * 100000
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(CheckpointError, match="deep.safetensors"):
        open_checkpoint(str(path))


def test_empty_sharded_weight_map(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {}}))
    with pytest.raises(CheckpointError, match="empty 'weight_map'"):
        open_checkpoint(str(tmp_path))


def test_sharded_index_with_nested_json(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        open_checkpoint(str(tmp_path))


def test_reader_errors_inside_get_name_file_and_entry(tmp_path, monkeypatch):
    """Whatever a reader raises on a forged entry reaches the user as a CheckpointError."""
    path = str(tmp_path / "model.safetensors")
    save_safetensors(path, {"w": np.ones(3, "float32")})
    tensors = open_checkpoint(path)
    source = tensors._source("w")
    monkeypatch.setattr(source, "get", lambda name: np.empty(1 << 70))
    with pytest.raises(CheckpointError, match="model.safetensors.*'w'"):
        tensors["w"]


def test_tf_writer_output_still_reads(tmp_path):
    prefix = str(tmp_path / "ok.ckpt")
    write_tf_checkpoint(prefix, {"a": np.arange(6, dtype="float32").reshape(2, 3),
                                 "s": np.array([b"x", b""], dtype=object)})
    with TFCheckpointReader(prefix) as reader:
        np.testing.assert_array_equal(reader.get("a"), np.arange(6).reshape(2, 3))
        assert list(reader.get("s")) == [b"x", b""]
