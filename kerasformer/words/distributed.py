"""N-gram counting on a Dask cluster, over sharded corpus files.

The same two passes as `count_ngrams`, with one task per shard (file): character counts
per shard, merged at the client into the vocabulary; the code point -> id table is
broadcast once; n-gram counts per shard (each worker streams its file chunk by chunk),
merged by a tree of tasks on the cluster and pruned by min_count at the end. The result
is the `NgramCounts` the single-process path gives (tests/test_words.py checks it).

    from dask.distributed import Client, LocalCluster
    with Client(LocalCluster(n_workers=4)) as client:
        counts = count_ngrams_dask(client, ["shard-000.txt", "shard-001.txt", ...])

Needs ``pip install "dask[distributed]"`` (the ``distributed`` extra).
"""
from kerasformer.errors import KerasformerError
from kerasformer.words.counting import (NgramCounts, _Accumulator, _count_code_points, count_chunk, iter_chunks,
                                        merge_counts, raw_code_points, vocabulary)


def _shard_chars(path, chunk_chars):
    acc = _Accumulator(1)
    for text in iter_chunks([path], chunk_chars):
        acc.add([_count_code_points(text)])
    return acc.result(1)[0]


def _shard_ngrams(path, table, bits, order, chunk_chars):
    acc = _Accumulator(order)
    for text in iter_chunks([path], chunk_chars):
        acc.add(count_chunk(table[raw_code_points(text)], bits, order))
    return acc.result(1)  # unpruned: a rare n-gram of one shard may be frequent overall


def _merge_shards(*shards):
    return [merge_counts([s[n] for s in shards]) for n in range(len(shards[0]))]


def count_ngrams_dask(client, files, order=4, min_count=2, chunk_chars=1 << 22, fan_in=8):
    """`count_ngrams` on a dask.distributed `client`, one task per file in `files`.

    The workers must see the files at the same paths (a shared file system, or a local
    cluster). `fan_in`: shard results merged per task of the reduction tree.
    """
    if order < 1 or min_count < 1:
        raise KerasformerError(f"order and min_count must be >= 1, got order={order}, min_count={min_count}")
    files = [str(f) for f in files]
    if not files:
        raise KerasformerError("no corpus files given")
    char_parts = client.gather(client.map(_shard_chars, files, chunk_chars=chunk_chars, pure=False))
    code_pts, char_counts = merge_counts(char_parts)
    chars = vocabulary(code_pts, char_counts, min_count, order)
    counts = NgramCounts(chars, [], [], int(char_counts.sum()), order, min_count)
    table = client.scatter(counts.table, broadcast=True)
    futures = client.map(_shard_ngrams, files, table=table, bits=counts.bits, order=order,
                         chunk_chars=chunk_chars, pure=False)
    while len(futures) > 1:  # tree reduction on the cluster: no single task holds every shard
        futures = [client.submit(_merge_shards, *futures[i:i + fan_in], pure=False)
                   for i in range(0, len(futures), fan_in)]
    merged = futures[0].result()
    counts.keys, counts.counts = [], []
    for keys, cts in merged:
        keep = cts >= min_count
        counts.keys.append(keys[keep])
        counts.counts.append(cts[keep])
    return counts


__all__ = ["count_ngrams_dask"]
