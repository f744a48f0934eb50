"""Maximum-probability segmentation with a lexicon (unigram language model, Viterbi).

A text is split into runs: runs of word characters (the characters the counting keeps:
CJK, ASCII letters and digits, full-width ones included) are segmented by the best path,
score = sum of log p(word), p(word) = count / total; a character the lexicon lacks
scores as a word seen half a time. Runs of ASCII letters, digits and '.' inside a run
stay one token (nlp-zero's combine_Aa123). Other characters are tokens of their own,
a run of one repeated mark ('——', '……') one token; whitespace is dropped.

`Segmenter` is a callable text -> words, so it plugs into
``Tokenizer(vocab, pre_tokenize=Segmenter(lexicon))`` for whole-word masking.
"""
import math
import re

from kerasformer.errors import KerasformerError
from kerasformer.words.counting import _WORD_RANGES, normalise

_WORD_CLASS = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _WORD_RANGES)
_RUNS = re.compile(f"([{_WORD_CLASS}]+)|(\\s+)|((.)\\4*)", re.S)
_ALNUM = re.compile(r"[0-9A-Za-z.]+")


class Segmenter:
    """Segment text with a lexicon {word: count} by maximum unigram probability."""

    def __init__(self, lexicon, max_word_len=None):
        if not isinstance(lexicon, dict):
            raise KerasformerError(f"lexicon must be a dict word -> count, got {type(lexicon).__name__}")
        self.counts = {}
        self.total = 0
        self.max_len = 1
        for w, c in lexicon.items():
            if c > 0 and w:
                self.add(normalise(w), c)
        if max_word_len:
            self.max_len = int(max_word_len)
        self._log_total = None

    # -- the model ----------------------------------------------------------------
    def add(self, word, count):
        self.counts[word] = self.counts.get(word, 0) + count
        self.total += count
        self.max_len = max(self.max_len, len(word))
        self._log_total = None

    def remove(self, word):
        self.total -= self.counts.pop(word, 0)
        self._log_total = None

    def logp_of(self, word, count):
        if self._log_total is None:
            self._log_total = math.log(max(self.total, 1))
        return math.log(count) - self._log_total

    def logp(self, word):
        """log p(word); a word the lexicon lacks scores as one seen half a time."""
        return self.logp_of(word, self.counts.get(word, 0.5))

    # -- segmentation -------------------------------------------------------------
    def _best_path(self, run):
        """Cut points of the max-probability segmentation of one run of word characters."""
        if self._log_total is None:
            self._log_total = math.log(max(self.total, 1))
        counts, log_total, max_len, log = self.counts, self._log_total, self.max_len, math.log
        unknown = log(0.5) - log_total
        n = len(run)
        score = [0.0] + [-math.inf] * n
        back = [0] * (n + 1)
        for end in range(1, n + 1):
            best, arg = score[end - 1] + (log(counts[run[end - 1]]) - log_total
                                          if run[end - 1] in counts else unknown), end - 1
            for start in range(max(0, end - max_len), end - 1):
                c = counts.get(run[start:end])
                if c is not None:
                    s = score[start] + log(c) - log_total
                    if s > best:
                        best, arg = s, start
            score[end], back[end] = best, arg
        cuts = [n]
        while cuts[-1]:
            cuts.append(back[cuts[-1]])
        return cuts[::-1]

    def spans(self, text):
        """[(start, end)] of the words of `text` (whitespace dropped)."""
        if not isinstance(text, str):
            raise KerasformerError(f"text must be a str, got {type(text).__name__}")
        norm = normalise(text)
        spans = []
        for m in _RUNS.finditer(norm):
            if m.group(2):
                continue
            start = m.start()
            if not m.group(1):
                spans.append((start, m.end()))
                continue
            cuts = self._best_path(m.group(1))
            for a, b in zip(cuts, cuts[1:]):
                spans.append((start + a, start + b))
        return _merge_alnum(spans, norm)

    def cut(self, text):
        """The words of `text` (original characters)."""
        return [text[a:b] for a, b in self.spans(text)]

    __call__ = cut


def _merge_alnum(spans, norm):
    out = []
    for a, b in spans:
        if out and out[-1][1] == a and _ALNUM.fullmatch(norm[a:b]) and _ALNUM.fullmatch(norm[out[-1][0]:a]):
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def word_spans(words):
    """Character spans of consecutive words: ['ab', 'c'] -> {(0, 2), (2, 3)}."""
    spans, pos = set(), 0
    for w in words:
        spans.add((pos, pos + len(w)))
        pos += len(w)
    return spans


def bakeoff_score(predicted, gold, train_words=()):
    """SIGHAN bakeoff scores of segmented lines: precision, recall and F1 of word spans,
    and recall of the gold words outside / inside `train_words` (OOV / IV recall).

    `predicted`, `gold`: lists of lines, each a list of words; each pair must spell the
    same characters (whitespace aside), as the official scorer requires.
    """
    if len(predicted) != len(gold):
        raise KerasformerError(f"{len(predicted)} predicted lines for {len(gold)} gold lines")
    train_words = set(train_words)
    n_pred = n_gold = n_correct = n_oov = oov_hit = n_iv = iv_hit = 0
    for lineno, (p, g) in enumerate(zip(predicted, gold), 1):
        if "".join(p) != "".join(g):
            raise KerasformerError(f"line {lineno}: the segmentation does not spell the gold text "
                                   f"({''.join(p)[:30]!r} vs {''.join(g)[:30]!r})")
        ps, pos = word_spans(p), 0
        n_pred += len(ps)
        n_gold += len(g)
        for w in g:
            hit = (pos, pos + len(w)) in ps
            pos += len(w)
            n_correct += hit
            if w in train_words:
                n_iv += 1
                iv_hit += hit
            else:
                n_oov += 1
                oov_hit += hit
    precision = n_correct / max(n_pred, 1)
    recall = n_correct / max(n_gold, 1)
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-12),
            "oov_rate": n_oov / max(n_gold, 1), "oov_recall": oov_hit / max(n_oov, 1),
            "iv_recall": iv_hit / max(n_iv, 1), "gold_words": n_gold, "predicted_words": n_pred}
