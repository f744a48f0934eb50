"""Checkpoint readers/writers: torch .bin (zip + legacy, without torch), safetensors, TF, resolution.

torch is used only to *make* reference files and to read back what we write; the code under
test never imports it.  No Keras is needed, so these run the same under every KERAS_BACKEND.
"""

import collections
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from kerasformer.checkpoints.resolve import CheckpointTensors, open_checkpoint, save_safetensors
from kerasformer.checkpoints.torch_pickle import TorchBinReader, load_torch_bin, save_torch_bin
from kerasformer.errors import CheckpointError, KerasformerError, UnsafeCheckpointError


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _reference_state_dict(torch):
    """Mixed dtypes, a transpose, a 0-d tensor, views sharing one storage, an expand, a Parameter."""
    g = torch.Generator().manual_seed(0)
    base = torch.arange(10, dtype=torch.float32) * 1.5
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(3, 4, generator=g)
    sd["f16"] = torch.randn(5, generator=g).half()
    sd["bf16"] = torch.randn(2, 3, generator=g).to(torch.bfloat16)
    sd["i64"] = torch.tensor([[-(2**40), 7], [0, 2**62]], dtype=torch.int64)
    sd["bool"] = torch.tensor([True, False, True])
    sd["transposed"] = torch.randn(3, 5, generator=g).t()  # non-contiguous
    sd["scalar"] = torch.tensor(3.25)  # 0-d
    sd["view_a"] = base[2:7]  # these two share base's storage
    sd["view_b"] = base[::3]
    sd["expanded"] = torch.randn(3, 1, generator=g).expand(3, 4)  # stride 0
    sd["empty"] = torch.zeros(0, 4)
    sd["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    return sd


def _expected(t):
    # numpy has no bfloat16: the reader widens it (exactly) to float32.
    import torch

    if isinstance(t, np.ndarray):
        return t
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def _assert_same(out, reference):
    assert list(out) == list(reference)
    for name, t in reference.items():
        want = _expected(t)
        got = out[name]
        assert isinstance(got, np.ndarray), name
        assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
        assert got.shape == want.shape, (name, got.shape, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("zip_layout", [True, False], ids=["zip", "legacy"])
def test_load_torch_bin_matches_torch(torch, tmp_path, zip_layout):
    sd = _reference_state_dict(torch)
    path = tmp_path / "pytorch_model.bin"
    torch.save(sd, path, _use_new_zipfile_serialization=zip_layout)
    out = load_torch_bin(path)
    _assert_same(out, sd)
    assert out["bf16"].dtype == np.float32
    # Views of one storage come back as independent arrays.
    out["view_a"][:] = -1
    np.testing.assert_array_equal(out["view_b"], sd["view_b"].numpy())
    with TorchBinReader(path) as reader:
        assert reader.layout == ("zip" if zip_layout else "legacy")
        assert reader.shape("transposed") == (5, 3)
        assert reader.torch_dtype("bf16") == "bfloat16"


def test_untyped_storage_dtypes_and_tied_names(torch, tmp_path):
    # uint16 has no typed storage class: torch writes it with _rebuild_tensor_v3 on an
    # UntypedStorage.  "tied" is the very same tensor object as "w" (a pickle memo reference).
    w = torch.randn(3)
    sd = {"u16": torch.tensor([1, 2, 60000]).to(torch.uint16), "w": w, "tied": w}
    torch.save(sd, tmp_path / "m.bin")
    out = load_torch_bin(tmp_path / "m.bin")
    _assert_same(out, sd)
    out["w"][0] = 123.0
    assert out["tied"][0] == w[0].item()


def test_big_endian_zip_is_byteswapped(torch, tmp_path):
    # torch.save on a big-endian host writes native-order bytes and a 'byteorder' record of
    # 'big'; rebuild such a file from a little-endian one and compare with torch.load.
    sd = {"f32": torch.randn(2, 3), "i64": torch.tensor([1, -2, 2**40]), "b": torch.tensor([True])}
    torch.save(sd, tmp_path / "little.bin")
    itemsize = {"0": 4, "1": 8, "2": 1}
    with zipfile.ZipFile(tmp_path / "little.bin") as src, \
            zipfile.ZipFile(tmp_path / "big.bin", "w") as dst:
        for info in src.infolist():
            data, leaf = src.read(info), info.filename.split("/", 1)[1]
            if leaf == "byteorder":
                data = b"big"
            elif leaf.startswith("data/"):
                size = itemsize[leaf[5:]]
                data = np.frombuffer(data, f"<u{size}").astype(f">u{size}").tobytes()
            elif leaf == ".format_version":
                continue  # makes torch assume its own zip writer's layout for offsets
            dst.writestr(info.filename, data)
    reference = torch.load(tmp_path / "big.bin", weights_only=True)
    _assert_same({k: v.numpy() for k, v in reference.items()}, sd)  # torch agrees
    _assert_same(load_torch_bin(tmp_path / "big.bin"), sd)


def test_legacy_cuda_storage_types(torch, tmp_path):
    # Legacy files saved from a GPU name torch.cuda.FloatStorage; the bytes are the same.
    sd = {"w": torch.randn(4, 2), "b": torch.randn(2)}
    torch.save(sd, tmp_path / "cpu.bin", _use_new_zipfile_serialization=False)
    data = (tmp_path / "cpu.bin").read_bytes()
    assert data.count(b"ctorch\nFloatStorage\n") == 1  # memoised after the first use
    patched = data.replace(b"ctorch\nFloatStorage\n", b"ctorch.cuda\nFloatStorage\n")
    (tmp_path / "gpu.bin").write_bytes(patched)
    _assert_same(load_torch_bin(tmp_path / "gpu.bin"), sd)


def test_torch_archive_name_is_found_not_assumed(torch, tmp_path):
    # torch names the top folder of the zip after the file; a renamed file keeps the old name.
    sd = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    torch.save(sd, tmp_path / "something_else.pt")
    os.replace(tmp_path / "something_else.pt", tmp_path / "pytorch_model.bin")
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin") as zf:
        assert zf.namelist()[0].startswith("something_else/")
    _assert_same(load_torch_bin(tmp_path / "pytorch_model.bin"), sd)


def test_wrapped_state_dict_is_unwrapped(torch, tmp_path):
    linear = torch.nn.Linear(3, 2)
    path = tmp_path / "ckpt.bin"
    torch.save({"model": linear.state_dict(), "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    out = load_torch_bin(path)
    _assert_same(out, linear.state_dict())
    with TorchBinReader(path) as reader:
        assert reader.unwrapped_from == "model"

    torch.save({"model": linear.state_dict(), "state_dict": linear.state_dict()}, path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_torch_bin(path)
    torch.save([linear.weight.data], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_torch_bin(path)


class _Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"echo pwned > '{self.marker}'",))


@pytest.mark.parametrize("layout", ["zip", "legacy", "plain-pickle"])
def test_malicious_pickle_is_refused_without_running_it(torch, tmp_path, layout):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "pytorch_model.bin"
    payload = {"weight": torch.ones(2), "evil": _Evil(marker)}
    if layout == "plain-pickle":
        with open(path, "wb") as fh:
            pickle.dump({"evil": _Evil(marker)}, fh, protocol=2)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=(layout == "zip"))
    forbidden = f"{os.system.__module__}.system"  # posix.system (nt.system on Windows)
    with pytest.raises(UnsafeCheckpointError, match=forbidden) as info:
        load_torch_bin(path)
    assert "pytorch_model.bin" in str(info.value) and "refusing" in str(info.value)
    with pytest.raises(UnsafeCheckpointError):
        open_checkpoint(tmp_path)
    assert not marker.exists()
    # Sanity: the payload really would have run had it been unpickled normally.
    if layout == "plain-pickle":
        with open(path, "rb") as fh:
            pickle.load(fh)
        assert marker.exists()


def test_other_forbidden_globals(tmp_path):
    # Hand-written pickles (PROTO 2, then GLOBAL + REDUCE) calling eval / exec / subprocess.
    for module, name in [("builtins", "eval"), ("subprocess", "call"), ("builtins", "exec")]:
        path = tmp_path / f"{name}.bin"
        path.write_bytes(b"\x80\x02" + f"c{module}\n{name}\n(S'1+1'\ntR.".encode())
        with pytest.raises(UnsafeCheckpointError, match=f"{module}.{name}"):
            load_torch_bin(path)


def test_pickle_cannot_modify_the_allowlisted_objects(tmp_path):
    # BUILD sets attributes on whatever is on the stack; aimed at the shared allowlist objects it
    # would change how every later file loads (here: rewrite a function's defaults, or make
    # FloatStorage mean int64).
    from kerasformer.checkpoints import torch_pickle

    payloads = [
        b"ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86b.",
        b"ctorch\nFloatStorage\nN}X\x05\x00\x00\x00dtypeX\x05\x00\x00\x00int64s\x86b.",
    ]
    for i, payload in enumerate(payloads):
        path = tmp_path / f"{i}.bin"
        path.write_bytes(b"\x80\x02" + payload)
        with pytest.raises(UnsafeCheckpointError, match="BUILD"):
            load_torch_bin(path)
    assert torch_pickle._rebuild_tensor_v2.__defaults__ == (False, None, None)
    assert torch_pickle._ALLOWED[("torch", "FloatStorage")].dtype == "float32"


def test_whole_pickled_module_is_refused(torch, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeCheckpointError, match="state_dict"):
        load_torch_bin(path)


@pytest.mark.parametrize("zip_layout", [True, False], ids=["zip", "legacy"])
def test_truncated_bin(torch, tmp_path, zip_layout):
    path = tmp_path / "full.bin"
    torch.save({"w": torch.randn(64, 64), "b": torch.randn(64)}, path,
               _use_new_zipfile_serialization=zip_layout)
    data = path.read_bytes()
    cut = tmp_path / "pytorch_model.bin"
    for n in (0, 50, len(data) // 2, len(data) - 7):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
            load_torch_bin(cut)
        assert str(cut) in str(info.value)
        assert not isinstance(info.value, UnsafeCheckpointError)


def test_corrupt_zip_record_is_detected(torch, tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.randn(64, 64)}, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data/0"))
    data[info.header_offset + 200] ^= 0xFF  # inside the stored tensor bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_torch_bin(path)


def _numpy_reference():
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f64": rng.standard_normal(3),
        "f16": rng.standard_normal(5).astype(np.float16),
        "i64": np.array([-(2**40), 2**62], dtype=np.int64),
        "i32": np.array([1, -2], dtype=np.int32),
        "u8": np.array([0, 255], dtype=np.uint8),
        "bool": np.array([True, False]),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "transposed": rng.standard_normal((4, 3)).astype(np.float32).T,  # non-contiguous input
        "big_endian": np.arange(4, dtype=">f4"),
        "名字.unicode": np.ones(2, dtype=np.float32),
    }


def _data_offsets(path):
    """(record name, byte offset of its data) for every zip record, from the local headers."""
    out = []
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            fh.seek(info.header_offset)
            header = fh.read(30)
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            out.append((info.filename, info.header_offset + 30 + name_len + extra_len))
    return out


def test_save_torch_bin_is_read_by_torch(torch, tmp_path):
    tensors = _numpy_reference()
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"old contents")
    save_torch_bin(path, tensors)
    assert os.listdir(tmp_path) == ["pytorch_model.bin"]  # no temp file left behind
    for mmap in (False, True):
        loaded = torch.load(path, weights_only=True, mmap=mmap)
        assert list(loaded) == list(tensors)
        for name, arr in tensors.items():
            t = loaded[name]
            assert tuple(t.shape) == arr.shape, name
            assert t.numpy().dtype == arr.dtype.newbyteorder("="), name
            np.testing.assert_array_equal(t.numpy(), arr, err_msg=name)
    # Our own reader agrees, and storage data is 64-byte aligned as torch writes it.
    back = load_torch_bin(path)
    for name, arr in tensors.items():
        np.testing.assert_array_equal(back[name], arr)
    offsets = [off for name, off in _data_offsets(path) if "/data/" in name]
    assert len(offsets) == len(tensors) and all(off % 64 == 0 for off in offsets)


def test_save_torch_bin_bfloat16(torch, tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([1.0, -2.5, 3.140625], dtype=ml_dtypes.bfloat16)
    save_torch_bin(tmp_path / "m.bin", {"w": values})
    loaded = torch.load(tmp_path / "m.bin", weights_only=True)["w"]
    assert loaded.dtype == torch.bfloat16
    np.testing.assert_array_equal(loaded.float().numpy(), values.astype(np.float32))


def test_save_torch_bin_failure_leaves_old_file(tmp_path, monkeypatch):
    from kerasformer.checkpoints import torch_pickle

    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"old contents")
    with pytest.raises(KerasformerError, match="uint16"):
        save_torch_bin(path, {"ok": np.ones(2, np.float32), "bad": np.ones(2, np.uint16)})
    assert path.read_bytes() == b"old contents"
    # A failure half-way through writing (disk full, say) must not clobber the old file either.
    real_write, calls = torch_pickle._write_record, []

    def failing_write(zf, name, data, align=False):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full")
        real_write(zf, name, data, align)

    monkeypatch.setattr(torch_pickle, "_write_record", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_torch_bin(path, {"a": np.ones(2, np.float32), "b": np.ones(3, np.float32)})
    assert len(calls) == 3
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["pytorch_model.bin"]  # temp file removed


def test_save_safetensors_failure_leaves_old_file(tmp_path, monkeypatch):
    import safetensors.numpy

    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old contents")

    def failing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_safetensors(path, {"a": np.ones(2, np.float32)})
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["model.safetensors"]


# ----------------------------------------------------------------------------- open_checkpoint


def test_open_checkpoint_torch_file_and_directory(torch, tmp_path):
    sd = _reference_state_dict(torch)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    for target in (tmp_path / "pytorch_model.bin", tmp_path, str(tmp_path)):
        with open_checkpoint(target) as ckpt:
            assert isinstance(ckpt, CheckpointTensors)
            assert ckpt.format == "torch" and ckpt.path == os.fspath(target)
            assert ckpt.shape("transposed") == (5, 3) and ckpt.dtype("bf16") == np.float32
            assert "f32" in ckpt and "nope" not in ckpt and len(ckpt) == len(sd)
            _assert_same(dict(ckpt.items()), sd)
            with pytest.raises(KeyError):
                ckpt["nope"]


def test_open_checkpoint_legacy_bin_under_another_name(torch, tmp_path):
    sd = {"w": torch.randn(2, 3)}
    torch.save(sd, tmp_path / "weights.pth", _use_new_zipfile_serialization=False)
    ckpt = open_checkpoint(tmp_path / "weights.pth")  # recognised by content, not name
    assert ckpt.format == "torch"
    _assert_same(dict(ckpt), sd)


def test_open_checkpoint_safetensors_bf16_and_directory_preference(torch, tmp_path):
    from safetensors.torch import save_file

    sd = {"bf16": torch.randn(3, 2).to(torch.bfloat16), "f32": torch.randn(4),
          "i64": torch.arange(3), "bool": torch.tensor([True, False])}
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    torch.save({"other": torch.ones(1)}, tmp_path / "pytorch_model.bin")  # less preferred
    for target in (tmp_path / "model.safetensors", tmp_path):
        ckpt = open_checkpoint(target)
        assert ckpt.format == "safetensors"
        assert ckpt.shape("bf16") == (3, 2) and ckpt.dtype("bf16") == np.float32
        _assert_same({k: ckpt[k] for k in sd}, sd)
        assert set(ckpt) == set(sd)
        ckpt.close()
        np.testing.assert_array_equal(ckpt["f32"], sd["f32"].numpy())  # reopens after close


def _write_sharded(tmp_path, torch, kind):
    sd = {f"layer{i}.weight": torch.randn(2, i + 1) for i in range(4)}
    names = list(sd)
    shards = {"a": names[:2], "b": names[2:]}
    weight_map = {}
    for tag, keys in shards.items():
        part = {k: sd[k] for k in keys}
        if kind == "safetensors":
            from safetensors.torch import save_file

            fname = f"model-0000{'ab'.index(tag) + 1}-of-00002.safetensors"
            save_file(part, tmp_path / fname, metadata={"format": "pt"})
        else:
            fname = f"pytorch_model-0000{'ab'.index(tag) + 1}-of-00002.bin"
            torch.save(part, tmp_path / fname)
        weight_map.update(dict.fromkeys(keys, fname))
    index_name = "model.safetensors.index.json" if kind == "safetensors" else "pytorch_model.bin.index.json"
    index = tmp_path / index_name
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return sd, index, weight_map


@pytest.mark.parametrize("kind", ["safetensors", "torch"])
def test_sharded_index(torch, tmp_path, kind):
    sd, index, weight_map = _write_sharded(tmp_path, torch, kind)
    for target in (index, tmp_path):
        ckpt = open_checkpoint(target)
        assert ckpt.format == kind and len(ckpt.files) == 2
        assert ckpt.shape("layer3.weight") == (2, 4)
        _assert_same({k: ckpt[k] for k in sd}, sd)
        ckpt.close()

    # The index claims a tensor its shard does not hold.
    index.write_text(json.dumps({"weight_map": {**weight_map, "ghost": next(iter(weight_map.values()))}}))
    with pytest.raises(CheckpointError, match="ghost"):
        open_checkpoint(index)["ghost"]
    # A shard file is missing.
    index.write_text(json.dumps({"weight_map": {**weight_map, "x": "missing-shard.bin"}}))
    with pytest.raises(CheckpointError, match="missing-shard.bin"):
        open_checkpoint(index)
    # The index is not JSON.
    index.write_text('{"weight_map": ')
    with pytest.raises(CheckpointError, match=index.name):
        open_checkpoint(index)


def test_tf_checkpoint_prefix_files_and_directory(tmp_path):
    from kerasformer.checkpoints.tf_bundle import write_tf_checkpoint

    tensors = {"bert/embeddings/word_embeddings": np.arange(12, dtype=np.float32).reshape(4, 3),
               "global_step": np.array(7, dtype=np.int64)}
    prefix = tmp_path / "bert_model.ckpt"
    write_tf_checkpoint(prefix, tensors)
    targets = [prefix, f"{prefix}.index", f"{prefix}.data-00000-of-00001", tmp_path]
    for target in targets:
        ckpt = open_checkpoint(target)
        assert ckpt.format == "tf", target
        assert ckpt.shape("bert/embeddings/word_embeddings") == (4, 3)
        assert set(ckpt) == set(tensors)
        for name, arr in tensors.items():
            np.testing.assert_array_equal(ckpt[name], arr)
        ckpt.close()
    # Two checkpoints in one directory: the 'checkpoint' state file decides.
    write_tf_checkpoint(tmp_path / "model.ckpt-100", {"x": np.ones(2, np.float32)})
    with pytest.raises(CheckpointError, match="several TF checkpoints"):
        open_checkpoint(tmp_path)
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "/elsewhere/on/the/training/box/model.ckpt-100"\n'
        'all_model_checkpoint_paths: "/elsewhere/on/the/training/box/model.ckpt-100"\n')
    assert list(open_checkpoint(tmp_path)) == ["x"]


def test_directory_without_checkpoint(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(tmp_path)
    message = str(info.value)
    for looked_for in ("model.safetensors", "pytorch_model.bin", "index.json", "checkpoint",
                       "vocab.txt"):
        assert looked_for in message
    with pytest.raises(CheckpointError, match="no such file"):
        open_checkpoint(tmp_path / "nothing_here.bin")


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_safetensors(path, {"w": np.ones((16, 16), np.float32), "b": np.zeros(16, np.float32)})
    data = path.read_bytes()
    for n in (4, 20, len(data) - 1):
        path.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
            open_checkpoint(path)
        assert str(path) in str(info.value)


def test_save_safetensors(torch, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = _numpy_reference()
    tensors.pop("big_endian")  # stored little-endian; compared separately below
    path = tmp_path / "model.safetensors"
    save_safetensors(path, tensors, metadata={"note": "hi"})
    assert os.listdir(tmp_path) == ["model.safetensors"]
    with safe_open(path, framework="numpy") as fh:
        assert fh.metadata() == {"format": "pt", "note": "hi"}  # HF needs format=pt
    loaded = load_file(path)
    for name, arr in tensors.items():
        np.testing.assert_array_equal(loaded[name].numpy(), arr, err_msg=name)
        assert loaded[name].numpy().dtype == arr.dtype
    back = open_checkpoint(path)
    np.testing.assert_array_equal(back["transposed"], tensors["transposed"])
    assert back["scalar"].shape == ()


def test_save_safetensors_bf16_reads_back_as_float32(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([[1.0, -0.5], [3.140625, 1e30]], dtype=ml_dtypes.bfloat16)
    save_safetensors(tmp_path / "model.safetensors", {"w": values})
    ckpt = open_checkpoint(tmp_path)
    got = ckpt["w"]
    assert got.dtype == np.float32 and got.shape == (2, 2)
    np.testing.assert_array_equal(got, values.astype(np.float32))
