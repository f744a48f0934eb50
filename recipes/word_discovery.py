"""Unsupervised word discovery on raw text, scored on SIGHAN 2005 PKU, next to nlp-zero.

1. Raw text only: the PKU test text with its whitespace removed, plus other raw Chinese
   text from ../shared/data (--corpora). Never the gold segmentation or the training
   word list (that list is used for the OOV recall only).
2. `kerasformer.words.discover` builds a lexicon; `Segmenter` (max-probability path)
   segments the test text; official-scorer-style precision / recall / F1 of word spans
   and OOV recall.
3. The same raw text through nlp-zero's Word_Finder + Tokenizer (when installed:
   pip install nlp-zero), timed the same way.

    python recipes/word_discovery.py                       # ~1-2 min on 2 CPU cores
    python recipes/word_discovery.py --smoke               # seconds
    python recipes/word_discovery.py --test x.utf8 --gold x_gold.utf8 --train-words x_words.utf8

Results JSON (atomic) at --out.
"""
import argparse
import datetime
import json
import os
import platform
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (recipes/common.py, next to this file; puts the repo on sys.path)

DATA = common.data_path()


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _fields(path, columns):
    out = []
    for line in _lines(path):
        parts = line.split("\t")
        out.extend(parts[c] for c in columns if c < len(parts))
    return out


def _ner(path):
    # one character per line, blank line between sentences: keep the characters only
    text = "".join(line.split(" ")[0] if line.strip() else "\n" for line in _lines(path))
    return text.split("\n")


def _cmrc(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    out = []
    for article in data:
        for para in article["paragraphs"]:
            out.append(para["context"])
            out.extend(q["question"] for q in para["qas"])
    return out


def _lcsts(path):
    return [line.strip() for line in _lines(path) if line.strip() and not line.strip().startswith("<")]


# raw text readers: name -> [(relative path, reader)]; labels and gold words are never read
CORPORA = {
    "pku_test": [("sighan2005/pku_test.utf8", _lines)],
    "peoples_daily_ner": [("ner_peoples_daily/train.txt", _ner), ("ner_peoples_daily/dev.txt", _ner)],
    "cmrc2018": [("cmrc2018/dev.json", _cmrc), ("cmrc2018/trial.json", _cmrc)],
    "csl": [(f"csl/ts_{s}.tsv", lambda p: _fields(p, [1, 2])) for s in ("dev", "test")]
           + [(f"csl/ctg_{s}.tsv", lambda p: _fields(p, [1])) for s in ("train", "dev", "test")],
    "lcsts": [("lcsts/part_iii.txt", _lcsts)],
    "tnews": [("clue/tnews/train.tsv", lambda p: _fields(p, [0])), ("clue/tnews/dev.tsv", lambda p: _fields(p, [0]))],
    "afqmc": [("clue/afqmc/train.txt", lambda p: _fields(p, [0, 1])),
              ("clue/afqmc/dev.txt", lambda p: _fields(p, [0, 1]))],
    "chnsenticorp": [("sentiment/chnsenticorp/train.tsv", lambda p: _fields(p, [0])),
                     ("sentiment/chnsenticorp/dev.tsv", lambda p: _fields(p, [0]))],
    "couplet": [("couplet/train.tsv", lambda p: _fields(p, [0, 1]))],
    "poetry": [("poetry/song_ci.txt", lambda p: _fields(p, [1])), ("poetry/yuan_qu.txt", lambda p: _fields(p, [1]))],
}
DEFAULT_CORPORA = "pku_test,peoples_daily_ner,cmrc2018,csl,lcsts,tnews,afqmc,chnsenticorp"


def raw_corpus(names, test_path, data_dir):
    """Lines of raw text (whitespace removed) from the named corpora; 'pku_test' is --test."""
    texts, sizes = [], {}
    for name in names:
        if name not in CORPORA:
            raise SystemExit(f"unknown corpus {name!r}; choose from {', '.join(CORPORA)}")
        lines = []
        for rel, reader in CORPORA[name]:
            path = test_path if name == "pku_test" else os.path.join(data_dir, rel)
            if not os.path.isfile(path):
                print(f"[word_discovery] skipping {name}: {path} not found", file=sys.stderr)
                continue
            lines.extend(re.sub(r"\s+", "", line) for line in reader(path))
        lines = [line for line in lines if line]
        sizes[name] = sum(map(len, lines))
        texts.extend(lines)
    return texts, sizes


def run_kerasformer(texts, test_lines, args):
    from kerasformer.words import Segmenter, discover

    start, cpu = time.perf_counter(), time.process_time()
    lexicon = discover(texts, method=args.method, order=args.order, min_count=args.min_count,
                       min_pmi=args.min_pmi, min_branch_entropy=args.min_branch_entropy,
                       workers=args.workers, progress=not args.quiet)
    discover_s, discover_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    segmenter = Segmenter(lexicon)
    predicted = [segmenter.cut(line) for line in test_lines]
    return lexicon, predicted, {"discover_s": discover_s, "discover_cpu_s": discover_cpu_s,
                                "segment_s": time.perf_counter() - start}


def run_nlp_zero(texts, test_lines, args):
    import collections
    import collections.abc
    import logging

    collections.Iterable = collections.abc.Iterable  # nlp-zero imports it from collections
    try:
        import nlp_zero
    except ImportError:
        return None
    logging.getLogger().setLevel(logging.WARNING)
    total = sum(map(len, texts))
    start, cpu = time.perf_counter(), time.process_time()
    finder = nlp_zero.Word_Finder(min_proba=args.min_count / total, min_pmi=1)
    finder.train(texts)
    finder.find(texts)
    discover_s, discover_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    tokenizer = finder.export_tokenizer()
    predicted = [[w for w in tokenizer.tokenize(line) if w.strip()] for line in test_lines]
    return finder.words, predicted, {"discover_s": discover_s, "discover_cpu_s": discover_cpu_s,
                                     "segment_s": time.perf_counter() - start}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=DATA)
    p.add_argument("--test", help="raw test text (default: sighan2005/pku_test.utf8)")
    p.add_argument("--gold", help="gold segmentation (default: sighan2005/pku_test_gold.utf8)")
    p.add_argument("--train-words", help="training word list, for OOV recall only "
                                         "(default: sighan2005/pku_training_words.utf8)")
    p.add_argument("--corpora", default=DEFAULT_CORPORA,
                   help=f"comma-separated raw corpora, of: {', '.join(CORPORA)}")
    p.add_argument("--method", default="min_entropy", choices=["min_entropy", "nlp_zero"])
    p.add_argument("--order", type=int, default=4)
    # tuned on this task (see recipes/README.md): a few million characters need higher
    # thresholds for 3- and 4-grams than Su's (1, 3, 5), which came from a far larger corpus
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--min-pmi", type=float, nargs="+", default=[1.0, 5.0, 8.0],
                   help="nats, one per order 2..order (or one for all)")
    p.add_argument("--min-branch-entropy", type=float, default=0.0, help="nats (0 = off)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-nlp-zero", action="store_true", help="skip the nlp-zero run")
    p.add_argument("--smoke", action="store_true", help="PKU test text only, first 300 lines")
    p.add_argument("--out", default="results/word_discovery.json")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.min_pmi is not None and len(args.min_pmi) == 1:
        args.min_pmi = args.min_pmi[0]

    from kerasformer.words.segment import bakeoff_score

    test = args.test or os.path.join(args.data_dir, "sighan2005", "pku_test.utf8")
    gold = args.gold or os.path.join(args.data_dir, "sighan2005", "pku_test_gold.utf8")
    train_words = args.train_words or os.path.join(args.data_dir, "sighan2005", "pku_training_words.utf8")
    for path in (test, gold):
        if not os.path.isfile(path):
            raise SystemExit(f"not found: {path} (pass --data-dir / --test / --gold)")
    test_lines = [re.sub(r"\s+", "", line) for line in _lines(test)]
    gold_lines = [line.split() for line in _lines(gold)]
    if args.smoke:
        test_lines, gold_lines = test_lines[:300], gold_lines[:300]
        args.corpora, args.min_count = "pku_test", 3
    train_set = set(_lines(train_words)) if os.path.isfile(train_words) else set()
    names = [n for n in args.corpora.split(",") if n]
    texts, sizes = raw_corpus(names, test, args.data_dir)
    if args.smoke:
        texts = [t for t in texts if t][:300]
        sizes = {"pku_test": sum(map(len, texts))}

    systems = {}
    lexicon, predicted, times = run_kerasformer(texts, test_lines, args)
    systems["kerasformer"] = {**bakeoff_score(predicted, gold_lines, train_set), **times,
                              "lexicon_size": len(lexicon)}
    examples = [" ".join(w) for w in predicted[:5]]
    if not args.no_nlp_zero:
        nz = run_nlp_zero(texts, test_lines, args)
        if nz is None:
            systems["nlp_zero"] = {"skipped": "nlp-zero is not installed (pip install nlp-zero)"}
        else:
            systems["nlp_zero"] = {**bakeoff_score(nz[1], gold_lines, train_set), **nz[2],
                                   "lexicon_size": len(nz[0])}
    if "f1" in systems.get("nlp_zero", {}):
        ours, theirs = systems["kerasformer"], systems["nlp_zero"]
        systems["speedup_vs_nlp_zero"] = {"wall": theirs["discover_s"] / ours["discover_s"],
                                          "cpu": theirs["discover_cpu_s"] / ours["discover_cpu_s"]}
    result = {
        "task": "unsupervised word discovery, SIGHAN 2005 PKU",
        "date": datetime.date.today().isoformat(),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "machine": platform.machine()},
        "args": vars(args), "corpus_chars": sizes, "total_chars": sum(sizes.values()),
        "systems": systems, "examples": examples,
    }
    common.write_json(args.out, result)
    if not args.quiet:
        for name, r in systems.items():
            if isinstance(r, dict) and "f1" in r:
                print(f"{name:12s} P {r['precision']:.4f} R {r['recall']:.4f} F1 {r['f1']:.4f} "
                      f"OOV-R {r['oov_recall']:.4f}  discover {r['discover_s']:.1f}s ({r['discover_cpu_s']:.1f}s CPU) segment {r['segment_s']:.1f}s "
                      f"lexicon {r['lexicon_size']:,}")
        print(f"results: {args.out}")
    return result


if __name__ == "__main__":
    main()
