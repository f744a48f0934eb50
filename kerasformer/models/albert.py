"""ALBERT (Lan et al., 2019): BERT with a factorised embedding and one block shared
across depth; and ALBERT_Unshared, the same weights copied into independent blocks.

Reads top to bottom: the embeddings (BERT's, narrower, then 'Embedding-Mapping' up to
``hidden_size``), the shared block, then the weight names for Google's ALBERT
checkpoints and Hugging Face's ``AlbertForPreTraining`` / ``AlbertModel`` files.

Sharing is nothing more than applying the same layer names at every depth: the
base class's ``apply`` reuses a layer it has already built, so 'Transformer-
MultiHeadSelfAttention' (no index, as in bert4keras) is one set of weights called
``num_hidden_layers`` times.
"""
import re

import keras
import numpy as np

from kerasformer.errors import KerasformerError
from kerasformer.models.bert import BERT

# Where the single shared block lives in Google's checkpoints.
GOOGLE_BLOCK = "bert/encoder/transformer/group_0/inner_group_0/"
# ... and in Hugging Face's.
HF_BLOCK = "albert.encoder.albert_layer_groups.0.albert_layers.0."

# Google ALBERT name (after the prefix) -> Hugging Face name. Written out rather than
# derived: the two trees differ in more than punctuation (attention_1/output/dense is
# attention.dense, LayerNorm_1 is full_layer_layer_norm, the pooler has no '.dense').
_HF_NAMES = [
    (r"^bert/embeddings/(word|position|token_type)_embeddings$", r"albert.embeddings.\1_embeddings.weight"),
    (r"^bert/embeddings/LayerNorm/(gamma|beta)$", r"albert.embeddings.LayerNorm.\1"),
    (r"^bert/encoder/embedding_hidden_mapping_in/(kernel|bias)$",
     r"albert.encoder.embedding_hidden_mapping_in.\1"),
    (r"^" + GOOGLE_BLOCK + r"attention_1/self/(query|key|value)/(kernel|bias)$",
     HF_BLOCK + r"attention.\1.\2"),
    (r"^" + GOOGLE_BLOCK + r"attention_1/output/dense/(kernel|bias)$", HF_BLOCK + r"attention.dense.\1"),
    (r"^" + GOOGLE_BLOCK + r"LayerNorm/(gamma|beta)$", HF_BLOCK + r"attention.LayerNorm.\1"),
    (r"^" + GOOGLE_BLOCK + r"ffn_1/intermediate/dense/(kernel|bias)$", HF_BLOCK + r"ffn.\1"),
    (r"^" + GOOGLE_BLOCK + r"ffn_1/intermediate/output/dense/(kernel|bias)$", HF_BLOCK + r"ffn_output.\1"),
    (r"^" + GOOGLE_BLOCK + r"LayerNorm_1/(gamma|beta)$", HF_BLOCK + r"full_layer_layer_norm.\1"),
    (r"^bert/pooler/dense/(kernel|bias)$", r"albert.pooler.\1"),
    (r"^cls/predictions/transform/dense/(kernel|bias)$", r"predictions.dense.\1"),
    (r"^cls/predictions/transform/LayerNorm/(gamma|beta)$", r"predictions.LayerNorm.\1"),
    (r"^cls/predictions/output_bias$", r"predictions.bias"),
    (r"^cls/seq_relationship/output_weights$", r"sop_classifier.classifier.weight"),
    (r"^cls/seq_relationship/output_bias$", r"sop_classifier.classifier.bias"),
]
_HF_LEAVES = {"kernel": "weight", "gamma": "weight", "beta": "bias"}


def albert_hf_name(google_name):
    """The Hugging Face name of a Google ALBERT variable (None if it has none)."""
    for pattern, replacement in _HF_NAMES:
        if re.match(pattern, google_name):
            name = re.sub(pattern, replacement, google_name)
            head, _, leaf = name.rpartition(".")
            return f"{head}.{_HF_LEAVES.get(leaf, leaf)}"
    return None


class ALBERT(BERT):
    """ALBERT with cross-layer sharing, as bert4keras builds it.

    Same options and outputs as :class:`~kerasformer.models.bert.BERT` (``with_pool``,
    ``with_nsp`` -- here ALBERT's sentence-order head, ``with_mlm``,
    ``with_sequence_output``). Only the released layout is supported: one hidden group
    of one inner layer (``num_hidden_groups = inner_group_num = 1``), which is what
    every Google and Hugging Face ALBERT uses.

    ``hidden_act='gelu'`` from a Google ``albert_config.json`` means the tanh
    approximation, as in Google's code; from a Hugging Face config (``model_type:
    albert``) it means exact GELU, as in Hugging Face's.
    """

    model_key = "albert"
    hf_prefix = "albert"

    def __init__(self, num_hidden_groups=1, inner_group_num=1, model_type=None, hidden_act="gelu",
                 **kwargs):
        if model_type != "albert" and hidden_act == "gelu":
            # In Google's ALBERT code (google-research/albert modeling.py) "gelu" is the tanh
            # approximation, and the released weights were trained with it; Hugging Face's
            # converted configs say "gelu_new" for that reason. Their own "gelu" is exact.
            hidden_act = "gelu_tanh"
        super().__init__(hidden_act=hidden_act, **kwargs)
        if num_hidden_groups != 1 or inner_group_num != 1:
            raise KerasformerError(
                f"ALBERT with num_hidden_groups={num_hidden_groups} and inner_group_num="
                f"{inner_group_num} is not supported: only the released layout (1 and 1) is")
        # Google's ALBERT projects the embeddings only when embedding_size != hidden_size;
        # Hugging Face's AlbertTransformer always applies embedding_hidden_mapping_in, so a
        # HF config (model_type 'albert') needs the projection even when the sizes agree.
        self.always_map_embeddings = model_type == "albert"

    # --------------------------------------------------------------- the network
    def apply_embeddings(self, inputs):
        x = super().apply_embeddings(inputs)  # adds 'Embedding-Mapping' when sizes differ
        if self.always_map_embeddings and self.embedding_size == self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    def block_names(self, index):
        """(attention, feed-forward) layer names of block ``index``: the same for every
        index, which is what makes the blocks one."""
        return "Transformer-MultiHeadSelfAttention", "Transformer-FeedForward"

    # --------------------------------------------------------------- the weights
    def block_mapping(self, attention, feed_forward):
        """Variable paths of one block -> Google ALBERT names (the shared block's)."""
        p, g = self.prefix, GOOGLE_BLOCK
        mapping = {}
        for ours, theirs in [("q_dense", "query"), ("k_dense", "key"), ("v_dense", "value")]:
            mapping[f"{p}{attention}/{ours}/kernel"] = f"{g}attention_1/self/{theirs}/kernel"
            mapping[f"{p}{attention}/{ours}/bias"] = f"{g}attention_1/self/{theirs}/bias"
        mapping[f"{p}{attention}/o_dense/kernel"] = f"{g}attention_1/output/dense/kernel"
        mapping[f"{p}{attention}/o_dense/bias"] = f"{g}attention_1/output/dense/bias"
        mapping[f"{p}{attention}-Norm/gamma"] = f"{g}LayerNorm/gamma"
        mapping[f"{p}{attention}-Norm/beta"] = f"{g}LayerNorm/beta"
        mapping[f"{p}{feed_forward}/i0_dense/kernel"] = f"{g}ffn_1/intermediate/dense/kernel"
        mapping[f"{p}{feed_forward}/i0_dense/bias"] = f"{g}ffn_1/intermediate/dense/bias"
        mapping[f"{p}{feed_forward}/o_dense/kernel"] = f"{g}ffn_1/intermediate/output/dense/kernel"
        mapping[f"{p}{feed_forward}/o_dense/bias"] = f"{g}ffn_1/intermediate/output/dense/bias"
        mapping[f"{p}{feed_forward}-Norm/gamma"] = f"{g}LayerNorm_1/gamma"
        mapping[f"{p}{feed_forward}-Norm/beta"] = f"{g}LayerNorm_1/beta"
        return mapping

    def variable_mapping(self):
        """Model variable path -> Google ALBERT checkpoint name."""
        # BERT's embedding / pooler / SOP / MLM names are ALBERT's too (the SOP head
        # reuses cls/seq_relationship); its per-layer names are replaced by the block's.
        mapping = {path: name for path, name in super().variable_mapping().items()
                   if not name.startswith("bert/encoder/layer_")}
        for index in range(self.num_hidden_layers):
            mapping.update(self.block_mapping(*self.block_names(index)))
        return mapping

    def hf_names(self, google_name):
        name = albert_hf_name(google_name)
        if name is None:
            raise KerasformerError(f"no Hugging Face name for ALBERT variable {google_name!r}")
        candidates = [name]
        if name.startswith("albert."):  # a bare AlbertModel saves without the prefix
            candidates.append(name[len("albert."):])
        if name == "predictions.bias":  # or the decoder's copy, where only that was saved
            candidates.append("predictions.decoder.bias")
        transpose = google_name.endswith("/kernel") or google_name in self.stored_transposed
        return tuple(candidates), transpose


class ALBERT_Unshared(ALBERT):
    """ALBERT's weights copied into ``num_hidden_layers`` independent blocks named like
    BERT's ('Transformer-3-FeedForward', ...), so that fine-tuning may let them drift
    apart (bert4keras' ``ALBERT_Unshared``). Loads the same checkpoints as ALBERT: every
    block reads the one shared block.
    """

    model_key = "albert_unshared"

    def block_names(self, index):
        return f"Transformer-{index}-MultiHeadSelfAttention", f"Transformer-{index}-FeedForward"

    def export_tensors(self, naming="google"):
        """The shared names hold one block; refuse to write blocks that no longer agree
        rather than silently keeping only the last one."""
        sources = self.checkpoint_sources(naming)
        values = {}
        for path, variable in self.model_variables().items():
            name = sources[path].name
            value = keras.ops.convert_to_numpy(variable)
            if name in values and not np.array_equal(values[name][1], value):
                raise KerasformerError(
                    f"cannot save as an ALBERT checkpoint: {values[name][0]} and {path} both map "
                    f"to {name!r} but hold different values (the unshared blocks have diverged)")
            values.setdefault(name, (path, value))
        return super().export_tensors(naming)
