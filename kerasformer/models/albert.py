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
import keras

from kerasformer.errors import KerasformerError
from kerasformer.models.bert import BERT

# Where the single shared block lives in Google's checkpoints, and in Hugging Face's.
GOOGLE_BLOCK = "bert/encoder/transformer/group_0/inner_group_0/"
HF_BLOCK = "albert.encoder.albert_layer_groups.0.albert_layers.0."

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
    def apply_embeddings(self, inputs, decoding=None):
        x = super().apply_embeddings(inputs, decoding)  # adds 'Embedding-Mapping' when sizes differ
        if self.always_map_embeddings and self.embedding_size == self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    def block_names(self, index):
        """(attention, feed-forward) layer names of block ``index``: the same for every
        index, which is what makes the blocks one."""
        return "Transformer-MultiHeadSelfAttention", "Transformer-FeedForward"

    # --------------------------------------------------------------- the weights
    # The shared block: (variable, Google name, Hugging Face name) relative to the
    # scopes above. Written out: the two trees differ in more than punctuation (attention_1/output/
    # dense is attention.dense, LayerNorm_1 is full_layer_layer_norm).
    BLOCK = [
        *[(f"{{att}}/{ours}_dense/{leaf}", f"attention_1/self/{theirs}/{leaf}",
           f"attention.{theirs}.{'weight' if leaf == 'kernel' else 'bias'}")
          for ours, theirs in [("q", "query"), ("k", "key"), ("v", "value")] for leaf in ("kernel", "bias")],
        ("{att}/o_dense/kernel", "attention_1/output/dense/kernel", "attention.dense.weight"),
        ("{att}/o_dense/bias", "attention_1/output/dense/bias", "attention.dense.bias"),
        ("{att}-Norm/gamma", "LayerNorm/gamma", "attention.LayerNorm.weight"),
        ("{att}-Norm/beta", "LayerNorm/beta", "attention.LayerNorm.bias"),
        ("{ffn}/i0_dense/kernel", "ffn_1/intermediate/dense/kernel", "ffn.weight"),
        ("{ffn}/i0_dense/bias", "ffn_1/intermediate/dense/bias", "ffn.bias"),
        ("{ffn}/o_dense/kernel", "ffn_1/intermediate/output/dense/kernel", "ffn_output.weight"),
        ("{ffn}/o_dense/bias", "ffn_1/intermediate/output/dense/bias", "ffn_output.bias"),
        ("{ffn}-Norm/gamma", "LayerNorm_1/gamma", "full_layer_layer_norm.weight"),
        ("{ffn}-Norm/beta", "LayerNorm_1/beta", "full_layer_layer_norm.bias"),
    ]
    # BERT's embedding / pooler / SOP / MLM rows are ALBERT's, with these HF names (the SOP
    # head reuses cls/seq_relationship; the pooler has no '.dense')
    hf_renames = (("bert.pooler.dense.", "albert.pooler."), ("bert.", "albert."),
                  ("cls.predictions.transform.", "predictions."),
                  ("cls.predictions.bias", "predictions.bias"),
                  ("cls.seq_relationship.", "sop_classifier.classifier."))

    def block_scopes(self, index):
        """Every block reads the one shared block (ALBERT_Unshared's blocks are distinct
        variables named alike)."""
        return GOOGLE_BLOCK, HF_BLOCK


class ALBERT_Unshared(ALBERT):
    """ALBERT's weights copied into ``num_hidden_layers`` independent blocks named like
    BERT's ('Transformer-3-FeedForward', ...), so that fine-tuning may let them drift
    apart (bert4keras' ``ALBERT_Unshared``). Loads the same checkpoints as ALBERT: every
    block reads the one shared block.
    """

    model_key = "albert_unshared"

    def block_names(self, index):
        return f"Transformer-{index}-MultiHeadSelfAttention", f"Transformer-{index}-FeedForward"
