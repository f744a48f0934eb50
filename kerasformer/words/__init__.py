"""Unsupervised word discovery, segmentation and domain-term mining (nlp-zero's line
of work), in numpy: no Keras is imported here.

    from kerasformer.words import count_ngrams, discover, Segmenter, domain_terms
    lexicon = discover(["corpus.txt"])            # {word: count}
    seg = Segmenter(lexicon); seg("今天天气不错")   # ['今天', '天气', '不错']

See docs/words.md for the methods and their thresholds.
"""
from kerasformer.words.counting import NgramCounts, count_chars, count_ngrams, iter_chunks, merge_counts
from kerasformer.words.discovery import (branching_entropy, discover, load_lexicon, ngram_pmi, save_lexicon,
                                         solid_ngrams)
from kerasformer.words.segment import Segmenter
from kerasformer.words.templates import find_templates, template_string

__all__ = ["NgramCounts", "count_chars", "count_ngrams", "iter_chunks", "merge_counts", "branching_entropy",
           "discover", "load_lexicon", "ngram_pmi", "save_lexicon", "solid_ngrams", "Segmenter",
           "find_templates", "template_string"]
