"""Attention masks for the three applications: encoder, lm, unilm.

A mask is boolean, shaped ``[batch, 1, q_len, k_len]`` so it broadcasts over heads;
True means "query i may attend to key j". It is built once per model call from the
token and segment ids and handed to every attention layer.
"""
import keras
from keras import ops

from kerasformer.errors import KerasformerError

APPLICATIONS = ("encoder", "lm", "unilm")


def padding_mask(token_ids, pad_id=0):
    """``[batch, 1, 1, k_len]``: keys that are real tokens (not padding)."""
    return ops.expand_dims(ops.expand_dims(ops.not_equal(token_ids, pad_id), 1), 1)


def causal_mask(q_len, k_len=None):
    """``[1, 1, q_len, k_len]``: position i sees positions <= i (queries are the last
    ``q_len`` of ``k_len`` positions, so the same code serves cached decoding)."""
    k_len = q_len if k_len is None else k_len
    q_pos = ops.arange(k_len - q_len, k_len)[:, None]
    k_pos = ops.arange(k_len)[None, :]
    return ops.expand_dims(ops.expand_dims(q_pos >= k_pos, 0), 0)


def unilm_mask(segment_ids):
    """``[batch, 1, L, L]``: UniLM's seq2seq mask (bert4keras' ``compute_attention_bias``).

    With ``idx = cumsum(segment_ids)``, query i may see key j iff ``idx[j] <= idx[i]``:
    every position sees all of segment 0; segment 0 never sees segment 1; within
    segment 1 a token sees itself and earlier segment-1 tokens only.
    """
    idx = ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
    mask = ops.expand_dims(idx, 1) <= ops.expand_dims(idx, 2)
    return ops.expand_dims(mask, 1)


def check_application(application):
    if application not in APPLICATIONS:
        raise KerasformerError(
            f"unknown application {application!r}; choose one of {', '.join(APPLICATIONS)}")
    return application


@keras.saving.register_keras_serializable(package="kerasformer")
class AttentionMask(keras.layers.Layer):
    """Builds the boolean mask for ``application`` from ``[token_ids, segment_ids]``."""

    def __init__(self, application="encoder", pad_id=0, **kwargs):
        super().__init__(**kwargs)
        self.application = check_application(application)
        self.pad_id = pad_id

    def call(self, inputs):
        token_ids, segment_ids = inputs
        mask = padding_mask(token_ids, self.pad_id)
        if self.application == "lm":
            length = ops.shape(token_ids)[1]
            mask = ops.logical_and(mask, causal_mask(length))
        elif self.application == "unilm":
            mask = ops.logical_and(mask, unilm_mask(segment_ids))
        return mask

    def compute_output_spec(self, inputs):
        token_ids = inputs[0]
        batch, length = token_ids.shape[0], token_ids.shape[1]
        q_len = 1 if self.application == "encoder" else length
        return keras.KerasTensor((batch, 1, q_len, length), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "application": self.application, "pad_id": self.pad_id}
