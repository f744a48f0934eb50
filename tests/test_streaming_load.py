"""load_weights (issue 11 item 5): checked from metadata first (all or nothing), then streamed
one tensor at a time, for every format. Peak memory is measured with tracemalloc on numpy
stand-ins for the model variables (the full-size figures: benchmarks/bench_load_memory.py)."""
import tracemalloc

import numpy as np
import pytest

from kerasformer.checkpoints.resolve import open_checkpoint, save_safetensors
from kerasformer.checkpoints.tf_bundle import write_tf_checkpoint
from kerasformer.checkpoints.torch_pickle import save_torch_bin
from kerasformer.checkpoints.weights import WeightSource, load_weights
from kerasformer.errors import WeightMismatchError

N, SHAPE = 8, (512, 512)  # 8 tensors of 1 MiB
WRITERS = {"tf": (write_tf_checkpoint, "ckpt"), "safetensors": (save_safetensors, "safetensors"),
           "torch": (save_torch_bin, "bin")}


class Slot:
    """A variable stand-in: a preallocated array that assign() fills in place."""

    def __init__(self, shape, dtype="float32"):
        self.value = np.zeros(shape, dtype)
        self.shape, self.dtype = shape, dtype

    def assign(self, value):
        self.value[...] = value


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    rng = np.random.default_rng(0)
    tensors = {f"w{i}": rng.standard_normal(SHAPE, dtype=np.float32) for i in range(N)}
    directory = tmp_path_factory.mktemp("stream")
    paths = {}
    for fmt, (write, ext) in WRITERS.items():
        paths[fmt] = str(directory / f"model.{ext}")
        write(paths[fmt], tensors)
    return tensors, paths


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_load_streams_one_tensor_at_a_time(checkpoints, fmt):
    tensors, paths = checkpoints
    slots = {name: Slot(SHAPE) for name in tensors}
    sources = {name: WeightSource(names=(name,)) for name in tensors}
    with open_checkpoint(paths[fmt]) as ckpt:
        tracemalloc.start()
        load_weights(slots, sources, ckpt)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    for name, value in tensors.items():
        np.testing.assert_array_equal(slots[name].value, value)
    tensor_bytes = tensors["w0"].nbytes
    # one tensor plus fixed costs (TF: the crc32c piece buffer); all N at once before
    assert peak < 4 * tensor_bytes, f"{fmt}: peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_a_mismatch_anywhere_changes_nothing(checkpoints, fmt):
    tensors, paths = checkpoints
    slots = {name: Slot(SHAPE) for name in tensors}
    slots["w7"] = Slot((512, 256))  # the last one does not fit
    sources = {name: WeightSource(names=(name,)) for name in tensors}
    with open_checkpoint(paths[fmt]) as ckpt, pytest.raises(WeightMismatchError, match="w7"):
        load_weights(slots, sources, ckpt)
    assert all(not slot.value.any() for slot in slots.values())


def test_transforms_are_checked_on_shapes_and_applied_once(checkpoints):
    tensors, paths = checkpoints
    keep = [5, 1, 3]
    calls = []

    def take_rows(value):
        calls.append(value.shape)
        return value[keep]

    slots = {"w0": Slot((3, 512)), "w1": Slot((512, 512))}
    sources = {"w0": WeightSource(names=("w0",)), "w1": WeightSource(names=("w1",), transpose=True)}
    with open_checkpoint(paths["safetensors"]) as ckpt:
        load_weights(slots, sources, ckpt, transforms={"w0": take_rows})
    np.testing.assert_array_equal(slots["w0"].value, tensors["w0"][keep])
    np.testing.assert_array_equal(slots["w1"].value, tensors["w1"].T)
    bad = {"w0": lambda v: v[[0, 600]]}  # keep_tokens past the checkpoint's vocabulary
    with open_checkpoint(paths["tf"]) as ckpt, pytest.raises(WeightMismatchError, match="w0"):
        load_weights({"w0": Slot((2, 512))}, {"w0": WeightSource(names=("w0",))}, ckpt,
                     transforms=bad)


def test_string_tensors_are_refused_before_assigning(tmp_path):
    path = str(tmp_path / "s.ckpt")
    write_tf_checkpoint(path, {"a": np.ones(2, "float32"), "b": np.array([b"x", b"y"], object)})
    slots = {"a": Slot((2,)), "b": Slot((2,))}
    with open_checkpoint(path) as ckpt, pytest.raises(WeightMismatchError, match="not numbers"):
        load_weights(slots, {n: WeightSource(names=(n,)) for n in slots}, ckpt)
    assert not slots["a"].value.any()
