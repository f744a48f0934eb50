"""Word discovery speed: kerasformer.words.discover vs nlp-zero, alternating, same text.

The raw text of recipes/word_discovery.py (the PKU test text with whitespace removed plus
the other raw Chinese corpora of ../shared/data), optionally cut to its first --chars
characters, goes through both contenders in turn, A B A B ... (`--rounds` each), in this
one process and thread: kerasformer's `discover` (counting + discovery, the recipe's
defaults: min_entropy, order 4, min count 5, 1 5 8 nats) and nlp-zero's
`Word_Finder(min_proba=min_count/characters, min_pmi=1)` `train` + `find` (counting +
discovery). Alternating spreads the load of a shared machine over both; the figure is
the median of the per-round ratios nlp-zero / kerasformer, with their min and max.

    python benchmarks/bench_words.py                  # 5.7 M characters, 3 rounds
    python benchmarks/bench_words.py --chars 1000000 --rounds 5
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))
import word_discovery  # noqa: E402  (the recipe's corpus readers and nlp-zero set-up)


def timed(func):
    wall, cpu = time.perf_counter(), time.process_time()
    result = func()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=word_discovery.DATA)
    p.add_argument("--corpora", default=word_discovery.DEFAULT_CORPORA)
    p.add_argument("--chars", type=int, default=0, help="first N characters of the raw text (0 = all)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-count", type=int, default=5)
    args = p.parse_args(argv)

    from kerasformer.words import discover

    test = os.path.join(args.data_dir, "sighan2005", "pku_test.utf8")
    texts, _ = word_discovery.raw_corpus([n for n in args.corpora.split(",") if n], test, args.data_dir)
    if args.chars:
        kept, size = [], 0
        for t in texts:
            if size >= args.chars:
                break
            kept.append(t[:args.chars - size])
            size += len(kept[-1])
        texts = kept
    total = sum(map(len, texts))

    nz = word_discovery.import_nlp_zero()
    if nz is None:
        raise SystemExit("nlp-zero is not installed (pip install nlp-zero)")

    def ours():
        return discover(texts, order=4, min_count=args.min_count, min_pmi=[1.0, 5.0, 8.0], progress=False)

    def theirs():
        finder = nz.Word_Finder(min_proba=args.min_count / total, min_pmi=1)
        finder.train(texts)
        finder.find(texts)
        return finder.words

    print(f"{total:,} characters, {args.rounds} rounds, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    ratios = {"wall": [], "cpu": []}
    for r in range(args.rounds):
        a, a_wall, a_cpu = timed(ours)
        b, b_wall, b_cpu = timed(theirs)
        ratios["wall"].append(b_wall / a_wall)
        ratios["cpu"].append(b_cpu / a_cpu)
        print(f"round {r + 1}: kerasformer {a_wall:.2f} s ({a_cpu:.2f} s CPU, {len(a):,} words)  "
              f"nlp-zero {b_wall:.2f} s ({b_cpu:.2f} s CPU, {len(b):,} words)  "
              f"ratio {ratios['wall'][-1]:.1f}x wall, {ratios['cpu'][-1]:.1f}x CPU")
    for kind, values in ratios.items():
        print(f"nlp-zero / kerasformer, {kind}: median {statistics.median(values):.1f}x "
              f"(min {min(values):.1f}x, max {max(values):.1f}x)")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
