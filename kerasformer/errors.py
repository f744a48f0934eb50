"""Exceptions raised by kerasformer. Each names the thing the user controls."""


class KerasformerError(ValueError):
    """Base class for every error kerasformer raises on bad input."""


class CheckpointError(KerasformerError):
    """A checkpoint file is missing, truncated, corrupt or of an unknown format."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint asks to run code; we refuse to load it."""


class WeightMismatchError(KerasformerError):
    """Model variables and checkpoint tensors do not line up (missing / shape mismatch)."""


class FamilyMismatchError(WeightMismatchError):
    """The checkpoint belongs to another model family; the message says which to pass."""
