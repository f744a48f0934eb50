"""SentencePiece tokenizer with bert4keras' API (T5, mT5, ALBERT, XLNet, ... vocabularies).

`SpTokenizer` wraps a SentencePiece model (``spiece.model``) the way bert4keras'
`SpTokenizer` does: pieces come from the `sentencepiece` library itself, so ids are
exactly the library's (and Hugging Face's `T5Tokenizer` adds the same '</s>' at the
end). On top it has the `TokenizerBase` methods (`tokenize`, `encode` with pairs and
`maxlen`, `token_translate`, ...) and a `rematch` that maps every piece back to the
characters of the original text, also where SentencePiece's NFKC normalisation changed
them ('ＡＢＣ' -> 'ABC', '…' -> '...').

Requires the `sentencepiece` package (``pip install sentencepiece``).
"""

from kerasformer.errors import KerasformerError
from kerasformer.tokenizers.wordpiece import TokenizerBase

__all__ = ["SpTokenizer"]


def _varint(buf, pos):
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """(field number, value) pairs of one protobuf message (wire types 0, 1, 2, 5)."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise KerasformerError(f"unexpected protobuf wire type {wire} from sentencepiece")
        yield field, value


def _piece_spans(serialized):
    """[(piece, begin byte, end byte)] from a serialized ``SentencePieceText``.

    Read by hand (pieces = field 2; in each: piece = 1, begin = 4, end = 5, offsets into
    the UTF-8 input) so that rematch needs neither protobuf nor a particular
    sentencepiece version's proto objects.
    """
    spans = []
    for field, value in _fields(serialized):
        if field == 2:
            piece, begin, end = b"", 0, 0
            for f, v in _fields(value):
                if f == 1:
                    piece = v
                elif f == 4:
                    begin = v
                elif f == 5:
                    end = v
            spans.append((piece.decode("utf-8"), begin, end))
    return spans


class SpTokenizer(TokenizerBase):
    """A SentencePiece model with bert4keras' tokenizer API.

    Args:
        sp_model_path: the SentencePiece model file (e.g. T5's ``spiece.model``).
        token_start: piece put before every text; None (T5's convention, the default).
        token_end: piece put after every text: '</s>' (T5's end of sequence, the
            default); None for none. For ALBERT-style vocabularies pass
            ``token_start='[CLS]', token_end='[SEP]'``.
        pre_tokenize: optional function text -> words (e.g. jieba); the words are joined
            with spaces before SentencePiece runs, as in bert4keras.
        token_translate: see `TokenizerBase`.

    Attributes follow bert4keras: ``sp_model`` (the ``SentencePieceProcessor``),
    ``_token_pad`` / ``_token_unk`` (the model's own pad / unk pieces) and
    ``_token_pad_id``, ``_token_unk_id``, ``_token_mask_id``, ``_token_start_id``,
    ``_token_end_id`` (None where the model has no such piece).
    """

    def __init__(self, sp_model_path, token_start=None, token_end="</s>", pre_tokenize=None,
                 token_translate=None):
        super().__init__(token_start=token_start, token_end=token_end, pre_tokenize=pre_tokenize,
                         token_translate=token_translate)
        try:
            import sentencepiece as spm
        except ImportError:
            raise KerasformerError("SpTokenizer needs the sentencepiece package: "
                                   "pip install sentencepiece") from None
        self.sp_model_path = sp_model_path
        self.sp_model = spm.SentencePieceProcessor()
        try:
            self.sp_model.Load(str(sp_model_path))
        except (OSError, RuntimeError) as e:
            raise KerasformerError(f"cannot load the SentencePiece model {sp_model_path}: {e}") from None
        self._setup()

    def _setup(self):
        sp = self.sp_model
        self._vocab_size = sp.get_piece_size()
        self._unk_id = sp.unk_id()
        self._token_pad = sp.id_to_piece(sp.pad_id()) if sp.pad_id() >= 0 else None
        self._token_unk = sp.id_to_piece(self._unk_id)
        self._token_mask = "[MASK]" if self._piece_id("[MASK]") is not None else None
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, f"_token_{name}")
            token_id = None if token is None else self._piece_id(token)
            if token is not None and token_id is None and name in ("start", "end"):
                controls = [sp.id_to_piece(i) for i in range(self._vocab_size) if sp.is_control(i)]
                raise KerasformerError(
                    f"token_{name}={token!r} is not a piece of {self.sp_model_path}; pass "
                    f"token_{name}=None or the model's own piece (this model's control pieces: "
                    f"{', '.join(map(repr, controls))})")
            setattr(self, f"_token_{name}_id", token_id)
        self._start_ids = [] if self._token_start is None else [self._token_start_id]
        self._end_ids = [] if self._token_end is None else [self._token_end_id]
        self._fast_encode = (self._pre_tokenize is None and not self._token_translate
                             and not self._id_translate)

    def _piece_id(self, piece):
        """Id of a piece that is in the vocabulary, else None."""
        i = self.sp_model.piece_to_id(piece)
        return None if i == self._unk_id and piece != self._token_unk else i

    # SentencePieceProcessor is a C++ object: pickle the model bytes instead
    def __getstate__(self):
        state = self.__dict__.copy()
        state["sp_model"] = self.sp_model.serialized_model_proto()
        return state

    def __setstate__(self, state):
        import sentencepiece as spm

        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor()
        self.sp_model.LoadFromSerializedProto(state["sp_model"])

    @property
    def vocab_size(self):
        """Number of pieces."""
        return self._vocab_size

    # -- tokens and ids -----------------------------------------------------------

    def _tokenize(self, text):
        if self._pre_tokenize is not None:
            text = " ".join(self._pre_tokenize(text))
        return self.sp_model.encode_as_pieces(text)

    def _encode_text(self, text):
        """`tokens_to_ids(tokenize(text))` straight from the library's ids."""
        if not self._fast_encode:
            return super()._encode_text(text)
        return self._start_ids + self.sp_model.encode_as_ids(text) + self._end_ids

    def token_to_id(self, token):
        """Id of a piece (the unk id for anything else)."""
        i = self.sp_model.piece_to_id(token)
        if self._id_translate:
            i = self._id_translate.get(i, i)
        return i

    def tokens_to_ids(self, tokens):
        ids = self.sp_model.piece_to_id(list(tokens)) if tokens else []
        if self._id_translate:
            ids = [self._id_translate.get(i, i) for i in ids]
        return ids

    def id_to_token(self, i):
        """Piece of id `i`; '' for ids beyond the model (e.g. T5's <extra_id_*>), as bert4keras."""
        i = int(i)
        if self._id_translate_inv:
            i = self._id_translate_inv.get(i, i)
        return self.sp_model.id_to_piece(i) if 0 <= i < self._vocab_size else ""

    def decode(self, ids):
        """Text of `ids`, decoded by SentencePiece (control pieces such as '</s>' and ids
        beyond the model vanish; unknown pieces read ' ⁇ ', the library's rendering)."""
        tokens = self.ids_to_tokens(ids)
        if self._token_translate_inv:
            tokens = [self._token_translate_inv.get(token) or token for token in tokens]
        return self.sp_model.decode_pieces([token for token in tokens if token])

    def _is_special(self, i):
        """Control, unknown or unused piece id (bert4keras' definition)."""
        return self.sp_model.is_control(i) or self.sp_model.is_unknown(i) or self.sp_model.is_unused(i)

    def _is_decodable(self, i):
        return i < self._vocab_size and not self._is_special(i)

    def _is_special_token(self, token):
        if token is None:
            return False
        if token == self._token_start or token == self._token_end:
            return True
        i = self.sp_model.piece_to_id(token)
        return self.sp_model.id_to_piece(i) == token and self._is_special(i)

    # -- offsets --------------------------------------------------------------------

    def _encode_spans(self, text):
        """[(piece, [indices into `text`])] for the pieces of `text`.

        A piece owns the original characters SentencePiece reports for it, less
        whitespace (the '▁' it starts with stands for a space that belongs to no token):
        '▁world' after two spaces owns 'world'; a lone '▁' owns nothing. A piece that
        NFKC normalisation created from part of a character ('…' -> '.', '.', '.') owns
        that character.
        """
        encoded, to_original = text, None
        if self._pre_tokenize is not None:
            # bert4keras joins the words with spaces: locate each word in the text
            words, encoded, to_original, offset = list(self._pre_tokenize(text)), "", [], 0
            for word in words:
                start = text.find(word, offset)
                if encoded:
                    encoded += " "
                    to_original.append(None)
                encoded += word
                if start < 0:  # the pre-tokenizer changed the text: this word maps nowhere
                    to_original.extend([None] * len(word))
                else:
                    to_original.extend(range(start, start + len(word)))
                    offset = start + len(word)
        if hasattr(self.sp_model, "EncodeAsSerializedProto"):  # sentencepiece < 0.2
            serialized = self.sp_model.EncodeAsSerializedProto(encoded)
        else:
            serialized = self.sp_model.encode(encoded, out_type="serialized_proto")
        spans = _piece_spans(serialized)
        if encoded.isascii():
            byte_to_char = None
        else:
            byte_to_char = []
            for index, ch in enumerate(encoded):
                byte_to_char.extend([index] * len(ch.encode("utf-8", "surrogatepass")))
            byte_to_char.append(len(encoded))
        out = []
        for piece, begin, end in spans:
            if byte_to_char is not None:
                begin, end = byte_to_char[begin], byte_to_char[end]
            if not piece.strip("\u2581"):  # '▁' alone: a space, or the dummy prefix
                out.append((piece, []))
                continue
            if begin == end and begin < len(encoded):
                end = begin + 1
            chars = [i for i in range(begin, end) if not encoded[i].isspace()]
            if to_original is not None:
                chars = [to_original[i] for i in chars if to_original[i] is not None]
            out.append((piece, chars))
        return out

    def rematch(self, text, tokens):
        """Map each token back to the characters of the original `text`.

        Returns one list per token with the indices (into `text`) of its characters, so
        ``text[mapping[i][0]:mapping[i][-1] + 1]`` is token i's span; special tokens
        ('</s>', control pieces) and pieces made of whitespace only get []. `tokens` is
        what `tokenize(text)` returned, possibly cut by `maxlen` from either end; tokens
        that cannot be matched (edited by hand) get [].

        Typical use (NER / span extraction)::

            tokens = tokenizer.tokenize(text, maxlen=512)
            mapping = tokenizer.rematch(text, tokens)
            start_mapping = {j[0]: i for i, j in enumerate(mapping) if j}
        """
        spans = self._encode_spans(text)
        pieces = [piece for piece, _ in spans]
        if self._token_translate:
            pieces = [self._token_translate.get(piece) or piece for piece in pieces]
        special = [self._is_special_token(token) for token in tokens]
        body = [token for token, s in zip(tokens, special) if not s]
        n, m = len(body), len(pieces)
        # tokenize() output, whole or cut at the end (maxlen) or at the start
        # (truncate_from='left'): the pieces line up as one block
        for start in (0, m - n):
            if 0 <= start <= m - n and pieces[start:start + n] == body:
                chars = iter(spans[start:start + n])
                return [[] if s else list(next(chars)[1]) for s in special]
        # anything else: each token is looked for after the previous match
        mapping, position = [], 0
        for token, s in zip(tokens, special):
            found = None if s else next((j for j in range(position, m) if pieces[j] == token), None)
            if found is None:
                mapping.append([])
            else:
                mapping.append(list(spans[found][1]))
                position = found + 1
        return mapping
