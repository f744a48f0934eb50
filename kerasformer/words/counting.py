"""N-gram counting at numpy speed, streaming, in parallel and with bounded memory.

Text is turned into an array of Unicode code points (``str.encode('utf-32-le')``, one
numpy view, no Python loop per character), normalised (full-width ASCII -> ASCII) and
mapped through a code point -> id table. Every character that is not a "word
character" (CJK ideograph, ASCII letter or digit, 〇/○) is id 0 and acts as a sentence
break, like nlp-zero's ``re.split('[^\\u4e00-\\u9fa50-9a-zA-Z]+')``.

An n-gram is packed into one ``uint64`` key, first character in the high bits, ``bits``
bits per character. Each position's key packs the `order` characters starting there
(those after a break set to 0); one sort of these keys counts every order at once, since
equal n-gram prefixes end up side by side. Chunk counts (sorted) are merged linearly.

Two passes over the corpus: the first counts characters, the second n-grams. Characters
seen fewer than ``min_count`` times cannot be part of an n-gram seen ``min_count``
times, so the second pass treats them as breaks: ids stay dense and small (16 bits
hold 65,535 characters, so 4-grams fit one key) and the counts kept are exact.

Memory: with ``spill_dir`` (or ``max_memory_mb``) the chunk counts are written to disk,
partitioned by a hash of the key, and each partition is merged and pruned on its own,
so peak memory is one chunk plus one partition, whatever the corpus size.
"""
import os
import shutil
import tempfile

import numpy as np

from kerasformer.errors import KerasformerError
from kerasformer.words import native

MAX_CODE_POINT = 0x110000
_WORD_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF), (0x20000, 0x2FFFF),
                (ord("0"), ord("9")), (ord("a"), ord("z")), (ord("A"), ord("Z")),
                (0x3007, 0x3007), (0x25CB, 0x25CB)]  # 〇, and ○ which news text writes for zero


def _build_normalise():
    # full-width ASCII (U+FF01..FF5E) -> ASCII, ideographic space -> space; 1:1 per
    # character, so positions in the normalised text are positions in the original
    table = np.arange(MAX_CODE_POINT, dtype=np.uint32)
    table[0xFF01:0xFF5F] -= 0xFEE0
    table[0x3000] = 0x20
    return table


_NORMALISE = _build_normalise()
_IS_WORD = np.zeros(MAX_CODE_POINT, dtype=bool)
for _lo, _hi in _WORD_RANGES:
    _IS_WORD[_lo:_hi + 1] = True

# code point -> its normalised code point if that is a word character, else 0: one gather
# does what normalise + the word test + np.where do
_WORD_CODE = np.where(_IS_WORD[_NORMALISE], _NORMALISE, 0).astype(np.uint32)

FULL_TO_HALF = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def normalise(text):
    """Full-width ASCII -> ASCII (one character for one, positions unchanged)."""
    return text.translate(FULL_TO_HALF)


def raw_code_points(text):
    """Code points of `text` as a uint32 array (index i = text[i]; all < MAX_CODE_POINT)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def code_points(text):
    """Normalised code points of `text` as a uint32 array (index i = text[i])."""
    return _NORMALISE[raw_code_points(text)]


def code_slices(codes, starts, ends):
    """[str of codes[s:e] for each s, e] (code points that are no newline): one gather and
    one decode for all, not a slice and a string per piece."""
    lengths = (ends - starts).astype(np.intp) + 1  # + a newline after each
    if not len(lengths):
        return []
    if native.AVAILABLE:
        out = native.slices(codes, np.stack([starts, ends], axis=1))
        return out.tobytes().decode("utf-32-le").split("\n")[:-1]
    piece = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(len(piece)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out = np.full(len(piece), 10, np.uint32)
    inside = within < lengths[piece] - 1
    out[inside] = codes[starts[piece[inside]] + within[inside]]
    return out.tobytes().decode("utf-32-le").split("\n")[:-1]


def word_code_points(text):
    """Normalised code points of `text` with every non-word character set to 0 (a break)."""
    return _WORD_CODE[raw_code_points(text)]


def merge_counts(parts):
    """Sum (keys, counts) pairs, each with sorted unique keys, into one such pair."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    while len(parts) > 1:  # pairwise, balanced: each merge is linear, no sort
        parts = [_merge_two(*parts[i:i + 2]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def _merge_two(a, b):
    return native.merge_two(a, b) if native.AVAILABLE else _merge_numpy(a, b)


def _merge_numpy(a, b):
    # where each key of b goes in the merged array: after the keys of a below it (and
    # before an equal one); the rest of the slots are a's, in order
    slots = np.searchsorted(a[0], b[0]) + np.arange(len(b[0]))
    from_a = np.ones(len(a[0]) + len(b[0]), bool)
    from_a[slots] = False
    keys = np.empty(len(from_a), np.uint64)
    counts = np.empty(len(from_a), np.int64)
    keys[slots], counts[slots] = b
    keys[from_a], counts[from_a] = a
    # each part has unique keys: a key appears at most twice, side by side
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    counts[dup] += counts[dup + 1]
    keep = np.ones(len(keys), bool)
    keep[dup + 1] = False
    return keys[keep], counts[keep]


def reduce_counts(keys, counts):
    """Sum the counts of equal keys (any order, repeats allowed): sorted unique keys."""
    order = np.argsort(keys)  # sums do not depend on the order of equal keys: no stable sort
    keys, counts = keys[order], counts[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.add.reduceat(counts, starts).astype(np.int64)


def start_keys(ids, bits, order):
    """(keys, ahead) per start position s: keys[s] packs ids[s:s+order] (first character in
    the high bits) with every character from the first break on set to 0, so the packed
    n-gram starting at s is keys[s] >> bits*(order-n); ahead[s] (0..order) is the number of
    word characters in that window, i.e. the longest n-gram starting at s."""
    size = len(ids)
    wide = ids.astype(np.uint64)
    keys = wide << np.uint64(bits * (order - 1))
    alive = ids != 0
    ahead = alive.astype(np.int8)
    run = alive.copy()
    for j in range(1, order):
        keys[:size - j] |= wide[j:] << np.uint64(bits * (order - 1 - j))
        run[:size - j] &= alive[j:]
        run[max(size - j, 0):] = False
        ahead += run
    # zero what follows the first break: keep the top `ahead` characters
    full = (1 << (bits * order)) - 1
    masks = np.array([full ^ ((1 << (bits * (order - a))) - 1) for a in range(order + 1)], np.uint64)
    keys &= masks[ahead]
    return keys, ahead


def _runs(sorted_keys):
    """(distinct keys, counts) of a sorted array."""
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if len(sorted_keys) else \
        np.zeros(0, np.intp)
    return sorted_keys[starts], np.diff(np.r_[starts, len(sorted_keys)]).astype(np.int64)


def group_prefixes(sorted_keys, bits, order, whole=False, first=1):
    """[(keys, counts) for n in first..order] from sorted zero-padded order-length keys (see
    `start_keys`): the n-gram of a key is its top n characters, and a sorted array has
    equal prefixes side by side, so one sort counts every order (a prefix ending in a
    break, 0, is no n-gram). `whole`: a key counts only as the n-gram of its own length
    (its first n characters non-zero, the rest 0), not as each of its prefixes."""
    char_mask = np.uint64((1 << bits) - 1)
    if whole:
        keys, counts = _runs(sorted_keys)
        length = sum(((keys >> np.uint64(bits * j)) & char_mask != 0).astype(np.int8) for j in range(order))
        return [(keys[length == n] >> np.uint64(bits * (order - n)), counts[length == n])
                for n in range(first, order + 1)]
    out = []
    for n in range(first, order + 1):
        # group first, then drop the groups that are no n-gram: the filter runs on the
        # distinct prefixes, not on every position
        keys, counts = _runs(sorted_keys >> np.uint64(bits * (order - n)))
        keep = (keys & char_mask) != 0
        out.append((keys[keep], counts[keep]))
    return out


def count_keys(keys, bits, order, first=1, whole=False):
    """`group_prefixes` of `keys` in any order: sorted (in place: pass an array of your
    own), then grouped (compiled kernels when built: a radix sort and one grouping pass;
    else numpy's sort and one pass per order)."""
    if native.AVAILABLE:
        return native.group(native.sort(keys, bits * order, copy=False), bits, order, first, whole)
    return group_prefixes(np.sort(keys), bits, order, whole, first)


def count_ids(ids):
    """(ids, counts) of the non-zero values of `ids` (a bincount)."""
    counts = native.bincount(ids, 2) if native.AVAILABLE and ids.dtype == np.uint32 else np.bincount(ids, minlength=2)
    counts[0] = 0  # breaks
    uniq = np.flatnonzero(counts)
    return uniq.astype(np.uint64), counts[uniq].astype(np.int64)


def count_chunk(ids, bits, order):
    """[(keys, counts) for n in 1..order] of one chunk of ids (0 = break)."""
    if native.AVAILABLE:
        return [count_ids(ids)] + count_keys(native.start_keys(ids, bits, order), bits, order, first=2)
    keys, ahead = start_keys(ids, bits, order)
    # 1-grams by a bincount; one sort for every longer order, of the positions that start
    # a 2-gram (sorting is the main cost of counting)
    return [count_ids(ids)] + count_keys(keys[ahead > 1], bits, order, first=2)


# -- corpus reading ----------------------------------------------------------------

def _is_path(source):
    return isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                               and len(source) < 4096 and os.path.isfile(source))


def corpus_files(sources):
    """The file paths of `sources`, or None when `sources` are texts.

    `sources` is a path, a list of paths (str or os.PathLike), or an iterable of str
    texts; the first element decides (one file-system check, not one per line). An
    iterator is only peeked at when it holds texts (see `iter_chunks`)."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not isinstance(sources, (list, tuple)):
        return None
    if not sources or not _is_path(sources[0]):
        return None
    for s in sources:
        if not os.path.isfile(s):
            raise KerasformerError(f"corpus file not found: {str(s)[:200]}")
    return list(sources)


def iter_chunks(sources, chunk_chars=1 << 22, progress=None):
    """Yield text chunks of about `chunk_chars` characters, cut at line ends.

    `sources`: see `corpus_files`. Files are read in binary by blocks, so memory stays one
    chunk whatever the file size; `progress` (a tqdm bar or None) advances by bytes.
    """
    files = corpus_files(sources)
    if files is not None:
        for path in files:
            with open(path, "rb") as f:
                while True:
                    block = f.read(chunk_chars * 3) + f.readline()  # whole lines, whole UTF-8 characters
                    if not block:
                        break
                    if progress is not None:
                        progress.update(len(block))
                    yield block.decode("utf-8", "replace")
        return
    pending, size = [], 0
    for i, text in enumerate([sources] if isinstance(sources, str) else sources):
        if not isinstance(text, str):
            raise KerasformerError(f"a corpus is file paths or str texts, got a {type(text).__name__}")
        if i == 0 and _is_path(text):  # a generator of paths: we would count the names
            raise KerasformerError("pass corpus file paths as a list (an iterator is read as texts)")
        pending.append(text)
        size += len(text)
        if size >= chunk_chars:
            chunk = "\n".join(pending)
            if progress is not None:
                progress.update(len(chunk))
            yield chunk
            pending, size = [], 0
    if pending:
        chunk = "\n".join(pending)
        if progress is not None:
            progress.update(len(chunk))
        yield chunk


def reusable(sources, chunk_chars):
    """`sources` in a form that can be read several times: file paths as they are, texts
    joined once into chunks (each later pass then walks a few big strings, not every
    line again)."""
    if isinstance(sources, (str, os.PathLike)):
        return sources
    sources = sources if isinstance(sources, (list, tuple)) else list(sources)
    if corpus_files(sources) is not None:
        return sources
    return list(iter_chunks(sources, chunk_chars))


def source_size(sources):
    """Bytes of the files, or characters of the texts (for a progress bar)."""
    files = corpus_files(sources)
    if files is not None:
        return sum(os.path.getsize(f) for f in files)
    if isinstance(sources, str):
        return len(sources)
    return sum(len(t) + 1 for t in sources) if isinstance(sources, (list, tuple)) else None


# -- the counts ----------------------------------------------------------------------

class NgramCounts:
    """Counts of every n-gram (n = 1..order) seen at least `min_count` times.

    `chars[i - 1]` is the character of id i; `keys[n - 1]` (sorted uint64) and
    `counts[n - 1]` hold the n-grams; `total` is the number of word characters in the
    corpus (the denominator of every probability).
    """

    def __init__(self, chars, keys, counts, total, order, min_count):
        self.chars = list(chars)
        self.keys = list(keys)
        self.counts = list(counts)
        self.total = int(total)
        self.order = int(order)
        self.min_count = int(min_count)
        self.bits = bits_for(len(self.chars))
        self._table = None
        self._char_array = None

    @property
    def table(self):
        """Code point -> id (0 for a break or a pruned character), of raw code points as of
        normalised ones (a full-width letter maps to the id of its ASCII letter)."""
        if self._table is None:
            table = np.zeros(MAX_CODE_POINT, np.uint32)
            if self.chars:
                table[[ord(c) for c in self.chars]] = np.arange(1, len(self.chars) + 1, dtype=np.uint32)
            self._table = table[_WORD_CODE]
        return self._table

    def encode(self, text):
        """Ids of `text` (normalised; 0 = break or unknown character)."""
        return self.table[raw_code_points(text)]

    def lookup(self, keys, n):
        """Counts of packed n-gram `keys` (0 where not kept)."""
        table = self.keys[n - 1]
        idx = np.searchsorted(table, keys)
        idx = np.minimum(idx, max(len(table) - 1, 0))
        if not len(table):
            return np.zeros(len(keys), np.int64)
        return np.where(table[idx] == keys, self.counts[n - 1][idx], 0)

    def key(self, gram):
        ids = self.encode(gram)
        if len(gram) == 0 or len(gram) > self.order or not ids.all():
            return None
        return start_keys(ids, self.bits, len(gram))[0][0]

    def __getitem__(self, gram):
        key = self.key(gram)
        return 0 if key is None else int(self.lookup(np.array([key], np.uint64), len(gram))[0])

    def decode(self, keys, n):
        """Strings of packed n-gram `keys`."""
        if self._char_array is None:
            self._char_array = np.array([""] + self.chars, dtype="<U1")
        keys = np.asarray(keys, np.uint64)
        mask = np.uint64((1 << self.bits) - 1)
        ids = np.stack([(keys >> np.uint64(self.bits * (n - 1 - k))) & mask for k in range(n)], axis=-1)
        return self._char_array[ids.astype(np.int64)].view(f"<U{n}").reshape(-1).tolist()

    def items(self, n):
        """[(n-gram, count)] of order n."""
        return list(zip(self.decode(self.keys[n - 1], n), self.counts[n - 1].tolist()))

    def __len__(self):
        return sum(len(k) for k in self.keys)

    def __repr__(self):
        sizes = ", ".join(f"{n + 1}-grams: {len(k):,}" for n, k in enumerate(self.keys))
        return f"<NgramCounts total={self.total:,} chars, min_count={self.min_count}; {sizes}>"

    def save(self, path):
        """Write to an .npz (atomically)."""
        arrays = {f"keys{n}": k for n, k in enumerate(self.keys)}
        arrays.update({f"counts{n}": c for n, c in enumerate(self.counts)})
        import io

        buf = io.BytesIO()
        np.savez(buf, chars=np.array(self.chars, dtype="<U1"),
                 meta=np.array([self.total, self.order, self.min_count], np.int64), **arrays)
        atomic_write(path, buf.getvalue())

    @classmethod
    def load(cls, path):
        with np.load(path) as z:
            total, order, min_count = z["meta"].tolist()
            return cls(z["chars"].tolist(), [z[f"keys{n}"] for n in range(order)],
                       [z[f"counts{n}"] for n in range(order)], total, order, min_count)


def atomic_write(path, data):
    """Write str or bytes through a temporary file and os.replace: readers never see half
    a file, and a failed write leaves the old one."""
    from kerasformer.checkpoints.torch_pickle import atomic_write as atomic_path  # numpy only

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def bits_for(num_chars):
    return max(1, int(num_chars).bit_length())


# -- the two passes ------------------------------------------------------------------

def _count_code_points(text):
    return count_ids(word_code_points(text))


_WORKER = {}


def _init_worker(table, bits, order):
    _WORKER.update(table=table, bits=bits, order=order)


def _count_ngrams_worker(text):
    return count_chunk(_WORKER["table"][raw_code_points(text)], _WORKER["bits"], _WORKER["order"])


def _map(func, chunks, workers, initializer=None, initargs=()):
    """func over chunks: in this process, or in a pool of `workers` processes."""
    if workers <= 1:
        if initializer:
            initializer(*initargs)
        yield from map(func, chunks)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    with ctx.Pool(workers, initializer=initializer, initargs=initargs) as pool:
        yield from pool.imap_unordered(func, chunks)


class _Accumulator:
    """Merges (keys, counts) parts per order: in memory (merging whenever the pending
    parts outgrow the merged total), or spilled to hash partitions on disk."""

    def __init__(self, order, spill_dir=None, partitions=16):
        self.order = order
        self.pending = [[] for _ in range(order)]
        self.sizes = [0] * order
        self.merged = [0] * order
        self.spill_dir = spill_dir
        self.partitions = partitions

    def add(self, parts):
        for n, (keys, counts) in enumerate(parts):
            if self.spill_dir is not None:
                part = _partition(keys, self.partitions)
                for p in range(self.partitions):
                    sel = part == p
                    with open(os.path.join(self.spill_dir, f"{n}-{p}.keys"), "ab") as f:
                        keys[sel].tofile(f)
                    with open(os.path.join(self.spill_dir, f"{n}-{p}.counts"), "ab") as f:
                        counts[sel].astype(np.int64).tofile(f)
                continue
            self.pending[n].append((keys, counts))
            self.sizes[n] += len(keys)
            if self.sizes[n] > 2 * self.merged[n] + (1 << 20):
                self.pending[n] = [merge_counts(self.pending[n])]
                self.merged[n] = self.sizes[n] = len(self.pending[n][0][0])

    def result(self, min_count):
        out = []
        for n in range(self.order):
            if self.spill_dir is None:
                groups = [merge_counts(self.pending[n])]
            else:
                groups = []
                for p in range(self.partitions):
                    stem = os.path.join(self.spill_dir, f"{n}-{p}")
                    if os.path.exists(stem + ".keys"):
                        merged = reduce_counts(np.fromfile(stem + ".keys", np.uint64),
                                               np.fromfile(stem + ".counts", np.int64))
                        os.remove(stem + ".keys")
                        os.remove(stem + ".counts")
                        groups.append(merged)
                    # prune each partition as it is merged: memory holds one partition
                    groups[-1:] = [_prune(*g, min_count) for g in groups[-1:]]
            keys, counts = merge_counts([_prune(*g, min_count) for g in groups])
            out.append((keys, counts))
        return out


def _partition(keys, partitions):
    # Fibonacci hashing: neighbouring keys (same prefix) land in different partitions
    return ((keys * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(58)) % np.uint64(partitions)


def _prune(keys, counts, min_count):
    keep = counts >= min_count
    return keys[keep], counts[keep]


def count_chars(sources, chunk_chars=1 << 22, workers=1, progress=True):
    """Character counts of the corpus: (code points, counts), both sorted by code point."""
    bar = _bar(sources, progress, "counting characters")
    acc = _Accumulator(1)
    try:
        for part in _map(_count_code_points, iter_chunks(sources, chunk_chars, bar), workers):
            acc.add([part])
    finally:
        if bar is not None:
            bar.close()
    return acc.result(1)[0]


def vocabulary(code_points, counts, min_count, order):
    """Characters kept (seen >= min_count times), most frequent first; checks the packing."""
    keep = counts >= min_count
    cps, cts = code_points[keep], counts[keep]
    ranked = cps[np.lexsort((cps, -cts))]
    chars = [chr(c) for c in ranked.tolist()]
    bits = bits_for(len(chars))
    if bits * order > 64:
        raise KerasformerError(
            f"{len(chars):,} distinct characters seen >= {min_count} times need {bits} bits each: "
            f"{order}-grams do not fit 64 bits; lower the order to {64 // bits} or raise min_count")
    return chars


def count_ngrams(sources, order=4, min_count=2, chunk_chars=1 << 22, workers=1, progress=True,
                 spill_dir=None, partitions=16):
    """Count every n-gram (n = 1..order) of word characters in `sources`.

    Args:
        sources: file paths and/or str texts (an iterable; read twice).
        order: longest n-gram counted.
        min_count: n-grams seen fewer times are dropped (exact: pruning happens after
            the merge of all chunks).
        chunk_chars: characters per chunk (the unit of work and of memory).
        workers: processes counting chunks in parallel (1 = this process).
        progress: show tqdm progress bars.
        spill_dir: a folder for the chunk counts (hash-partitioned files, removed at the
            end); memory is then bounded by one chunk and one partition. True = a
            temporary folder.
        partitions: number of hash partitions when spilling.

    Returns:
        `NgramCounts`.
    """
    if order < 1 or min_count < 1:
        raise KerasformerError(f"order and min_count must be >= 1, got order={order}, min_count={min_count}")
    sources = reusable(sources, chunk_chars)
    code_pts, char_counts = count_chars(sources, chunk_chars, workers, progress)
    total = int(char_counts.sum())
    chars = vocabulary(code_pts, char_counts, min_count, order)
    counts = NgramCounts(chars, [], [], total, order, min_count)
    own_dir = spill_dir is True
    if own_dir:
        spill_dir = tempfile.mkdtemp(prefix="kerasformer-ngrams-")
    elif spill_dir is not None:
        os.makedirs(spill_dir, exist_ok=True)
    acc = _Accumulator(order, spill_dir, partitions)
    bar = _bar(sources, progress, f"counting 1..{order}-grams")
    try:
        for parts in _map(_count_ngrams_worker, iter_chunks(sources, chunk_chars, bar), workers,
                          _init_worker, (counts.table, counts.bits, order)):
            acc.add(parts)
        merged = acc.result(min_count)
    finally:
        if bar is not None:
            bar.close()
        if own_dir:
            shutil.rmtree(spill_dir, ignore_errors=True)
    counts.keys = [k for k, _ in merged]
    counts.counts = [c for _, c in merged]
    return counts


def _bar(sources, progress, desc):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=source_size(sources), desc=desc, unit="B" if corpus_files(sources) else "char",
                unit_scale=True, leave=False)
