"""Losses and metrics of bert4keras' multi-label and GlobalPointer recipes (keras.ops only).

* :func:`multilabel_categorical_crossentropy` -- Su Jianlin's softmax-style multi-label loss
  (https://kexue.fm/archives/7359): for scores ``s`` over classes, positives ``P`` and negatives
  ``N``, ``log(1 + sum_{j in N} e^{s_j}) + log(1 + sum_{i in P} e^{-s_i})``; predict the classes
  with ``s > 0``. Scores must be raw logits (no sigmoid/softmax).
* :func:`sparse_multilabel_categorical_crossentropy` -- the same loss with the positives given
  as class indices (the form that scales to the ``length**2`` classes of span extraction).
* :func:`global_pointer_crossentropy` / :func:`sparse_global_pointer_crossentropy` -- those
  losses over the ``[batch, heads, length, length]`` output of ``GlobalPointer``, averaged as in
  bert4keras' NER and GPLinker examples; :func:`global_pointer_f1_score` the matching metric.

All compute in float32. ``1e12`` is bert4keras' "infinity".
"""
import keras
import numpy as np
from keras import ops

INF = 1e12


@keras.saving.register_keras_serializable(package="kerasformer")
def multilabel_categorical_crossentropy(y_true, y_pred):
    """Multi-label loss per example, reducing the last axis (bert4keras 0.11.5's form):
    ``y_true`` is shaped like ``y_pred`` and holds each class's target probability in [0, 1]
    (0/1 labels, or soft ones: https://kexue.fm/archives/9064); a score of ``-inf`` in
    ``y_pred`` marks a class that takes no part."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    y_mask = ops.not_equal(y_pred, -np.inf)
    # log(1 - p) and log(p) weight each class in the two terms (-inf drops it: 0/1 labels)
    y_neg = ops.where(y_mask, y_pred, -np.inf) + ops.log(1.0 - y_true)
    y_pos = ops.where(y_mask, -y_pred, -np.inf) + ops.log(y_true)
    zeros = ops.zeros_like(y_pred[..., :1])  # the "1 +" inside each log
    neg_loss = ops.logsumexp(ops.concatenate([y_neg, zeros], axis=-1), axis=-1)
    pos_loss = ops.logsumexp(ops.concatenate([y_pos, zeros], axis=-1), axis=-1)
    return neg_loss + pos_loss


@keras.saving.register_keras_serializable(package="kerasformer")
def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=False):
    """:func:`multilabel_categorical_crossentropy` with ``y_true`` the indices of the positive
    classes, ``[..., num_positive]`` against ``y_pred`` ``[..., num_classes]``.

    Rows have a fixed number of positives; pad them with 0 and set ``mask_zero=True`` to make
    class 0 a padding class that never counts (GlobalPointer's span (0, 0) is [CLS]-[CLS]).
    The negative term is computed as ``log(sum_all e^s - sum_pos e^s)`` (with the "1 +"), so the
    dense ``[..., num_classes]`` label tensor is never built.
    """
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "int32")
    zeros = ops.zeros_like(y_pred[..., :1])
    y_pred = ops.concatenate([y_pred, zeros], axis=-1)  # index num_classes holds the "1 +" term
    if mask_zero:
        infs = zeros + INF
        y_pred = ops.concatenate([infs, y_pred[..., 1:]], axis=-1)  # padding positive: e^{-inf} = 0
    y_pos_2 = ops.take_along_axis(y_pred, y_true, axis=-1)
    y_pos_1 = ops.concatenate([y_pos_2, zeros], axis=-1)
    if mask_zero:
        y_pred = ops.concatenate([-infs, y_pred[..., 1:]], axis=-1)  # and in the negative term
        y_pos_2 = ops.take_along_axis(y_pred, y_true, axis=-1)
    pos_loss = ops.logsumexp(-y_pos_1, axis=-1)
    all_loss = ops.logsumexp(y_pred, axis=-1)
    aux_loss = ops.logsumexp(y_pos_2, axis=-1) - all_loss
    aux_loss = ops.clip(1.0 - ops.exp(aux_loss), keras.config.epsilon(), 1.0)
    neg_loss = all_loss + ops.log(aux_loss)
    return pos_loss + neg_loss


@keras.saving.register_keras_serializable(package="kerasformer")
def global_pointer_crossentropy(y_true, y_pred):
    """GlobalPointer loss (bert4keras' NER example): the multi-label loss over the
    ``length * length`` spans of each (example, head), averaged over examples and heads.
    ``y_true`` is 0/1, ``[batch, heads, length, length]``."""
    shape = ops.shape(y_pred)
    rows = shape[0] * shape[1]
    y_true = ops.reshape(y_true, (rows, -1))
    y_pred = ops.reshape(y_pred, (rows, -1))
    return ops.mean(multilabel_categorical_crossentropy(y_true, y_pred))


@keras.saving.register_keras_serializable(package="kerasformer")
def sparse_global_pointer_crossentropy(y_true, y_pred):
    """Sparse GlobalPointer loss (bert4keras' GPLinker example): ``y_true`` holds the positive
    spans as ``(start, end)`` pairs, ``[batch, heads, num_spans, 2]``, padded with (0, 0);
    summed over heads, averaged over the batch."""
    shape = ops.shape(y_pred)
    y_true = ops.cast(y_true, "int32")
    y_true = y_true[..., 0] * shape[2] + y_true[..., 1]  # flat span index
    y_pred = ops.reshape(y_pred, (shape[0], shape[1], -1))
    loss = sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=True)
    return ops.mean(ops.sum(loss, axis=1))


@keras.saving.register_keras_serializable(package="kerasformer")
def global_pointer_f1_score(y_true, y_pred):
    """Span F1 over the batch with the decision rule score > 0 (bert4keras' NER example)."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(ops.greater(ops.cast(y_pred, "float32"), 0), "float32")
    return 2 * ops.sum(y_true * y_pred) / ops.maximum(ops.sum(y_true + y_pred), keras.config.epsilon())
