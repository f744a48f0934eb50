"""Per-step allowed-token constraints for decoding.

A constraint says, at every step and for every row, which tokens may come next. It is
written with ``keras.ops`` on tensor state so that it runs inside the compiled decoding
loop (one ``jax.jit`` program on JAX, a traced graph on torch) and is reordered with the
beams exactly like the key/value caches:

* ``init(batch)`` -> ``(rows, shared)``: two dicts of NumPy arrays. ``rows`` is per-row
  state (leading axis ``batch``, one row per prompt; beams repeat and reorder it),
  ``shared`` is read-only data every row uses (not reordered).
* ``allowed(rows, shared, vocab)`` -> bool ``[rows, vocab]``: the tokens that may come
  next, the end token aside.
* ``can_end(rows, shared)`` -> bool ``[rows]``: whether the end token may come next.
* ``update(rows, shared, token)`` -> ``rows`` after each row appended ``token``.

The data (passages, candidate lists) only enters through ``init``; the methods depend
on the constraint's *static* configuration alone (``key()``), so a compiled program is
reused for new data of the same shapes: constraints compare and hash by ``key()``.

Decoding with a constraint needs an end token (``end_id``): it is how a row stops once
its output is complete (e.g. at the end of a passage).
"""
import numpy as np
from keras import ops

from kerasformer.errors import KerasformerError

BUCKET = 16  # data lengths are rounded up to this: fewer distinct shapes, fewer compilations


def _bucket(n):
    return max(BUCKET, -(-n // BUCKET) * BUCKET)


def _id_lists(sequences, what):
    out = []
    for seq in sequences:
        try:
            seq = [int(t) for t in seq]
        except (TypeError, ValueError):
            raise KerasformerError(f"{what} must be lists of token ids") from None
        if any(t < 0 for t in seq):
            raise KerasformerError(f"{what} hold a negative token id")
        out.append(seq)
    return out


def _token_mask(index_rows, tokens, values, rows, vocab):
    """bool ``[rows, vocab]``: True at ``(index_rows[i], tokens[i])`` where ``values[i]``.
    A scatter, so the cost is linear in the data, not ``data x vocab``. Entries that are
    False write into a spare column instead: every write of a cell then writes the same
    value, so duplicates need no reduction (``ops.scatter`` adds them in a Python loop
    on torch, which cannot be traced)."""
    tokens = ops.where(values, ops.cast(tokens, "int32"), vocab)
    indices = ops.stack([ops.reshape(index_rows, (-1,)), ops.reshape(tokens, (-1,))], axis=1)
    ones = ops.ones((ops.shape(indices)[0],), "float32")
    marks = ops.scatter_update(ops.zeros((rows, vocab + 1), "float32"), indices, ones)
    return marks[:, :vocab] > 0


class Constraint:
    """Base class; see the module docstring for the protocol."""

    def key(self):
        """The static configuration the methods depend on (hashable)."""
        return ()

    def __eq__(self, other):
        return type(self) is type(other) and self.key() == other.key()

    def __hash__(self):
        return hash((type(self).__name__, self.key()))

    def check_vocab(self, vocab):
        """Raise if the data holds ids outside ``[0, vocab)``."""

    def init(self, batch):
        raise NotImplementedError

    def allowed(self, rows, shared, vocab):
        raise NotImplementedError

    def can_end(self, rows, shared):
        raise NotImplementedError

    def update(self, rows, shared, token):
        raise NotImplementedError


def allowed_mask(constraint, rows, shared, vocab, end_id):
    """bool ``[rows, vocab]``: the constraint's tokens plus ``end_id`` where it may end."""
    mask = constraint.allowed(rows, shared, vocab)
    is_end = (ops.arange(vocab) == end_id)[None, :]
    return ops.logical_or(mask, ops.logical_and(is_end, constraint.can_end(rows, shared)[:, None]))


def _per_row(data, batch, what):
    """One entry per row: a list of ``batch`` entries, or one entry shared by all rows."""
    if len(data) == 1 and batch > 1:
        return data * batch
    if len(data) != batch:
        raise KerasformerError(f"{what}: {len(data)} given for {batch} prompts (give one per "
                               "prompt, or one for all)")
    return data


class SpanConstraint(Constraint):
    """The output must be a contiguous span (substring) of a given token sequence: one
    sequence per prompt (e.g. its passage), or one for all.

    The state is the set of sequence positions that may come next: at first every
    position, after a token the positions right after each place where the output so
    far ends. The end token is allowed once the output is non-empty (from the start
    too with ``allow_empty=True``, so that a model can answer "nothing here").
    ``length`` pads the sequences to that many tokens (default: the longest, rounded up
    to 16): one fixed length serves every batch with one compiled program.
    """

    def __init__(self, sequences, allow_empty=False, length=None):
        self.sequences = _id_lists(sequences, "span sequences")
        if not self.sequences or any(len(s) == 0 for s in self.sequences):
            raise KerasformerError("SpanConstraint needs non-empty token sequences")
        self.allow_empty = bool(allow_empty)
        longest = max(map(len, self.sequences))
        if length is not None and length < longest:
            raise KerasformerError(f"SpanConstraint length={length} is shorter than a sequence ({longest})")
        self.length = length

    def key(self):
        return (self.allow_empty,)

    def check_vocab(self, vocab):
        if max(max(s) for s in self.sequences) >= vocab:
            raise KerasformerError(f"span sequences hold a token id outside the vocabulary of {vocab}")

    def init(self, batch):
        sequences = _per_row(self.sequences, batch, "span sequences")
        length = self.length or _bucket(max(map(len, sequences)))
        tokens = np.zeros((batch, length), "int32")
        valid = np.zeros((batch, length), bool)
        for row, seq in enumerate(sequences):
            tokens[row, : len(seq)] = seq
            valid[row, : len(seq)] = True
        # tokens and valid travel with the rows: each row has its own sequence
        rows = dict(tokens=tokens, valid=valid, next=valid.copy(),
                    started=np.full((batch,), self.allow_empty))
        return rows, {}

    def allowed(self, rows, shared, vocab):
        tokens = rows["tokens"]
        n, length = ops.shape(tokens)
        row_ids = ops.broadcast_to(ops.arange(n)[:, None], (n, length))
        return _token_mask(row_ids, tokens, rows["next"], n, vocab)

    def can_end(self, rows, shared):
        return rows["started"]

    def update(self, rows, shared, token):
        matched = ops.logical_and(rows["next"], rows["tokens"] == ops.cast(token, "int32")[:, None])
        shifted = ops.concatenate([ops.zeros_like(matched[:, :1]), matched[:, :-1]], axis=1)
        return dict(rows, next=ops.logical_and(shifted, rows["valid"]),
                    started=ops.ones_like(rows["started"]))


class TrieConstraint(Constraint):
    """The output must be one of a list of token sequences (the end token follows a
    complete one): a trie of allowed continuations. ``sequences`` is one list for all
    prompts, or with ``per_row=True`` one list of sequences per prompt.

    The trie is held as edges ``(parent, token, child)``; a row's state is its node
    (-1 once it left the trie, which the mask never allows).
    """

    def __init__(self, sequences, per_row=False):
        self.per_row = bool(per_row)
        groups = list(sequences) if per_row else [sequences]
        self.groups = [_id_lists(g, "trie sequences") for g in groups]
        if not self.groups or any(not g or any(len(s) == 0 for s in g) for g in self.groups):
            raise KerasformerError("TrieConstraint needs non-empty lists of non-empty token sequences")
        # one trie per group; node g is the root of group g
        children = [{} for _ in self.groups]
        terminal = [False] * len(self.groups)
        for root, group in enumerate(self.groups):
            for seq in group:
                node = root
                for t in seq:
                    if t not in children[node]:
                        children[node][t] = len(children)
                        children.append({})
                        terminal.append(False)
                    node = children[node][t]
                terminal[node] = True
        edges = [(p, t, c) for p, kids in enumerate(children) for t, c in kids.items()]
        size = _bucket(len(edges))
        self.edges = np.full((3, size), -2, "int32")  # padding: parent -2 matches no node
        self.edges[:, : len(edges)] = np.array(edges, "int32").T
        self.edges[1, len(edges):] = 0
        self.terminal = np.zeros((_bucket(len(terminal)),), bool)
        self.terminal[: len(terminal)] = terminal

    def key(self):
        return (self.per_row,)

    def check_vocab(self, vocab):
        if max(max(s) for g in self.groups for s in g) >= vocab:
            raise KerasformerError(f"trie sequences hold a token id outside the vocabulary of {vocab}")

    def init(self, batch):
        roots = np.arange(len(self.groups), dtype="int32")
        roots = _per_row(list(roots), batch, "trie sequence lists") if self.per_row else [0] * batch
        return (dict(node=np.asarray(roots, "int32")),
                dict(parent=self.edges[0], token=self.edges[1], child=self.edges[2],
                     terminal=self.terminal))

    def _edges_of(self, rows, shared):
        return rows["node"][:, None] == shared["parent"][None, :]  # [rows, edges]

    def allowed(self, rows, shared, vocab):
        match = self._edges_of(rows, shared)
        n, edges = ops.shape(match)
        row_ids = ops.broadcast_to(ops.arange(n)[:, None], (n, edges))
        tokens = ops.broadcast_to(shared["token"][None, :], (n, edges))
        return _token_mask(row_ids, tokens, match, n, vocab)

    def can_end(self, rows, shared):
        node = rows["node"]
        return ops.logical_and(node >= 0, ops.take(shared["terminal"], ops.maximum(node, 0)))

    def update(self, rows, shared, token):
        match = ops.logical_and(self._edges_of(rows, shared),
                                shared["token"][None, :] == ops.cast(token, "int32")[:, None])
        child = ops.sum(ops.where(match, shared["child"][None, :] + 1, 0), axis=1) - 1
        return dict(rows, node=ops.cast(child, "int32"))


def _tensors(arrays):
    return {k: ops.convert_to_tensor(v) for k, v in arrays.items()}


class Guide:
    """A constraint driven from NumPy one step at a time, for Python decoding loops such
    as ``AutoRegressiveDecoder``: a :class:`Constraint` (its state kept as NumPy and
    reordered with :meth:`take`, like the loop's own arrays) or a plain prefix function
    ``fn(prefix ids) -> allowed ids`` (the end token is allowed only where ``fn`` says so).
    """

    def __init__(self, constraint, end_id, batch=1):
        self.fn = self.constraint = None
        if isinstance(constraint, Constraint):
            if end_id is None:
                raise KerasformerError("decoding with a constraint needs an end token (end_id)")
            self.constraint, self.end_id = constraint, end_id
            self.rows, shared = constraint.init(batch)
            self.shared = _tensors(shared)
        elif callable(constraint):
            self.fn = constraint
        else:
            raise KerasformerError("constraint must be a Constraint (SpanConstraint, TrieConstraint...) "
                                   "or a function of the prefix ids returning the allowed ids")

    def mask(self, output_ids, vocab, every_row=True):
        """bool ``[rows, vocab]`` for the current outputs (one row each). An error if a
        row (``every_row``, as sampling needs) or all rows (a beam can drop a row) have
        no allowed token."""
        if self.fn is not None:
            mask = np.zeros((len(output_ids), vocab), bool)
            for row, ids in enumerate(output_ids):
                allowed = np.asarray(list(self.fn([int(t) for t in ids])), dtype=np.int64).reshape(-1)
                if allowed.size and (allowed.min() < 0 or allowed.max() >= vocab):
                    raise KerasformerError(f"the prefix function allowed a token id outside [0, {vocab})")
                mask[row, allowed] = True
        else:
            mask = np.asarray(ops.convert_to_numpy(allowed_mask(
                self.constraint, _tensors(self.rows), self.shared, vocab, self.end_id)), bool)
        if not (mask.any(axis=1).all() if every_row else mask.any()):
            raise KerasformerError("the constraint allows no token at all for an output: it cannot go on")
        return mask

    def take(self, index):
        """Reorder (and repeat or drop) the rows as the loop reorders its outputs."""
        if self.constraint is not None:
            self.rows = {k: np.asarray(v)[np.asarray(index)] for k, v in self.rows.items()}

    def update(self, token):
        if self.constraint is not None:
            token = ops.convert_to_tensor(np.asarray(token, "int32").reshape(-1))
            rows = self.constraint.update(_tensors(self.rows), self.shared, token)
            self.rows = {k: np.asarray(ops.convert_to_numpy(v)) for k, v in rows.items()}
