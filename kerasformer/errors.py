"""Exceptions raised by kerasformer. Each names the thing the user controls."""
import itertools


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


def brief(value, limit=80):
    """A bounded description of an untrusted value for an error message.

    ``repr`` of attacker-controlled data is unbounded in time and size (a small pickle or
    JSON file can hold shared nested lists whose repr is exponential, or a huge int whose
    repr raises): this walks at most a few items per level and two levels deep.
    """
    text = _brief(value, 2)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _brief(value, depth):
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, (str, bytes, bytearray)):
        return repr(value[:40]) + (f"...<{len(value)} long>" if len(value) > 40 else "")
    if isinstance(value, (list, tuple, dict)):
        if depth == 0:
            return f"<{type(value).__name__} of {len(value)}>"
        if isinstance(value, dict):
            parts = [f"{_brief(k, depth - 1)}: {_brief(v, depth - 1)}"
                     for k, v in itertools.islice(value.items(), 4)]
            left, right = "{}"
        else:
            parts = [_brief(v, depth - 1) for v in list(value[:4])]
            left, right = "()" if isinstance(value, tuple) else "[]"
        return left + ", ".join(parts) + (", ..." if len(value) > 4 else "") + right
    return f"<{type(value).__name__}>"
