"""SpTokenizer gives the sentencepiece library's ids (and Hugging Face T5Tokenizer's, which
append '</s>'), and rematch maps pieces back to the original characters.

A tiny SentencePiece model (T5's special ids: <pad>=0, </s>=1, <unk>=2) is trained here on
generated mixed Chinese / English text, once as unigram (T5, mT5) and once as BPE.
"""
import pickle
import random
import re
import shutil
import unicodedata

import pytest

spm = pytest.importorskip("sentencepiece")

from kerasformer.errors import KerasformerError  # noqa: E402
from kerasformer.tokenizers.sentencepiece import SpTokenizer  # noqa: E402

CHINESE = "我们今天天气很好你是谁中国人民大学北京上海的了在有和不这个学习机器模型语言文本生成测试数据"
ENGLISH = ("the quick brown fox jumps over lazy dog model token keras sentence piece hello world "
           "learning machine data test transformer encoder decoder").split()


def corpus(lines=300, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = []
        for _ in range(rng.randint(3, 10)):
            if rng.random() < 0.5:
                words.append("".join(rng.choice(CHINESE) for _ in range(rng.randint(1, 4))))
            else:
                word = rng.choice(ENGLISH)
                words.append(word.capitalize() if rng.random() < 0.2 else word)
            if rng.random() < 0.1:
                words.append(rng.choice([",", "，", "、", "(", ")", "2024", "3.5"]))
        out.append(" ".join(words) + rng.choice([".", "。", "!", "？", "?"]))
    return out


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def sp_model(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"sp_{request.param}")
    prefix = str(directory / "spiece")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_prefix=prefix, model_type=request.param,
        vocab_size=300, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        minloglevel=2, num_threads=1)
    return prefix + ".model"


TEXTS = [
    "Hello world, 我们今天学习 keras 模型。",
    "  leading and trailing spaces  ",
    "many    spaces\tand\ttabs\nand newlines",
    "全角ＡＢＣ１２３ and …ellipsis… ",  # NFKC changes these
    "unknown 😀 characters ☃ here",
    "The quick brown fox jumps over the lazy dog 3.5 times (2024)",
    "",
    "中国人民大学",
]


def random_texts(count=40, seed=7):
    """Fresh sentences from the same distribution: no NFKC changes, no unknowns."""
    return corpus(count, seed=seed)


def test_ids_and_pieces_are_the_librarys(sp_model):
    sp = spm.SentencePieceProcessor(model_file=sp_model)
    tokenizer = SpTokenizer(sp_model)
    for text in TEXTS + random_texts():
        tokens = tokenizer.tokenize(text)
        assert tokens == sp.encode_as_pieces(text) + ["</s>"], text
        ids, segments = tokenizer.encode(text)
        assert ids == sp.encode_as_ids(text) + [sp.eos_id()], text
        assert segments == [0] * len(ids)
        # the fast path (ids straight from the library) equals tokens -> ids
        assert tokenizer.tokens_to_ids(tokens) == ids
        assert [tokenizer.token_to_id(t) for t in tokens] == ids
        known = [t for t, i in zip(tokens, ids) if i != 2]  # unknown pieces come back as '<unk>'
        assert [tokenizer.id_to_token(i) for i in ids if i != 2] == known


def test_special_ids_follow_the_model(sp_model):
    tokenizer = SpTokenizer(sp_model)
    assert (tokenizer._token_pad, tokenizer._token_unk, tokenizer._token_end) == ("<pad>", "<unk>", "</s>")
    assert (tokenizer._token_pad_id, tokenizer._token_end_id, tokenizer._token_unk_id) == (0, 1, 2)
    assert tokenizer._token_start_id is None and tokenizer._token_mask_id is None
    assert tokenizer.vocab_size == 300
    assert tokenizer.id_to_token(300) == ""  # beyond the model (T5's <extra_id_*>), as bert4keras
    assert tokenizer._is_special(1) and tokenizer._is_special(2) and not tokenizer._is_decodable(0)
    with pytest.raises(KerasformerError, match=r"token_start='\[CLS\]' is not a piece.*'</s>'"):
        SpTokenizer(sp_model, token_start="[CLS]")
    with pytest.raises(KerasformerError, match="cannot load the SentencePiece model"):
        SpTokenizer(sp_model + ".missing")


def test_pairs_maxlen_and_no_end_token(sp_model):
    sp = spm.SentencePieceProcessor(model_file=sp_model)
    tokenizer = SpTokenizer(sp_model)
    first, second = "Hello world, 我们今天学习 keras 模型。", "中国人民大学 test"
    a, b = sp.encode_as_ids(first), sp.encode_as_ids(second)
    ids, segments = tokenizer.encode(first, second)
    assert ids == a + [1] + b + [1] and segments == [0] * (len(a) + 1) + [1] * (len(b) + 1)
    ids, segments = tokenizer.encode(first, second, maxlen=10)
    assert len(ids) == 10 and ids[-1] == 1 and segments.count(0) >= segments.count(1)
    ids, _ = tokenizer.encode(first, maxlen=4, truncate_from="left")
    assert ids == a[-3:] + [1]
    assert SpTokenizer(sp_model, token_end=None).encode(first)[0] == a


def test_matches_hf_t5_tokenizer(sp_model, tmp_path):
    if "bpe" in sp_model:
        pytest.skip("T5 vocabularies are unigram; HF's conversion of SentencePiece BPE models "
                    "re-derives merges and can split differently from the library")
    pytest.importorskip("google.protobuf")  # HF converts the model file with protobuf
    transformers = pytest.importorskip("transformers")
    shutil.copy(sp_model, tmp_path / "spiece.model")
    tokenizer = SpTokenizer(sp_model)
    classes = {transformers.T5Tokenizer, transformers.T5TokenizerFast}  # one class in HF 5
    for cls in classes:
        hf = cls.from_pretrained(str(tmp_path))
        for text in TEXTS + random_texts():
            ids = tokenizer.encode(text)[0]
            assert hf(text)["input_ids"] == ids, (cls.__name__, text)
            assert hf.convert_ids_to_tokens(ids) == [t if i != 2 else "<unk>"
                                                     for t, i in zip(tokenizer.tokenize(text), ids)]


def test_decode(sp_model):
    sp = spm.SentencePieceProcessor(model_file=sp_model)
    tokenizer = SpTokenizer(sp_model)
    for text in TEXTS + random_texts():
        ids = tokenizer.encode(text)[0]
        assert tokenizer.decode(ids) == sp.decode_ids(ids[:-1]), text
    assert tokenizer.decode(tokenizer.encode("Hello world, 我们今天学习 keras 模型。")[0]) == \
        "Hello world, 我们今天学习 keras 模型。"
    assert tokenizer.decode([0, 1, 300, 301]) == ""  # pad, </s> and ids beyond the model vanish


def nfkc(text):
    return unicodedata.normalize("NFKC", text)


def spans(text, mapping):
    return [text[m[0]:m[-1] + 1] if m else None for m in mapping]


def test_rematch_maps_pieces_to_original_characters(sp_model):
    tokenizer = SpTokenizer(sp_model)
    for text in random_texts() + [TEXTS[0], TEXTS[5]]:
        tokens = tokenizer.tokenize(text)
        mapping = tokenizer.rematch(text, tokens)
        assert len(mapping) == len(tokens) and mapping[-1] == []  # '</s>'
        flat = [i for m in mapping for i in m]
        assert flat == sorted(flat)
        # every non-space character belongs to exactly one piece
        assert flat == [i for i, ch in enumerate(text) if not ch.isspace()], text
        for token, m in zip(tokens[:-1], mapping):  # (NFKC: the corpus has '，' and '？')
            assert nfkc("".join(text[i] for i in m)) == token.replace("\u2581", ""), (text, token)


def test_rematch_through_normalisation_unknowns_and_spaces(sp_model):
    tokenizer = SpTokenizer(sp_model)
    text = "学习ＡＢＣ and …x  😀 全角"
    tokens = tokenizer.tokenize(text)
    mapping = tokenizer.rematch(text, tokens)
    for token, m in zip(tokens, mapping):
        stem = token.replace("\u2581", "")
        if not stem or token == "</s>":  # whitespace-only pieces and '</s>' own nothing
            assert m == [], token
        else:  # NFKC of the characters a piece owns is (or, for '…', contains) the piece
            assert m and stem in nfkc("".join(text[i] for i in m)), (token, m)
    ellipsis = text.index("…")
    dots = [t for t, m in zip(tokens, mapping) if m == [ellipsis]]
    assert "".join(dots) == "..."  # NFKC made three dots of one character: all point at it
    assert [text.index("😀")] in mapping  # unknown to the model, still located
    flat = sorted({i for m in mapping for i in m})
    assert flat == [i for i, ch in enumerate(text) if not ch.isspace()]
    # the full-width letters are owned by the pieces NFKC made of them
    owners = [t for t, m in zip(tokens, mapping) if set(m) & {2, 3, 4}]
    assert "".join(owners).replace("\u2581", "").endswith("ABC")


def test_rematch_after_truncation(sp_model):
    tokenizer = SpTokenizer(sp_model)
    text = "the model 模型 test the model 模型 test the model"
    full = tokenizer.rematch(text, tokenizer.tokenize(text))
    right = tokenizer.tokenize(text, maxlen=5)
    assert tokenizer.rematch(text, right) == full[:4] + [[]]
    # cut from the start (encode(..., truncate_from='left')): the same text repeats, so a
    # search from the left would match the wrong copy
    tail = tokenizer.tokenize(text)[-6:]
    assert tokenizer.rematch(text, tail) == full[-6:]


def test_pre_tokenize(sp_model):
    sp = spm.SentencePieceProcessor(model_file=sp_model)
    words = lambda s: re.findall(r"[A-Za-z]+|\S", s)  # noqa: E731  (a stand-in for jieba)
    tokenizer = SpTokenizer(sp_model, pre_tokenize=words)
    text = "Hello world,我们今天学习keras模型。"
    assert tokenizer.encode(text)[0] == sp.encode_as_ids(" ".join(words(text))) + [1]
    tokens = tokenizer.tokenize(text)
    mapping = tokenizer.rematch(text, tokens)
    for token, m in zip(tokens[:-1], mapping):
        assert nfkc("".join(text[i] for i in m)) == token.replace("\u2581", ""), token
    assert {i for m in mapping for i in m} == {i for i, ch in enumerate(text) if not ch.isspace()}


def test_token_translate_and_pickle(sp_model):
    text = "a test here 我们"
    plain = SpTokenizer(sp_model).tokenize(text)
    piece = plain[1]
    tokenizer = SpTokenizer(sp_model, token_translate={piece: "[X]"})
    tokens = tokenizer.tokenize(text)
    assert tokens == plain[:1] + ["[X]"] + plain[2:]
    assert tokenizer.rematch(text, tokens) == SpTokenizer(sp_model).rematch(text, plain)
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone.encode(text) == tokenizer.encode(text)
    assert clone.rematch(text, tokens) == tokenizer.rematch(text, tokens)
