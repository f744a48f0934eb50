"""The couplet robot as sequence labelling: decoding and serving.

A couplet's second line has as many characters as the first and answers it position by
position, so a model that reads the first line and puts a softmax over characters on
every position pairs it in one forward pass (``recipes/couplet.py`` trains one: character
embeddings, residual gated 1-D convolutions, a softmax per position). This module holds
what the recipe and ``kerasformer couplet`` share: the line's pattern, the per-position
decoding (greedy, or constrained), and the model folder the recipe saves.

A model folder holds ``couplet.keras`` (the whole Keras model, standard layers and
``keras.ops`` only, so ``keras.saving.load_model`` rebuilds it on any backend),
``vocab.txt`` (one token per line, id = line number) and ``couplet.json`` (settings).
"""
import json
import os
import unicodedata

import numpy as np

from kerasformer.errors import KerasformerError

MODEL_FILE = "couplet.keras"
VOCAB_FILE = "vocab.txt"
SETTINGS_FILE = "couplet.json"
UNK = "[UNK]"
MAX_CHARS = 256  # a couplet line is a few dozen characters; longer input is a mistake


def is_punctuation(char):
    return unicodedata.category(char).startswith("P")


def pattern(text):
    """The shape a second line must share with the first: punctuation as itself, every
    other character as the position where it first occurs (so 'ABAB' and 'CDCD' match,
    'ABAB' and 'ABBA' do not)."""
    first = {}
    return tuple(c if is_punctuation(c) else first.setdefault(c, i) for i, c in enumerate(text))


def check_line(text):
    """A first line as the decoder needs it: a non-empty string without whitespace."""
    if not isinstance(text, str):
        raise KerasformerError(f"a couplet line must be a string, got {type(text).__name__}")
    if not text or len(text) > MAX_CHARS or any(c.isspace() for c in text):
        raise KerasformerError(f"a couplet line must have 1 to {MAX_CHARS} characters and no spaces "
                               f"(got {len(text)} characters: {text[:40]!r}{'...' if len(text) > 40 else ''})")
    return text


def encode(text, token_dict):
    """One id per character (lower-cased as the vocabulary was; [UNK] when unknown): the
    output has exactly the input's length, whatever the vocabulary."""
    unk = token_dict[UNK]
    return [token_dict.get(c, token_dict.get(c.lower(), unk)) for c in text]


class Decoder:
    """Turns per-position probabilities into a second line of the same length.

    Only single characters can be output (never [PAD], [UNK], '##' pieces). With
    ``constrained``: punctuation is copied from the first line and appears nowhere
    else; no position repeats the first line's character; positions whose first-line
    characters are equal get one output character (chosen by the summed log-probability
    of the group) and different groups get different characters, so the second line's
    repeated-character pattern mirrors the first's (ABAB -> CDCD).
    """

    def __init__(self, token_dict):
        self.token_dict = token_dict
        size = max(token_dict.values()) + 1
        self.chars = [None] * size
        for token, i in token_dict.items():
            if len(token) == 1:
                self.chars[i] = token
        self.allowed = np.array([c is not None for c in self.chars])
        self.punctuation = np.array([c is not None and is_punctuation(c) for c in self.chars])

    def greedy(self, probs):
        scores = np.where(self.allowed, probs, -np.inf)
        return "".join(self.chars[i] for i in np.argmax(scores, axis=-1))

    def constrained(self, probs, text):
        logp = np.log(np.maximum(probs, 1e-30))
        logp[:, ~self.allowed | self.punctuation] = -np.inf
        groups = {}
        for i, c in enumerate(text):
            if not is_punctuation(c):
                groups.setdefault(c, []).append(i)
        # each group's candidates, scored: summed over its positions, its own character barred
        scored = []
        for c, positions in groups.items():
            score = logp[positions].sum(axis=0)
            for same in {self.token_dict.get(c), self.token_dict.get(c.lower())} - {None}:
                score[same] = -np.inf
            scored.append((positions, score))
        out = list(text)  # punctuation stays as it is
        used = np.zeros(len(self.chars), bool)
        # the most confident group chooses first; later groups may not take its character
        for positions, score in sorted(scored, key=lambda ps: -np.max(ps[1])):
            score = np.where(used, -np.inf, score)
            best = int(np.argmax(score))
            if not np.isfinite(score[best]):
                raise KerasformerError(f"the vocabulary ({len(self.chars)} tokens) has too few characters "
                                       "to pair this line under the constraints")
            used[best] = True
            for i in positions:
                out[i] = self.chars[best]
        return "".join(out)

    def __call__(self, probs, text, constrained=False):
        probs = np.asarray(probs, "float64")[:len(text)]
        return self.constrained(probs, text) if constrained else self.greedy(probs)


def pair(model, token_dict, lines, constrained=False, batch_size=64, decoder=None):
    """Second lines for ``lines`` (strings): batches of similar length, one forward pass
    each; every output has its input's length. Every batch has ``batch_size`` rows (the
    last one padded) and a length padded to a multiple of 8: a few shapes, so JAX compiles
    a few programs."""
    from kerasformer.backend import predict

    lines = [check_line(t) for t in lines]
    decoder = decoder or Decoder(token_dict)
    order = sorted(range(len(lines)), key=lambda i: len(lines[i]))
    outputs = [None] * len(lines)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids = np.zeros((batch_size, -(-len(lines[chunk[-1]]) // 8) * 8), "int32")
        for row, i in enumerate(chunk):
            ids[row, :len(lines[i])] = encode(lines[i], token_dict)
        probs = predict(model, ids)
        for row, i in enumerate(chunk):
            outputs[i] = decoder(probs[row], lines[i], constrained)
    return outputs


# ---------------------------------------------------------------------------- model folder

def save(folder, model, token_dict, settings):
    """Write a model folder (each file atomically) that ``load`` and ``kerasformer couplet``
    read."""
    from kerasformer import save_vocab, saving
    from kerasformer.checkpoints.torch_pickle import atomic_write

    os.makedirs(folder, exist_ok=True)
    saving.save_model(model, os.path.join(folder, MODEL_FILE))
    with atomic_write(os.path.join(folder, VOCAB_FILE)) as tmp:
        save_vocab(tmp, token_dict)
    with atomic_write(os.path.join(folder, SETTINGS_FILE)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(settings, f, ensure_ascii=False, indent=2)
    return folder


def load(folder):
    """``(model, token_dict, settings)`` of a folder written by ``save``."""
    from kerasformer import load_vocab, saving

    paths = [os.path.join(folder, name) for name in (MODEL_FILE, VOCAB_FILE, SETTINGS_FILE)]
    missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
    if missing:
        raise KerasformerError(f"{folder} is not a couplet model folder (missing {', '.join(missing)}); "
                               "train one with recipes/couplet.py --save-model DIR")
    model = saving.load_model(paths[0], compile=False)
    token_dict = load_vocab(paths[1])
    with open(paths[2], encoding="utf-8") as f:
        settings = json.load(f)
    if UNK not in token_dict:
        raise KerasformerError(f"{paths[1]} has no {UNK} token")
    return model, token_dict, settings
