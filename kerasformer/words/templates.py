"""Sentence templates ("routines"), after nlp-zero's Template_Finder.

Words that keep co-occurring a few positions apart (a skip-gram with high PMI) are the
fixed parts of a routine: "我想[X]一下", "[X]是什么意思". Each clause (text between
punctuation) is segmented; every pair of words at most `window` positions apart is
counted (vectorised: word ids packed into one int64 per pair and sort-counted); a pair is
strong when p(pair) >= min_proba and log p(pair) / (p(w1) p(w2)) >= min_pmi nats. In a
clause, strong pairs link word positions; every maximal chain of links is a template, its
words kept and the gaps (and the clause before / after) replaced by a placeholder.
Templates seen >= min_count times are returned (a single word between placeholders is
trivial and dropped).
"""
import math
import re
from collections import Counter

import numpy as np

from kerasformer.errors import KerasformerError

PLACEHOLDER = None
_CLAUSES = re.compile(r"[^\u4e00-\u9fff\u3400-\u4dbf0-9A-Za-z\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]+")


def template_string(template, placeholder="[X]"):
    """("我", "想", None, "一下") -> '我想[X]一下'."""
    return "".join(placeholder if w is None else w for w in template)


def _chains(n, links):
    """Maximal paths through the links (i -> j, i < j) of n positions; isolated
    positions are paths of one."""
    heads = set(range(n)) - {j for targets in links.values() for j in targets}
    paths = []

    def walk(path):
        nxt = links.get(path[-1])
        if not nxt:
            paths.append(path)
            return
        for j in sorted(nxt):
            walk(path + [j])

    for i in sorted(heads):
        walk([i])
    return paths


def find_templates(texts, segmenter, window=5, min_count=5, min_pmi=2.0, min_proba=0.0, max_paths=64):
    """Templates of `texts` (an iterable of str), segmented by `segmenter` (text -> words).

    Returns [(template, count)] most frequent first; a template is a tuple of words with
    None for a placeholder (`template_string` renders it).
    """
    if window < 1 or min_count < 1:
        raise KerasformerError(f"window and min_count must be >= 1, got window={window}, min_count={min_count}")
    vocab = {}
    clauses = []
    for text in texts:
        for clause in _CLAUSES.split(text):
            if clause:
                clauses.append([vocab.setdefault(w, len(vocab)) for w in segmenter(clause)])
    if not clauses:
        return []
    ids = np.fromiter((w for c in clauses for w in c), np.int64)
    clause_of = np.repeat(np.arange(len(clauses)), [len(c) for c in clauses])
    n_words = len(vocab)
    word_counts = np.bincount(ids, minlength=n_words)
    pair_keys = []
    for d in range(1, window + 1):
        same = clause_of[:-d] == clause_of[d:]
        pair_keys.append(ids[:-d][same] * n_words + ids[d:][same])
    keys, counts = np.unique(np.concatenate(pair_keys), return_counts=True)
    total_pairs = max(int(counts.sum()), 1)
    log_words = np.log(np.maximum(word_counts, 1)) - math.log(len(ids))
    pmi = np.log(counts) - math.log(total_pairs) - log_words[keys // n_words] - log_words[keys % n_words]
    strong = set(keys[(pmi >= min_pmi) & (counts >= max(min_proba * total_pairs, 1))].tolist())

    templates = Counter()
    for clause in clauses:
        links = {}
        for i, w in enumerate(clause):
            for j in range(i + 1, min(i + 1 + window, len(clause))):
                if w * n_words + clause[j] in strong:
                    links.setdefault(i, []).append(j)
        if not links:
            continue
        for path in _chains(len(clause), links)[:max_paths]:
            if len(path) < 2:
                continue
            t = [] if path[0] == 0 else [PLACEHOLDER]
            t.append(clause[path[0]])
            for a, b in zip(path, path[1:]):
                if b - a > 1:
                    t.append(PLACEHOLDER)
                t.append(clause[b])
            if path[-1] != len(clause) - 1:
                t.append(PLACEHOLDER)
            templates[tuple(t)] += 1
    words = list(vocab)
    out = [(tuple(None if w is None else words[w] for w in t), c) for t, c in templates.items() if c >= min_count]
    return sorted(out, key=lambda x: (-x[1], template_string(x[0])))
