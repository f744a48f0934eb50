"""Tokenizers from a model folder (issue 10, defect 6): vocab.txt with the folder's
lower-casing, Hugging Face tokenizer.json through the ``tokenizers`` library; ids,
offsets and decoding identical to Hugging Face's own tokenizers."""
import json
import os
import shutil

import pytest

from kerasformer import KerasformerError, Tokenizer, load_tokenizer
from kerasformer.tokenizers import HFTokenizer

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "Hello", "the", "##s",
         "café", "cafe", "我", "爱", "北", "京", ",", "!", "h", "e", "l", "o", "##l", "##o"]
TEXTS = ["Hello worlds, hello café!", "我爱北京 Hello", "HELLO  the\tworld"]
CORPUS = ["Hello world, this is a tiny corpus.", "Byte-level BPE handles any text: 你好世界 and émojis 🙂.",
          "The quick brown fox jumps over the lazy dog.", "Offsets map tokens back to characters."] * 10
BPE_TEXTS = ["Hello world!", "你好 🙂 émojis  double  space", " leading space", "unseen: zebra ÿ"]


def vocab_folder(root, name, tokenizer_config=None):
    folder = root / name
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    if tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return str(folder)


@pytest.mark.parametrize("name, config, lower", [
    ("hf_cased", {"do_lower_case": False}, False),
    ("hf_uncased", {"do_lower_case": True}, True),
    ("uncased_L-2_H-32_A-2", None, True),   # Google's release naming
    ("cased_L-2_H-32_A-2", None, False),
    ("plain", None, False),                 # the vocabulary holds capitals: cased
])
def test_vocab_folder_lower_casing_and_ids_equal_hf(tmp_path, name, config, lower):
    folder = vocab_folder(tmp_path, name, config)
    ours = Tokenizer(folder)
    assert ours._do_lower_case is lower
    assert Tokenizer.from_pretrained(folder)._do_lower_case is lower
    assert isinstance(load_tokenizer(folder), Tokenizer)
    hf = transformers.BertTokenizerFast(os.path.join(folder, "vocab.txt"), do_lower_case=lower)
    for text in TEXTS:
        assert ours.encode(text)[0] == hf(text)["input_ids"]
    if config is not None:  # HF reads the same folder the same way
        hf_auto = transformers.BertTokenizerFast.from_pretrained(folder)
        assert [ours.encode(t)[0] for t in TEXTS] == [hf_auto(t)["input_ids"] for t in TEXTS]


def test_explicit_lower_case_wins_and_files_keep_bert4keras_default(tmp_path):
    folder = vocab_folder(tmp_path, "uncased_x")
    assert Tokenizer(folder, do_lower_case=False)._do_lower_case is False
    assert Tokenizer(os.path.join(folder, "vocab.txt"))._do_lower_case is False


def test_bad_tokenizer_paths_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KerasformerError, match="no vocab.txt in folder"):
        Tokenizer(str(empty))
    with pytest.raises(KerasformerError, match="no tokenizer in folder"):
        load_tokenizer(str(empty))
    with pytest.raises(KerasformerError, match="not found"):
        Tokenizer(str(tmp_path / "missing.txt"))
    json_file = tmp_path / "tokenizer.json"
    json_file.write_text('{"version": "1.0", "model": {"type": "BPE"}}')
    with pytest.raises(KerasformerError, match="JSON file.*load_tokenizer"):
        Tokenizer(str(json_file))
    with pytest.raises(KerasformerError, match="cannot read the tokenizer file"):
        HFTokenizer(str(json_file))


def train_bpe(special_tokens):
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, special_tokens=special_tokens)
    return bpe._tokenizer


@pytest.fixture(scope="module")
def bpe_folders(tmp_path_factory):
    """GPT-2- and RoBERTa-style folders written by Hugging Face's own tokenizer classes."""
    root = tmp_path_factory.mktemp("bpe")
    gpt2 = transformers.GPT2TokenizerFast(tokenizer_object=train_bpe(["<|endoftext|>"]),
                                          eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                          unk_token="<|endoftext|>")
    gpt2.save_pretrained(str(root / "gpt2"))
    roberta = transformers.RobertaTokenizerFast(
        tokenizer_object=train_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
    roberta.save_pretrained(str(root / "roberta"))
    return {name: str(root / name) for name in ("gpt2", "roberta")}


@pytest.mark.parametrize("name", ["gpt2", "roberta"])
def test_tokenizer_json_equals_hf(bpe_folders, name):
    folder = bpe_folders[name]
    ours = load_tokenizer(folder)
    assert isinstance(ours, HFTokenizer)
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    assert ours.vocab_size == len(hf)
    for text in BPE_TEXTS:
        expected = hf(text, return_offsets_mapping=True)
        ids, segments = ours.encode(text)
        assert ids == expected["input_ids"]
        assert ours.offsets(text) == [tuple(o) for o in expected["offset_mapping"]]
        assert ours.tokenize(text) == hf.convert_ids_to_tokens(ids)
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)
        assert ours.encode(text, "a second text")[0] == hf(text, "a second text")["input_ids"]
        assert ours.encode(text, maxlen=4)[0] == hf(text, truncation=True, max_length=4)["input_ids"]
        mapping = ours.rematch(text)
        assert len(mapping) == len(ids)
    assert ours._token_end_id == hf.eos_token_id
    assert ours.decode(ours.encode("Hello world!")[0]) == "Hello world!"
    # the file alone (no tokenizer_config.json next to it) loads too
    alone = os.path.join(folder, "alone")
    os.makedirs(alone, exist_ok=True)
    shutil.copy(os.path.join(folder, "tokenizer.json"), alone)
    assert load_tokenizer(os.path.join(alone, "tokenizer.json")).encode("Hello")[0] == hf("Hello")["input_ids"]
    assert load_tokenizer(alone)._token_end_id == hf.eos_token_id
