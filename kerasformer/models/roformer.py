"""RoFormer and RoFormer-v2 (ZhuiyiTechnology; Su et al., 2021): BERT with rotary positions.

Reads top to bottom: RoFormer (v1) -- BERT's network through BERT's hooks, positions
entering as rotations of queries and keys (NEZHA is its sibling) -- then RoFormer-v2, then
the weight names of both.

Rotary position embedding: queries and keys are rotated pair-wise by angles proportional
to their position before the dot product, so ``q_i . k_j`` depends on ``j - i`` only
(``kerasformer.layers.positions.apply_rotary``). There is no position table to load:
Hugging Face's ``roformer.encoder.embed_positions.weight`` is a saved copy of the fixed
sinusoid, skipped when loading.

Checkpoints:

* v1, Zhuiyi's TF release (written by bert4keras): Google BERT's names without
  ``bert/embeddings/position_embeddings``;
* v1, Hugging Face (``RoFormerModel`` / ``RoFormerForMaskedLM``): ``roformer.*`` and
  ``cls.predictions.*``, ``roformer.embeddings_project`` when ``embedding_size`` differs
  from ``hidden_size``; ``rotary_value`` in config.json rotates the values too;
* v2, Zhuiyi's TF release: the same names as v1 minus every bias, LayerNorm and MLM
  transform, because v2 has none (see :class:`RoFormerV2`).
"""
import re

import keras

from kerasformer.errors import FamilyMismatchError, KerasformerError
from kerasformer.layers import Embedding
from kerasformer.layers.positions import SinusoidalPositionEmbedding
from kerasformer.models.bert import BERT


class RoFormer(BERT):
    """RoFormer (v1): BERT-like post-LN blocks, rotary positions, BERT's heads.

    ``rotary_value=True`` (a Hugging Face RoFormer option) rotates the values as well.
    """

    model_key = "roformer"
    hf_prefix = "roformer"
    absolute_positions = False
    derived_tensors = (r"embed_positions\.weight$",)

    def __init__(self, rotary_value=False, model_type=None, **kwargs):
        if model_type is not None and model_type not in ("roformer", "bert"):
            raise KerasformerError(f"the config is for model_type {model_type!r}, not RoFormer; "
                                   f"pass model={model_type!r}")
        super().__init__(**kwargs)
        self.rotary_value = bool(rotary_value)

    @classmethod
    def from_config(cls, raw):
        # NEZHA and RoFormer TF checkpoints carry the same names, so the config is the one
        # place where a NEZHA model shows itself
        if raw.get("use_relative_position") or raw.get("model_type") == "nezha" \
                or raw.get("max_relative_position") is not None:
            raise KerasformerError("the config is NEZHA's (use_relative_position / "
                                   "max_relative_position / model_type 'nezha'): pass model='nezha'")
        return super().from_config(raw)

    def compute_position_bias(self, inputs, decoding=None):
        """The ``[1, L, head_size]`` rotary sinusoid, built once and shared by all blocks;
        in a cached pass, ``[batch, new tokens, head_size]`` at each row's positions."""
        if decoding is not None:
            return self.apply(inputs, SinusoidalPositionEmbedding, arguments={"decoding": decoding},
                              name="Embedding-Rotary-Position")
        if self.position_bias is None:
            self.position_bias = self.apply(inputs, SinusoidalPositionEmbedding,
                                            output_dim=self.attention_key_size, merge_mode="zero",
                                            name="Embedding-Rotary-Position")
        return self.position_bias

    def attention_options(self):
        return {"position_bias_type": "rotary", "rotary_value": self.rotary_value}

    # HF projects embeddings with roformer.embeddings_project, not ALBERT's name
    hf_renames = (("bert.encoder.embedding_hidden_mapping_in.", "roformer.embeddings_project."),
                  ("bert.", "roformer."))


class RoFormerV2(RoFormer):
    """RoFormer-v2 as released by ZhuiyiTechnology (bert4keras' ``RoFormerV2``): the
    standard-attention version (not GAU), with

    * no bias anywhere (attention, feed-forward, embedding mapping, MLM);
    * a parameter-free norm: ``x / sqrt(mean(x^2) + eps)`` -- no centring, no gamma,
      no beta (bert4keras' ``LayerNormalization(zero_mean=False, scale=False, offset=False)``);
      its epsilon is bert4keras' default ``K.epsilon() = 1e-7`` unless the config says otherwise;
    * dropout before the embedding norm;
    * an MLM head that is only the tied token embedding (``with_mlm``), after an
      ``Output-Mapping`` projection when ``embedding_size != hidden_size``;
    * no pooler and no NSP head.

    ``segment_vocab_size=0`` (``type_vocab_size: 0`` in the config) drops the segment
    embedding; the segment input stays, as for every family here, and feeds the UniLM mask.
    """

    model_key = "roformer_v2"
    use_bias = False

    def __init__(self, layer_norm_eps=1e-7, **kwargs):
        if kwargs.get("with_pool") or kwargs.get("with_nsp"):
            raise KerasformerError("RoFormer-v2 has no pooler or NSP head; use with_mlm, or build "
                                   "your own head on the sequence output")
        super().__init__(layer_norm_eps=layer_norm_eps, **kwargs)

    def norm(self, x, name, decoding=None):
        return self.apply_norm(x, name, decoding, center=False, scale=False, rms=True)

    def apply_embeddings(self, inputs, decoding=None):
        x = self.apply_token_segment_embeddings(*inputs, decoding)
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        x = self.norm(x, "Embedding-Norm", decoding)
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size, use_bias=False,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    def apply_final_layers(self, inputs, decoding=None, logits=False):
        sequence = inputs
        if not self.with_mlm:
            return sequence
        x = sequence
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.embedding_size, use_bias=False,
                           kernel_initializer=self.initializer, name="Output-Mapping")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Output-MLM-Dropout")
        x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        if logits:
            return x
        activation = "softmax" if self.with_mlm is True else self.with_mlm
        x = self.apply(x, keras.layers.Activation, activation=activation, name="Output-MLM-Activation")
        return [sequence, x] if self.with_sequence_output else x

    # --------------------------------------------------------------- the weights
    def table(self):
        """v1's names without beta / gamma / bias (bert4keras filters them the same way).
        ``Output-Mapping`` has no name in Zhuiyi's checkpoints (their embedding size equals
        the hidden size), so a model with one loads only with ``ignore_invalid_weights``."""
        return [r for r in super().table() if not r[1].endswith(("/beta", "/gamma", "/bias", "output_bias"))]

    def check_family(self, names, naming):
        """v1 / BERT / NEZHA checkpoints have LayerNorm weights and biases; v2 has none, so
        they would load here silently with half their weights dropped."""
        super().check_family(names, naming)
        if self.ignore_invalid_weights:
            return
        extra = [n for n in names if "LayerNorm" in n or re.search(r"(/|\.)bias$", n)]
        if extra:
            raise FamilyMismatchError(
                f"the checkpoint holds LayerNorm / bias weights ({extra[0]}), which RoFormer-v2 "
                "does not have: it looks like a RoFormer v1 (model='roformer'), NEZHA or BERT "
                "checkpoint (or pass ignore_invalid_weights=True to load it anyway)")
