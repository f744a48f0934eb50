"""Raw text -> packed fixed-length sequences -> numpy shards (bert4keras' pretraining data).

Documents come from text files (``.gz`` allowed), one per line or separated by blank lines,
and are streamed: the corpus is never held in memory. Each document is split at sentence
ends, every sentence tokenized (with the word boundaries whole-word masking needs), and the
sentences are packed as bert4keras' ``TrainingDataset.paragraph_process`` does: ``[CLS]``,
then whole sentences while they fit (a sentence is cut to ``seq_len - 2``), ``[SEP]``,
padding. Masking is *not* done here (see :mod:`objectives`), so one set of shards serves
``mlm``, ``lm`` and ``unilm``, and dynamic masking draws new masks every epoch.

A shard holds two arrays of ``[n, seq_len]``: ``token_ids`` (int32) and ``word_starts``
(int8: 1 where a token begins a word -- a jieba word for Chinese, a WordPiece word for the
rest --, 0 on continuation pieces, special tokens and padding). Shards are ``.npy`` files
(read back as memmaps) plus ``index.json``; each file is written under a temporary name and
renamed, the index last, so a killed run leaves no half-written dataset behind.
"""
import gzip
import itertools
import json
import os
import re

import numpy as np

from kerasformer.errors import KerasformerError

INDEX = "index.json"
# a sentence ends at 。！？!? (plus closing quotes) or a newline; bert4keras split at [\n。]
SENTENCE = re.compile(r"[^。！？!?\n]*(?:[。！？!?]+[”’」』\"']*|\n|$)")


def open_text(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8", errors="replace")


def read_documents(paths, documents="line"):
    """Yield documents from text files: ``'line'`` -- one per line; ``'blank'`` -- lines up to
    a blank line form one document (their line breaks kept as sentence ends)."""
    if documents not in ("line", "blank"):
        raise KerasformerError(f"documents must be 'line' or 'blank', got {documents!r}")
    for path in paths:
        if not os.path.isfile(path):
            raise KerasformerError(f"corpus file not found: {str(path)[:300]}")
        with open_text(path) as f:
            if documents == "line":
                for line in f:
                    if line.strip():
                        yield line.strip()
                continue
            lines = []
            for line in f:
                if line.strip():
                    lines.append(line.strip())
                elif lines:
                    yield "\n".join(lines)
                    lines = []
            if lines:
                yield "\n".join(lines)


def split_sentences(text):
    return [s.strip() for s in SENTENCE.findall(text) if s.strip()]


class SentenceEncoder:
    """Sentence -> (token ids, word starts) with a WordPiece ``Tokenizer``. ``segmenter``:
    ``'jieba'`` groups the pieces of each jieba word (HFL's Chinese whole-word masking),
    ``'char'`` only groups WordPiece ``##`` continuations (each Chinese character a word)."""

    def __init__(self, tokenizer, segmenter="jieba"):
        self.tokenizer = tokenizer
        if segmenter == "jieba":
            try:
                import jieba
            except ImportError:
                raise KerasformerError("whole-word masking of Chinese needs jieba: pip install "
                                       "'kerasformer[pretrain]' (or segmenter='char')") from None
            jieba.setLogLevel(60)
            self.cut = jieba.lcut
        elif segmenter == "char":
            self.cut = lambda text: [text]
        else:
            raise KerasformerError(f"segmenter must be 'jieba' or 'char', got {segmenter!r}")
        self.by_piece = segmenter == "char"

    def __call__(self, sentence):
        ids, starts = [], []
        for word in self.cut(sentence):
            tokens = self.tokenizer.tokenize(word)[1:-1]
            # a jieba word starts at its first piece; otherwise every non-'##' piece starts one
            starts.extend(int(i == 0 or (self.by_piece and not t.startswith("##"))) for i, t in enumerate(tokens))
            ids.extend(self.tokenizer.tokens_to_ids(tokens))
        return ids, starts


def pack_document(sentences, seq_len, cls_id, sep_id, pad_id=0):
    """bert4keras' packing of one document's encoded sentences (``[(ids, starts)]``) into
    ``[CLS] s1 s2 ... [SEP] pad`` rows of exactly ``seq_len``; returns two int arrays."""
    rows_ids, rows_starts = [], []
    ids, starts = [cls_id], [0]

    def close():
        row = ids + [sep_id]
        rows_ids.append(row + [pad_id] * (seq_len - len(row)))
        rows_starts.append(starts + [0] * (seq_len - len(starts)))

    for s_ids, s_starts in sentences:
        s_ids, s_starts = s_ids[:seq_len - 2], s_starts[:seq_len - 2]
        if not s_ids:
            continue
        if len(ids) + len(s_ids) > seq_len - 1 and len(ids) > 1:
            close()
            ids, starts = [cls_id], [0]
        ids.extend(s_ids)
        starts.extend(s_starts)
    if len(ids) > 1:
        close()
    if not rows_ids:
        return np.zeros((0, seq_len), "int32"), np.zeros((0, seq_len), "int8")
    return np.asarray(rows_ids, "int32"), np.asarray(rows_starts, "int8")


def pack_stream(rows_ids, rows_starts, seq_len, pad_id=0):
    """RoBERTa's FULL-SENTENCES packing over bert4keras' rows: a row joins the previous one
    while both fit, ``[CLS] a [SEP] b [SEP]`` (b's ``[CLS]`` dropped, the ``[SEP]`` between
    them marks the document boundary). Short documents (a title, a couplet) then share rows
    instead of padding each to ``seq_len``."""
    out_ids, out_starts = [], []
    cur_ids = cur_starts = None

    def emit():
        out_ids.append(cur_ids + [pad_id] * (seq_len - len(cur_ids)))
        out_starts.append(cur_starts + [0] * (seq_len - len(cur_starts)))

    for ids, starts in zip(rows_ids, rows_starts):
        n = int((np.asarray(ids) != pad_id).sum())
        ids, starts = [int(i) for i in ids[:n]], [int(i) for i in starts[:n]]
        if cur_ids is not None and len(cur_ids) + n - 1 <= seq_len:
            cur_ids, cur_starts = cur_ids + ids[1:], cur_starts + starts[1:]
            continue
        if cur_ids is not None:
            emit()
        cur_ids, cur_starts = ids, starts
    if cur_ids is not None:
        emit()
    if not out_ids:
        return np.zeros((0, seq_len), "int32"), np.zeros((0, seq_len), "int8")
    return np.asarray(out_ids, "int32"), np.asarray(out_starts, "int8")


# ---------------------------------------------------------------- parallel shard writing

_WORKER = {}


def _init_worker(vocab, do_lower_case, segmenter, seq_len, pack="document"):
    from kerasformer.tokenizers.wordpiece import Tokenizer

    tokenizer = Tokenizer(vocab, do_lower_case=do_lower_case)
    _WORKER.update(encode=SentenceEncoder(tokenizer, segmenter), seq_len=seq_len, pack=pack,
                   cls=tokenizer.start_id, sep=tokenizer.end_id, pad=tokenizer.pad_id or 0)


def _process_chunk(docs):
    w = _WORKER
    ids, starts, chars = [], [], 0
    for doc in docs:
        chars += len(doc)
        a, b = pack_document([w["encode"](s) for s in split_sentences(doc)], w["seq_len"], w["cls"], w["sep"], w["pad"])
        ids.append(a)
        starts.append(b)
    seq_len = w["seq_len"]
    ids = np.concatenate(ids) if ids else np.zeros((0, seq_len), "int32")
    starts = np.concatenate(starts) if starts else np.zeros((0, seq_len), "int8")
    if w["pack"] == "stream":
        ids, starts = pack_stream(ids, starts, seq_len, w["pad"])
    return ids, starts, chars


def _chunks(iterable, size):
    it = iter(iterable)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _save_npy(path, array):
    tmp = path + ".tmp"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=array.dtype, shape=array.shape)
    out[:] = array
    out.flush()
    del out
    os.replace(tmp, path)


def _save_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
    os.replace(tmp, path)


def build_shards(corpus, out_dir, vocab, seq_len=512, do_lower_case=True, segmenter="jieba",
                 documents="line", shard_size=16384, workers=None, chunk_docs=64, progress=True,
                 pack="document"):
    """Preprocess text files into shards under ``out_dir`` with ``workers`` processes (all
    CPUs by default); the output is the same for any number of workers. Returns the index.
    ``pack='document'`` packs each document into its own rows (bert4keras); ``'stream'``
    also lets consecutive short documents share a row (:func:`pack_stream`).
    An existing complete dataset with the same settings is reused (written once). Workers are
    spawned (forking a process that runs JAX is unsafe), so a script calling this with
    ``workers > 1`` needs the usual ``if __name__ == '__main__':`` guard."""
    import multiprocessing

    from tqdm import tqdm

    corpus = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus)
    if seq_len < 4:
        raise KerasformerError(f"seq_len must be at least 4, got {seq_len}")
    if pack not in ("document", "stream"):
        raise KerasformerError(f"unknown packing {str(pack)[:40]!r}; use 'document' or 'stream'")
    settings = {"corpus": [os.path.abspath(p) for p in corpus], "seq_len": int(seq_len),
                "vocab": os.path.abspath(vocab), "do_lower_case": bool(do_lower_case),
                "segmenter": segmenter, "documents": documents}
    if pack != "document":  # (datasets written before the option keep their settings)
        settings["pack"] = pack
    index_path = os.path.join(out_dir, INDEX)
    if os.path.exists(index_path):
        index = load_index(out_dir)
        if index.get("settings") == settings:
            return index
        raise KerasformerError(f"{out_dir} already holds shards of other settings; choose another directory")
    os.makedirs(out_dir, exist_ok=True)
    workers = max(1, int(workers or os.cpu_count() or 1))
    total_bytes = sum(os.path.getsize(p) for p in corpus if os.path.isfile(p))
    shards, buf_ids, buf_starts, buffered = [], [], [], 0
    totals = {"documents": 0, "chars": 0, "tokens": 0}

    def flush(final=False):
        nonlocal buf_ids, buf_starts, buffered
        while buffered >= shard_size or (final and buffered):
            ids, starts = np.concatenate(buf_ids), np.concatenate(buf_starts)
            n = min(shard_size, len(ids))
            name = f"shard-{len(shards):05d}"
            _save_npy(os.path.join(out_dir, name + ".ids.npy"), ids[:n])
            _save_npy(os.path.join(out_dir, name + ".starts.npy"), starts[:n])
            shards.append({"name": name, "count": int(n)})
            buf_ids, buf_starts, buffered = [ids[n:]], [starts[n:]], len(ids) - n

    init = (vocab, do_lower_case, segmenter, seq_len, pack)
    docs = _chunks(read_documents(corpus, documents), chunk_docs)
    bar = tqdm(total=total_bytes or None, unit="B", unit_scale=True, desc="preprocess", disable=not progress)
    if workers == 1:
        _init_worker(*init)
        results, pool = map(_process_chunk, docs), None
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, init)
        results = pool.imap(_process_chunk, docs)  # ordered: output independent of workers
    try:
        for ids, starts, chars in results:
            buf_ids.append(ids)
            buf_starts.append(starts)
            buffered += len(ids)
            totals["chars"] += chars
            totals["tokens"] += int((ids != 0).sum())
            bar.update(chars * 3 if total_bytes else chars)  # ~bytes of UTF-8 Chinese
            flush()
        flush(final=True)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    if not shards:
        raise KerasformerError("the corpus produced no training sequence (empty files?)")
    index = {"format": "kerasformer-pretraining/1", "settings": settings, "seq_len": int(seq_len),
             "shards": shards, "examples": sum(s["count"] for s in shards),
             "chars": totals["chars"], "tokens": totals["tokens"]}
    _save_json(index_path, index)
    return index


def load_index(data_dir):
    path = os.path.join(data_dir, INDEX)
    if not os.path.exists(path):
        raise KerasformerError(f"no {INDEX} in {str(data_dir)[:300]}: not a preprocessed dataset "
                               "(or its preprocessing did not finish)")
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    if index.get("format") != "kerasformer-pretraining/1":
        raise KerasformerError(f"{path} is not a kerasformer pretraining index")
    return index


def build_vocab(corpus, out, min_count=1, max_size=None, documents="line", progress=True):
    """A Chinese character vocabulary: special tokens, then every character seen at least
    ``min_count`` times (most frequent first, ``max_size`` in all) and its ``##`` piece, the
    form WordPiece uses inside a non-Chinese word. Written atomically; returns its size."""
    from collections import Counter

    from tqdm import tqdm

    from kerasformer.tokenizers.wordpiece import Tokenizer

    corpus = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus)
    counts = Counter()
    for doc in tqdm(read_documents(corpus, documents), desc="vocab", unit=" docs", disable=not progress):
        counts.update(ch for ch in doc.lower() if not ch.isspace())
    chars = [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
             if n >= min_count and not Tokenizer.is_control(c)]
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = list(special)
    for c in chars:
        tokens.append(c)
        if not Tokenizer.is_cjk_character(c) and not Tokenizer.is_punctuation(c):
            tokens.append("##" + c)  # letters and digits continue words; CJK never does
        if max_size and len(tokens) >= max_size:
            break
    tokens = tokens[:max_size] if max_size else tokens
    if len(tokens) == len(special):
        raise KerasformerError("the corpus holds no characters to build a vocabulary from")
    tmp = str(out) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    os.replace(tmp, out)
    return len(tokens)
