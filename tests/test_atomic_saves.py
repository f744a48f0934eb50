"""Saves survive a kill at any moment (issue 11, savers) and accept bert4keras' file names
(issue 9 item 8).

A kill is simulated by making the write fail at a chosen point: what is on disk then is what a
SIGKILL at that point leaves (the temporary file of a really killed process stays behind; the
next save removes it, tested separately).
"""
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from kerasformer import build_transformer_model, saving
from kerasformer.backend import to_numpy
from kerasformer.checkpoints.resolve import save_safetensors
from kerasformer.checkpoints.tf_bundle import read_tf_checkpoint, write_tf_checkpoint
from kerasformer.checkpoints.torch_pickle import atomic_write


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no library code handles it."""


# ---- 6. TF checkpoints: the pair switches as one ---------------------------------------------


def test_tf_pair_survives_a_kill_at_every_rename(tmp_path, monkeypatch):
    prefix = str(tmp_path / "model.ckpt")
    old = {"w": np.zeros(3, "float32")}
    write_tf_checkpoint(prefix, old)
    real_replace = os.replace
    for kill_at in range(3):  # before the data rename, before the index rename, after both
        calls = []

        def replace(src, dst, kill_at=kill_at, calls=calls):
            if len(calls) == kill_at:
                raise Killed()
            calls.append(dst)
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        new = {"w": np.full(3, kill_at + 1.0, "float32")}
        try:
            write_tf_checkpoint(prefix, new)
        except Killed:
            pass
        monkeypatch.setattr(os, "replace", real_replace)
        got = read_tf_checkpoint(prefix)["w"]
        expected = new["w"] if kill_at == 2 else old["w"]
        np.testing.assert_array_equal(got, expected, err_msg=f"killed at rename {kill_at}")
        old = {"w": got}


def test_tf_pair_alternates_and_cleans_up(tmp_path):
    prefix = str(tmp_path / "model.ckpt")
    for step in range(3):
        write_tf_checkpoint(prefix, {"w": np.full(2, step, "int32")})
        data = sorted(n for n in os.listdir(tmp_path) if ".data-" in n)
        assert len(data) == 1, data  # the previous data file is gone once the index switched
        assert read_tf_checkpoint(prefix)["w"].tolist() == [step, step]
    tf = pytest.importorskip("tensorflow", reason="TF reads the alternate layout")
    assert tf.train.load_checkpoint(prefix).get_tensor("w").tolist() == [2, 2]


# ---- 7. Keras files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return build_transformer_model(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=24, max_position=16)


def _kill_inside_writes(monkeypatch):
    """The next zip / HDF5 write dies after the target was opened."""
    def die(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr(zipfile.ZipFile, "writestr", die)
    import h5py

    monkeypatch.setattr(h5py.Group, "create_dataset", die)


@pytest.mark.parametrize("kind", ["model", "weights"])
def test_keras_saves_keep_the_old_file_when_killed(model, tmp_path, monkeypatch, kind):
    path = str(tmp_path / ("m.keras" if kind == "model" else "m.weights.h5"))
    save = model.save if kind == "model" else model.save_weights
    save(path)
    before = open(path, "rb").read()
    with monkeypatch.context() as m:
        _kill_inside_writes(m)
        with pytest.raises(Killed):
            save(path)
    assert open(path, "rb").read() == before
    if kind == "model":
        keras.saving.load_model(path)
    else:
        model.load_weights(path)


def test_plain_keras_models_save_atomically_through_saving(model, tmp_path, monkeypatch):
    wrapper = keras.Model(model.inputs, model.outputs)  # what most scripts train and save
    path = str(tmp_path / "resume.keras")
    saving.save_model(wrapper, path)
    before = open(path, "rb").read()
    with monkeypatch.context() as m:
        _kill_inside_writes(m)
        with pytest.raises(Killed):
            saving.save_model(wrapper, path)
    assert open(path, "rb").read() == before


# ---- 8. stale temporary files, file mode ------------------------------------------------------


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_the_same_target_are_removed(tmp_path):
    target = tmp_path / "m.safetensors"
    stale = tmp_path / f".m.safetensors.{_dead_pid()}-0123456789ab.tmp"
    live = tmp_path / f".m.safetensors.{os.getpid()}-0123456789ab.tmp"  # a writer still running
    other = tmp_path / f".other.safetensors.{_dead_pid()}-0123456789ab.tmp"
    for f in (stale, live, other):
        f.write_bytes(b"x" * 100)
    save_safetensors(str(target), {"w": np.ones(2, "float32")})
    assert not stale.exists() and live.exists() and other.exists()


def test_stale_keras_temp_files_are_removed(model, tmp_path):
    stale = tmp_path / f".m.keras.{_dead_pid()}-0123456789ab.tmp.keras"
    stale.write_bytes(b"x")
    model.save(str(tmp_path / "m.keras"))
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path)) == ["m.keras"]


@pytest.mark.parametrize("writer", ["safetensors", "atomic_write"])
def test_saved_files_get_the_umask_mode(tmp_path, writer):
    old = os.umask(0o027)
    try:
        path = str(tmp_path / "m.safetensors")
        if writer == "safetensors":
            save_safetensors(path, {"w": np.ones(2, "float32")})
        else:
            with atomic_write(path) as tmp:
                os.chmod(tmp, 0o600)  # what a library writing the file itself may do
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o640


# ---- issue 9 item 8: bert4keras' file names ---------------------------------------------------


@pytest.mark.parametrize("name, written", [
    ("best_model.weights", "best_model.weights.h5"),
    ("best_model.h5", "best_model.weights.h5"),
    ("best_model.weights.h5", "best_model.weights.h5"),
    ("ckpt", "ckpt.weights.h5"),
])
def test_bert4keras_weight_names(model, tmp_path, monkeypatch, name, written):
    monkeypatch.chdir(tmp_path)
    values = [to_numpy(w).copy() for w in model.weights]
    model.save_weights(name)
    assert os.listdir(tmp_path) == [written]
    model.weights[0].assign(np.zeros_like(values[0]))
    model.load_weights(name)
    np.testing.assert_array_equal(to_numpy(model.weights[0]), values[0])


def test_bert4keras_model_name(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model.save("x.model")
    assert os.listdir(tmp_path) == ["x.model.keras"]
    loaded = saving.load_model("x.model")
    ids = np.array([[2, 5, 7, 3]], "int32")
    np.testing.assert_allclose(to_numpy(loaded.predict([ids, 0 * ids], verbose=0)),
                               to_numpy(model.predict([ids, 0 * ids], verbose=0)), atol=1e-6)
