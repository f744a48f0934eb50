"""kerasformer.words: counting vs a naive Counter, discovery on a corpus generated from a
known lexicon, Viterbi vs brute force, the bakeoff scorer, the CLI and the recipe."""
import io
import math
import os
import random
import re
import sys
from collections import Counter

import numpy as np
import pytest

from kerasformer.errors import KerasformerError
from kerasformer.words import (NgramCounts, Segmenter, branching_entropy, count_ngrams, discover, load_lexicon,
                               ngram_pmi, save_lexicon)
from kerasformer.words import native
from kerasformer.words.counting import _merge_numpy, group_prefixes, iter_chunks, merge_counts, start_keys
from kerasformer.words.discovery import KeySet, count_pieces, solid_ngrams
from kerasformer.words.domain import compare_counts, domain_terms
from kerasformer.words.segment import bakeoff_score

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORD_RE = "[^\u4e00-\u9fff0-9a-zA-Z]+"


def naive_ngrams(text, order):
    ref = Counter()
    for s in re.split(WORD_RE, text):
        for n in range(1, order + 1):
            for i in range(len(s) - n + 1):
                ref[s[i:i + n]] += 1
    return ref


@pytest.fixture(scope="module")
def random_text():
    rng = random.Random(0)
    alphabet = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地" + "，。ab12 Ｘ３"
    return "\n".join("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(2000))


@pytest.fixture(scope="module")
def synthetic():
    """Sentences made of words drawn (Zipf) from a random lexicon of 1-4 characters."""
    rng = random.Random(1)
    chars = [chr(0x4E00 + i) for i in range(3000)]
    rng.shuffle(chars)
    lexicon = set()
    while len(lexicon) < 200:
        lexicon.add("".join(rng.choice(chars[:400]) for _ in range(rng.choice([1, 2, 2, 2, 3, 3, 4]))))
    lexicon = sorted(lexicon)
    weights = [1 / (r + 1) for r in range(len(lexicon))]
    sentences = ["".join(rng.choices(lexicon, weights, k=rng.randint(3, 12))) for _ in range(8000)]
    return lexicon, sentences


def test_counts_match_naive_counter(random_text, tmp_path, kernels):
    normalised = random_text.replace("Ｘ", "X").replace("３", "3")  # full-width -> ASCII
    ref = naive_ngrams(normalised, 4)
    single = count_ngrams([random_text], order=4, min_count=3, chunk_chars=5000, progress=False)
    assert single.total == sum(v for k, v in ref.items() if len(k) == 1)
    for n in range(1, 5):
        assert dict(single.items(n)) == {k: v for k, v in ref.items() if len(k) == n and v >= 3}, n
    # files, two worker processes, spilled hash partitions: the same counts
    path = tmp_path / "corpus.txt"
    path.write_text(random_text, encoding="utf-8")
    other = count_ngrams([str(path)], order=4, min_count=3, chunk_chars=3000, workers=2, spill_dir=True,
                         progress=False)
    for n in range(1, 5):
        np.testing.assert_array_equal(other.keys[n - 1], single.keys[n - 1])
        np.testing.assert_array_equal(other.counts[n - 1], single.counts[n - 1])
    assert single["的一"] == ref["的一"] and single["不存在"] == 0
    single.save(tmp_path / "c.npz")
    loaded = NgramCounts.load(tmp_path / "c.npz")
    assert dict(loaded.items(3)) == dict(single.items(3)) and loaded.total == single.total


def test_dask_counts_match_single_process(random_text, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    from kerasformer.words.distributed import count_ngrams_dask

    lines = random_text.split("\n")
    files = []
    for i in range(3):  # three shards
        files.append(tmp_path / f"shard-{i}.txt")
        files[-1].write_text("\n".join(lines[i::3]), encoding="utf-8")
    single = count_ngrams([str(f) for f in files], order=4, min_count=3, progress=False)
    # threads in this process: a process cluster takes ~30 s to start on a busy 2-core machine;
    # the tasks, serialised arguments and the reduction tree are the same
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        counts = count_ngrams_dask(client, files, order=4, min_count=3, chunk_chars=2000, fan_in=2)
    assert counts.chars == single.chars and counts.total == single.total
    for n in range(4):
        np.testing.assert_array_equal(counts.keys[n], single.keys[n])
        np.testing.assert_array_equal(counts.counts[n], single.counts[n])


def test_pmi_and_branching_entropy_match_definitions(random_text):
    counts = count_ngrams([random_text], order=3, min_count=1, progress=False)
    ref = naive_ngrams(random_text.replace("Ｘ", "X").replace("３", "3"), 3)
    total = counts.total
    grams = counts.decode(counts.keys[2], 3)
    pmi = ngram_pmi(counts, 3)
    for g, v in list(zip(grams, pmi))[:200]:
        expected = min(math.log(total * ref[g] / (ref[g[:j]] * ref[g[j:]])) for j in (1, 2))
        assert v == pytest.approx(expected)
    # right entropy: every right neighbour, each sentence end a distinct outcome (min_count=1)
    left, right = branching_entropy(counts, 2)
    sentences = re.split(WORD_RE, random_text.replace("Ｘ", "X").replace("３", "3"))
    for g, h in list(zip(counts.decode(counts.keys[1], 2), right))[:100]:
        nxt = Counter()
        ends = 0
        for s in sentences:
            for i in range(len(s) - 1):
                if s[i:i + 2] == g:
                    if i + 2 < len(s):
                        nxt[s[i + 2]] += 1
                    else:
                        ends += 1
        c = sum(nxt.values()) + ends
        expected = -sum(k / c * math.log(k / c) for k in nxt.values()) + ends / c * math.log(c)
        assert h == pytest.approx(expected)


@pytest.fixture(params=["native", "numpy"])
def kernels(request, monkeypatch):
    """Runs a test with the compiled kernels, then with the numpy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(native, "AVAILABLE", False)
    else:
        _require_native()
    return request.param


def _require_native():
    if os.environ.get("KERASFORMER_NO_NATIVE"):
        pytest.skip("KERASFORMER_NO_NATIVE is set: numpy kernels only")
    assert native.AVAILABLE, ("kerasformer/words/_native.c is not built: pip install -e . "
                              "(or python setup.py build_ext --inplace)")


def test_pieces_match_naive_cut(random_text, kernels):
    """count_pieces (key sets, one sort per chunk, long pieces) == cutting each sentence
    in Python wherever no solid n-gram covers two neighbours, of the normalised text
    (full-width letters and digits count as ASCII ones in pieces of every length)."""
    text = random_text.replace("Ｘ", "X").replace("３", "3")
    counts = count_ngrams([random_text], order=3, min_count=1, progress=False)
    solid = solid_ngrams(counts, "min_entropy", [0.1, 0.5])
    solid_words = {w for n, s in enumerate(solid[1:], 2) for w in counts.decode(s, n)}
    assert 50 < len(solid_words) < len(counts) // 4  # some neighbours join, most do not
    ref = Counter()
    for s in re.split(WORD_RE, text):
        joined = [any(s[a:a + n] in solid_words for n in (2, 3) for a in range(b - n + 1, b) if a >= 0 and a + n <= len(s))
                  for b in range(len(s) + 1)]
        cuts = [0] + [b for b in range(1, len(s)) if not joined[b]] + [len(s)]
        ref.update(s[a:b] for a, b in zip(cuts, cuts[1:]) if b > a)
    assert any(len(w) > 3 for w in ref)  # pieces longer than the order are counted too
    assert any(len(w) > 3 and ("X" in w or "3" in w) for w in ref)
    assert count_pieces([random_text], counts, solid, chunk_chars=3000, progress=False) == dict(ref)


def test_native_kernels_match_numpy(random_text):
    """The compiled radix sort, grouping, merge, start keys and counts == the numpy code."""
    _require_native()
    rng = np.random.default_rng(0)
    for key_bits in (1, 12, 52, 64):
        for n in (0, 1, 1000, 30000):
            keys = rng.integers(0, 2 ** key_bits - 1, n, dtype=np.uint64, endpoint=True)
            np.testing.assert_array_equal(native.sort(keys, key_bits), np.sort(keys))
    # zero-padded keys of 4 characters of 5 bits, prefixes of every length, with repeats
    ids = rng.integers(0, 6, 20000).astype(np.uint32)
    keys, ahead = start_keys(ids, 5, 4)
    np.testing.assert_array_equal(native.start_keys(ids, 5, 4), keys[ahead > 1])
    for whole in (False, True):
        for first in (1, 2):
            ours = native.group(np.sort(keys), 5, 4, first, whole)
            ref = group_prefixes(np.sort(keys), 5, 4, whole, first)
            for (k, c), (rk, rc) in zip(ours, ref, strict=True):
                np.testing.assert_array_equal(k, rk)
                np.testing.assert_array_equal(c, rc)
    a = (np.unique(rng.integers(0, 99, 60).astype(np.uint64)), None)
    b = (np.unique(rng.integers(0, 99, 40).astype(np.uint64)), None)
    a, b = (a[0], rng.integers(1, 9, len(a[0]))), (b[0], rng.integers(1, 9, len(b[0])))
    for x, y in zip(native.merge_two(a, b), _merge_numpy(a, b)):
        np.testing.assert_array_equal(x, y)
    with_native = count_ngrams([random_text], order=4, min_count=2, chunk_chars=4000, progress=False)
    native.AVAILABLE = False
    try:
        with_numpy = count_ngrams([random_text], order=4, min_count=2, chunk_chars=4000, progress=False)
    finally:
        native.AVAILABLE = True
    for n in range(4):
        np.testing.assert_array_equal(with_native.keys[n], with_numpy.keys[n])
        np.testing.assert_array_equal(with_native.counts[n], with_numpy.counts[n])


def test_key_set_and_merge_match_numpy(kernels):
    rng = np.random.default_rng(0)
    for bits in (20, 40, 64):  # a bitmap, then a hash table
        for n in (1, 7, 3000):
            keys = rng.integers(1, 2 ** bits - 1, n, dtype=np.uint64, endpoint=True)
            queries = np.concatenate([keys, keys + np.uint64(1), np.zeros(1, np.uint64),
                                      rng.integers(0, 2 ** bits - 1, 5000, dtype=np.uint64, endpoint=True)])
            np.testing.assert_array_equal(KeySet(keys, bits).contains(queries), np.isin(queries, keys))
    parts, ref = [], Counter()
    for _ in range(5):
        keys = np.unique(rng.integers(0, 50, 30).astype(np.uint64))
        counts = rng.integers(1, 9, len(keys))
        parts.append((keys, counts))
        ref.update(dict(zip(keys.tolist(), counts.tolist())))
    keys, counts = merge_counts(parts)
    assert keys.tolist() == sorted(ref) and counts.tolist() == [ref[k] for k in sorted(ref)]


@pytest.mark.parametrize("method", ["min_entropy", "nlp_zero"])
def test_discovery_recovers_generating_lexicon(synthetic, method):
    lexicon, sentences = synthetic
    found = discover(sentences, method=method, min_count=5, progress=False)
    words = {w for w in found if len(w) > 1}
    true = {w for w in lexicon if len(w) > 1}
    assert len(words & true) / len(true) >= 0.9
    assert len(words & true) / len(words) >= 0.9
    assert list(found.values()) == sorted(found.values(), reverse=True)


def test_branching_filter_drops_fragments():
    # 甲乙丙丁 is a word; 甲乙 / 乙丙 only ever occur inside it (one fixed neighbour)
    rng = random.Random(2)
    fillers = [chr(0x5000 + i) for i in range(40)]
    sentences = ["".join(rng.choice(fillers) for _ in range(3)) + "甲乙丙丁" + rng.choice(fillers) for _ in range(600)]
    counts = count_ngrams(sentences, order=4, min_count=2, progress=False)
    left, right = branching_entropy(counts, 2)
    h = dict(zip(counts.decode(counts.keys[1], 2), np.minimum(left, right)))
    assert h["甲乙"] == pytest.approx(0.0) and h["乙丙"] == pytest.approx(0.0)
    pieces = {"甲乙": 10, "甲乙丙丁": 600, "甲": 1}
    from kerasformer.words.discovery import filter_by_branching

    assert filter_by_branching(pieces, counts, 0.5) == {"甲乙丙丁": 600, "甲": 1}


def brute_force(run, seg):
    best = None
    for mask in range(1 << (len(run) - 1)):
        cuts = [0] + [i + 1 for i in range(len(run) - 1) if mask >> i & 1] + [len(run)]
        words = [run[a:b] for a, b in zip(cuts, cuts[1:])]
        if any(len(w) > 1 and w not in seg.counts for w in words):
            continue  # only known words, or single characters
        score = sum(seg.logp(w) for w in words)
        if best is None or score > best[0] + 1e-12:
            best = (score, words)
    return best


def test_viterbi_matches_brute_force():
    rng = random.Random(3)
    chars = "abcdefgh".upper()
    lexicon = {"".join(rng.choice(chars) for _ in range(rng.randint(1, 4))): rng.randint(1, 50) for _ in range(40)}
    seg = Segmenter({k: v for k, v in lexicon.items()})
    seg.counts = {k.lower(): v for k, v in seg.counts.items()}  # keep letters apart from the Aa123 merge
    for _ in range(100):
        run = "".join(rng.choice(chars.lower()) for _ in range(rng.randint(1, 9)))
        cuts = seg._best_path(run)
        words = [run[a:b] for a, b in zip(cuts, cuts[1:])]
        score, expected = brute_force(run, seg)
        assert sum(seg.logp(w) for w in words) == pytest.approx(score)


def test_segmenter_text_handling_and_tokenizer_hook(tmp_path):
    seg = Segmenter({"今天": 10, "天气": 8, "不错": 5, "今": 1, "天": 3})
    text = "今天天气不错！！２００１年 ok，abc3.5"
    words = seg(text)
    assert "".join(words) == text.replace(" ", "")
    assert words[:4] == ["今天", "天气", "不错", "！！"] and "２００１" in words and "abc3.5" in words
    from kerasformer.tokenizers.wordpiece import Tokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "今天", "天", "气", "不", "错"]),
                     encoding="utf-8")
    tok = Tokenizer(str(vocab), pre_tokenize=seg)
    assert tok.tokenize("今天天气不错") == ["[CLS]", "今天", "天", "气", "不", "错", "[SEP]"]
    with pytest.raises(KerasformerError):
        seg(b"bytes")


def test_bakeoff_score():
    gold = [["共同", "创造", "美好", "的", "新", "世纪"]]
    pred = [["共同", "创造", "美好", "的", "新世纪"]]
    r = bakeoff_score(pred, gold, train_words={"共同", "创造", "美好", "的", "新"})
    assert r["precision"] == pytest.approx(4 / 5) and r["recall"] == pytest.approx(4 / 6)
    assert r["oov_recall"] == 0.0 and r["iv_recall"] == pytest.approx(4 / 5) and r["oov_rate"] == pytest.approx(1 / 6)
    with pytest.raises(KerasformerError, match="does not spell"):
        bakeoff_score([["共同"]], [["共周"]])


def test_lexicon_io_and_errors(tmp_path):
    path = tmp_path / "lex.tsv"
    save_lexicon({"天气": 3, "的": 9}, path)
    assert path.read_text(encoding="utf-8") == "的\t9\n天气\t3\n"
    assert load_lexicon(path) == {"的": 9, "天气": 3}
    path.write_text("天气\tmany\n", encoding="utf-8")
    with pytest.raises(KerasformerError, match="count"):
        load_lexicon(path)
    with pytest.raises(KerasformerError, match="order"):
        count_ngrams(["abc"], order=0, progress=False)
    with pytest.raises(KerasformerError, match="list"):
        list(iter_chunks(iter([str(path)])))
    with pytest.raises(KerasformerError, match="nothing to discover"):
        discover(["，。！", ""], progress=False)
    with pytest.raises(KerasformerError, match="method"):
        discover(["abc"], method="nope", progress=False)


def test_domain_terms_rank_injected_terms(synthetic):
    lexicon, sentences = synthetic
    rng = random.Random(4)
    terms = ["卷积网络", "梯度下降", "损失函数"]
    general = sentences[:4000]
    domain = [a + rng.choice(terms) + b for a, b in zip(sentences[4000:5000], sentences[5000:6000])]
    # a small corpus: 4-grams seen ~330 times in 40k characters have PMI ~4.7, below the default 5
    found = domain_terms(domain, general, min_count=5, min_pmi=(1, 2, 3), progress=False)
    assert {t["word"] for t in found[:3]} == set(terms)
    assert all(t["log_ratio"] > 0 and t["llr"] >= 10.83 for t in found)
    ranked = compare_counts({"甲乙": 50, "丙丁": 50}, {"甲乙": 50, "丙丁": 1, "其他": 1000}, min_llr=0)
    assert [t["word"] for t in ranked] == ["丙丁", "甲乙"]


def test_templates_found_from_generated_routines():
    from kerasformer.words.templates import find_templates, template_string

    rng = random.Random(5)
    chars = [chr(0x5000 + i) for i in range(2000)]
    fillers = sorted({"".join(rng.sample(chars, rng.randint(1, 3))) for _ in range(150)})
    seg = Segmenter({w: 10 for w in fillers} | {"我想": 50, "一下": 50, "是什么": 50, "意思": 50})
    texts = []
    for _ in range(1500):
        r, mid = rng.random(), "".join(rng.choices(fillers, k=rng.randint(1, 2)))
        texts.append("我想" + mid + "一下。" if r < 0.3 else mid + "是什么意思？" if r < 0.6
                     else "".join(rng.choices(fillers, k=rng.randint(2, 6))) + "，")
    found = find_templates(texts, seg, min_count=20)
    assert {t for t, _ in found} == {("我想", None, "一下"), (None, "是什么", "意思")}
    assert {template_string(t) for t, _ in found} == {"我想[X]一下", "[X]是什么意思"}
    assert all(c >= 400 for _, c in found)


def test_cli_discover_and_segment(tmp_path, synthetic, capsys, monkeypatch):
    from kerasformer.cli import main

    lexicon, sentences = synthetic
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences), encoding="utf-8")
    out = tmp_path / "lex.tsv"
    assert main(["words", "discover", str(corpus), "--out", str(out), "--min-count", "5", "--quiet"]) == 0
    assert len(load_lexicon(out)) > 150
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(sentences[0] + "\n" + sentences[1] + "\n"))
    assert main(["words", "segment", "--lexicon", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.replace(" ", "") for line in lines] == sentences[:2]
    assert all("  " not in line for line in lines)
    assert main(["words", "segment", "--lexicon", str(tmp_path / "missing.tsv")]) == 2


def test_recipe_smoke(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "recipes"))
    try:
        import word_discovery
    finally:
        sys.path.pop(0)
    if not os.path.isfile(os.path.join(word_discovery.DATA, "sighan2005", "pku_test_gold.utf8")):
        pytest.skip("the SIGHAN 2005 data is not in ../shared/data")
    out = tmp_path / "wd.json"
    result = word_discovery.main(["--smoke", "--quiet", "--out", str(out)])  # in process: no second Keras import
    import json

    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["systems"]["kerasformer"]["f1"] == pytest.approx(result["systems"]["kerasformer"]["f1"], abs=1e-6)
    assert result["systems"]["kerasformer"]["f1"] > 0.5
