"""kerasformer's own small Chinese RoBERTa, shipped inside the package.

It was pretrained on this project's 2-core development machine with
``recipes/pretrain_chinese.py`` (masked LM with whole-word masking, jieba words) on the
shared corpora: Tang poems converted to simplified characters, Song ci, Yuan qu, and the
*training* splits of the labelled sets (couplets, People's Daily NER, TNEWS, AFQMC,
ChnSentiCorp, CSL titles). ``MODEL_CARD.md`` in the model folder records the run. The
weights are stored as float16 safetensors beside a character vocabulary, and load through
the normal loader (cast back to float32)::

    from kerasformer import build_transformer_model, Tokenizer
    from kerasformer.embedded import model_dir

    folder = model_dir()                       # the folder inside the installed package
    model = build_transformer_model(folder, with_mlm=True)
    tokenizer = Tokenizer(folder)

The folder is also a Hugging Face folder (``BertForMaskedLM.from_pretrained(folder)``).
:class:`FillMask` predicts the characters behind ``[MASK]`` placeholders in a text.
"""
import os

from kerasformer.errors import KerasformerError

MODELS = {"chinese-small": "chinese_small"}  # public name -> folder under kerasformer/data
MASK = "[MASK]"


def model_dir(name="chinese-small"):
    """The folder of the embedded model ``name`` (``'chinese-small'``)."""
    if name not in MODELS:
        raise KerasformerError(f"no embedded model {str(name)[:50]!r}; available: {', '.join(MODELS)}")
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", MODELS[name])
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):
        raise KerasformerError(f"the embedded model's weights are missing from {folder}: "
                               "reinstall kerasformer (the wheel ships them as package data)")
    return folder


class FillMask:
    """Fill ``[MASK]`` placeholders with a masked LM: ``FillMask()(["床前明月[MASK]光"])``
    gives, per text, one list per placeholder of ``(token, probability)`` pairs, best
    first. Each placeholder is predicted from the unmasked context (the masks are filled
    independently, as BERT's pretraining scores them)."""

    def __init__(self, folder=None, maxlen=128):
        from kerasformer import build_transformer_model
        from kerasformer.backend import compiled_forward
        from kerasformer.tokenizers.wordpiece import Tokenizer

        folder = folder or model_dir()
        self.tokenizer = Tokenizer(folder)
        # the family object too: `transformer.sequence_output` lets a sentence encoder share
        # these weights (the demo) instead of loading the folder a second time
        self.transformer = build_transformer_model(folder, with_mlm=True, return_keras_model=False)
        self.model = self.transformer.model
        self.forward = compiled_forward(self.model)
        self.maxlen = maxlen

    def encode(self, text):
        """Token ids of ``text`` with ``[MASK]`` placeholders as the mask id, and the
        placeholders' positions."""
        if not isinstance(text, str):
            raise KerasformerError(f"FillMask takes strings, not {type(text).__name__}")
        pieces = text.split(MASK)
        if len(pieces) < 2:
            raise KerasformerError(f"no {MASK} in the text {text[:50]!r}")
        t = self.tokenizer
        ids, positions = [t.start_id], []
        for i, piece in enumerate(pieces):
            if i:
                positions.append(len(ids))
                ids.append(t.mask_id)
            ids.extend(t.tokens_to_ids(t.tokenize(piece)[1:-1]))
        ids.append(t.end_id)
        if len(ids) > self.maxlen:
            raise KerasformerError(f"a text of {len(ids)} tokens is longer than maxlen={self.maxlen}")
        return ids, positions

    def __call__(self, texts, top=5):
        import numpy as np

        from kerasformer.backend import to_numpy
        from kerasformer.snippets import sequence_padding

        encoded = [self.encode(text) for text in texts]
        ids = sequence_padding([e[0] for e in encoded]).astype("int32")
        probs = to_numpy(self.forward([ids, np.zeros_like(ids)]))
        results = []
        for row, (_, positions) in enumerate(encoded):
            filled = []
            for p in positions:
                best = np.argsort(-probs[row, p])[:top]
                filled.append([(self.tokenizer.id_to_token(int(i)), float(probs[row, p, i])) for i in best])
            results.append(filled)
        return results
