"""Text in, text out: ``generate(model, ["我爱北京"], 8, tokenizer=tokenizer)``.

A thin layer over the id-level engine: prompts are encoded as the model family expects,
the engine decodes ids, the new ids are decoded back to text. Streaming yields text
pieces, each the new part of the row's text so far (decoding the whole row every step
keeps WordPiece's spacing and byte-level BPE's multi-byte characters right, where
decoding one token at a time would not).
"""
import os

from kerasformer.errors import KerasformerError


def is_text(prompts):
    return isinstance(prompts, str) or (isinstance(prompts, (list, tuple))
                                        and any(isinstance(p, str) for p in prompts))


def resolve_tokenizer(tokenizer):
    """A tokenizer object, or one loaded from a model folder / tokenizer file path."""
    if isinstance(tokenizer, (str, os.PathLike)):
        from kerasformer.tokenizers.hf import load_tokenizer

        return load_tokenizer(tokenizer)
    if tokenizer is not None and not (hasattr(tokenizer, "encode") and hasattr(tokenizer, "decode")):
        raise KerasformerError(f"tokenizer must be a tokenizer or a model folder, got {type(tokenizer).__name__}")
    return tokenizer


def encode_prompt(tokenizer, prompt, kind):
    """Token ids of one prompt. A causal LM continues the text, so the end token the
    tokenizer appends (BERT's [SEP]) is dropped, as bert4keras' LM examples do; UniLM
    (the prompt is segment 0, closed by [SEP]) and T5's encoder take the full encoding."""
    if not isinstance(prompt, str):
        return prompt  # already ids
    if not prompt:
        raise KerasformerError("a text prompt is empty")
    ids = list(tokenizer.encode(prompt)[0])
    end = getattr(tokenizer, "end_id", None)
    if kind == "lm" and len(ids) > 1 and end is not None and ids[-1] == end:
        ids = ids[:-1]
    return ids


def decode_new(tokenizer, ids, end_id):
    ids = list(ids)
    if end_id is not None and end_id in ids:
        ids = ids[: ids.index(end_id)]
    return tokenizer.decode(ids)


def generate_text(generate, kind, model, prompts, max_new_tokens, tokenizer, end_id, stream,
                  return_all_beams, **options):
    """``generate`` on text prompts (see ``engine.generate``); a single string prompt gives
    a single string (or a stream of string pieces)."""
    tokenizer = resolve_tokenizer(tokenizer)
    if tokenizer is None:
        raise KerasformerError("the prompts are text: pass tokenizer= (a tokenizer, or the model "
                               "folder holding one) so generate can encode them and decode the "
                               "output, or pass token-id lists")
    single = isinstance(prompts, str)
    rows = [encode_prompt(tokenizer, p, kind) for p in ([prompts] if single else prompts)]
    if end_id is None:
        end_id = getattr(tokenizer, "end_id", None)
    out = generate(model, rows, max_new_tokens, end_id=end_id, stream=stream,
                   return_all_beams=return_all_beams, **options)
    if stream:
        pieces = _text_stream(out, tokenizer, end_id, len(rows))
        return (step[0] for step in pieces if step[0]) if single else pieces
    if return_all_beams:
        texts = [[(decode_new(tokenizer, ids, end_id), score) for ids, score in beams] for beams in out]
    else:
        texts = [decode_new(tokenizer, ids, end_id) for ids in out]
    return texts[0] if single else texts


def _text_stream(steps, tokenizer, end_id, batch):
    """Per step, one text piece per prompt: '' while a piece is incomplete (a partial
    UTF-8 character), None once the prompt has finished."""
    ids = [[] for _ in range(batch)]
    shown = [""] * batch
    for step in steps:
        pieces = []
        for row, token in enumerate(step):
            if token is None or token == end_id:
                pieces.append(None)
                continue
            ids[row].append(token)
            text = tokenizer.decode(ids[row])
            if text.endswith("\ufffd"):  # a character whose bytes are still coming
                pieces.append("")
                continue
            pieces.append(text[len(shown[row]):])
            shown[row] = text
        yield pieces
