"""Tokenizers with bert4keras semantics: WordPiece (BERT family) and SentencePiece."""
from kerasformer.tokenizers.wordpiece import Tokenizer, TokenizerBase, load_vocab, save_vocab


def __getattr__(name):
    if name in ("HFTokenizer", "load_tokenizer"):
        from kerasformer.tokenizers import hf

        return getattr(hf, name)
    if name == "SpTokenizer":  # needs the optional sentencepiece package
        from kerasformer.tokenizers.sentencepiece import SpTokenizer

        return SpTokenizer
    raise AttributeError(f"module 'kerasformer.tokenizers' has no attribute {name!r}")


__all__ = ["HFTokenizer", "SpTokenizer", "Tokenizer", "TokenizerBase", "load_tokenizer", "load_vocab", "save_vocab"]
