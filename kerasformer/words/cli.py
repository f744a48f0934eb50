"""``kerasformer words discover | segment | domain``: numpy only, no Keras.

    kerasformer words discover CORPUS... --out lexicon.tsv
    kerasformer words segment --lexicon lexicon.tsv < text > segmented
    kerasformer words domain DOMAIN_CORPUS GENERAL_CORPUS [--top 50]

`segment` prints each input line with its words separated by one space and nothing else
on stdout; progress and summaries go to stderr.
"""
import argparse
import sys

from kerasformer.errors import KerasformerError


def _discovery_args(p):
    p.add_argument("--method", default="min_entropy", choices=["min_entropy", "nlp_zero"])
    p.add_argument("--order", type=int, default=4, help="longest n-gram counted")
    p.add_argument("--min-count", type=int, default=8, help="n-grams / words seen fewer times are dropped")
    p.add_argument("--min-pmi", type=float, nargs="+", help="nats: one value, or one per order 2..order "
                                                            "(default 1 3 5; nlp_zero: 1)")
    p.add_argument("--min-branch-entropy", type=float, default=0.0, help="nats; 0 = no branching filter")
    p.add_argument("--workers", type=int, default=1, help="counting processes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _discovery_kwargs(args):
    pmi = args.min_pmi
    return dict(method=args.method, order=args.order, min_count=args.min_count,
                min_pmi=pmi[0] if pmi and len(pmi) == 1 else pmi,
                min_branch_entropy=args.min_branch_entropy, workers=args.workers, progress=not args.quiet)


def cmd_discover(args):
    from kerasformer.words.discovery import discover, save_lexicon

    lexicon = discover(args.corpus, spill_dir=args.spill_dir, **_discovery_kwargs(args))
    save_lexicon(lexicon, args.out)
    multi = sum(len(w) > 1 for w in lexicon)
    print(f"{len(lexicon):,} entries ({multi:,} multi-character words) -> {args.out}", file=sys.stderr)
    return 0


def cmd_segment(args):
    from kerasformer.words.discovery import load_lexicon
    from kerasformer.words.segment import Segmenter

    segmenter = Segmenter(load_lexicon(args.lexicon))
    files = args.input or ["-"]
    out = sys.stdout
    for name in files:
        f = sys.stdin if name == "-" else open(name, encoding="utf-8")
        try:
            for line in f:
                out.write(" ".join(segmenter.cut(line.rstrip("\n"))) + "\n")
        finally:
            if f is not sys.stdin:
                f.close()
    out.flush()
    return 0


def cmd_domain(args):
    from kerasformer.words.domain import domain_terms

    kwargs = _discovery_kwargs(args)
    terms = domain_terms([args.domain], [args.general], alpha=args.alpha, min_llr=args.min_llr,
                         **kwargs)
    lines = [f"{t['word']}\t{t['log_ratio']:.4f}\t{t['llr']:.2f}\t{t['domain_count']}\t{t['general_count']}"
             for t in terms[:args.top or None]]
    text = "word\tlog_ratio\tllr\tdomain_count\tgeneral_count\n" + "".join(line + "\n" for line in lines)
    if args.out:
        from kerasformer.words.counting import atomic_write

        atomic_write(args.out, text)
        print(f"{len(terms):,} domain terms -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="kerasformer words", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("discover", help="discover a lexicon (word<TAB>count) from raw text files")
    d.add_argument("corpus", nargs="+", help="raw text files (UTF-8)")
    d.add_argument("--out", required=True, help="lexicon TSV to write (atomically)")
    d.add_argument("--spill-dir", help="folder for on-disk partial counts (bounded memory)")
    _discovery_args(d)
    s = sub.add_parser("segment", help="segment lines of text with a lexicon (max-probability path)")
    s.add_argument("input", nargs="*", help="text files (default: stdin)")
    s.add_argument("--lexicon", required=True, help="word<TAB>count lines, e.g. from `discover`")
    m = sub.add_parser("domain", help="rank the domain corpus' words against a general corpus")
    m.add_argument("domain", help="domain corpus (UTF-8 text file)")
    m.add_argument("general", help="general corpus (UTF-8 text file)")
    m.add_argument("--top", type=int, default=100, help="terms printed (0 = all)")
    m.add_argument("--alpha", type=float, default=1.0, help="add-alpha smoothing of the counts")
    m.add_argument("--min-llr", type=float, default=10.83, help="log-likelihood ratio threshold (p < 0.001)")
    m.add_argument("--out", help="write the TSV here instead of stdout")
    _discovery_args(m)
    m.set_defaults(min_count=5)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return {"discover": cmd_discover, "segment": cmd_segment, "domain": cmd_domain}[args.command](args)
    except KerasformerError as e:
        print(f"kerasformer words: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"kerasformer words: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
