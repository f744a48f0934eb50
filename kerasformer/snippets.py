"""Framework-free helpers, with bert4keras' names and meanings.

Everything here is plain Python + NumPy so that data pipelines never import a
deep-learning backend: `sequence_padding`, `truncate_sequences`,
`text_segmentate`, `to_array`, `is_string`, the `DataGenerator` template, the
`open` file helper and `parallel_apply`.

Differences from bert4keras are deliberate and small:

* `DataGenerator` has no `to_dataset` (that was a `tf.data` bridge); feed
  `forfit()` to `model.fit(..., steps_per_epoch=len(gen))` instead, which all
  Keras 3 backends accept.
* `truncate_sequences` keeps each sequence paired with its own pop index even
  when some sequences are empty or None (bert4keras drops empty ones first and
  then mis-aligns a per-sequence index list).
* `sequence_padding` accepts an int `length` together with `seq_dims > 1`
  (it is used for every padded dimension).
* `parallel_apply` workers stop cleanly and an exception in `func` is re-raised
  in the caller instead of hanging the loop.
"""

import builtins
import functools
import json
import os
import queue as _queue
import re
import types
import unicodedata
from collections import defaultdict

import numpy as np

from kerasformer.errors import KerasformerError

_open_ = builtins.open

__all__ = [
    "is_string",
    "to_array",
    "sequence_padding",
    "truncate_sequences",
    "text_segmentate",
    "DataGenerator",
    "open",
    "parallel_apply",
    "parallel_apply_generator",
]


def is_string(s):
    """True if `s` is a text string (bert4keras kept py2 compatibility here)."""
    return isinstance(s, str)


def to_array(*args):
    """`np.array` each argument; a single argument returns a single array.

    Typical use: `token_ids, segment_ids = to_array([token_ids], [segment_ids])`.
    """
    results = [np.array(a) for a in args]
    if len(args) == 1:
        return results[0]
    return results


def sequence_padding(inputs, length=None, value=0, seq_dims=1, mode="post"):
    """Pad (or cut) a batch of ragged sequences to one length, NumPy only.

    Args:
        inputs: list of sequences (lists or arrays). The first `seq_dims`
            dimensions are ragged; any trailing dimensions must agree.
        length: target length. None means the longest in the batch (per
            dimension); an int is used for every one of the `seq_dims`
            dimensions; a list/tuple gives one length per dimension. Sequences
            longer than `length` are truncated (from the end for 'post', and
            also from the end for 'pre', as bert4keras does).
        value: the padding value.
        seq_dims: how many leading dimensions to pad (2 for e.g. a batch of
            [n, n] matrices such as GlobalPointer labels).
        mode: 'post' pads after the data, 'pre' pads before it.

    Returns:
        a NumPy array of shape (len(inputs), *length, *trailing_dims).
    """
    if mode not in ("post", "pre"):
        raise ValueError('"mode" argument must be "post" or "pre", got %r.' % (mode,))
    if len(inputs) == 0:
        return np.array(inputs)
    inputs = [np.asarray(x) for x in inputs]
    # an empty sequence reads as float64; give it the data's dtype so that a
    # batch of token ids with one empty row stays integer
    dtypes = [x.dtype for x in inputs if x.size]
    if dtypes:
        dtype = np.result_type(*dtypes)
        inputs = [x if x.size else x.astype(dtype) for x in inputs]
    if length is None:
        length = np.max([np.shape(x)[:seq_dims] for x in inputs], axis=0)
    elif not hasattr(length, "__getitem__"):
        length = [length] * seq_dims
    if len(length) < seq_dims:
        raise ValueError("length %r gives fewer than seq_dims=%d lengths" % (length, seq_dims))

    slices = tuple(np.s_[: int(length[i])] for i in range(seq_dims))
    pad_width = [(0, 0) for _ in np.shape(inputs[0])]

    outputs = []
    for x in inputs:
        x = x[slices]
        for i in range(seq_dims):
            gap = int(length[i]) - np.shape(x)[i]
            pad_width[i] = (0, gap) if mode == "post" else (gap, 0)
        x = np.pad(x, pad_width, "constant", constant_values=value)
        outputs.append(x)

    return np.array(outputs)


def truncate_sequences(maxlen, indices, *sequences):
    """Cut the sequences in place until their total length is <= maxlen.

    bert4keras' rule: repeatedly pop one element from the currently longest
    sequence (the first one on ties), at position `indices` (an int used for
    every sequence, or one int per sequence). Tokenizers pass -2 so that the
    trailing [SEP] survives. None / empty sequences are skipped.

    Returns the list of (non-empty) sequences, which are the same objects that
    were passed in, now shortened.
    """
    if not isinstance(indices, (list, tuple)):
        indices = [indices] * len(sequences)
    if len(indices) != len(sequences):
        raise ValueError("got %d indices for %d sequences" % (len(indices), len(sequences)))
    # Keep each sequence with its own index even when some are empty/None.
    pairs = [(s, i) for s, i in zip(sequences, indices) if s]
    seqs = [s for s, _ in pairs]
    idxs = [i for _, i in pairs]

    lengths = [len(s) for s in seqs]
    total = sum(lengths)
    while total > maxlen:
        i = lengths.index(max(lengths))  # first longest, like np.argmax
        try:
            seqs[i].pop(idxs[i])
        except IndexError:
            raise KerasformerError(
                "cannot truncate to maxlen=%r: popping index %r from a sequence of length %d "
                "(maxlen is smaller than the tokens that must be kept)"
                % (maxlen, idxs[i], lengths[i])
            ) from None
        lengths[i] -= 1
        total -= 1
    return seqs


def text_segmentate(text, maxlen, seps="\n", strips=None):
    """Split `text` into pieces of at most about `maxlen` characters.

    bert4keras' recursive rule: split on `seps[0]`, greedily re-join adjacent
    pieces while they fit in `maxlen`, and recurse with `seps[1:]` on each
    group that is still too long. Separators stay attached to the piece they
    end. Each piece is stripped of whitespace and then of `strips`. A piece with
    no separator left is returned as is, even if longer than `maxlen`.

    Example: `text_segmentate(doc, 32, u'\\n。！？；，', u'。！？；，')`.
    """
    text = text.strip().strip(strips)
    if seps and len(text) > maxlen:
        pieces = text.split(seps[0])
        text, texts = "", []
        for i, p in enumerate(pieces):
            if text and p and len(text) + len(p) > maxlen - 1:
                texts.extend(text_segmentate(text, maxlen, seps[1:], strips))
                text = ""
            if i + 1 == len(pieces):
                text = text + p
            else:
                text = text + p + seps[0]
        if text:
            texts.extend(text_segmentate(text, maxlen, seps[1:], strips))
        return texts
    return [text]


class DataGenerator:
    """Batch-generator template (bert4keras' `DataGenerator`).

    Subclass it and write `__iter__(self, random=False)`, usually with
    `self.sample(random)` which yields `(is_end, item)` so the last, possibly
    partial, batch can be flushed::

        class Gen(DataGenerator):
            def __iter__(self, random=False):
                batch = []
                for is_end, item in self.sample(random):
                    batch.append(item)
                    if len(batch) == self.batch_size or is_end:
                        yield to_array(batch), None
                        batch = []

        model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=...)

    `data` may be a sequence (then `len(gen)` is the number of batches, the
    last one partial) or any iterable without `len` (then `steps` is None and
    random sampling shuffles through a buffer of `buffer_size` items).
    """

    def __init__(self, data, batch_size=32, buffer_size=None):
        self.data = data
        self.batch_size = batch_size
        if hasattr(self.data, "__len__"):
            self.steps = len(self.data) // self.batch_size
            if len(self.data) % self.batch_size != 0:
                self.steps += 1
        else:
            self.steps = None
        self.buffer_size = buffer_size or batch_size * 1000

    def __len__(self):
        if self.steps is None:
            # bert4keras returned None here, which makes len() itself fail obscurely.
            raise TypeError(
                "this DataGenerator wraps an iterable without len(); pass steps_per_epoch yourself"
            )
        return self.steps

    def sample(self, random=False):
        """Yield `(is_end, item)` over the data, shuffled when `random`.

        `is_end` is True only for the last item, so `__iter__` can emit the last
        partial batch. For data without `len`, shuffling draws uniformly from a
        buffer of `buffer_size` items (streaming shuffle).
        """
        if random:
            if self.steps is None:

                def generator():
                    caches, isfull = [], False
                    for d in self.data:
                        caches.append(d)
                        if isfull:
                            i = np.random.randint(len(caches))
                            yield caches.pop(i)
                        elif len(caches) == self.buffer_size:
                            isfull = True
                    while caches:
                        i = np.random.randint(len(caches))
                        yield caches.pop(i)

            else:

                def generator():
                    for i in np.random.permutation(len(self.data)):
                        yield self.data[i]

            data = generator()
        else:
            data = iter(self.data)

        try:
            d_current = next(data)
        except StopIteration:  # empty data: nothing to yield
            return
        for d_next in data:
            yield False, d_current
            d_current = d_next

        yield True, d_current

    def __iter__(self, random=False):
        raise NotImplementedError

    def forfit(self, random=True):
        """Endless stream of batches for `model.fit` (reshuffled every pass)."""
        while True:
            for d in self.__iter__(random):
                yield d

    def fortest(self, random=False):
        """Endless stream of the inputs only (`d[0]` of each batch), for predict."""
        while True:
            for d in self.__iter__(random):
                yield d[0]


class open:  # noqa: A001 - bert4keras exposes this name on purpose
    """File wrapper like bert4keras' `open`, with optional random line access.

    It behaves like the builtin `open` for reading/writing/iterating. With
    `indexable=True` it first records the offset of every line so that
    `f[i]` returns line i and `len(f)` the number of lines; with
    `indexable='path.json'` the offsets are cached in (and re-read from) that
    json file. Useful for DataGenerators over corpora that do not fit in memory.
    """

    def __init__(self, name, mode="r", encoding=None, errors="strict", indexable=False):
        self.name = name
        if "b" in mode:
            self.file = _open_(name, mode)
        else:
            self.file = _open_(name, mode, encoding=encoding, errors=errors)
        self.encoding = encoding
        self.errors = errors
        self.iterator = None
        if indexable:
            if is_string(indexable) and os.path.exists(indexable):
                with _open_(indexable) as f:
                    self.offsets = json.load(f)
            else:
                self.create_indexes()
                if is_string(indexable):
                    with _open_(indexable, "w") as f:
                        json.dump(self.offsets, f)

    def create_indexes(self):
        """Record the start offset of every line (tell() cookies)."""
        self.offsets, offset = [], self.tell()
        while self.readline():
            self.offsets.append(offset)
            offset = self.tell()
        self.seek(0)

    def __getitem__(self, key):
        self.seek(self.offsets[key])
        return self.readline()

    def __len__(self):
        if not hasattr(self, "offsets"):
            raise TypeError("len() needs open(..., indexable=True)")
        return len(self.offsets)

    def __iter__(self):
        if hasattr(self, "offsets"):
            for i in range(len(self)):
                yield self[i]
        else:
            # readline (not `for l in file`) keeps tell() usable while iterating
            while True:
                line = self.file.readline()
                if not line:
                    return
                yield line

    def __next__(self):
        if self.iterator is None:
            self.iterator = self.__iter__()
        return next(self.iterator)

    next = __next__

    def read(self, *args):
        return self.file.read(*args)

    def readline(self):
        return self.file.readline()

    def readlines(self):
        return self.file.readlines()

    def write(self, text):
        return self.file.write(text)

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()

    def tell(self):
        return self.file.tell()

    def seek(self, offset=0):
        return self.file.seek(offset)

    def __enter__(self):
        return self

    def __exit__(self, type, value, tb):
        self.close()


class _WorkerError:
    """Carries an exception raised by `func` in a worker back to the caller."""

    def __init__(self, exc):
        self.exc = exc


def _parallel_worker(func, in_queue, out_queue, seed, do_seed):
    """Worker loop of `parallel_apply` (module level, so 'spawn' can pickle it)."""
    if do_seed:
        np.random.seed(seed)
    while True:
        item = in_queue.get()
        if item is None:  # sentinel: no more work
            return
        i, d = item
        try:
            r = func(d)
        except Exception as e:  # hand the error to the caller instead of dying silently
            r = _WorkerError(e)
        out_queue.put((i, r))


def parallel_apply_generator(
    func, iterable, workers, max_queue_size, dummy=False, random_seeds=True
):
    """Apply `func` to every item of `iterable` in worker processes (or threads).

    Yields `(index, func(item))` pairs as results arrive, i.e. NOT in input
    order. `dummy=True` uses threads instead of processes. Processes are started
    with the 'fork' method where the platform has it, so `func` may be a
    closure or lambda; elsewhere (Windows) `func` must be picklable. Fork
    before a backend starts its threads (i.e. preprocess before building the
    model), as with any multiprocessing.
    `random_seeds`: True reseeds NumPy's RNG in every worker from OS entropy
    (otherwise forked workers share one random state); a list gives one seed
    per worker; False/None leaves the RNG alone.
    """
    if dummy:
        import threading

        Queue = _queue.Queue

        def make_worker(target, args):
            return threading.Thread(target=target, args=args, daemon=True)

    else:
        import multiprocessing

        try:
            ctx = multiprocessing.get_context("fork")
        except ValueError:  # platforms without fork: func must then be picklable
            ctx = multiprocessing.get_context()
        Queue = ctx.Queue

        def make_worker(target, args):
            return ctx.Process(target=target, args=args, daemon=True)

    in_queue, out_queue = Queue(max_queue_size), Queue()
    if random_seeds is True:
        random_seeds = [None] * workers
    elif random_seeds is None or random_seeds is False:
        random_seeds = []
    seeds = list(random_seeds)[:workers]
    reseed = [True] * len(seeds) + [False] * (workers - len(seeds))
    seeds += [None] * (workers - len(seeds))

    pool = [
        make_worker(_parallel_worker, (func, in_queue, out_queue, s, f)) for s, f in zip(seeds, reseed)
    ]
    for p in pool:
        p.start()

    def get():
        while True:
            try:
                i, r = out_queue.get(timeout=1.0)
                break
            except _queue.Empty:
                # a worker killed from outside (e.g. out of memory) would otherwise hang us
                if not any(p.is_alive() for p in pool):
                    raise RuntimeError("parallel_apply: every worker exited before all results came back")
        if isinstance(r, _WorkerError):
            raise r.exc
        return i, r

    try:
        in_count, out_count = 0, 0
        for i, d in enumerate(iterable):
            in_count += 1
            while True:
                try:
                    in_queue.put((i, d), block=False)
                    break
                except _queue.Full:
                    # input queue full: drain results so workers can go on
                    yield get()
                    out_count += 1
            while out_count < in_count and not out_queue.empty():
                yield get()
                out_count += 1

        while out_count != in_count:
            yield get()
            out_count += 1
    finally:
        for _ in pool:
            try:
                in_queue.put(None, timeout=1)
            except _queue.Full:
                break
        if not dummy:
            for p in pool:
                p.join(timeout=1)
                if p.is_alive():
                    p.terminate()


def parallel_apply(
    func,
    iterable,
    workers,
    max_queue_size,
    callback=None,
    dummy=False,
    random_seeds=True,
    unordered=True,
):
    """Apply `func` to each item of `iterable` with `workers` processes/threads.

    With `callback=None`, returns the list of results: in completion order if
    `unordered` (bert4keras' default), else in input order. With a callback,
    calls `callback(result)` for each result and returns None.
    """
    generator = parallel_apply_generator(
        func, iterable, workers, max_queue_size, dummy, random_seeds
    )

    if callback is None:
        if unordered:
            return [d for i, d in generator]
        results = sorted(generator, key=lambda d: d[0])
        return [d for i, d in results]
    for i, d in generator:
        callback(d)


class ViterbiDecoder:
    """bert4keras' CRF decoder: the best tag path of one sequence, in numpy.

    Scores ``score(y) = sum_t nodes[t, y_t] + sum_t trans[y_t, y_{t+1}]``, as the
    ``ConditionalRandomField`` layer (``kerasformer.layers.crf``) does. ``trans`` is
    ``[num_tags, num_tags]`` ("from" on rows, "to" on columns), e.g.
    ``kerasformer.backend.to_numpy(crf.trans)``. ``starts`` / ``ends``, when given, are the
    only tags a path may start / end with (e.g. 'O' and the 'B-*' tags of a BIO scheme).
    """

    def __init__(self, trans, starts=None, ends=None):
        self.trans = np.asarray(trans, dtype=np.float64)
        self.num_labels = len(self.trans)
        labels = range(self.num_labels)
        self.non_starts = [] if starts is None else [i for i in labels if i not in set(starts)]
        self.non_ends = [] if ends is None else [i for i in labels if i not in set(ends)]

    def decode(self, nodes):
        """``nodes``: ``[length, num_tags]`` emission scores of the real tokens (strip the
        padding first). Returns the best tag sequence as an int array of ``length``."""
        nodes = np.array(nodes, dtype=np.float64)  # a copy: the constraints write into it
        if nodes.ndim != 2 or nodes.shape[1] != self.num_labels:
            raise ValueError(f"nodes must be [length, {self.num_labels}], got {nodes.shape}")
        if len(nodes) == 0:
            return np.zeros((0,), dtype=int)
        nodes[0, self.non_starts] = -np.inf
        nodes[-1, self.non_ends] = -np.inf
        scores = nodes[0]  # best score of a path ending in each tag
        backpointers = []
        for t in range(1, len(nodes)):
            candidates = scores[:, None] + self.trans + nodes[t][None, :]  # [from, to]
            backpointers.append(candidates.argmax(axis=0))
            scores = candidates.max(axis=0)
        path = [int(scores.argmax())]
        for pointers in reversed(backpointers):
            path.append(int(pointers[path[-1]]))
        return np.array(path[::-1], dtype=int)


__all__.append("ViterbiDecoder")


# ------------------------------------------------------------- bert4keras' small helpers

def strQ2B(ustring):  # noqa: N802 - bert4keras' name
    """Full-width characters to their half-width forms (U+3000 -> space, U+FF01..U+FF5E ->
    U+0021..U+007E); everything else unchanged."""
    chars = []
    for char in ustring:
        code = ord(char)
        if code == 12288:
            code = 32
        elif 65281 <= code <= 65374:
            code -= 65248
        chars.append(chr(code))
    return "".join(chars)


def string_matching(s, keywords):
    """True if any of the regular expressions ``keywords`` occurs in ``s`` (``re.search``)."""
    return any(re.search(k, s) for k in keywords or ())


def convert_to_unicode(text, encoding="utf-8", errors="ignore"):
    """``bytes`` decoded to ``str``; anything else returned as is."""
    if isinstance(text, bytes):
        text = text.decode(encoding, errors=errors)
    return text


convert_to_str = convert_to_unicode  # the same on Python 3


def lowercase_and_normalize(text):
    """Lower case, NFD, combining marks (category Mn) removed."""
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def is_one_of(x, ys):
    """``x in ys`` by identity (``in`` compares tensors element-wise)."""
    return any(x is y for y in ys)


def softmax(x, axis=-1):
    """NumPy softmax."""
    x = x - x.max(axis=axis, keepdims=True)
    x = np.exp(x)
    return x / x.sum(axis=axis, keepdims=True)


def insert_arguments(**arguments):
    """Decorator for ``__init__``: adds keyword arguments with defaults, each popped from the
    call and set as an attribute of ``self`` before ``__init__`` runs."""
    def decorator(func):
        @functools.wraps(func)
        def new_func(self, *args, **kwargs):
            for key, value in arguments.items():
                setattr(self, key, kwargs.pop(key, value))
            return func(self, *args, **kwargs)

        return new_func

    return decorator


def delete_arguments(*arguments):
    """Decorator for ``__init__``: passing any of ``arguments`` is a ``TypeError``."""
    def decorator(func):
        @functools.wraps(func)
        def new_func(self, *args, **kwargs):
            for key in arguments:
                if key in kwargs:
                    raise TypeError(f"{type(self).__name__} got an unexpected keyword argument '{key}'")
            return func(self, *args, **kwargs)

        return new_func

    return decorator


def longest_common_substring(source, target):
    """Longest common contiguous slice: ``(length, (i0, i1, j0, j1))`` with
    ``source[i0:i1] == target[j0:j1]``; the first such span found (bert4keras' scan order)."""
    table, best, span = {}, 0, (0, 0, 0, 0)
    for i, si in enumerate(source, 1):
        for j, tj in enumerate(target, 1):
            if si == tj:
                table[i, j] = table.get((i - 1, j - 1), 0) + 1
                if table[i, j] > best:
                    best = table[i, j]
                    span = (i - best, i, j - best, j)
    return best, span


def longest_common_subsequence(source, target):
    """Longest common (non-contiguous) subsequence: ``(length, [(i, j), ...])``, the index
    pairs of one such subsequence (bert4keras' tie-breaking), in order."""
    c = defaultdict(int)
    for i, si in enumerate(source, 1):
        for j, tj in enumerate(target, 1):
            if si == tj:
                c[i, j] = c[i - 1, j - 1] + 1
            elif c[i, j - 1] > c[i - 1, j]:
                c[i, j] = c[i, j - 1]
            else:
                c[i, j] = c[i - 1, j]
    length, mapping = c[len(source), len(target)], []
    i, j = len(source) - 1, len(target) - 1
    while len(mapping) < length:
        if source[i] == target[j]:
            mapping.append((i, j))
            i, j = i - 1, j - 1
        elif c[i + 1, j] > c[i, j + 1]:
            j -= 1
        else:
            i -= 1
    return length, mapping[::-1]


def orthogonally_resize(a, new_shape, window=2):
    """Resize a weight array to ``new_shape`` keeping it roughly orthogonal (bert4keras): an
    axis that grows repeats blocks of ``window`` entries, every axis is cut to its new size,
    and the result is rescaled to ``a``'s Frobenius norm."""
    if a.ndim != len(new_shape):
        raise KerasformerError(f"orthogonally_resize: {a.ndim}-d array, {len(new_shape)}-d new shape")
    norm, w = np.linalg.norm(a), window
    slices = []
    for i, (d1, d2) in enumerate(zip(a.shape, new_shape)):
        if d1 != d2:
            k = d2 // d1 + int(d2 % d1 != 0)
            if k > 1:
                if d1 % w:
                    raise KerasformerError(f"orthogonally_resize: axis {i} ({d1}) is not a multiple of window={w}")
                a = a.reshape(a.shape[:i] + (d1 // w, w) + a.shape[i + 1:])
                a = np.repeat(a, k, axis=i)
                a = a.reshape(a.shape[:i] + (d1 * k,) + a.shape[i + 2:])
        slices.append(np.s_[:d2])
    a = a[tuple(slices)]
    return a / np.linalg.norm(a) * norm


class WebServing:
    """A tiny JSON web API around Python functions, on the standard library's ``http.server``
    (bert4keras used bottle)::

        web = WebServing(port=8864)
        web.route('/gen_synonyms', gen_synonyms, {'text': (None, True), 'n': (int, False)})
        web.start()   # http://127.0.0.1:8864/gen_synonyms?text=...

    ``arguments`` maps each parameter name to ``(converter or None, required)``; GET reads the
    query string, POST a form-encoded body. Every answer is
    ``{"code": 0, "desc": "succeeded", "data": func(**kwargs)}``; code 1 means a required
    argument is missing, code 2 that ``func`` raised (``desc``: the error, cut to 500
    characters). Requests are served one at a time (models need not be thread-safe); bodies
    over ``max_body_bytes`` are refused. ``server`` is accepted for compatibility and ignored.
    For testing only, as bert4keras says: no authentication, no TLS.
    """

    def __init__(self, host="0.0.0.0", port=8000, server=None, max_body_bytes=1 << 20):
        self.host = host
        self.port = port
        self.server = server
        self.max_body_bytes = max_body_bytes
        self.routes = {}

    def wraps(self, func, arguments, method="GET"):
        """``func`` as a handler: ``handler(params) -> JSON text``, ``params`` a dict of strings."""
        def handler(params):
            outputs = {"code": 0, "desc": "succeeded", "data": {}}
            kwargs = {}
            for key, (convert, required) in arguments.items():
                value = params.get(key)
                if value is None:
                    if required:
                        outputs.update(code=1, desc=f'lack of "{key}" argument')
                        return json.dumps(outputs, ensure_ascii=False)
                else:
                    kwargs[key] = convert(value) if convert is not None else value
            try:
                outputs["data"] = func(**kwargs)
            except Exception as e:  # noqa: BLE001 - reported to the client, as bert4keras
                outputs.update(code=2, desc=str(e)[:500])
            return json.dumps(outputs, ensure_ascii=False)

        return handler

    def route(self, path, func, arguments, method="GET"):
        """Serve ``func`` at ``path`` for ``method`` ('GET' or 'POST')."""
        method = method.upper()
        if method not in ("GET", "POST"):
            raise KerasformerError(f"WebServing.route: method must be GET or POST, got {method[:10]!r}")
        self.routes[method, path] = self.wraps(func, arguments, method)

    def make_server(self):
        """The ``http.server.HTTPServer`` (not started); ``server_address`` has the real port."""
        from http.server import BaseHTTPRequestHandler, HTTPServer
        from urllib.parse import parse_qs, urlsplit

        routes, limit = self.routes, self.max_body_bytes

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status, body):
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method):
                url = urlsplit(self.path)
                handler = routes.get((method, url.path))
                if handler is None:
                    return self._answer(404, json.dumps({"code": 404, "desc": "not found"}))
                if method == "GET":
                    query = url.query
                else:
                    size = int(self.headers.get("Content-Length") or 0)
                    if size > limit:
                        return self._answer(413, json.dumps({"code": 413, "desc": "request too large"}))
                    query = self.rfile.read(size).decode("utf-8", errors="replace")
                params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
                return self._answer(200, handler(params))

            def do_GET(self):  # noqa: N802 - http.server's name
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def log_message(self, format, *args):  # noqa: A002 - quiet
                pass

        return HTTPServer((self.host, self.port), Handler)

    def start(self):
        """Serve until interrupted."""
        server = self.make_server()
        try:
            server.serve_forever()
        finally:
            server.server_close()


uniout = types.ModuleType("uniout", "bert4keras' Python 2 printing fix: nothing to do on Python 3")

__all__ += ["strQ2B", "string_matching", "convert_to_unicode", "convert_to_str", "lowercase_and_normalize",
            "is_one_of", "softmax", "insert_arguments", "delete_arguments", "longest_common_substring",
            "longest_common_subsequence", "orthogonally_resize", "WebServing", "uniout", "AutoRegressiveDecoder"]


def __getattr__(name):
    # bert4keras keeps AutoRegressiveDecoder in snippets; it needs Keras, so load it lazily
    if name == "AutoRegressiveDecoder":
        from kerasformer.generation.autoregressive import AutoRegressiveDecoder

        return AutoRegressiveDecoder
    raise AttributeError(f"module 'kerasformer.snippets' has no attribute {name!r}")
