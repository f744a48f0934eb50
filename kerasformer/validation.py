"""Checks of user-supplied values: model configs and ``generate`` arguments.

A wrong value must fail here, naming the field, where it came from and the value (bounded:
``errors.brief``), rather than build a broken model, return zeros, wrap a negative id to the
last embedding row, or fail deep inside a backend.
"""
import math
import numbers

import numpy as np

from kerasformer.errors import KerasformerError, brief


def _where(origin):
    return f" in {origin}" if origin else ""


def is_integer(value):
    """A real integer (Python or numpy), not a bool and not a float that happens to be whole."""
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(name, value, minimum=None, maximum=None, origin="", optional=False):
    if value is None and optional:
        return None
    if not is_integer(value) or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum):
        bounds = (f" >= {minimum}" if maximum is None else f" in {minimum}..{maximum}") \
            if minimum is not None else ""
        raise KerasformerError(f"{name} must be an integer{bounds}{_where(origin)}, "
                               f"got {brief(value)}")
    return int(value)


def check_real(name, value, low=None, high=None, low_open=False, high_open=False, origin="",
               optional=False):
    """A finite real number in the interval (``low_open``: ``low`` excluded, and so on)."""
    if value is None and optional:
        return None
    ok = isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(
        value, (bool, np.bool_)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        interval = ""
        if low is not None or high is not None:
            interval = (" in " + ("(" if low_open else "[") + f"{low if low is not None else '-inf'}, "
                        f"{high if high is not None else 'inf'}" + (")" if high_open or high is None else "]"))
        raise KerasformerError(f"{name} must be a finite number{interval}{_where(origin)}, "
                               f"got {brief(value)}")
    return float(value)


# ------------------------------------------------------------------ model configs

# Every setting a family reads, after load_config's renames: (minimum, optional).
_CONFIG_INTS = {
    "vocab_size": (1, False), "hidden_size": (1, False), "num_hidden_layers": (1, False),
    "num_attention_heads": (1, False), "intermediate_size": (1, False),
    "max_position": (1, True), "segment_vocab_size": (0, True), "embedding_size": (1, True),
    "attention_head_size": (1, True), "attention_key_size": (1, True),
    "sequence_length": (1, True), "pad_token_id": (0, True), "num_hidden_groups": (1, True),
    "inner_group_num": (1, True), "relative_attention_num_buckets": (1, True),
    "relative_attention_max_distance": (1, True), "num_decoder_layers": (1, True),
    "num_heads": (1, True), "num_layers": (1, True), "d_model": (1, True), "d_ff": (1, True),
    "d_kv": (1, True), "max_relative_position": (1, True),
}
_CONFIG_RATES = ("dropout_rate", "attention_dropout_rate")  # [0, 1)
_CONFIG_POSITIVE = ("layer_norm_eps", "layer_norm_epsilon")  # (0, inf)
_CONFIG_NON_NEGATIVE = ("initializer_range", "initializer_factor")


def check_config(config, origin=""):
    """Validate every setting ``config`` holds that a family reads (see the tables above).

    ``origin`` names where the values came from (the config file, or 'arguments') and goes
    into the message with the field and the value.
    """
    if not isinstance(config, dict):
        raise KerasformerError(f"a model config must be a JSON object{_where(origin)}, got "
                               f"{brief(config)}")
    for key, (minimum, optional) in _CONFIG_INTS.items():
        if key in config:
            check_int(key, config[key], minimum, origin=origin, optional=optional)
    for key in _CONFIG_RATES:
        if config.get(key) is not None:
            check_real(key, config[key], 0.0, 1.0, high_open=True, origin=origin)
    for key in _CONFIG_POSITIVE:
        if config.get(key) is not None:
            check_real(key, config[key], 0.0, low_open=True, origin=origin)
    for key in _CONFIG_NON_NEGATIVE:
        if config.get(key) is not None:
            check_real(key, config[key], 0.0, origin=origin)
    for key in ("keep_tokens", "compound_tokens"):
        ids = config.get(key)
        flat = ids
        if key == "compound_tokens" and isinstance(ids, (list, tuple)):
            # a list of id lists, or of (ids, weights) pairs as bert4keras allows
            flat = [t for c in ids for t in (c[0] if _is_pair(c) else c)] if all(
                isinstance(c, (list, tuple)) and c for c in ids) else None
        if ids is not None and not (isinstance(flat, (list, tuple, np.ndarray)) and all(
                is_integer(t) and t >= 0 for t in flat)):
            raise KerasformerError(f"{key} must be a list of token ids{_where(origin)}, got "
                                   f"{brief(ids)}")
    act = config.get("hidden_act")
    if act is not None:
        _check_activation(act, origin)


def _check_activation(act, origin):
    from kerasformer.layers.activations import get_activation

    names = act if isinstance(act, (list, tuple)) and act else [act]
    for name in names:
        try:
            if not (isinstance(name, str) or callable(name)):
                raise ValueError(name)
            get_activation(name)
        except ValueError:  # Keras' word for an unknown identifier
            raise KerasformerError(f"hidden_act must be an activation name{_where(origin)}, "
                                   f"got {brief(act)}") from None


def _is_pair(c):
    return len(c) == 2 and all(isinstance(x, (list, tuple)) for x in c)


# A config whose tables would hold more parameters than this is refused before Keras tries
# to allocate them (a typo'd or hostile vocab_size=10**12); raise it for a bigger model.
MAX_PARAMETERS = 2 ** 33


def check_model_size(config, origin=""):
    """Refuse a config whose embedding and block matrices exceed ``MAX_PARAMETERS``."""
    get = lambda key, default=0: config.get(key) or default  # noqa: E731
    hidden = get("hidden_size", 1)
    embedding = get("embedding_size", hidden)
    layers, inner = get("num_hidden_layers"), get("intermediate_size")
    total = ((get("vocab_size") + get("max_position") + get("segment_vocab_size")) * embedding
             + layers * (4 * hidden * hidden + 2 * hidden * inner))
    if total > MAX_PARAMETERS:
        raise KerasformerError(
            f"the config{_where(origin)} describes about {total:.3g} parameters, more than "
            f"kerasformer.validation.MAX_PARAMETERS = {MAX_PARAMETERS:.3g}; check vocab_size, "
            "hidden_size, intermediate_size, num_hidden_layers and max_position (or raise the "
            "limit for a model that big)")


# ------------------------------------------------------------------ generate()

# Models without a position table (T5's relative buckets, rotary encodings) accept any length,
# and their key/value caches grow with prompt + new tokens: past this many positions generate()
# refuses instead of asking the backend for terabytes. Raise it if you mean it:
#     kerasformer.validation.MAX_DECODE_LENGTH = 65536
MAX_DECODE_LENGTH = 16384


def token_id_lists(prompts, vocab_size, name="prompts"):
    """``prompts`` as a list of lists of int ids in ``0..vocab_size-1``, or a clear error."""
    if isinstance(prompts, np.ndarray):
        if prompts.ndim != 2:
            raise KerasformerError(f"{name} must be a list of token-id lists (a 2-d array), got "
                                   f"an array of shape {prompts.shape}")
        prompts = list(prompts)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise KerasformerError(f"{name} must be a non-empty list of token-id lists, got "
                               f"{brief(prompts)}")
    if all(is_integer(p) for p in prompts):
        raise KerasformerError(f"{name} must be a list of token-id lists, got a flat list of ids; "
                               f"for one prompt pass [ids]")
    out = []
    for row, prompt in enumerate(prompts):
        if isinstance(prompt, np.ndarray):
            if prompt.ndim != 1 or not (prompt.dtype.kind in "iu" or prompt.size == 0):
                raise KerasformerError(f"{name}[{row}] must be a 1-d integer array, got dtype "
                                       f"{prompt.dtype} and shape {prompt.shape}")
            prompt = prompt.tolist()
        if isinstance(prompt, (str, bytes)) or not isinstance(prompt, (list, tuple)) or not prompt:
            raise KerasformerError(f"{name}[{row}] must be a non-empty list of token ids, got "
                                   f"{brief(prompt)}")
        for col, token in enumerate(prompt):
            if not is_integer(token) or not 0 <= token < vocab_size:
                raise KerasformerError(
                    f"{name}[{row}][{col}] must be an integer token id in 0..{vocab_size - 1} "
                    f"(the model's vocabulary), got {brief(token)}")
        out.append([int(t) for t in prompt])
    return out


def check_generate_args(strategy, max_new_tokens, num_beams, top_k, top_p, temperature,
                        repetition_penalty, end_id, min_new_tokens, seed, vocab_size):
    """Validate generate()'s sampling arguments; returns (top_k clamped to the vocabulary,)."""
    if strategy not in ("greedy", "beam", "sample"):
        raise KerasformerError(f"unknown strategy {brief(strategy)}; use 'greedy', 'beam' or 'sample'")
    check_int("max_new_tokens", max_new_tokens, 1)
    check_int("num_beams", num_beams, 1)
    check_int("min_new_tokens", min_new_tokens, 0)
    top_k = check_int("top_k", top_k, 1, optional=True)
    check_real("top_p", top_p, 0.0, 1.0, low_open=True, optional=True)
    check_real("temperature", temperature, 0.0, low_open=True)
    check_real("repetition_penalty", repetition_penalty, 0.0, low_open=True)
    check_int("end_id", end_id, 0, vocab_size - 1, optional=True)
    check_int("seed", seed, 0, 2 ** 32 - 1, optional=True)
    # like Hugging Face: a top_k past the vocabulary keeps every token
    return min(top_k, vocab_size) if top_k is not None else None


def check_decode_length(prompt_length, max_new_tokens, limit=None):
    """Refuse a decode longer than ``MAX_DECODE_LENGTH`` positions (models with no table)."""
    limit = MAX_DECODE_LENGTH if limit is None else limit
    if prompt_length + max_new_tokens > limit:
        raise KerasformerError(
            f"prompt of {prompt_length} tokens + max_new_tokens={max_new_tokens} exceeds "
            f"{limit} positions; the key/value caches grow with every position. Generate fewer "
            "tokens, or raise kerasformer.validation.MAX_DECODE_LENGTH if you mean it")
