"""BERT WordPiece tokenizer with bert4keras' API, in fast pure Python.

`Tokenizer` keeps bert4keras' names and meanings (`tokenize`, `encode`,
`decode`, `rematch`, `token_to_id`, `_token_start_id`, `stem`, the static
`_is_*` helpers, ...) so bert4keras scripts port with an import change, and it
produces token ids identical to Hugging Face's `BertTokenizer` /
`BertTokenizerFast` for the same vocab and `do_lower_case`.

Text rules (BERT's "basic tokenizer", then greedy WordPiece):

1. control, format, private-use and surrogate characters (Unicode Cc, Cf, Co,
   Cs, except \\t \\n \\r), NUL and U+FFFD are dropped; unassigned code points
   (Cn) are kept, so their word becomes [UNK], as in `BertTokenizerFast` (HF's
   slow tokenizer drops them); every whitespace character becomes a space;
2. every CJK ideograph (BERT's CJK ranges) becomes a word of its own;
3. with `do_lower_case`: lower-case, NFD-decompose and drop non-spacing marks
   (accents), like BERT uncased;
4. every punctuation character (Unicode P* plus all non-alphanumeric ASCII)
   becomes a word of its own; whitespace separates words;
5. each word is split greedily, longest match first, into vocab pieces with
   '##' marking a continuation; a word longer than `word_maxlen` (100) or with
   no full split maps to [UNK] as a whole.

How it is fast: steps 1-4 are a property of each character alone, so they are
computed once per distinct character and cached in a `str.translate` table
(a dict whose `__missing__` fills itself); tokenising a text is then one C-level
`translate` + `split`, plus a cached dict lookup per word (`encode` caches
word -> ids directly). `rematch` reuses a second table (the normalised form of
each character); when every character normalises to exactly one character --
the usual case for Chinese and ASCII -- it needs no per-character map, and when
the tokens are our own it slices the positions of the non-space characters
instead of searching for every token.

Known, deliberate differences (all also differences between HF's own slow and
fast tokenizers, where we follow the fast one / original BERT):

* Greek capital sigma lower-cases to 'σ' even at the end of a word
  (per-character lower-casing, as the Rust tokenizer does; HF's slow tokenizer
  gives 'ς').
* In cased mode the text is not NFC-composed first (HF's slow tokenizer does,
  the fast one does not).
* The CJK range U+2B820-U+2B91F counts as CJK (original BERT and HF slow; the
  Rust tokenizer skips it).
* Unicode version: character categories come from Python's `unicodedata`;
  characters newer than the Rust tokenizer's tables may be classed differently.

And with HF in general: literal special tokens written in the text ("[SEP]")
are split like any other text, as in bert4keras, where HF matches them as
special tokens; `encode(a, '')` gives [CLS] a [SEP] [SEP] (bert4keras), where
HF treats an empty second text as none; an unknown word appears in
`tokenize`'s output as the word itself (bert4keras), where HF writes '[UNK]' --
the ids are the same. Offsets (`rematch`) agree with HF's `offset_mapping`
(first and last character of each token) wherever the ids agree.
"""

import os
import re
import unicodedata
from itertools import accumulate, chain, compress

from kerasformer.errors import KerasformerError
from kerasformer.snippets import is_string, truncate_sequences

__all__ = ["load_vocab", "save_vocab", "TokenizerBase", "Tokenizer"]

# BERT's definition of a CJK ideograph (same ranges as bert4keras / google-research/bert).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
# One compiled character class instead of eight chained comparisons per call.
_CJK_FULLMATCH = re.compile(
    "[%s]" % "".join("%s-%s" % (chr(a), chr(b)) for a, b in _CJK_RANGES)
).fullmatch
# Unicode categories deleted before tokenizing (see Tokenizer._is_control)
_DELETED_CATEGORIES = frozenset(("Cc", "Cf", "Co", "Cs"))

# BERT treats every non-alphanumeric printable ASCII character as punctuation
# ('$', '^', '`', '+', ... are not Unicode P* but are split anyway).
_ASCII_PUNCTUATION = frozenset(
    chr(c) for lo, hi in ((33, 47), (58, 64), (91, 96), (123, 126)) for c in range(lo, hi + 1)
)

# Characters that stay glued to the following token when decoding (bert4keras' list).
_CJK_PUNCTUATION = (
    "\uff02\uff03\uff04\uff05\uff06\uff07\uff08\uff09\uff0a\uff0b\uff0c\uff0d\uff0f\uff1a"
    "\uff1b\uff1c\uff1d\uff1e\uff20\uff3b\uff3c\uff3d\uff3e\uff3f\uff40\uff5b\uff5c\uff5d"
    "\uff5e\uff5f\uff60\uff62\uff63\uff64\u3000\u3001\u3003\u3008\u3009\u300a\u300b\u300c"
    "\u300d\u300e\u300f\u3010\u3011\u3014\u3015\u3016\u3017\u3018\u3019\u301a\u301b\u301c"
    "\u301d\u301e\u301f\u3030\u303e\u303f\u2013\u2014\u2018\u2019\u201b\u201c\u201d\u201e"
    "\u201f\u2026\u2027\ufe4f\ufe51\ufe54\u00b7\uff01\uff1f\uff61\u3002"
)
_RE_SPACES = re.compile(" +")
_RE_CONTRACTION = re.compile("' (re|m|s|t|ve|d|ll) ")
_RE_GLUE_PUNCT = re.compile(
    "(%s) " % "|".join(re.escape(p) for p in _CJK_PUNCTUATION + "+-/={(<[")
)
_RE_DECIMAL = re.compile(r"(\d\.) (\d)")


def load_vocab(dict_path, encoding="utf-8", simplified=False, startswith=None):
    """Read a BERT vocab.txt (one token per line, id = line number).

    Args:
        dict_path: path of the vocab file, or of a model folder holding vocab.txt.
        encoding: file encoding.
        simplified: if True, also drop the tokens a Chinese model never needs
            (bert4keras' rule: a token longer than one character whose stem
            contains any CJK or punctuation character, e.g. '##的' or '——'),
            and return `(new_token_dict, keep_tokens)`.
        startswith: tokens placed first in the simplified vocab, in this order
            (e.g. ['[PAD]', '[UNK]', '[CLS]', '[SEP]']).

    Returns:
        `token_dict` (token -> id), or with `simplified=True` the pair
        `(new_token_dict, keep_tokens)` where `keep_tokens[new_id] = old_id`
        (pass it to the model builder to slice the embedding matrix).

    A line is read like bert4keras: its first whitespace-separated field (so
    'token<TAB>count' files work), or the line itself if it is all whitespace.
    Unlike bert4keras, ids are line numbers even if a token repeats, as in HF.
    """
    if os.path.isdir(dict_path):
        if not os.path.exists(os.path.join(dict_path, "vocab.txt")):
            raise KerasformerError(f"no vocab.txt in folder {dict_path}; for a tokenizer.json or a "
                                   "SentencePiece model use kerasformer.load_tokenizer(folder)")
        dict_path = os.path.join(dict_path, "vocab.txt")
    if not os.path.exists(dict_path):
        raise KerasformerError(f"vocabulary file not found: {dict_path}")
    with open(dict_path, "rb") as reader:
        head = reader.read(1024).lstrip()
    if head.startswith(b"{"):  # JSON is no vocab.txt: read as one, it gives a one-token vocabulary
        raise KerasformerError(
            f"{dict_path} is a JSON file, not a BERT vocab.txt (one token per line); a Hugging Face "
            "tokenizer.json loads with kerasformer.load_tokenizer(path)")
    token_dict = {}
    with open(dict_path, encoding=encoding) as reader:
        for index, line in enumerate(reader):
            fields = line.split()
            token = fields[0] if fields else line.rstrip("\r\n")
            token_dict[token] = index

    if not simplified:
        return token_dict

    new_token_dict, keep_tokens = {}, []
    for t in startswith or []:
        if t not in token_dict:
            raise KerasformerError("startswith token %r is not in the vocab %s" % (t, dict_path))
        if t not in new_token_dict:
            new_token_dict[t] = len(new_token_dict)
            keep_tokens.append(token_dict[t])

    for t, _ in sorted(token_dict.items(), key=lambda s: s[1]):
        if t in new_token_dict:
            continue
        if len(t) > 1 and any(
            Tokenizer._is_cjk_character(c) or Tokenizer._is_punctuation(c)
            for c in Tokenizer.stem(t)
        ):
            continue
        new_token_dict[t] = len(new_token_dict)
        keep_tokens.append(token_dict[t])

    return new_token_dict, keep_tokens


def save_vocab(dict_path, token_dict, encoding="utf-8"):
    """Write `token_dict` (e.g. a simplified one) as a vocab.txt, ordered by id."""
    with open(dict_path, "w", encoding=encoding) as writer:
        for k, _ in sorted(token_dict.items(), key=lambda s: s[1]):
            writer.write(k + "\n")


class SpecialIds:
    """Public names for the special token ids every kerasformer tokenizer holds under
    bert4keras' names (``_token_start_id``, ``_token_end_id``, ...: kept, ported scripts read
    them); None where the vocabulary has no such token."""

    start_id = property(lambda self: getattr(self, "_token_start_id", None),
                        doc="The id put before every text (BERT's [CLS]), or None.")
    end_id = property(lambda self: getattr(self, "_token_end_id", None),
                      doc="The id put after every text (BERT's [SEP]; generation stops at it), or None.")
    pad_id = property(lambda self: getattr(self, "_token_pad_id", None), doc="The padding id, or None.")
    unk_id = property(lambda self: getattr(self, "_token_unk_id", None), doc="The unknown-token id, or None.")
    mask_id = property(lambda self: getattr(self, "_token_mask_id", None), doc="The [MASK] id, or None.")


class TokenizerBase(SpecialIds):
    """Shared logic of the tokenizers (bert4keras' `TokenizerBase`).

    Subclasses implement `_tokenize(text)`, `token_to_id`, `id_to_token` and
    `decode`; this class adds the start/end tokens, `maxlen` truncation,
    sentence-pair patterns and token translation.

    Args:
        token_start: token put before every text ('[CLS]'), or None.
        token_end: token put after every text ('[SEP]'), or None.
        pre_tokenize: optional function text -> list of words run before the
            subword step (e.g. `lambda s: jieba.cut(s, HMM=False)`); a word
            found in the vocab is kept whole, others are tokenized as usual.
        token_translate: a dict applied after tokenization. String keys map
            tokens to tokens (bert4keras' meaning, e.g. {'[unused1]': ...});
            integer keys map token ids to ids (applied by `token_to_id`).
            The inverse maps are applied by `id_to_token` / `decode`.
    """

    def __init__(self, token_start="[CLS]", token_end="[SEP]", pre_tokenize=None, token_translate=None):
        self._token_pad = "[PAD]"
        self._token_unk = "[UNK]"
        self._token_mask = "[MASK]"
        self._token_start = token_start
        self._token_end = token_end
        self._pre_tokenize = pre_tokenize
        token_translate = dict(token_translate or {})
        self._token_translate = {k: v for k, v in token_translate.items() if is_string(k)}
        self._token_translate_inv = {v: k for k, v in self._token_translate.items()}
        self._id_translate = {
            int(k): int(v) for k, v in token_translate.items() if not is_string(k)
        }
        self._id_translate_inv = {v: k for k, v in self._id_translate.items()}

    # -- tokens -----------------------------------------------------------------

    def tokenize(self, text, maxlen=None):
        """Split `text` into tokens, with the start/end tokens added.

        With `maxlen`, tokens are removed from the end (just before the end
        token) until at most `maxlen` remain.
        """
        tokens = self._tokenize(text)
        if self._token_translate:
            translate = self._token_translate
            tokens = [translate.get(token) or token for token in tokens]
        if self._token_start is not None:
            tokens.insert(0, self._token_start)
        if self._token_end is not None:
            tokens.append(self._token_end)

        if maxlen is not None:
            index = int(self._token_end is not None) + 1
            truncate_sequences(maxlen, -index, tokens)

        return tokens

    def token_to_id(self, token):
        """Id of one token (the [UNK] id for unknown tokens)."""
        raise NotImplementedError

    def tokens_to_ids(self, tokens):
        """Ids of a list of tokens."""
        return [self.token_to_id(token) for token in tokens]

    def id_to_token(self, i):
        """Token of one id."""
        raise NotImplementedError

    def ids_to_tokens(self, ids):
        """Tokens of a list of ids."""
        return [self.id_to_token(i) for i in ids]

    # -- encode -----------------------------------------------------------------

    def _truncate_index(self, truncate_from):
        """Position that truncation pops from: keep [SEP] ('right') or [CLS] ('left')."""
        if truncate_from == "right":
            return -int(self._token_end is not None) - 1
        if truncate_from == "left":
            return int(self._token_start is not None)
        if isinstance(truncate_from, int):
            return truncate_from
        raise ValueError("truncate_from must be 'right', 'left' or an int, got %r" % (truncate_from,))

    def truncate(self, maxlen, first_tokens, second_tokens=None, pattern="S*E*E", truncate_from="right"):
        """Cut a token (or id) pair in place to fit `maxlen` once assembled with `pattern`.

        The longer sequence loses a token first (bert4keras' rule). With
        'S*E*E' the second sequence's start token is dropped when assembling,
        so it is not counted against `maxlen` (bert4keras added 1 to `maxlen`
        even with `token_start=None`, where nothing is dropped).
        """
        index = self._truncate_index(truncate_from)
        if second_tokens is not None and pattern == "S*E*E":
            maxlen += int(self._token_start is not None)
        truncate_sequences(maxlen, index, first_tokens, second_tokens)

    def encode(self, first_text, second_text=None, maxlen=None, pattern="S*E*E", truncate_from="right"):
        """Token ids and segment ids of a text or a text pair.

        Args:
            first_text, second_text: strings, or already tokenized lists (as
                returned by `tokenize`, i.e. with start/end tokens).
            maxlen: maximum total length; tokens are removed from the longer
                text first, from its end ('right', keeping [SEP]) or its start
                ('left', keeping [CLS]) or at an explicit index.
            pattern: 'S*E*E' gives [CLS] a [SEP] b [SEP] (BERT);
                'S*ES*E' gives [CLS] a [SEP] [CLS] b [SEP].

        Returns:
            `(token_ids, segment_ids)`, segment 0 for the first text and 1 for
            the second.
        """
        if pattern not in ("S*E*E", "S*ES*E"):
            raise ValueError("pattern must be 'S*E*E' or 'S*ES*E', got %r" % (pattern,))
        # Work on ids: truncation only looks at lengths, so cutting ids gives
        # exactly what bert4keras gets by cutting tokens and converting after.
        first_ids = self._to_ids(first_text)
        second_ids = None if second_text is None else self._to_ids(second_text)

        if maxlen is not None:
            self.truncate(maxlen, first_ids, second_ids, pattern, truncate_from)

        segment_ids = [0] * len(first_ids)
        if second_ids is not None:
            if pattern == "S*E*E":
                second_ids = second_ids[int(bool(self._token_start)):]
            first_ids.extend(second_ids)
            segment_ids.extend([1] * len(second_ids))

        return first_ids, segment_ids

    def _to_ids(self, text):
        """A new list with the ids of a text (start/end included) or of a token list."""
        if is_string(text):
            return self._encode_text(text)
        return self.tokens_to_ids(text)  # a new list: the caller's tokens are left alone

    def _encode_text(self, text):
        """Ids of `tokenize(text)`; subclasses may take a shortcut with the same result."""
        return self.tokens_to_ids(self.tokenize(text))

    def decode(self, ids):
        """Readable text of a list of ids."""
        raise NotImplementedError

    def _tokenize(self, text):
        """Tokens of `text` without start/end tokens."""
        raise NotImplementedError


class _CharTable(dict):
    """A `str.translate` table (code point -> replacement) that fills itself.

    The replacement of a character never changes, so it is computed by `fn`
    the first time the character is seen and then served from the dict by C
    code inside `str.translate`.
    """

    __slots__ = ("_fn",)

    def __init__(self, fn):
        super().__init__()
        self._fn = fn

    def __missing__(self, cp):
        value = self[cp] = self._fn(chr(cp))
        return value


class _NormalTable(_CharTable):
    """`_CharTable` of normal forms that also remembers the irregular characters.

    A character is irregular when its normal form is not exactly one character
    (it is dropped, or expands, e.g. a Hangul syllable into jamo). `rematch`
    needs a per-character map only for texts that contain one; a compiled
    character class answers that far faster than another pass over the text.
    """

    __slots__ = ("irregular", "_search")

    def __init__(self, fn):
        super().__init__(fn)
        self.irregular = set()
        self._search = None

    def __missing__(self, cp):
        value = super().__missing__(cp)
        if len(value) != 1:
            self.irregular.add(chr(cp))
            self._search = None  # rebuilt on next use
        return value

    def has_irregular(self, text):
        """True if `text` (already translated once, so all its characters are known) has one."""
        if not self.irregular:
            return False
        if self._search is None:
            self._search = re.compile(
                "[%s]" % "".join(re.escape(c) for c in sorted(self.irregular))
            ).search
        return self._search(text) is not None


class _PieceCache(dict):
    """word -> tuple of WordPiece tokens, filled on demand and bounded in size."""

    __slots__ = ("_fn", "_limit")

    def __init__(self, fn, limit=1 << 18):
        super().__init__()
        self._fn = fn
        self._limit = limit

    def __missing__(self, word):
        pieces = tuple(self._fn(word))
        if len(self) >= self._limit:  # unbounded vocabularies of words (URLs, ids) must not leak
            self.clear()
        self[word] = pieces
        return pieces


class Tokenizer(TokenizerBase):
    """BERT's WordPiece tokenizer (bert4keras' `Tokenizer`).

    Args:
        token_dict: path of a vocab.txt, a model folder holding one, or a dict
            token -> id.
        do_lower_case: lower-case and strip accents (uncased BERT models).
            Chinese BERT vocabularies are uncased: use True with them. None
            (the default) means False, except for a folder, whose own records
            decide (``tokenizer_config.json``, Google's ``uncased_...`` naming,
            see ``kerasformer.tokenizers.hf.folder_lower_case``).
        word_maxlen: words longer than this many characters become [UNK]
            (100, as BERT/HF; bert4keras used 200).
        **kwargs: `token_start`, `token_end`, `pre_tokenize`, `token_translate`
            (see `TokenizerBase`).

    As in bert4keras, a word that cannot be split into vocab pieces is kept
    whole in `tokenize`'s output (it maps to [UNK] in `encode`), so `rematch`
    can still locate it in the text.

    The per-character and per-word caches assume `token_dict` is not changed
    after the tokenizer is built.
    """

    def __init__(self, token_dict, do_lower_case=None, word_maxlen=100, **kwargs):
        super().__init__(**kwargs)
        if isinstance(token_dict, os.PathLike):
            token_dict = os.fspath(token_dict)
        if is_string(token_dict):
            folder = token_dict if os.path.isdir(token_dict) else None
            token_dict = load_vocab(token_dict)
            if folder and do_lower_case is None:
                from kerasformer.tokenizers.hf import folder_lower_case

                do_lower_case = folder_lower_case(folder, token_dict)

        self._do_lower_case = bool(do_lower_case)
        self._token_dict = token_dict
        self._token_dict_inv = {v: k for k, v in token_dict.items()}
        self._vocab_size = max(token_dict.values()) + 1 if token_dict else 0
        self._word_maxlen = word_maxlen

        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, "_token_%s" % name)
            setattr(self, "_token_%s_id" % name, token_dict.get(token) if token is not None else None)

        self._build_caches()

    @classmethod
    def from_pretrained(cls, folder, **kwargs):
        """The tokenizer of a model folder's ``vocab.txt``, lower-cased as the folder
        says unless ``do_lower_case`` is given (Hugging Face's ``from_pretrained``)."""
        if not os.path.isdir(folder):
            raise KerasformerError(f"Tokenizer.from_pretrained expects a model folder, got {folder!r}")
        return cls(folder, **kwargs)

    def _build_caches(self):
        # No candidate piece can be longer than the longest vocab token: bounds the
        # inner WordPiece loop to O(len(word) * max_piece_len) instead of O(len(word)^2).
        self._max_piece_len = max((len(self.stem(t)) for t in self._token_dict), default=0)
        self._spaced_table = _CharTable(self._spaced_char)
        self._plain_table = _NormalTable(self._normalize_char)
        self._piece_cache = _PieceCache(self._word_piece_tokenize)
        # word -> ids, used by encode when no pre_tokenize / translation is involved
        self._ids_cache = _PieceCache(self._word_ids)
        self._start_ids, self._end_ids = [], []
        self._fast_encode = (
            self._pre_tokenize is None
            and not self._token_translate
            and not self._id_translate
            and self._token_unk_id is not None
        )
        for token, ids in ((self._token_start, self._start_ids), (self._token_end, self._end_ids)):
            if token is not None:
                if token in self._token_dict:
                    ids.append(self._token_dict[token])
                else:
                    self._fast_encode = False

    # Caches hold bound methods; rebuild them instead of pickling them.
    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_spaced_table", "_plain_table", "_piece_cache", "_ids_cache"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._build_caches()

    @property
    def vocab_size(self):
        """Number of ids (largest id + 1)."""
        return self._vocab_size

    @property
    def do_lower_case(self):
        """Whether text is lower-cased (and accents stripped) before tokenizing."""
        return self._do_lower_case

    @property
    def token_dict(self):
        """The vocabulary: token -> id."""
        return self._token_dict

    # -- per-character rules (each computed once per distinct character) -------

    def _normalize_char(self, ch):
        """What one original character becomes: '' (dropped), ' ' or its normal form."""
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or self._is_control(ch):
            return ""
        if self._is_space(ch) or ch.isspace():
            # ch.isspace() adds U+2028/U+2029, which both HF tokenizers also split on
            return " "
        if self._do_lower_case:
            ch = unicodedata.normalize("NFD", ch.lower())
            ch = "".join(c for c in ch if unicodedata.category(c) != "Mn")
        return ch

    def _spaced_char(self, ch):
        """Normal form of one character with spaces around every piece that is a word by itself."""
        normal = self._normalize_char(ch)
        if not normal.strip():
            return normal
        # CJK is decided on the original character (before NFD), as BERT does
        if self._is_cjk_character(ch):
            return " %s " % normal
        return "".join(" %s " % c if self._is_punctuation(c) else c for c in normal)

    # -- tokenization -------------------------------------------------------------

    def _tokenize(self, text, pre_tokenize=True):
        """Tokens of `text` (no [CLS]/[SEP]); unknown words are kept whole."""
        if pre_tokenize and self._pre_tokenize is not None:
            text = text.translate(self._plain_table)
            tokens = []
            for word in self._pre_tokenize(text):
                if word in self._token_dict:
                    tokens.append(word)
                else:
                    tokens.extend(self._tokenize(word, False))
            return tokens

        words = text.translate(self._spaced_table).split()
        return list(chain.from_iterable(map(self._piece_cache.__getitem__, words)))

    def _word_piece_tokenize(self, word):
        """Greedy longest-match-first split of one word into vocab pieces.

        Returns `[word]` when the word is too long or cannot be fully split
        (bert4keras' convention; the id is then [UNK], as in BERT).
        """
        n = len(word)
        if n > self._word_maxlen:
            return [word]
        vocab = self._token_dict
        if word in vocab:
            return [word]

        max_len = self._max_piece_len
        tokens, start = [], 0
        while start < n:
            end = min(n, start + max_len)
            while end > start:
                sub = word[start:end]
                if start > 0:
                    sub = "##" + sub
                if sub in vocab:
                    break
                end -= 1
            if end == start:
                return [word]
            tokens.append(sub)
            start = end
        return tokens

    def _word_ids(self, word):
        get, unk = self._token_dict.get, self._token_unk_id
        return [get(token, unk) for token in self._piece_cache[word]]

    def _encode_text(self, text):
        """`tokens_to_ids(tokenize(text))` without building the token list."""
        if not self._fast_encode:
            return super()._encode_text(text)
        words = text.translate(self._spaced_table).split()
        ids = list(self._start_ids)
        ids.extend(chain.from_iterable(map(self._ids_cache.__getitem__, words)))
        ids.extend(self._end_ids)
        return ids

    # -- ids ------------------------------------------------------------------

    def token_to_id(self, token):
        """Id of `token`; unknown tokens get the [UNK] id."""
        i = self._token_dict.get(token, self._token_unk_id)
        if i is None:
            raise KerasformerError("token %r is not in the vocab, which has no [UNK] token" % (token,))
        if self._id_translate:
            i = self._id_translate.get(i, i)
        return i

    def tokens_to_ids(self, tokens):
        """Ids of `tokens` (fast path when no [UNK] problem or id translation applies)."""
        unk = self._token_unk_id
        if unk is None or self._id_translate:
            return [self.token_to_id(token) for token in tokens]
        get = self._token_dict.get
        return [get(token, unk) for token in tokens]

    def id_to_token(self, i):
        """Token of id `i` (KeyError for ids outside the vocab)."""
        if self._id_translate_inv:
            i = self._id_translate_inv.get(i, i)
        return self._token_dict_inv[i]

    def ids_to_tokens(self, ids):
        if self._id_translate_inv:
            return [self.id_to_token(i) for i in ids]
        inv = self._token_dict_inv
        return [inv[i] for i in ids]

    # -- decode ---------------------------------------------------------------

    def decode(self, ids, tokens=None):
        """Readable text from ids (or from `tokens` directly), bert4keras' rules.

        Special tokens ('[...]') are removed, '##' pieces are glued to the
        previous token, CJK characters are joined without spaces, other words
        are separated by spaces, and a space after punctuation / before
        contractions / inside decimals is tidied up.
        """
        tokens = tokens or self.ids_to_tokens(ids)
        if self._token_translate_inv:
            inverse = self._token_translate_inv
            tokens = [inverse.get(token) or token for token in tokens]
        tokens = [token for token in tokens if not self._is_special(token)]

        parts = []
        last = ""  # last character written, to glue words that follow a CJK character
        for token in tokens:
            if not token:
                continue
            if token[:2] == "##":
                parts.append(token[2:])
            elif len(token) == 1 and self._is_cjk_character(token):
                parts.append(token)
            elif len(token) == 1 and self._is_punctuation(token):
                parts.append(token + " ")
            elif last and self._is_cjk_character(last):
                parts.append(token)
            else:
                parts.append(" " + token)
            if parts[-1]:
                last = parts[-1][-1]

        text = _RE_SPACES.sub(" ", "".join(parts))
        text = _RE_CONTRACTION.sub("'\\1 ", text)
        text = _RE_GLUE_PUNCT.sub("\\1", text)
        text = _RE_DECIMAL.sub("\\1\\2", text)
        return text.strip()

    # -- offsets ----------------------------------------------------------------

    def rematch(self, text, tokens):
        """Map each token back to the characters of the original `text`.

        Returns one list per token with the indices (into `text`) of the
        characters that produced it: `text[mapping[i][0]:mapping[i][-1] + 1]`
        is the span of token i. Special tokens ('[CLS]', '[SEP]', ...) get [].
        Lower-casing / accent stripping are undone exactly, even where they
        change the length of the text ('İ', Hangul syllables, combining
        accents): a character that normalises to several characters maps each
        of them to its own index, and dropped characters (accents, control
        characters) belong to no token. A token that cannot be found (e.g. one
        produced by `token_translate`) gets [].

        Typical use (NER / span extraction)::

            tokens = tokenizer.tokenize(text, maxlen=512)
            mapping = tokenizer.rematch(text, tokens)
            start_mapping = {j[0]: i for i, j in enumerate(mapping) if j}
        """
        normalized, char_mapping = self._normalize_with_mapping(text)
        mapping = self._rematch_aligned(normalized, char_mapping, tokens)
        if mapping is None:
            mapping = self._rematch_search(normalized, char_mapping, tokens)
        return mapping

    def _normalize_with_mapping(self, text):
        """`(normalized_text, char_mapping)`: char_mapping[j] is the index in
        `text` of the character that gave normalized_text[j], or None when that
        is simply j (no character of `text` is dropped or expanded)."""
        plain = self._plain_table
        normalized = text.translate(plain)
        if not plain.has_irregular(text):
            return normalized, None
        char_mapping = []
        for i, ch in enumerate(text):
            char_mapping.extend([i] * len(plain[ord(ch)]))
        return normalized, char_mapping

    @staticmethod
    def _rematch_aligned(normalized, char_mapping, tokens):
        """Fast path of `rematch`, or None when it does not apply.

        It applies when the tokens (between leading and trailing special
        tokens) tile the non-space characters of the normalised text from its
        start, without crossing a space: always true for the output of our own
        `tokenize` (also when cut by `maxlen`). Then token k simply owns the
        next len(stem) non-space characters, so the whole mapping is built with
        C-level slicing instead of a search per token. The result is identical
        to `_rematch_search`'s.
        """
        lo, hi = 0, len(tokens)
        while lo < hi and tokens[lo][:1] == "[" and tokens[lo][-1:] == "]":
            lo += 1
        while hi > lo and tokens[hi - 1][:1] == "[" and tokens[hi - 1][-1:] == "]":
            hi -= 1
        stems = tokens[lo:hi]
        joined = "".join(stems)
        if "##" in joined:
            stems = [t[2:] if t[:2] == "##" else t for t in stems]
            joined = "".join(stems)
        if "[" in joined and any(t[:1] == "[" and t[-1:] == "]" for t in stems):
            return None  # a special token in the middle: it must map to []
        compact = normalized.replace(" ", "")
        if not compact.startswith(joined):
            return None
        lengths = list(map(len, stems))
        ends = list(accumulate(lengths))
        # a token must not straddle a space: every word end inside the covered
        # prefix has to be a token end
        crossing = set(accumulate(map(len, normalized.split()))).difference(ends)
        if crossing and min(crossing) < len(joined):
            return None

        non_space = map(" ".__ne__, normalized)
        if char_mapping is not None:
            positions = list(compress(char_mapping, non_space))
        elif len(compact) == len(normalized):
            positions = list(range(len(joined)))
        else:
            positions = list(compress(range(len(normalized)), non_space))
        if not lengths or (min(lengths) == 1 and len(joined) == len(lengths)):
            # every token is one character (typical for Chinese): no slicing needed
            middle = list(map(list, zip(positions[: len(ends)])))
        else:
            starts = [0]
            starts += ends[:-1]
            middle = [positions[a:b] for a, b in zip(starts, ends)]
        return [[] for _ in range(lo)] + middle + [[] for _ in range(len(tokens) - hi)]

    @staticmethod
    def _rematch_search(normalized, char_mapping, tokens):
        """General `rematch`: find each token after the previous one (bert4keras' way)."""
        find = normalized.find
        token_mapping, offset = [], 0
        for token in tokens:
            if token[:1] == "[" and token[-1:] == "]":  # _is_special, inlined for speed
                token_mapping.append([])
                continue
            if token[:2] == "##":
                token = token[2:]
            start = find(token, offset) if token else -1
            if start < 0:
                token_mapping.append([])
                continue
            end = start + len(token)
            if char_mapping is None:
                token_mapping.append(list(range(start, end)))
            else:
                token_mapping.append(char_mapping[start:end])
            offset = end

        return token_mapping

    # -- bert4keras' static helpers ----------------------------------------------

    @staticmethod
    def stem(token):
        """The token without its '##' continuation prefix."""
        if token[:2] == "##":
            return token[2:]
        return token

    @staticmethod
    def _is_space(ch):
        """Space-like character: ' ', \\n, \\r, \\t or Unicode category Zs."""
        return ch == " " or ch == "\n" or ch == "\r" or ch == "\t" or unicodedata.category(ch) == "Zs"

    @staticmethod
    def _is_punctuation(ch):
        """Punctuation (half or full width): non-alphanumeric ASCII or Unicode P*."""
        return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")

    @staticmethod
    def _cjk_punctuation():
        """CJK / full-width punctuation that decode glues to the next token."""
        return _CJK_PUNCTUATION

    @staticmethod
    def _is_cjk_character(ch):
        """CJK ideograph (BERT's ranges, which include the Chinese characters)."""
        return _CJK_FULLMATCH(ch) is not None

    @staticmethod
    def _is_control(ch):
        """Character deleted before tokenizing: Unicode Cc, Cf, Co, Cs except \\t, \\n, \\r.

        Chosen to match HF's `BertTokenizerFast` (the Rust tokenizer HF users compare
        against): it deletes control, format and private-use characters but keeps
        unassigned (Cn) code points, which then make their word [UNK]. bert4keras
        deletes only Cc and Cf (keeping Co and Cn, also [UNK]); HF's slow tokenizer
        and original BERT delete every C* category.
        """
        return ch not in "\t\n\r" and unicodedata.category(ch) in _DELETED_CATEGORIES

    @staticmethod
    def _is_special(ch):
        """A special token such as '[CLS]' or '[unused1]' (bracketed)."""
        return bool(ch) and (ch[0] == "[") and (ch[-1] == "]")

    # public names for the character classes (the underscored ones are bert4keras')
    is_punctuation, is_cjk_character, is_control = _is_punctuation, _is_cjk_character, _is_control
