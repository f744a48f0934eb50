"""GPT, OpenAI's first one, in bert4keras' layout (``model='gpt'``).

bert4keras builds it as BERT under a causal mask, and so does this file: token (+ segment)
+ position embeddings summed *without* a LayerNorm, BERT's post-LN blocks, and the tied
token embedding as the output layer (no MLM transform, no bias), followed by
``final_activation``. (bert4keras' ``shared_segment_embeddings``, which looks segments up
in the token table, is not supported yet.)

Weights: bert4keras' names, ``gpt/embeddings/...`` and ``gpt/transformer/layer_N/...``
(BERT's with ``bert/`` -> ``gpt/`` and ``encoder`` -> ``transformer``).
"""
import dataclasses

import keras

from kerasformer.errors import KerasformerError
from kerasformer.layers import Embedding
from kerasformer.models.bert import BERT


class GPT(BERT):
    """OpenAI GPT as bert4keras' ``GPT``: see the module doc."""

    model_key = "gpt"
    embedding_norm = False

    def __init__(self, final_activation="softmax", application="lm", **kwargs):
        for name in ("with_pool", "with_nsp", "with_mlm"):
            if kwargs.pop(name, False):
                raise KerasformerError(f"model='gpt' has no {name}: its output is the language model")
        if application not in ("encoder", "lm"):  # bert4keras' GPT is causal whatever is asked
            raise KerasformerError(f"model='gpt' is a causal language model; application={application!r} "
                                   "is not supported")
        super().__init__(application="lm", **kwargs)
        self.with_mlm = False
        self.final_activation = final_activation

    def apply_final_layers(self, inputs, decoding=None, logits=False):
        x = self.apply(inputs, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        if logits:
            return x
        return self.apply(x, keras.layers.Activation, activation=self.final_activation,
                          name="LM-Activation")

    # bert4keras' layout (gpt/embeddings/..., gpt/transformer/...); Hugging Face openai-gpt
    # files are not supported yet, so the rows have no 'hf' names
    google_renames = (("bert/encoder/", "gpt/transformer/"), ("bert/", "gpt/"))

    def weight_rows(self):
        return [dataclasses.replace(r, sources={"google": r.sources["google"]}) for r in super().weight_rows()]
