"""Domain-term mining: the words of a domain corpus that are much more frequent there than
in a general corpus (the comparison of "unsupervised mining of a professional domain's
vocabulary": discover words in both corpora, compare their frequencies).

Both corpora are segmented into words the same way: one lexicon is discovered from each,
the union segments both (max-probability path), and every word gets a count in each
corpus (`count_words`). Then, for a word with counts a (domain, N_a words in all) and
b (general, N_b):

- ``log_ratio`` = log((a + alpha) / (N_a + alpha)) - log((b + alpha) / (N_b + alpha)):
  how many times (in nats) more frequent the word is in the domain; the add-alpha
  smoothing keeps a word never seen in the general corpus finite and ranks a frequent
  one above a rare one.
- ``llr``: Dunning's log-likelihood ratio G^2 = 2 sum O log(O / E) of the 2x2 table
  (word / other words x domain / general): how sure the difference is (3.84: p < 0.05,
  10.83: p < 0.001, one degree of freedom).

Terms are the words with log_ratio > 0, llr >= min_llr and a domain count >= min_count,
ranked by log_ratio (ties by llr).
"""
import math
from collections import Counter

from kerasformer.errors import KerasformerError
from kerasformer.words.counting import iter_chunks
from kerasformer.words.discovery import discover
from kerasformer.words.segment import Segmenter


def count_words(sources, segmenter, progress=False):
    """{word: count} of a corpus segmented with `segmenter` (punctuation excluded)."""
    counts = Counter()
    from kerasformer.words.counting import _bar

    bar = _bar(sources, progress, "counting words")
    try:
        for chunk in iter_chunks(sources, 1 << 20, bar):
            for line in chunk.splitlines():
                counts.update(w for w in segmenter.cut(line) if any(c.isalnum() for c in w))
    finally:
        if bar is not None:
            bar.close()
    return counts


def compare_counts(domain_counts, general_counts, alpha=1.0, min_count=5, min_llr=10.83, min_len=2):
    """Rank the domain's words by smoothed log frequency ratio; see the module docstring.

    Returns a list of dicts (word, log_ratio, llr, domain_count, general_count), best first.
    """
    if alpha <= 0:
        raise KerasformerError(f"alpha must be > 0, got {alpha}")
    n_a, n_b = sum(domain_counts.values()), sum(general_counts.values())
    if n_a == 0 or n_b == 0:
        raise KerasformerError("both corpora need words to compare (one of them is empty)")
    terms = []
    for w, a in domain_counts.items():
        if a < min_count or len(w) < min_len:
            continue
        b = general_counts.get(w, 0)
        log_ratio = math.log((a + alpha) / (n_a + alpha)) - math.log((b + alpha) / (n_b + alpha))
        if log_ratio <= 0:
            continue
        llr = _g2(a, n_a - a, b, n_b - b)
        if llr >= min_llr:
            terms.append({"word": w, "log_ratio": log_ratio, "llr": llr, "domain_count": a, "general_count": b})
    terms.sort(key=lambda t: (-t["log_ratio"], -t["llr"], t["word"]))
    return terms


def _g2(a, c, b, d):
    """G^2 of the 2x2 table [[a, b], [c, d]] (columns: domain, general)."""
    total = a + b + c + d
    g = 0.0
    for o, row, col in ((a, a + b, a + c), (b, a + b, b + d), (c, c + d, a + c), (d, c + d, b + d)):
        if o > 0:
            g += o * math.log(o * total / (row * col))
    return 2 * g


def domain_terms(domain_sources, general_sources, alpha=1.0, min_llr=10.83, min_count=5, progress=False,
                 **discover_kwargs):
    """Discover words in both corpora, count them with the union lexicon, compare.

    `discover_kwargs` go to `discover` (method, order, min_count, min_pmi, ...).
    Returns `compare_counts`' list, best first.
    """
    discover_kwargs.setdefault("min_count", min_count)
    lexicon = Counter(discover(domain_sources, progress=progress, **discover_kwargs))
    lexicon.update(discover(general_sources, progress=progress, **discover_kwargs))
    segmenter = Segmenter(dict(lexicon))
    return compare_counts(count_words(domain_sources, segmenter, progress),
                          count_words(general_sources, segmenter, progress),
                          alpha=alpha, min_count=min_count, min_llr=min_llr)
