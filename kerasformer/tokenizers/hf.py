"""Tokenizers from a model folder: ``load_tokenizer(folder)`` picks the right one, and
:class:`HFTokenizer` runs a Hugging Face ``tokenizer.json`` (byte-level BPE of GPT-2 and
English RoBERTa, Unigram, WordPiece, ...) through the ``tokenizers`` library, so ids are
those of Hugging Face's fast tokenizers by construction.

Which file wins in a folder, and why:

1. ``vocab.txt`` (BERT family): kerasformer's own :class:`Tokenizer` (bert4keras' API and
   ``rematch``; ids identical to HF's ``BertTokenizer``), lower-casing from the folder
   (see :func:`folder_lower_case`).
2. ``tokenizer.json``: :class:`HFTokenizer`.
3. ``spiece.model`` / ``sentencepiece.bpe.model`` / ``*.model``: :class:`SpTokenizer`.
"""
import glob
import json
import os

from kerasformer.errors import KerasformerError
from kerasformer.tokenizers.wordpiece import SpecialIds, Tokenizer


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _token_text(token):
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None


def folder_lower_case(folder, token_dict=None):
    """Whether the WordPiece vocabulary of ``folder`` is used lower-cased, read as
    Hugging Face and Google record it: ``do_lower_case`` in ``tokenizer_config.json``,
    else the ``BertNormalizer`` of ``tokenizer.json``, else Google's folder naming
    (``uncased_L-12_H-768_A-12``, ``cased_...``, ``chinese_...``: uncased), else the
    vocabulary itself (a cased vocabulary holds capital letters; an uncased one none)."""
    config = _read_json(os.path.join(folder, "tokenizer_config.json")) or {}
    if isinstance(config.get("do_lower_case"), bool):
        return config["do_lower_case"]
    normalizer = (_read_json(os.path.join(folder, "tokenizer.json")) or {}).get("normalizer") or {}
    if normalizer.get("type") == "BertNormalizer" and isinstance(normalizer.get("lowercase"), bool):
        return normalizer["lowercase"]
    name = os.path.basename(os.path.normpath(os.path.abspath(folder))).lower()
    if "uncased" in name or name.startswith("chinese"):
        return True
    if "cased" in name:
        return False
    if token_dict is not None:
        return not any(any(c.isupper() for c in token) for token in token_dict
                       if not (token.startswith("[") and token.endswith("]")))
    return False


def _is_hf_json(path):
    data = _read_json(path)
    return isinstance(data, dict) and "model" in data


class HFTokenizer(SpecialIds):
    """A Hugging Face ``tokenizer.json`` with the tokenizer API kerasformer uses.

    ``encode(text, second_text=None, maxlen=None)`` returns ``(token_ids, segment_ids)``
    with the special tokens the file's post-processor adds (RoBERTa's ``<s> ... </s>``,
    none for GPT-2), exactly as ``AutoTokenizer(...)(text)`` does; ``tokenize`` the
    matching token strings, ``decode`` text (special tokens dropped), ``offsets`` the
    ``(start, end)`` character span of each token and ``rematch`` bert4keras' per-token
    character indices. ``start_id`` / ``end_id`` are the beginning- and
    end-of-text ids (``tokenizer_config.json``'s ``bos_token`` / ``eos_token``, else the
    post-processor's), used by ``generate`` to stop.
    """

    def __init__(self, path):
        try:
            import tokenizers
        except ImportError:
            raise KerasformerError("a tokenizer.json needs the tokenizers package: "
                                   "pip install 'kerasformer[tokenizers]'") from None
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(file)
        except Exception as e:  # the library raises plain Exception on bad files
            raise KerasformerError(f"cannot read the tokenizer file {file}: {str(e)[:200]}") from None
        self.path = file
        config = _read_json(os.path.join(folder, "tokenizer_config.json")) or {}
        processor = (_read_json(file) or {}).get("post_processor") or {}
        pairs = {"bos": processor.get("cls"), "eos": processor.get("sep")}
        for name in ("bos", "eos", "pad", "unk", "mask"):
            token = _token_text(config.get(f"{name}_token"))
            if token is None and isinstance(pairs.get(name), list):
                token = pairs[name][0]
            if token is None and name == "eos":  # GPT-2's file alone: its one special token
                specials = [t.content for t in self._tokenizer.get_added_tokens_decoder().values()
                            if t.special]
                token = specials[0] if len(specials) == 1 else None
            token_id = None if token is None else self._tokenizer.token_to_id(token)
            setattr(self, f"_token_{name}", token)
            setattr(self, f"_token_{name}_id", token_id)
        self._token_start, self._token_start_id = self._token_bos, self._token_bos_id
        self._token_end, self._token_end_id = self._token_eos, self._token_eos_id

    @property
    def vocab_size(self):
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def _encoding(self, first_text, second_text=None, maxlen=None):
        if maxlen is None:
            return self._tokenizer.encode(first_text, second_text)
        self._tokenizer.enable_truncation(maxlen)
        try:
            return self._tokenizer.encode(first_text, second_text)
        finally:
            self._tokenizer.no_truncation()

    def encode(self, first_text, second_text=None, maxlen=None):
        encoding = self._encoding(first_text, second_text, maxlen)
        return list(encoding.ids), list(encoding.type_ids)

    def tokenize(self, text, maxlen=None):
        return list(self._encoding(text, maxlen=maxlen).tokens)

    def offsets(self, text, maxlen=None):
        """``(start, end)`` character offsets of each token of ``encode(text)``."""
        return [tuple(span) for span in self._encoding(text, maxlen=maxlen).offsets]

    def rematch(self, text, tokens=None):
        """bert4keras' ``rematch``: per token of ``encode(text)``, the indices of the
        characters of ``text`` it covers (special tokens get ``[]``)."""
        encoding = self._encoding(text)
        return [[] if special else list(range(start, end))
                for (start, end), special in zip(encoding.offsets, encoding.special_tokens_mask)]

    def decode(self, ids):
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_to_id(self, token):
        return self._tokenizer.token_to_id(token)

    def tokens_to_ids(self, tokens):
        return [self.token_to_id(t) for t in tokens]

    def id_to_token(self, i):
        return self._tokenizer.id_to_token(int(i))

    def ids_to_tokens(self, ids):
        return [self.id_to_token(i) for i in ids]


_SP_NAMES = ("spiece.model", "sentencepiece.bpe.model", "sentencepiece.model", "tokenizer.model")


def load_tokenizer(path, **kwargs):
    """The tokenizer of a model folder (or of one tokenizer file), see the module doc:
    ``vocab.txt`` -> :class:`Tokenizer` (``do_lower_case`` from the folder unless given),
    ``tokenizer.json`` -> :class:`HFTokenizer`, a SentencePiece model ->
    :class:`SpTokenizer`. ``kwargs`` go to the tokenizer's constructor."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "vocab.txt")):
            return Tokenizer(path, **kwargs)
        if os.path.exists(os.path.join(path, "tokenizer.json")):
            return HFTokenizer(path, **kwargs)
        models = [os.path.join(path, n) for n in _SP_NAMES if os.path.exists(os.path.join(path, n))]
        models = models or sorted(glob.glob(os.path.join(path, "*.model")))
        if models:
            from kerasformer.tokenizers.sentencepiece import SpTokenizer

            return SpTokenizer(models[0], **kwargs)
        raise KerasformerError(
            f"no tokenizer in folder {path}: expected vocab.txt, tokenizer.json or a SentencePiece "
            "*.model file")
    if not os.path.exists(path):
        raise KerasformerError(f"tokenizer file not found: {path}")
    if path.endswith(".json"):
        return HFTokenizer(path, **kwargs)
    if path.endswith(".model"):
        from kerasformer.tokenizers.sentencepiece import SpTokenizer

        return SpTokenizer(path, **kwargs)
    return Tokenizer(path, **kwargs)
