"""Text in, text out (issue 10, defect 6): ``generate`` with a tokenizer takes strings and
returns strings, streams text pieces, and refuses an encoder-only model."""
import os

import pytest

from kerasformer import KerasformerError, Tokenizer, build_transformer_model, generate

TF_BERT = os.path.join(os.path.dirname(__file__), "fixtures", "tf", "bert_tiny")
CONFIG, CKPT = os.path.join(TF_BERT, "bert_config.json"), os.path.join(TF_BERT, "bert_model.ckpt")
PROMPTS = ["我爱北京", "hello world"]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(TF_BERT)  # the folder: vocab.txt, lower-cased (its vocabulary has no capitals)


@pytest.fixture(scope="module", params=["lm", "unilm"])
def model(request):
    return build_transformer_model(CONFIG, CKPT, application=request.param, with_mlm=True)


def expected_texts(model, tokenizer, prompts, n):
    """The id-level engine plus decoding, by hand (same shapes: the program is reused)."""
    rows = [tokenizer.encode(p)[0] for p in prompts]
    if model._kerasformer_transformer.application == "lm":  # an LM continues: no [SEP] after it
        rows = [ids[:-1] for ids in rows]
    end = tokenizer._token_end_id
    outs = generate(model, rows, n, end_id=end)
    return [tokenizer.decode(out[:-1] if out and out[-1] == end else out) for out in outs]


def test_text_in_text_out(model, tokenizer):
    texts = generate(model, PROMPTS, 6, tokenizer=tokenizer)
    assert texts == expected_texts(model, tokenizer, PROMPTS, 6)
    assert all(isinstance(t, str) for t in texts)
    assert generate(model, PROMPTS, 6, tokenizer=TF_BERT) == texts  # a folder as the tokenizer


def test_stream_beams_and_single_prompt(tokenizer):
    model = build_transformer_model(CONFIG, CKPT, application="lm", with_mlm=True)
    texts = generate(model, PROMPTS, 6, tokenizer=tokenizer)
    joined = ["", ""]
    for step in generate(model, PROMPTS, 6, tokenizer=tokenizer, stream=True):
        for row, piece in enumerate(step):
            joined[row] += piece or ""
    assert [j.strip() for j in joined] == [t.strip() for t in texts]
    # one string in, a stream of string pieces out (batched equals unbatched)
    single = "".join(generate(model, PROMPTS[0], 6, tokenizer=tokenizer, stream=True))
    assert single.strip() == texts[0].strip()
    beams = generate(model, PROMPTS, 6, tokenizer=tokenizer, strategy="beam", num_beams=2,
                     return_all_beams=True)
    assert all(isinstance(text, str) and isinstance(score, float) for row in beams for text, score in row)


def test_text_without_tokenizer_is_a_clear_error(model):
    with pytest.raises(KerasformerError, match="tokenizer="):
        generate(model, ["我爱北京"], 5)


def test_encoder_model_cannot_generate(tokenizer):
    encoder = build_transformer_model(CONFIG, CKPT, with_mlm=True)
    with pytest.raises(KerasformerError, match="application='encoder'.*application='lm'.*'unilm'"):
        generate(encoder, ["我爱北京"], 5, tokenizer=tokenizer)
    with pytest.raises(KerasformerError, match="application='encoder'"):
        generate(encoder, [[3, 20, 14]], 5)


def test_byte_level_bpe_text_generation_and_stream(tmp_path):
    """GPT-2 with a Hugging Face byte-level BPE tokenizer: a character may take several
    tokens, so a stream holds a piece back until its bytes are complete."""
    tokenizers = pytest.importorskip("tokenizers")
    from kerasformer.tokenizers.hf import HFTokenizer

    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(["Hello world 你好世界 🙂"] * 5, vocab_size=270, min_frequency=1,
                            special_tokens=["<|endoftext|>"])
    bpe.save(str(tmp_path / "tokenizer.json"))
    tokenizer = HFTokenizer(str(tmp_path))
    model = build_transformer_model(model="gpt2", vocab_size=tokenizer.vocab_size, hidden_size=16,
                                    num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    max_position=64)
    prompts = ["Hello 你", "🙂"]
    texts = generate(model, prompts, 8, tokenizer=tokenizer)
    ids = generate(model, [tokenizer.encode(p)[0] for p in prompts], 8, end_id=tokenizer._token_end_id)
    end = tokenizer._token_end_id
    assert texts == [tokenizer.decode([i for i in row if i != end]) for row in ids]
    joined = ["", ""]
    for step in generate(model, prompts, 8, tokenizer=tokenizer, stream=True):
        for row, piece in enumerate(step):
            joined[row] += piece or ""
    for text, streamed in zip(texts, joined):  # a trailing incomplete character is never shown
        assert streamed == text if not text.endswith("\ufffd") else text.startswith(streamed)


def test_stream_holds_back_partial_characters(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from kerasformer.generation.text import _text_stream
    from kerasformer.tokenizers.hf import HFTokenizer

    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(["plain ascii only"] * 3, vocab_size=260, min_frequency=1)
    bpe.save(str(tmp_path / "tokenizer.json"))
    tokenizer = HFTokenizer(str(tmp_path))
    ids, _ = tokenizer.encode("a你")  # '你' is three bytes, one token each
    assert len(ids) == 4
    steps = [[i] for i in ids] + [[None]]
    assert [step[0] for step in _text_stream(steps, tokenizer, None, 1)] == ["a", "", "", "你", None]
