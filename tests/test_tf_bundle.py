"""TensorFlow checkpoint (tensor bundle) reading and writing, without TensorFlow.

The fixtures under fixtures/tf/ were written by real TensorFlow (fixtures/make_tf_fixtures.py,
which also checks that TensorFlow reads what write_tf_checkpoint writes).  Nothing here needs
TensorFlow or Keras.
"""

import functools
import os
import shutil

import numpy as np
import pytest

from kerasformer.checkpoints import tf_bundle
from kerasformer.checkpoints.tf_bundle import (TFCheckpointReader, crc32c, is_tf_checkpoint,
                                               read_tf_checkpoint, snappy_decompress,
                                               write_tf_checkpoint)
from kerasformer.errors import CheckpointError

TF_FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tf")
BERT = os.path.join(TF_FIXTURES, "bert_tiny", "bert_model.ckpt")
DTYPES = os.path.join(TF_FIXTURES, "dtypes", "model.ckpt")
SHARDED = os.path.join(TF_FIXTURES, "sharded", "model.ckpt")
SNAPPY = os.path.join(TF_FIXTURES, "snappy", "model.ckpt")
DATA = ".data-00000-of-00001"


def load_expected(prefix):
    with np.load(os.path.join(os.path.dirname(prefix), "expected.npz")) as npz:
        return {name: npz[name] for name in npz.files}


def assert_same(got, expected, name=""):
    """Exact equality; bytes ('S') expectations are compared to object arrays of bytes."""
    got = np.asarray(got)
    assert got.shape == expected.shape, (name, got.shape, expected.shape)
    if expected.dtype.kind == "S":
        assert got.dtype == object, name
        assert [bytes(x) for x in got.reshape(-1)] == [bytes(x) for x in expected.reshape(-1)], name
    else:
        assert np.array_equal(got, expected), name


def copy_checkpoint(prefix, directory):
    """Copy a fixture checkpoint (index and all shards) to `directory`; returns the new prefix."""
    src_dir, base = os.path.split(prefix)
    for name in os.listdir(src_dir):
        if name.startswith(base + "."):
            shutil.copy(os.path.join(src_dir, name), os.path.join(directory, name))
    return os.path.join(str(directory), base)


# --- fixtures written by TensorFlow -----------------------------------------------------------

GOOGLE_BERT_NAMES = (
    ["bert/embeddings/word_embeddings", "bert/embeddings/token_type_embeddings",
     "bert/embeddings/position_embeddings", "bert/embeddings/LayerNorm/gamma",
     "bert/embeddings/LayerNorm/beta", "bert/pooler/dense/kernel", "bert/pooler/dense/bias",
     "cls/predictions/transform/dense/kernel", "cls/predictions/transform/dense/bias",
     "cls/predictions/transform/LayerNorm/gamma", "cls/predictions/transform/LayerNorm/beta",
     "cls/predictions/output_bias", "cls/seq_relationship/output_weights",
     "cls/seq_relationship/output_bias", "global_step"]
    + [f"bert/encoder/layer_{i}/{part}" for i in range(2) for part in (
        "attention/self/query/kernel", "attention/self/query/bias",
        "attention/self/key/kernel", "attention/self/key/bias",
        "attention/self/value/kernel", "attention/self/value/bias",
        "attention/output/dense/kernel", "attention/output/dense/bias",
        "attention/output/LayerNorm/gamma", "attention/output/LayerNorm/beta",
        "intermediate/dense/kernel", "intermediate/dense/bias",
        "output/dense/kernel", "output/dense/bias",
        "output/LayerNorm/gamma", "output/LayerNorm/beta")]
)


def test_reads_google_bert_checkpoint_written_by_tf():
    expected = load_expected(BERT)
    with TFCheckpointReader(BERT) as reader:
        assert reader.keys() == sorted(GOOGLE_BERT_NAMES)
        assert reader.shape("bert/embeddings/word_embeddings") == (99, 32)
        assert reader.shape("bert/encoder/layer_1/intermediate/dense/kernel") == (32, 37)
        assert reader.shape("bert/encoder/layer_1/output/dense/kernel") == (37, 32)
        assert reader.shape("cls/seq_relationship/output_weights") == (2, 32)
        assert reader.shape("global_step") == ()
        assert reader.dtype("global_step") == np.int64
        assert int(reader.get("global_step")) == 12345
        for name in GOOGLE_BERT_NAMES:
            value = reader.get(name)
            if name != "global_step":
                assert value.dtype == np.float32 and reader.dtype(name) == np.float32
            assert_same(value, expected[name], name)
        gamma = reader.get("bert/encoder/layer_0/output/LayerNorm/gamma")
        assert abs(gamma.mean() - 1) < 0.1 and gamma.std() > 0.01  # not a default init


def test_dtypes_written_by_tf():
    expected = load_expected(DTYPES)
    with TFCheckpointReader(DTYPES) as reader:
        assert reader.keys() == sorted(expected)
        for name, value in expected.items():
            assert_same(reader.get(name), value, name)
            assert reader.shape(name) == value.shape, name
        assert reader.dtype("float16") == np.float16 and reader.get("float16").dtype == np.float16
        assert reader.dtype("float64") == np.float64
        assert reader.dtype("int8") == np.int8 and reader.dtype("int16") == np.int16
        assert reader.dtype("int32") == np.int32 and reader.dtype("int64") == np.int64
        assert reader.dtype("uint8") == np.uint8
        assert reader.dtype("bool") == np.bool_ and reader.get("bool").dtype == np.bool_
        # bfloat16 is widened to float32 (exactly: the npz holds TF's own bf16 -> f32 cast)
        assert reader.dtype("bfloat16") == np.float32 and reader.get("bfloat16").dtype == np.float32
        assert reader.tf_dtype("bfloat16") == "bfloat16"
        assert reader.dtype("string") == object and reader.tf_dtype("string") == "string"
        assert reader.get("string")[2].decode("utf-8") == "名字"
        assert reader.get("string")[4] == b"x" * 300  # length needs a 2-byte varint
        assert reader.shape("scalar_float") == () and float(reader.get("scalar_float")) == 3.25
        assert reader.shape("empty_float") == (0, 3) and reader.get("empty_float").size == 0
        assert reader.shape("string_empty") == (0,)
        assert reader.shape("float32_3d") == (2, 3, 4)
        assert "scope/名字/kernel" in reader


def test_two_shards_and_partitioned_variables():
    expected = load_expected(SHARDED)
    with TFCheckpointReader(SHARDED) as reader:
        assert reader.num_shards == 2
        # the slices of part_rows / part_cols are stored under their own keys; only whole
        # variables are listed
        assert reader.keys() == ["part_cols", "part_rows", "shard0/w", "shard1/b"]
        assert reader.shape("part_rows") == (6, 4)
        for name, value in expected.items():
            assert_same(reader.get(name), value, name)
        assert reader.get("part_cols").dtype == np.int32


def test_snappy_compressed_index():
    # same tensors as the dtypes fixture; its index was rebuilt from snappy-compressed blocks
    expected = load_expected(DTYPES)
    with open(SNAPPY + ".index", "rb") as f:
        raw = f.read()
    with open(DTYPES + ".index", "rb") as f:
        assert raw != f.read()
    got = read_tf_checkpoint(SNAPPY)
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert_same(got[name], value, name)


def test_read_tf_checkpoint_and_prefix_forms(tmp_path):
    everything = read_tf_checkpoint(BERT)
    assert sorted(everything) == sorted(GOOGLE_BERT_NAMES)
    assert read_tf_checkpoint(BERT + ".index").keys() == everything.keys()
    # a directory holding one checkpoint resolves to it
    assert TFCheckpointReader(os.path.dirname(BERT)).prefix == BERT
    # a directory with a TF "checkpoint" state file follows it
    prefix = copy_checkpoint(BERT, tmp_path)
    for ext in (".index", DATA):
        shutil.copy(prefix + ext, str(tmp_path / "other.ckpt") + ext)
    with pytest.raises(CheckpointError, match="2 checkpoint index files"):
        TFCheckpointReader(tmp_path)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "bert_model.ckpt"\n')
    assert TFCheckpointReader(tmp_path).prefix == prefix
    # an absolute path from the training machine: the file name is looked up here
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/gcs/run7/other.ckpt"\n')
    assert TFCheckpointReader(tmp_path).prefix == str(tmp_path / "other.ckpt")


def test_reader_api():
    reader = TFCheckpointReader(BERT)
    assert "bert/pooler/dense/kernel" in reader
    assert "bert/pooler/dense" not in reader and "" not in reader and 3 not in reader
    assert len(reader) == len(GOOGLE_BERT_NAMES)
    with pytest.raises(KeyError, match="nope"):
        reader.get("nope")
    with pytest.raises(KeyError):
        reader.shape("nope")
    reader.get("global_step")
    assert reader._files  # the data file is open...
    reader.close()
    assert not reader._files  # ...and closed
    np.testing.assert_array_equal(reader["global_step"], 12345)  # reopens on demand
    reader.close()


def test_is_tf_checkpoint(tmp_path):
    assert is_tf_checkpoint(BERT)
    assert is_tf_checkpoint(BERT + ".index")
    assert not is_tf_checkpoint(BERT + DATA)
    assert not is_tf_checkpoint(os.path.dirname(BERT))
    assert not is_tf_checkpoint(str(tmp_path / "model.ckpt"))


# --- writer -------------------------------------------------------------------------------------


def all_dtypes():
    rng = np.random.default_rng(5)
    return {
        "f32/3d": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "f16": rng.standard_normal(7).astype(np.float16),
        "f64": rng.standard_normal((2, 2)),
        "i8": np.array([-128, 5, 127], np.int8),
        "i16": np.array([-32768, 32767], np.int16),
        "i32": np.array([[-(2 ** 31)], [2 ** 31 - 1]], np.int32),
        "i64": np.array([-(2 ** 63), 2 ** 63 - 1], np.int64),
        "u8": np.array([0, 255], np.uint8),
        "u16": np.array([0, 65535], np.uint16),
        "u32": np.array([2 ** 32 - 1], np.uint32),
        "u64": np.array([2 ** 64 - 1], np.uint64),
        "c64": np.array([1 + 2j], np.complex64),
        "c128": np.array([[3 - 4j]], np.complex128),
        "bool": np.array([True, False, True]),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((3, 0), np.float32),
        "big": rng.standard_normal((200, 100)).astype(np.float32),  # numpy crc path
        "big-endian": np.arange(6, dtype=">i4"),
        "bert/encoder/layer_0/attention/self/query/kernel": np.ones((2, 2), np.float32),
        "unicode/名字": np.zeros(2, np.float32),
    }


def test_write_read_round_trip(tmp_path):
    values = all_dtypes()
    prefix = str(tmp_path / "out" / "model.ckpt")  # the directory is created
    write_tf_checkpoint(prefix, values)
    assert sorted(os.listdir(tmp_path / "out")) == ["model.ckpt" + DATA, "model.ckpt.index"]
    with TFCheckpointReader(prefix) as reader:
        assert reader.keys() == sorted(values)
        for name, value in values.items():
            got = reader.get(name)
            assert got.dtype == value.dtype.newbyteorder("="), name
            assert reader.dtype(name) == got.dtype, name
            assert reader.shape(name) == value.shape, name
            np.testing.assert_array_equal(got, value, err_msg=name)


def test_write_strings(tmp_path):
    values = {
        "object": np.array([b"a", "é", b"", b"\x00\xff" * 100], dtype=object),
        "bytes_2d": np.array([[b"ab", b"c"], [b"", b"xyz"]]),
        "unicode": np.array(["héllo", "世界"]),
        "scalar": np.array(b"one", dtype=object),
        "none": np.zeros((0, 2), dtype=object),
    }
    write_tf_checkpoint(tmp_path / "s.ckpt", values)
    got = read_tf_checkpoint(tmp_path / "s.ckpt")
    assert list(got["object"]) == [b"a", "é".encode(), b"", b"\x00\xff" * 100]
    assert got["bytes_2d"].tolist() == [[b"ab", b"c"], [b"", b"xyz"]]
    assert got["unicode"].tolist() == ["héllo".encode(), "世界".encode()]
    assert got["scalar"].shape == () and got["scalar"].item() == b"one"
    assert got["none"].shape == (0, 2) and got["none"].dtype == object


def test_write_bfloat16(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    value = np.array([1.0, -2.5, 3.140625, 1e30], dtype=ml_dtypes.bfloat16)
    write_tf_checkpoint(tmp_path / "b.ckpt", {"w": value})
    with TFCheckpointReader(tmp_path / "b.ckpt") as reader:
        assert reader.tf_dtype("w") == "bfloat16"
        got = reader.get("w")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, value.astype(np.float32))


def test_writer_reproduces_tensorflow_bytes(tmp_path):
    # Same tensors in, same bytes out: both the data file and the index match what TF wrote.
    write_tf_checkpoint(tmp_path / "bert.ckpt", read_tf_checkpoint(BERT))
    for ext in (".index", DATA):
        with open(BERT + ext, "rb") as a, open(str(tmp_path / "bert.ckpt") + ext, "rb") as b:
            assert a.read() == b.read(), ext


def test_writer_reproduces_tensorflow_bytes_all_dtypes(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = read_tf_checkpoint(DTYPES)
    values["bfloat16"] = values["bfloat16"].astype(ml_dtypes.bfloat16)
    write_tf_checkpoint(tmp_path / "d.ckpt", values)
    for ext in (".index", DATA):
        with open(DTYPES + ext, "rb") as a, open(str(tmp_path / "d.ckpt") + ext, "rb") as b:
            assert a.read() == b.read(), ext


def test_index_with_many_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(tf_bundle, "_build_table",
                        functools.partial(tf_bundle._build_table, block_size=200))
    values = {f"layer_{i:03d}/w": np.full((2,), i, np.int32) for i in range(150)}
    values["huge"] = np.zeros(1000, np.float32)
    write_tf_checkpoint(tmp_path / "m.ckpt", values)
    with open(str(tmp_path / "m.ckpt.index"), "rb") as f:
        raw = f.read()
    footer = raw[-48:]
    _, p = tf_bundle._read_varint(footer, 0)
    _, p = tf_bundle._read_varint(footer, p)
    offset, p = tf_bundle._read_varint(footer, p)
    size, _ = tf_bundle._read_varint(footer, p)
    n_blocks = len(list(tf_bundle._iter_block(tf_bundle._read_block(raw, offset, size))))
    assert n_blocks > 10
    got = read_tf_checkpoint(tmp_path / "m.ckpt")
    assert sorted(got) == sorted(values)
    for name, value in values.items():
        np.testing.assert_array_equal(got[name], value)


def test_write_is_atomic_and_overwrites(tmp_path):
    prefix = str(tmp_path / "m.ckpt")
    write_tf_checkpoint(prefix, {"a": np.arange(3)})
    with pytest.raises(CheckpointError, match="'bad'"):
        write_tf_checkpoint(prefix, {"a": np.arange(5), "bad": np.array([object()])})
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt" + DATA, "m.ckpt.index"]  # no temp files
    np.testing.assert_array_equal(read_tf_checkpoint(prefix)["a"], np.arange(3))  # old one intact
    write_tf_checkpoint(prefix, {"b": np.ones(2, np.float16)})
    assert list(read_tf_checkpoint(prefix)) == ["b"]


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(CheckpointError, match="datetime64"):
        write_tf_checkpoint(tmp_path / "x", {"t": np.array(["2020-01-01"], dtype="datetime64[D]")})
    with pytest.raises(CheckpointError, match="non-empty str"):
        write_tf_checkpoint(tmp_path / "x", {"": np.zeros(1)})
    with pytest.raises(CheckpointError, match="non-empty str"):
        write_tf_checkpoint(tmp_path / "x", {1: np.zeros(1)})
    assert os.listdir(tmp_path) == []


# --- damaged checkpoints ------------------------------------------------------------------------


def test_missing_index(tmp_path):
    with pytest.raises(CheckpointError, match=r"index not found: .*nope\.ckpt\.index"):
        TFCheckpointReader(tmp_path / "nope.ckpt")


def test_missing_data_shard(tmp_path):
    shutil.copy(BERT + ".index", str(tmp_path / "bert_model.ckpt.index"))
    with pytest.raises(CheckpointError, match=r"missing: .*bert_model\.ckpt\.data-00000-of-00001"):
        TFCheckpointReader(tmp_path / "bert_model.ckpt")


def test_missing_second_shard(tmp_path):
    prefix = copy_checkpoint(SHARDED, tmp_path)
    os.remove(prefix + ".data-00001-of-00002")
    with pytest.raises(CheckpointError, match=r"missing: .*model\.ckpt\.data-00001-of-00002"):
        TFCheckpointReader(prefix)


def test_truncated_data_file(tmp_path):
    prefix = copy_checkpoint(BERT, tmp_path)
    full = os.path.getsize(prefix + DATA)
    with open(prefix + DATA, "r+b") as f:
        f.truncate(full // 2)
    with pytest.raises(CheckpointError, match="truncated") as info:
        TFCheckpointReader(prefix)
    assert f"expected at least {full} bytes" in str(info.value)
    assert f"found {full // 2}" in str(info.value)
    assert "bert_model.ckpt" + DATA in str(info.value)


def test_data_file_truncated_after_open(tmp_path):
    prefix = copy_checkpoint(BERT, tmp_path)
    reader = TFCheckpointReader(prefix)
    last = max(reader.keys(), key=lambda n: reader._entries[n].offset)
    with open(prefix + DATA, "r+b") as f:
        f.truncate(os.path.getsize(prefix + DATA) - 3)
    with pytest.raises(CheckpointError, match="truncated"):
        reader.get(last)
    reader.close()


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ 0x10]))


def test_flipped_byte_in_tensor(tmp_path):
    prefix = copy_checkpoint(BERT, tmp_path)
    name = "bert/pooler/dense/kernel"
    expected = load_expected(BERT)
    with TFCheckpointReader(prefix) as reader:
        flip_byte(prefix + DATA, reader._entries[name].offset + 101)
        with pytest.raises(CheckpointError, match="corrupt.*crc32c"):
            reader.get(name)
        assert_same(reader.get("bert/pooler/dense/bias"), expected["bert/pooler/dense/bias"])
    with TFCheckpointReader(prefix, verify=False) as reader:  # the check can be turned off
        assert (reader.get(name) != expected[name]).sum() == 1


def test_flipped_byte_in_string_tensor(tmp_path):
    prefix = copy_checkpoint(DTYPES, tmp_path)
    with TFCheckpointReader(prefix) as reader:
        entry = reader._entries["string"]
        flip_byte(prefix + DATA, entry.offset + entry.size - 1)  # last byte of b"x" * 300
        with pytest.raises(CheckpointError, match="corrupt"):
            reader.get("string")
        flip_byte(prefix + DATA, entry.offset + entry.size - 1)
        flip_byte(prefix + DATA, entry.offset)  # a length varint
        with pytest.raises(CheckpointError, match="corrupt"):
            reader.get("string")


def test_garbage_index(tmp_path):
    prefix = copy_checkpoint(BERT, tmp_path)
    with open(prefix + ".index", "wb") as f:
        f.write(bytes(range(256)) * 2)
    with pytest.raises(CheckpointError, match=r"bert_model\.ckpt\.index: bad table magic"):
        TFCheckpointReader(prefix)
    with open(prefix + ".index", "wb") as f:
        f.write(b"short")
    with pytest.raises(CheckpointError, match="smaller than the 48-byte table footer"):
        TFCheckpointReader(prefix)


def test_corrupt_index_block(tmp_path):
    prefix = copy_checkpoint(BERT, tmp_path)
    flip_byte(prefix + ".index", 40)  # inside the first data block
    with pytest.raises(CheckpointError, match=r"\.index: block at offset 0 is corrupt"):
        TFCheckpointReader(prefix)


def write_raw_checkpoint(prefix, entries, data=b"", **table_kwargs):
    """A checkpoint from hand-made index entries: [(key, BundleEntryProto bytes)]."""
    items = [(b"", tf_bundle._encode_header(1))] + sorted(entries)
    with open(prefix + ".index", "wb") as f:
        f.write(tf_bundle._build_table(items, **table_kwargs))
    with open(prefix + DATA, "wb") as f:
        f.write(data)


def test_unsupported_dtype(tmp_path):
    prefix = str(tmp_path / "r.ckpt")
    write_raw_checkpoint(prefix, [(b"handle", tf_bundle._encode_entry(20, (2,), 0, 8, 0)),
                                  (b"ok", tf_bundle._encode_entry(3, (2,), 8, 8, crc32c(bytes(8))))],
                         data=bytes(16))
    with TFCheckpointReader(prefix) as reader:
        assert reader.shape("handle") == (2,)
        np.testing.assert_array_equal(reader.get("ok"), [0, 0])
        with pytest.raises(CheckpointError, match=r"'handle'.*DataType enum 20 \(resource\)"):
            reader.get("handle")


def test_unsupported_block_compression(tmp_path):
    prefix = str(tmp_path / "c.ckpt")
    write_raw_checkpoint(prefix, [], compress=(2, lambda block: block))
    with pytest.raises(CheckpointError, match="compression type 2.*not supported"):
        TFCheckpointReader(prefix)


def test_partitioned_variable_with_missing_slice(tmp_path):
    # full entry lists two slices; only the first is stored
    shape_pb = tf_bundle._pb_bytes(2, tf_bundle._pb_varint(1, 4))  # shape [4]
    extent0 = b"\x10\x02"  # Extent {length: 2} (start 0 is the default)
    extent1 = b"\x08\x02\x10\x02"  # Extent {start: 2, length: 2}
    full = (tf_bundle._pb_varint(1, 1) + tf_bundle._pb_bytes(2, shape_pb)
            + tf_bundle._pb_bytes(7, tf_bundle._pb_bytes(1, extent0))
            + tf_bundle._pb_bytes(7, tf_bundle._pb_bytes(1, extent1)))
    part0 = tf_bundle._encode_entry(1, (2,), 0, 8, crc32c(bytes(8)))
    key0 = tf_bundle._slice_key(b"v", [(0, 2)])
    prefix = str(tmp_path / "p.ckpt")
    write_raw_checkpoint(prefix, [(b"v", full), (key0, part0)], data=bytes(8))
    with TFCheckpointReader(prefix) as reader:
        assert reader.keys() == ["v"] and reader.shape("v") == (4,)
        with pytest.raises(CheckpointError, match=r"slice \[\(2, 2\)\] of partitioned variable 'v'"):
            reader.get("v")


def test_newer_format_version_is_refused(tmp_path):
    prefix = str(tmp_path / "v.ckpt")
    header = tf_bundle._pb_varint(1, 1) + tf_bundle._pb_bytes(3, tf_bundle._pb_varint(2, 7))
    with open(prefix + ".index", "wb") as f:
        f.write(tf_bundle._build_table([(b"", header)]))
    with pytest.raises(CheckpointError, match="min_consumer=7"):
        TFCheckpointReader(prefix)


# --- building blocks ----------------------------------------------------------------------------


def test_crc32c_known_values():
    # RFC 3720 (iSCSI) test vectors and the classic check value
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(b"") == 0
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283
    for v in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert tf_bundle._unmask_crc(tf_bundle._mask_crc(v)) == v
    assert tf_bundle._mask_crc(0) == 0xA282EAD8


@pytest.mark.parametrize("size", [2047, 2048, 2051, 70_001, (1 << 20) + 13, (3 << 20) - 1])
def test_crc32c_numpy_path_matches_bytewise(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    reference = tf_bundle._crc32c_update_py(0, data.tobytes())
    assert crc32c(data) == reference
    assert crc32c(data.tobytes()) == reference
    cut = size // 3 + 1
    assert crc32c(data[cut:], crc32c(data[:cut])) == reference  # extend from a running crc


def test_snappy_decompress_hand_made_stream():
    lit100 = bytes(range(100))
    stream = (
        bytes([117])  # uncompressed length, varint
        + bytes([(3 - 1) << 2]) + b"abc"  # literal "abc"
        + bytes([((9 - 4) << 2) | 1, 3])  # copy, 1-byte offset 3, length 9: overlaps itself
        + bytes([60 << 2, 100 - 1]) + lit100  # literal whose length is in the next byte
        + bytes([((3 - 1) << 2) | 2]) + (102).to_bytes(2, "little")  # copy, 2-byte offset
        + bytes([((2 - 1) << 2) | 3]) + (105).to_bytes(4, "little")  # copy, 4-byte offset
    )
    assert snappy_decompress(stream) == b"abcabcabcabc" + lit100 + b"bc\x00" + b"bc"
    with pytest.raises(CheckpointError, match="offset"):
        snappy_decompress(bytes([4, 1 << 2]) + b"ab" + bytes([((4 - 4) << 2) | 1, 9]))
    with pytest.raises(CheckpointError, match="header says"):
        snappy_decompress(bytes([5, 1 << 2]) + b"ab")


def snappy_compress(data):
    """A small greedy snappy compressor (tests only): literals plus 2-byte-offset copies."""
    out = bytearray(tf_bundle._encode_varint(len(data)))
    last = {}
    i = literal_start = 0

    def flush_literal(end):
        n = end - literal_start
        if n:
            if n <= 60:
                out.append((n - 1) << 2)
            else:
                out.extend(bytes([61 << 2]) + (n - 1).to_bytes(2, "little"))
            out.extend(data[literal_start:end])

    while i + 4 <= len(data):
        j = last.get(data[i:i + 4])
        last[data[i:i + 4]] = i
        if j is not None and i - j < 65536:
            n = 4
            while i + n < len(data) and n < 64 and data[j + n] == data[i + n]:
                n += 1
            flush_literal(i)
            out.extend(bytes([((n - 1) << 2) | 2]) + (i - j).to_bytes(2, "little"))
            i += n
            literal_start = i
        else:
            i += 1
    flush_literal(len(data))
    return bytes(out)


def test_snappy_compressed_table_round_trip():
    items = [(b"", b"header")] + [(f"bert/encoder/layer_{i:02d}/kernel".encode(), bytes(40) + bytes([i]))
                                  for i in range(60)]
    raw = tf_bundle._build_table(items, block_size=300, compress=(1, snappy_compress))
    plain = tf_bundle._build_table(items, block_size=300)
    assert len(raw) < len(plain) // 2  # really compressed
    assert tf_bundle._read_table(raw) == items
    for data in (b"", b"a", b"abcd" * 500, bytes(range(256)) * 3):
        assert snappy_decompress(snappy_compress(data)) == data


def test_slice_key_encoding():
    # examples from TF's ordered_code.cc comments, and a key TF wrote in the sharded fixture
    assert tf_bundle._ordered_signed(0x424242) == bytes.fromhex("f0424242")
    assert tf_bundle._ordered_signed(-0x800) == bytes.fromhex("3800")
    assert tf_bundle._ordered_signed(-1) == b"\x7f" and tf_bundle._ordered_signed(0) == b"\x80"
    assert tf_bundle._ordered_string(b"a\x00b\xff") == b"a\x00\xffb\xff\x00\x00\x01"
    key = tf_bundle._slice_key(b"part_rows", [(2, 4), (0, None)])
    assert key == b"\x00part_rows\x00\x01\x01\x02\x82\x84\x80\x7f"
    assert key in TFCheckpointReader(SHARDED)._slice_entries


def test_ordered_signed_lengths():
    # n bytes hold [-2**(7n-1), 2**(7n-1)): sign bit, n-1 size bits equal to it, a delimiter bit
    assert tf_bundle._ordered_signed(63) == b"\xbf" and tf_bundle._ordered_signed(-64) == b"\x40"
    assert tf_bundle._ordered_signed(64) == b"\xc0\x40"
    assert tf_bundle._ordered_signed(8192) == bytes.fromhex("e02000")
    assert tf_bundle._ordered_signed(-8193) == bytes.fromhex("1fdfff")
    assert tf_bundle._ordered_signed(2 ** 62) == bytes.fromhex("ffc04000000000000000")
    assert tf_bundle._ordered_signed(-(2 ** 63)) == bytes.fromhex("003f8000000000000000")
    values = [-(2 ** 63), -(2 ** 40), -8193, -65, -1, 0, 1, 64, 8192, 2 ** 40, 2 ** 63 - 1]
    encoded = [tf_bundle._ordered_signed(v) for v in values]
    assert encoded == sorted(encoded)  # order preserving, the point of the encoding


def test_index_key_shortening():
    # TF's FindShortestSeparator / FindShortSuccessor (used for the index block keys)
    assert tf_bundle._shortest_separator(b"abcd", b"abzz") == b"abd"
    assert tf_bundle._shortest_separator(b"a1", b"a2") == b"a1"  # no room between
    assert tf_bundle._shortest_separator(b"abc", b"abcd") == b"abc"  # prefix: unchanged
    assert tf_bundle._short_successor(b"bert/x") == b"c"
    assert tf_bundle._short_successor(b"\xff\xffa") == b"\xff\xffb"
    assert tf_bundle._short_successor(b"\xff") == b"\xff"
