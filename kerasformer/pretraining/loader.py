"""Streams training batches from the shards, shuffled, resumable, prefetched.

The training stream is a sequence of epochs; epoch e visits every row of every shard once,
in the order of a pseudo-random permutation of all rows keyed by ``(seed, e)``. Shuffling
across shards matters: the shards are written in corpus order, so a loader that read one
shard at a time (even shuffled within it) fed hundreds of steps of one source (all poetry,
then all news titles) and the loss jumped at every shard switch. The permutation is a
Feistel network with cycle walking, computed for the rows of each batch on demand: no
table of N indices is held, and the shards stay numpy memmaps read a few rows at a time,
so a corpus larger than memory streams. Global batch b is rows ``[b * batch_size, (b + 1) * batch_size)`` of the stream:
on several hosts each process reads its own contiguous slice of every global batch, so the
union is the same for any host count. The position (rows consumed) is the whole state:
``state_dict()`` / ``load_state_dict()`` resume exactly. A background thread prepares
``prefetch`` batches ahead (numpy releases the GIL while copying and masking), so the
training step does not wait for data.
"""
import os
import queue
import threading

import numpy as np

from kerasformer.errors import KerasformerError
from kerasformer.pretraining.corpus import load_index


_ROUNDS = 4  # Feistel rounds: 4 give a pseudo-random permutation (Luby-Rackoff)


def _mix(x, key):
    """A 64-bit hash of ``x`` under ``key`` (splitmix64's finaliser): the round function."""
    with np.errstate(over="ignore"):
        z = (x ^ key) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def permute(x, n, keys):
    """``x`` (int64 values in ``[0, n)``) through a keyed bijection of ``[0, n)``: a balanced
    Feistel network on the smallest even bit width that holds ``n``, applied again to any
    value that lands outside ``[0, n)`` (cycle walking; fewer than 4 passes expected)."""
    half = max(1, (int(n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    out = np.asarray(x, "int64").copy()
    todo = np.ones(out.shape, bool)
    while todo.any():
        v = out[todo].astype("uint64")
        left, right = v >> np.uint64(half), v & mask
        for key in keys:
            left, right = right, left ^ (_mix(right, key) & mask)
        out[todo] = ((left << np.uint64(half)) | right).astype("int64")
        todo = out >= n
    return out


class ShardedDataset:
    """The shards of a preprocessed dataset, opened lazily as memmaps."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.index = load_index(data_dir)
        self.counts = np.array([s["count"] for s in self.index["shards"]], "int64")
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.seq_len = int(self.index["seq_len"])
        self._open = {}

    def __len__(self):
        return int(self.offsets[-1])

    def shard(self, i):
        if i not in self._open:
            if len(self._open) > 2:  # keep few maps open; pages are the OS's to manage
                self._open.pop(next(iter(self._open)))
            name = os.path.join(self.data_dir, self.index["shards"][i]["name"])
            self._open[i] = (np.load(name + ".ids.npy", mmap_mode="r"),
                             np.load(name + ".starts.npy", mmap_mode="r"))
        return self._open[i]


class Loader:
    """Batches of ``objective(rows)`` from a :class:`ShardedDataset`.

    ``batch_size`` is the global batch; ``process_index`` / ``process_count`` select this
    host's slice. Iterating yields ``(x, y)``; ``position`` counts the global rows consumed
    by the batches handed out so far.
    """

    def __init__(self, dataset, batch_size, objective, seed=0, prefetch=4, process_index=0, process_count=1):
        self.dataset = dataset if isinstance(dataset, ShardedDataset) else ShardedDataset(dataset)
        if batch_size % process_count:
            raise KerasformerError(f"batch size {batch_size} is not divisible by {process_count} processes")
        self.batch_size, self.objective, self.seed = int(batch_size), objective, int(seed)
        self.prefetch = int(prefetch)
        self.local = slice(process_index * batch_size // process_count,
                           (process_index + 1) * batch_size // process_count)
        self.position = 0
        self._thread = None
        self._epoch_cache = {}

    # -- the stream ----------------------------------------------------------------------

    def _epoch_keys(self, epoch):
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: np.random.default_rng([self.seed, epoch]).integers(
                0, 2**63, size=_ROUNDS, dtype="uint64")}
        return self._epoch_cache[epoch]

    def rows(self, start, stop):
        """Stream rows ``[start, stop)``: ``(ids, starts, stream keys, dataset keys)``."""
        n = len(self.dataset)
        stream = np.arange(start, stop, dtype="int64")
        epochs, offsets = np.divmod(stream, n)
        data_keys = np.empty_like(stream)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            data_keys[here] = permute(offsets[here], n, self._epoch_keys(int(epoch)))
        shards = np.searchsorted(self.dataset.offsets, data_keys, side="right") - 1
        ids = starts = None
        for shard in np.unique(shards):
            here = np.flatnonzero(shards == shard)
            within = data_keys[here] - self.dataset.offsets[shard]
            order = np.argsort(within)  # memmap reads in file order
            s_ids, s_starts = self.dataset.shard(int(shard))
            if ids is None:
                ids = np.empty((len(stream), s_ids.shape[1]), s_ids.dtype)
                starts = np.empty((len(stream), s_starts.shape[1]), s_starts.dtype)
            ids[here[order]] = s_ids[within[order]]
            starts[here[order]] = s_starts[within[order]]
        return ids, starts, stream, data_keys

    def batch_at(self, position):
        """The local part of the global batch starting at stream row ``position``."""
        lo, hi = position + self.local.start, position + self.local.stop
        ids, starts, stream_keys, data_keys = self.rows(lo, hi)
        return self.objective(ids, starts, stream_keys, data_keys)

    # -- iteration with a prefetch thread ------------------------------------------------

    def state_dict(self):
        return {"position": int(self.position), "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state):
        if int(state["seed"]) != self.seed:
            raise KerasformerError(f"the checkpoint's data seed {state['seed']} differs from {self.seed}")
        self.close()
        self.position = int(state["position"])

    def _produce(self, start, out, stop_event):
        pos = start
        try:
            while not stop_event.is_set():
                item = (pos + self.batch_size, self.batch_at(pos))
                while not stop_event.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                pos += self.batch_size
        except BaseException as e:  # handed to the consumer, raised there
            out.put(e)

    def __iter__(self):
        return self

    def __next__(self):
        if self.prefetch <= 0:
            batch = self.batch_at(self.position)
            self.position += self.batch_size
            return batch
        if self._thread is None:
            self._queue = queue.Queue(self.prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._produce, args=(self.position, self._queue, self._stop),
                                            daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        self.position, batch = item
        return batch

    def close(self):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
