"""Mask-carrying merges: Keras 3's ``Add`` drops the padding mask as soon as one input has
none (the segment embedding, a conditional vector), where Keras 2, and so bert4keras,
kept the masks that exist. The families add residuals and embeddings with this ``Add``
so that the padding mask born at the token embedding reaches the model outputs."""
import keras
from keras import ops


def merge_masks(masks):
    """The logical AND of the masks that exist, or None when there are none."""
    masks = [m for m in (masks or []) if m is not None]
    if not masks:
        return None
    merged = ops.cast(masks[0], "bool")
    for m in masks[1:]:
        merged = ops.logical_and(merged, ops.cast(m, "bool"))
    return merged


@keras.saving.register_keras_serializable(package="kerasformer")
class Add(keras.layers.Add):
    """``keras.layers.Add`` whose output mask is the AND of the inputs' masks that exist."""

    def compute_mask(self, inputs, mask=None):
        return merge_masks(mask) if isinstance(mask, (list, tuple)) else mask
