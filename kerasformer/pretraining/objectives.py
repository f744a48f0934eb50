"""Training examples for the three objectives, built from packed rows in numpy.

Every random choice of an example is drawn from ``np.random.default_rng([seed, key])``
where ``key`` is the example's *global* index in the training stream (dynamic masking) or
its index in the dataset (``static=True``: the same masks every epoch). The masks thus do
not depend on the batch size per device, the device count or the host count: 1 device and
N devices see the same examples with the same masks.

Targets are token ids where a loss is taken and -1 elsewhere (see :func:`masked_loss`).

* ``mlm`` -- RoBERTa-style whole-word masking (HFL's RoBERTa-wwm): each word is chosen with
  probability ``mask_rate`` (15%), and each of its tokens becomes ``[MASK]`` (80%), a
  random token (10%) or stays (10%), as bert4keras' ``TrainingDatasetRoBERTa``; the loss is
  on the chosen tokens. A random token is never a special token (a random ``[PAD]`` would
  silently hide a position from attention).
* ``lm`` -- GPT-style: the target at position i is the token at i + 1.
* ``unilm`` -- the UniLM paper's mixture (Dong et al. 2019, sec. 2.3): per example, 1/3
  bidirectional, 1/3 left-to-right, 1/3 seq2seq, all trained with the same cloze loss on
  whole-word masks. The model is built with ``application='unilm'``, whose mask lets
  query i see key j iff ``cumsum(segment)[j] <= cumsum(segment)[i]``, so the segment ids
  select the mode: all 0 -> bidirectional; all 1 -> left-to-right (causal); 0 up to a
  random split then 1 -> seq2seq. The segment embedding thereby also tells the model which
  LM it is, as the paper's LM-specific segment embeddings do.
"""
import numpy as np

from kerasformer.errors import KerasformerError

OBJECTIVES = ("mlm", "lm", "unilm")
UNILM_MODES = ("bidirectional", "left-to-right", "seq2seq")


def check_objective(objective):
    if objective not in OBJECTIVES:
        raise KerasformerError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return objective


def example_rng(seed, key):
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(key)])


class Masker:
    """Whole-word masking of one row, bert4keras' semantics (see the module doc)."""

    def __init__(self, vocab_size, mask_id, special_ids, mask_rate=0.15):
        if mask_id is None:
            raise KerasformerError("the vocabulary has no [MASK] token")
        self.mask_rate = float(mask_rate)
        self.mask_id = int(mask_id)
        special = np.zeros(vocab_size, bool)
        special[[i for i in special_ids if i is not None]] = True
        self.special = special
        self.replacements = np.flatnonzero(~special)  # what a "random token" may be

    def __call__(self, ids, starts, rng):
        """``(input ids, targets)`` for one row (``ids`` int32, ``starts`` word-start flags)."""
        word = np.cumsum(starts) - 1  # word number of every token (-1 before the first)
        maskable = ~self.special[ids] & (word >= 0)
        chosen_words = rng.random(int(word.max()) + 1 if len(word) else 0) < self.mask_rate
        chosen = maskable & chosen_words[np.maximum(word, 0)]
        how = rng.random(len(ids))  # 80% [MASK], 10% random, 10% unchanged
        random_tokens = self.replacements[rng.integers(0, len(self.replacements), len(ids))]
        inputs = np.where(chosen & (how < 0.8), self.mask_id, ids)
        inputs = np.where(chosen & (how >= 0.8) & (how < 0.9), random_tokens, inputs)
        targets = np.where(chosen, ids, -1)
        return inputs.astype("int32"), targets.astype("int32")


class Objective:
    """Turns packed rows ``(token_ids, word_starts)`` plus their keys into a batch:
    ``x = [token_ids, segment_ids]`` and ``y`` (targets, -1 = no loss)."""

    def __init__(self, objective, vocab_size, mask_id=None, special_ids=(), pad_id=0, sep_id=None,
                 mask_rate=0.15, seed=0, static=False):
        self.objective = check_objective(objective)
        self.pad_id, self.sep_id, self.seed, self.static = pad_id, sep_id, int(seed), bool(static)
        self.masker = Masker(vocab_size, mask_id, special_ids, mask_rate) if objective != "lm" else None

    def __call__(self, ids, starts, stream_keys, data_keys):
        keys = data_keys if self.static else stream_keys
        ids = np.asarray(ids, "int32")
        inputs, targets = np.empty_like(ids), np.empty_like(ids)
        segments = np.zeros_like(ids)
        for row, key in enumerate(keys):
            rng = example_rng(self.seed, key)
            if self.objective == "lm":
                inputs[row] = ids[row]
                nxt = np.append(ids[row, 1:], self.pad_id)
                targets[row] = np.where(nxt != self.pad_id, nxt, -1)
                continue
            inputs[row], targets[row] = self.masker(ids[row], starts[row], rng)
            if self.objective == "unilm":
                segments[row] = unilm_segments(ids[row], self.pad_id, rng)
        return [inputs, segments], targets


def unilm_segments(ids, pad_id, rng):
    """Segment ids choosing one of :data:`UNILM_MODES` with equal probability."""
    mode = int(rng.integers(0, 3))
    length = int((ids != pad_id).sum())
    if mode == 0:
        return np.zeros_like(ids)
    if mode == 1:
        return np.ones_like(ids)
    # source: [CLS] and at least one token; target: at least the last real token
    split = int(rng.integers(2, max(length - 1, 2) + 1))
    return (np.arange(len(ids)) >= split).astype(ids.dtype)


def prediction_slots(seq_len, mask_rate=0.15):
    """How many masked positions per row the MLM head is run on (BERT's
    ``max_predictions_per_seq``): twice the expected count plus 8, rounded up to a multiple
    of 8, so that a row with more (long whole words) is rare; see :func:`gather_targets`."""
    return min(int(seq_len), -(-int(2 * seq_len * mask_rate + 8) // 8) * 8)


def gather_targets(targets, slots):
    """``(positions, targets)`` with ``slots`` columns: the positions whose target is >= 0,
    padded with position 0 and target -1 (no loss). The loss over them equals the loss over
    the full rows. A row with more targets than ``slots`` keeps its first ``slots`` (the
    rest are counted in the third value, and are then plain masked inputs with no loss, as
    in BERT's data with ``max_predictions_per_seq``)."""
    targets = np.asarray(targets)
    valid = targets >= 0
    rank = np.cumsum(valid, axis=1) - 1
    keep = valid & (rank < slots)
    positions = np.zeros((len(targets), slots), "int32")
    gathered = np.full((len(targets), slots), -1, targets.dtype)
    rows, cols = np.nonzero(keep)
    positions[rows, rank[rows, cols]] = cols
    gathered[rows, rank[rows, cols]] = targets[rows, cols]
    return positions, gathered, int(valid.sum() - keep.sum())


def masked_loss(y_true, y_pred):
    """Mean cross-entropy over the positions whose target is >= 0, from logits (computed in
    float32 under a mixed policy): bert4keras' ``mlm_loss`` / ``lm_loss``."""
    from keras import ops

    # as [positions, vocab] rows: torch's cross-entropy wants the classes on axis 1, and
    # Keras moves a [batch, length, vocab] tensor's last axis there with a full copy
    y_true = ops.reshape(y_true, (-1,))
    y_pred = ops.reshape(y_pred, (-1, ops.shape(y_pred)[-1]))
    valid = ops.cast(ops.greater_equal(y_true, 0), "float32")
    ce = ops.sparse_categorical_crossentropy(ops.maximum(y_true, 0), ops.cast(y_pred, "float32"),
                                             from_logits=True)
    return ops.sum(ce * valid) / ops.maximum(ops.sum(valid), 1.0)


def masked_accuracy(y_true, y_pred):
    from keras import ops

    valid = ops.cast(ops.greater_equal(y_true, 0), "float32")
    hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, -1), "int32"), ops.cast(y_true, "int32")), "float32")
    return ops.sum(hit * valid) / ops.maximum(ops.sum(valid), 1.0)
