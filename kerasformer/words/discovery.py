"""Word discovery from n-gram statistics (nlp-zero and the minimum-entropy method).

Both methods do the same three steps, differing in which n-grams count as "solid":

1. Solid n-grams. ``min_entropy`` (Su Jianlin's word-discovery): an n-gram (2 <= n <=
   order) is solid when its *weakest* split still has a high pointwise mutual
   information, min over j of log(p(w) / (p(w[:j]) p(w[j:]))) >= min_pmi[n] nats: a
   chunk worth a word saves description length only if every way of building it from
   parts is much less likely. ``nlp_zero``: only adjacent pairs, PMI >= min_pmi and
   p(pair) >= min_proba.
2. Pre-segmentation: two neighbouring characters stay together when some solid n-gram
   covers both; everything else is cut. The pieces are counted (a second pass over the
   corpus, vectorised like the counting).
3. Filtering: pieces seen >= min_count times. ``min_entropy`` then drops a piece of 3+
   characters unless it is solid itself (or, when longer than the order, every order-
   window in it is): the cut step only saw pairs, and a long piece can be glued from
   solid parts that are not solid together. ``nlp_zero`` drops redundant words instead
   (a word whose probability is not e^(len-1) times that of its best split into other
   lexicon words). Optionally (``min_branch_entropy``) a word of length < order must
   also be followed and preceded by varied characters: both its left and right
   neighbour entropies >= the threshold in nats (a fragment of a longer word has one
   fixed neighbour).
"""
import math
from collections import Counter

import numpy as np

from kerasformer.errors import KerasformerError
from kerasformer.words import native
from kerasformer.words.counting import (_map, atomic_write, code_slices, reusable, count_keys, count_ngrams, iter_chunks,
                                        merge_counts, raw_code_points, start_keys, _bar, _NORMALISE)

METHODS = ("min_entropy", "nlp_zero")
DEFAULT_MIN_PMI = {"min_entropy": (1.0, 3.0, 5.0), "nlp_zero": (1.0,)}


def _thresholds(min_pmi, order):
    """min_pmi (a number or one per order 2..order) -> list indexed by n (0 and 1 unused)."""
    if np.isscalar(min_pmi):
        return [0.0, 0.0] + [float(min_pmi)] * (order - 1)
    values = [float(v) for v in min_pmi]
    if len(values) != order - 1:
        raise KerasformerError(f"min_pmi needs one threshold per order 2..{order} ({order - 1} values), "
                               f"got {len(values)}")
    return [0.0, 0.0] + values


def ngram_pmi(counts, n):
    """Minimum PMI (nats) over the binary splits of every kept n-gram, aligned with keys[n-1]."""
    keys, c = counts.keys[n - 1], counts.counts[n - 1]
    log_total = math.log(counts.total)
    pmi = np.full(len(keys), np.inf)
    for j in range(1, n):
        shift = np.uint64(counts.bits * (n - j))
        left = counts.lookup(keys >> shift, j)
        right = counts.lookup(keys & ((np.uint64(1) << shift) - np.uint64(1)), n - j)
        # both parts occur at least as often as the whole, so neither count is 0
        pmi = np.minimum(pmi, log_total + np.log(c) - np.log(left) - np.log(right))
    return pmi


def solid_ngrams(counts, method="min_entropy", min_pmi=None, min_proba=0.0):
    """Sorted keys of the solid n-grams, one array per order (index n-1; empty for n=1)."""
    if method not in METHODS:
        raise KerasformerError(f"method must be one of {METHODS}, got {method!r}")
    order = 2 if method == "nlp_zero" else counts.order
    if order > counts.order:
        raise KerasformerError(f"the {method} method needs {order}-gram counts; these stop at {counts.order}")
    thresholds = _thresholds(DEFAULT_MIN_PMI[method] if min_pmi is None else min_pmi, order)
    solid = [np.zeros(0, np.uint64)]
    for n in range(2, order + 1):
        keep = ngram_pmi(counts, n) >= thresholds[n]
        if min_proba > 0:
            keep &= counts.counts[n - 1] >= min_proba * counts.total
        solid.append(counts.keys[n - 1][keep])
    return solid


class KeySet:
    """Membership of non-zero uint64 keys in a set, vectorised. Keys below 2^DENSE_BITS:
    one bit each in a bitmap (one gather per query). Larger keys: an open-addressing hash
    table (linear probing, under 2^-spare_bits full, 0 = empty slot), so almost every query is
    settled by one gather: its home slot holds it (a member) or nothing (not one). A
    binary search per query was the main cost of the pieces pass."""

    DENSE_BITS = 27  # a 16 MiB bitmap at most

    def __init__(self, keys, key_bits=64, spare_bits=3):
        keys = np.unique(np.asarray(keys, np.uint64))
        if len(keys) and keys[0] == 0:
            raise KerasformerError("KeySet keys must be non-zero (0 marks an empty slot)")
        self.dense = key_bits <= self.DENSE_BITS
        if self.dense:
            self.bitmap = np.zeros(max(1 << (key_bits - 3), 1), np.uint8)
            np.bitwise_or.at(self.bitmap, (keys >> np.uint64(3)).astype(np.intp),
                             np.left_shift(np.uint8(1), (keys & np.uint64(7)).astype(np.uint8)))
            return
        self.hash_bits = max(int(len(keys)).bit_length() + spare_bits, 4)
        self.mask = (1 << self.hash_bits) - 1
        self.table = np.zeros(1 << self.hash_bits, np.uint64)
        # insert in rounds: each waiting key tries the next slot of its probe sequence; of
        # the keys trying one free slot, the first takes it, the others probe on (so no
        # empty slot ever lies between a key's home and its place)
        slots = self._hash(keys)
        while len(keys):
            free = self.table[slots] == 0
            cand = np.flatnonzero(free)
            _, first = np.unique(slots[cand], return_index=True)
            placed = cand[first]
            self.table[slots[placed]] = keys[placed]
            wait = np.ones(len(keys), bool)
            wait[placed] = False
            keys, slots = keys[wait], (slots[wait] + 1) & self.mask

    def _hash(self, keys):
        # Fibonacci hashing: the top bits of key * 2^64/phi
        return ((keys * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - self.hash_bits)).astype(np.intp)

    def __contains__(self, keys):
        raise TypeError("use KeySet.contains(keys) on an array")

    def contains(self, keys):
        keys = np.asarray(keys, np.uint64)
        if self.dense:
            return (self.bitmap[(keys >> np.uint64(3)).astype(np.intp)] >> (keys & np.uint64(7)).astype(np.uint8)) & 1 == 1
        slots = self._hash(keys)
        found = self.table[slots]
        hit = found == keys
        idx = np.flatnonzero((found != 0) & ~hit)  # a home slot taken by another key: probe on
        while len(idx):
            slots[idx] = (slots[idx] + 1) & self.mask
            found = self.table[slots[idx]]
            hit[idx] = found == keys[idx]
            idx = idx[(found != 0) & ~hit[idx]]
        return hit & (keys != 0)


def piece_bounds(keys, ahead, bits, solid):
    """(starts, ends) of the pieces of a chunk given its `start_keys`: characters stay
    joined where a solid n-gram covers both; breaks (id 0) are never part of a piece.
    `solid[n-1]`: a `KeySet` of the solid n-grams (solid[0] unused)."""
    n_pos, order = len(keys), len(solid)
    joined = np.zeros(n_pos + 1, bool)  # joined[b]: positions b-1 and b belong together
    for n in range(2, order + 1):
        # a solid n-gram starting at s joins the boundaries b = s+1 .. s+n-1
        hit = (ahead >= n) & solid[n - 1].contains(keys >> np.uint64(bits * (order - n)))
        for t in range(1, n):
            joined[t:] |= hit[:n_pos + 1 - t]
    word = ahead > 0
    starts = np.flatnonzero(word & ~joined[:n_pos])
    stops = np.flatnonzero(word & ~joined[1:])  # the next position is not joined to this one
    return starts, stops + 1


_PIECES = {}


def _init_pieces(table, bits, solid):
    _PIECES.clear()
    _PIECES.update(table=table, bits=bits, solid=solid)


def _pieces_worker(text):
    """Counts of one chunk's pieces: [(keys, counts)] for lengths 1..order, Counter beyond."""
    codes = raw_code_points(text)
    ids = _PIECES["table"][codes]
    bits, solid = _PIECES["bits"], _PIECES["solid"]
    if "sets" not in _PIECES:
        # the compiled loop probes on its own: a table up to 1/4 full stays in cache;
        # numpy's probing rounds want one at most 1/8 full
        spare = 2 if native.AVAILABLE else 3
        _PIECES["sets"] = [None] + [KeySet(s, bits * n, spare) for n, s in enumerate(solid[1:], 2)]
    sets = _PIECES["sets"]
    order = len(solid)
    if native.AVAILABLE:
        piece_keys, bounds = native.pieces(ids, bits, order, sets)
        starts, ends = bounds[:, 0], bounds[:, 1]
    else:
        keys, ahead = start_keys(ids, bits, order)
        starts, ends = piece_bounds(keys, ahead, bits, sets)
        lengths = ends - starts
        # a piece of <= order characters is its start key with the characters after it
        # zeroed: one sort counts the pieces of every length
        sel = lengths <= order
        keep = (np.uint64(1) << (np.uint64(bits) * (order - lengths[sel]).astype(np.uint64))) - np.uint64(1)
        piece_keys = keys[starts[sel]] & ~keep
        starts, ends = starts[~sel], ends[~sel]
    short = count_keys(piece_keys, bits, order, whole=True)
    # pieces longer than the order, normalised like the ids (strings made in one decode)
    long_ = Counter(code_slices(_NORMALISE[codes], starts, ends))
    return short, long_


def count_pieces(sources, counts, solid, chunk_chars=1 << 22, workers=1, progress=True, min_count=1,
                 min_proba=0.0):
    """{piece: count} over the corpus, cut with `solid` (see `piece_bounds`). Pieces of 2+
    characters seen fewer than max(min_count, min_proba * number of pieces) times are
    left out (before they are decoded to strings); single characters are all kept."""
    order = len(solid)
    short = [[] for _ in range(order)]
    long_ = Counter()
    bar = _bar(sources, progress, "cutting pieces")
    try:
        for parts, more in _map(_pieces_worker, iter_chunks(sources, chunk_chars, bar), workers,
                                _init_pieces, (counts.table, counts.bits, solid)):
            for n, p in enumerate(parts):
                short[n] = [merge_counts(short[n] + [p])]
            long_.update(more)
    finally:
        if bar is not None:
            bar.close()
    merged = [merge_counts(parts) for parts in short]
    least = max(min_count, min_proba * (sum(int(c.sum()) for _, c in merged) + sum(long_.values())))
    pieces = {}
    for n, (k, c) in enumerate(merged):
        if n:
            k, c = k[c >= least], c[c >= least]
        pieces.update(zip(counts.decode(k, n + 1), c.tolist()))
    pieces.update((w, c) for w, c in long_.items() if c >= least)
    return pieces


def filter_by_solid(words, counts, solid):
    """Su's back-off check: a word of 3+ characters must be solid, or (when longer than
    the order) made of overlapping solid order-grams. (Splitting a failing piece at its
    weakest pair instead of dropping it scored lower on PKU: F1 0.755 vs 0.757.)"""
    order = len(solid)
    solid_sets = [set(counts.decode(s, n + 1)) if n else set() for n, s in enumerate(solid)]
    kept = {}
    for w, c in words.items():
        if len(w) < 3 or (len(w) <= order and w in solid_sets[len(w) - 1]) or (
                len(w) > order and all(w[k:k + order] in solid_sets[order - 1]
                                       for k in range(len(w) - order + 1))):
            kept[w] = c
    return kept


def branching_entropy(counts, n):
    """(left, right) neighbour entropies in nats of every kept n-gram (n < order), aligned
    with keys[n-1]. Extensions pruned by min_count are missing from the counts; their
    mass (count - counted extensions) is spread as if over distinct characters seen
    min_count - 1 times each, which keeps the estimate between the two extremes."""
    if n >= counts.order:
        raise KerasformerError(f"branching entropy of {n}-grams needs {n + 1}-gram counts")
    keys, c = counts.keys[n - 1], counts.counts[n - 1].astype(np.float64)
    ext_keys, ext = counts.keys[n], counts.counts[n].astype(np.float64)
    mask = (np.uint64(1) << np.uint64(counts.bits * n)) - np.uint64(1)
    result = []
    for parent in (ext_keys & mask, ext_keys >> np.uint64(counts.bits)):  # left ext -> suffix, right -> prefix
        idx = np.searchsorted(keys, parent)
        seen = np.bincount(idx, weights=ext, minlength=len(keys))
        plogp = np.bincount(idx, weights=ext * np.log(ext), minlength=len(keys))
        rest = np.maximum(c - seen, 0)
        bucket = max(counts.min_count - 1, 1)
        plogp += rest * math.log(bucket)  # rest/bucket outcomes of `bucket` each
        result.append(np.log(c) - plogp / c)
    return result[0], result[1]


def filter_by_branching(words, counts, min_entropy):
    """Drop words (2 <= len < order) whose left or right neighbour entropy < min_entropy."""
    drop = set()
    for n in range(2, counts.order):
        left, right = branching_entropy(counts, n)
        low = np.minimum(left, right) < min_entropy
        drop.update(counts.decode(counts.keys[n - 1][low], n))
    return {w: c for w, c in words.items() if w not in drop}


def remove_redundant(words):
    """nlp-zero's de-duplication: longest words first, a word stays only if
    log p(w) - sum log p(parts) >= len(w) - 1 for its best split into other words;
    otherwise its count goes to the parts."""
    from kerasformer.words.segment import Segmenter

    words = dict(words)
    seg = Segmenter(words)
    for w in sorted(words, key=len, reverse=True):
        if len(w) == 1 or w not in words:
            continue
        count = words[w]
        seg.remove(w)
        parts = seg.cut(w)
        gain = seg.logp_of(w, count) - sum(seg.logp(p) for p in parts)
        if gain < len(w) - 1:
            del words[w]
            for p in parts:
                words[p] = words.get(p, 0) + count
                seg.add(p, count)
        else:
            seg.add(w, count)
    return words


def discover(sources, method="min_entropy", order=4, min_count=8, min_pmi=None, min_proba=0.0,
             min_branch_entropy=0.0, counts=None, chunk_chars=1 << 22, workers=1, progress=True,
             spill_dir=None):
    """Discover a lexicon {word: count} from raw text.

    Args:
        sources: file paths and/or str texts (read two or three times).
        method: 'min_entropy' (multi-order PMI, Su's word-discovery) or 'nlp_zero'
            (adjacent pairs + redundancy removal, nlp-zero's Word_Finder).
        order: longest n-gram counted (min_entropy; nlp_zero uses pairs).
        min_count: n-grams and words seen fewer times are dropped.
        min_pmi: nats; one number, or one per order 2..order. Defaults: (1, 3, 5) for
            min_entropy (Su's script), 1 for nlp_zero.
        min_proba: nlp_zero's minimum pair probability (and word probability).
        min_branch_entropy: nats; > 0 drops words with a poor left or right context.
        counts: precomputed `NgramCounts` (skips the counting pass).
        chunk_chars, workers, progress, spill_dir: see `count_ngrams`.

    Returns:
        dict word -> count (the frequency of the word in the pre-segmented corpus),
        most frequent first; single characters are kept whatever their count (a
        character never seen alone is absent: `Segmenter` scores it as seen half a time).
    """
    if method not in METHODS:
        raise KerasformerError(f"method must be one of {METHODS}, got {method!r}")
    sources = reusable(sources, chunk_chars)
    need = max(order, 2) if method == "min_entropy" else (3 if min_branch_entropy > 0 else 2)
    if counts is None:
        counts = count_ngrams(sources, order=need, min_count=min_count, chunk_chars=chunk_chars,
                              workers=workers, progress=progress, spill_dir=spill_dir)
    if counts.total == 0 or not len(counts.keys[0]):
        raise KerasformerError(f"no character of the corpus is seen min_count={min_count} times: "
                               "nothing to discover (is it empty, or not Chinese / alphanumeric text?)")
    solid = solid_ngrams(counts, method, min_pmi, min_proba)
    words = count_pieces(sources, counts, solid, chunk_chars, workers, progress, min_count, min_proba)
    if method == "min_entropy":
        words = filter_by_solid(words, counts, solid)
    else:
        words = remove_redundant(words)
    if min_branch_entropy > 0:
        words = filter_by_branching(words, counts, min_branch_entropy)
    return dict(sorted(words.items(), key=lambda x: (-x[1], x[0])))


def save_lexicon(words, path):
    """Write `word<TAB>count` lines, most frequent first (atomically)."""
    return atomic_write(path, "".join(f"{w}\t{c}\n" for w, c in sorted(words.items(), key=lambda x: (-x[1], x[0]))))


def load_lexicon(path):
    """{word: count} from `word<TAB>count` lines (or `word count`; a bare word counts 1)."""
    words = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                count = int(fields[1]) if len(fields) > 1 else 1
            except ValueError:
                raise KerasformerError(f"{path}:{lineno}: the second field must be a count, "
                                       f"got {fields[1][:40]!r}") from None
            if count < 0:
                raise KerasformerError(f"{path}:{lineno}: negative count {count}")
            words[fields[0]] = words.get(fields[0], 0) + count
    return words
