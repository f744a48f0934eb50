"""BERT and RoBERTa (Google's BERT, the Chinese RoBERTa-wwm releases, HF RoBERTa).

Reads top to bottom: inputs -> embeddings -> N post-LN blocks -> pooler / NSP / MLM
heads, then the weight names. Layer names follow bert4keras ('Embedding-Token',
'Transformer-3-FeedForward-Norm', 'MLM-Bias', ...), so code that fetches layers by
name keeps working.
"""
import os
import re

import keras
from keras import ops

from kerasformer.checkpoints.weights import TensorsWithout
from kerasformer.errors import FamilyMismatchError
from kerasformer.layers import (BiasAdd, Embedding, FeedForward, MultiHeadAttention,
                                PositionEmbedding, TakeToken, get_activation)
from kerasformer.layers.masking import Add
from kerasformer.models.transformer import Transformer, WeightSource


class BERT(Transformer):
    """BERT (Devlin et al., 2018) with bert4keras' options.

    Outputs, as in bert4keras: the sequence output alone when no head is asked for;
    otherwise the heads only: ``with_pool`` (the tanh pooler, or NSP probabilities
    with ``with_nsp``) and ``with_mlm`` (probabilities, or ``with_mlm='linear'`` for
    logits), in that order. ``with_sequence_output=True`` puts the sequence output
    first as well.
    """

    model_key = "bert"
    hf_prefix = "bert"

    def __init__(self, max_position=512, segment_vocab_size=2, with_pool=False, with_nsp=False,
                 with_mlm=False, with_sequence_output=False, **kwargs):
        super().__init__(**kwargs)
        self.max_position = max_position
        self.segment_vocab_size = segment_vocab_size
        self.with_pool = with_pool or with_nsp
        self.with_nsp = with_nsp
        # bert4keras: a language model or UniLM is trained through its MLM head, so the
        # head comes with the application (with_mlm='linear' keeps logits)
        self.with_mlm = (with_mlm or True) if self.application in ("lm", "unilm") else with_mlm
        self.with_sequence_output = with_sequence_output

    # --------------------------------------------------------------- the network
    def get_inputs(self):
        token_ids = keras.Input(shape=(self.sequence_length,), dtype="int32", name="Input-Token")
        segment_ids = keras.Input(shape=(self.sequence_length,), dtype="int32", name="Input-Segment")
        return [token_ids, segment_ids]

    def position_ids(self, token_ids):
        """Explicit position ids, or None for 0, 1, 2, ... (RoBERTa overrides)."""
        return None

    def apply_token_segment_embeddings(self, token_ids, segment_ids):
        """Token embedding plus segment embedding (when there are segments); also builds
        the attention mask, once, from the same ids."""
        self.compute_attention_mask(token_ids, segment_ids)
        x = self.apply(token_ids, Embedding, input_dim=self.vocab_size,
                       output_dim=self.embedding_size, mask_id=self.mask_id,
                       embeddings_initializer=self.initializer, name="Embedding-Token")
        if self.segment_vocab_size > 0:
            s = self.apply(segment_ids, keras.layers.Embedding, input_dim=self.segment_vocab_size,
                           output_dim=self.embedding_size,
                           embeddings_initializer=self.initializer, name="Embedding-Segment")
            x = self.apply([x, s], Add, name="Embedding-Token-Segment")
        return x

    def apply_embeddings(self, inputs):
        token_ids, segment_ids = inputs
        x = self.apply_token_segment_embeddings(token_ids, segment_ids)
        if self.absolute_positions:
            position_ids = self.position_ids(token_ids)
            x = self.apply(x, PositionEmbedding,
                           arguments=None if position_ids is None else {"position_ids": position_ids},
                           input_dim=self.max_position, output_dim=self.embedding_size,
                           offset=self.position_offset, embeddings_initializer=self.initializer,
                           name="Embedding-Position")
        if self.embedding_norm:
            x = self.apply_norm(x, "Embedding-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size, use_bias=self.use_bias,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    # Hooks of the descendants (bert4keras' BERT has the same): what differs between BERT,
    # NEZHA and RoFormer is where positions enter, not the block.
    position_offset = 0
    embedding_norm = True  # GPT sums its embeddings without normalising them
    absolute_positions = True  # NEZHA / RoFormer: no position table, positions enter the attention
    use_bias = True  # RoFormer-v2 drops every bias
    position_bias = None  # the per-forward-pass tensor compute_position_bias memoises

    def compute_position_bias(self, inputs):
        """The position tensor every block's attention reads (``position_bias``), built once
        per forward pass; None: BERT's positions are in the embeddings."""
        return None

    def attention_options(self):
        """Constructor options of every attention layer (NEZHA / RoFormer: the position kind)."""
        return {}

    def norm(self, x, name):
        """The post-LN normalisation of the blocks (RoFormer-v2 makes it scale-free)."""
        return self.apply_norm(x, name)

    def block_names(self, index):
        """(attention, feed-forward) layer names of block ``index`` (ALBERT returns the
        same names for every index: that is what shares one block across depth)."""
        return f"Transformer-{index}-MultiHeadSelfAttention", f"Transformer-{index}-FeedForward"

    def apply_main_layers(self, inputs, index):
        """One post-LN block: x = LN(x + Attn(x, positions)); x = LN(x + FFN(x))."""
        attention, feed_forward = self.block_names(index)
        x = inputs
        arguments = {"attention_mask": self.attention_mask}
        position_bias = self.compute_position_bias(x)
        if position_bias is not None:
            arguments["position_bias"] = position_bias
        h = self.apply(x, MultiHeadAttention, arguments=arguments,
                       heads=self.num_attention_heads, head_size=self.attention_head_size,
                       out_dim=self.hidden_size, key_size=self.attention_key_size, attention_dropout=self.attention_dropout_rate,
                       use_bias=self.use_bias, kernel_initializer=self.initializer, name=attention,
                       **self.attention_options())
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate, name=f"{attention}-Dropout")
        x = self.apply([x, h], Add, name=f"{attention}-Add")
        x = self.norm(x, f"{attention}-Norm")
        h = self.apply(x, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
                       use_bias=self.use_bias, kernel_initializer=self.initializer, name=feed_forward)
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate, name=f"{feed_forward}-Dropout")
        x = self.apply([x, h], Add, name=f"{feed_forward}-Add")
        return self.norm(x, f"{feed_forward}-Norm")

    def apply_final_layers(self, inputs):
        sequence = inputs
        outputs = []
        if self.with_pool:
            x = self.apply(sequence, TakeToken, index=0, name="Pooler")
            activation = "tanh" if self.with_pool is True else self.with_pool
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size, activation=activation,
                           kernel_initializer=self.initializer, name="Pooler-Dense")
            if self.with_nsp:
                x = self.apply(x, keras.layers.Dense, units=2, activation="softmax",
                               kernel_initializer=self.initializer, name="NSP-Proba")
            outputs.append(x)
        if self.with_mlm:
            x = self.apply(sequence, keras.layers.Dense, units=self.embedding_size,
                           activation=get_activation(self.hidden_act),
                           kernel_initializer=self.initializer, name="MLM-Dense")
            x = self.apply_norm(x, "MLM-Norm")
            # the output projection is the token embedding, transposed (tied weights)
            x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
            x = self.apply(x, BiasAdd, name="MLM-Bias")
            activation = "softmax" if self.with_mlm is True else self.with_mlm
            x = self.apply(x, keras.layers.Activation, activation=activation, name="MLM-Activation")
            outputs.append(x)
        if not outputs:
            return sequence
        if self.with_sequence_output:
            outputs.insert(0, sequence)
        return outputs[0] if len(outputs) == 1 else outputs

    # --------------------------------------------------------------- the weights
    def variable_mapping(self):
        """Model variable path -> Google BERT checkpoint name."""
        p = self.prefix
        mapping = {
            f"{p}Embedding-Token/embeddings": "bert/embeddings/word_embeddings",
            f"{p}Embedding-Segment/embeddings": "bert/embeddings/token_type_embeddings",
            f"{p}Embedding-Position/embeddings": "bert/embeddings/position_embeddings",
            f"{p}Embedding-Norm/gamma": "bert/embeddings/LayerNorm/gamma",
            f"{p}Embedding-Norm/beta": "bert/embeddings/LayerNorm/beta",
            f"{p}Embedding-Mapping/kernel": "bert/encoder/embedding_hidden_mapping_in/kernel",
            f"{p}Embedding-Mapping/bias": "bert/encoder/embedding_hidden_mapping_in/bias",
            f"{p}Pooler-Dense/kernel": "bert/pooler/dense/kernel",
            f"{p}Pooler-Dense/bias": "bert/pooler/dense/bias",
            f"{p}NSP-Proba/kernel": "cls/seq_relationship/output_weights",
            f"{p}NSP-Proba/bias": "cls/seq_relationship/output_bias",
            f"{p}MLM-Dense/kernel": "cls/predictions/transform/dense/kernel",
            f"{p}MLM-Dense/bias": "cls/predictions/transform/dense/bias",
            f"{p}MLM-Norm/gamma": "cls/predictions/transform/LayerNorm/gamma",
            f"{p}MLM-Norm/beta": "cls/predictions/transform/LayerNorm/beta",
            f"{p}MLM-Bias/bias": "cls/predictions/output_bias",
        }
        for i in range(self.num_hidden_layers):
            g = f"bert/encoder/layer_{i}/"
            attention = f"{p}Transformer-{i}-MultiHeadSelfAttention"
            feed_forward = f"{p}Transformer-{i}-FeedForward"
            for ours, theirs in [("q_dense", "query"), ("k_dense", "key"), ("v_dense", "value")]:
                mapping[f"{attention}/{ours}/kernel"] = f"{g}attention/self/{theirs}/kernel"
                mapping[f"{attention}/{ours}/bias"] = f"{g}attention/self/{theirs}/bias"
            mapping[f"{attention}/o_dense/kernel"] = f"{g}attention/output/dense/kernel"
            mapping[f"{attention}/o_dense/bias"] = f"{g}attention/output/dense/bias"
            mapping[f"{attention}-Norm/gamma"] = f"{g}attention/output/LayerNorm/gamma"
            mapping[f"{attention}-Norm/beta"] = f"{g}attention/output/LayerNorm/beta"
            mapping[f"{feed_forward}/i0_dense/kernel"] = f"{g}intermediate/dense/kernel"
            mapping[f"{feed_forward}/i0_dense/bias"] = f"{g}intermediate/dense/bias"
            mapping[f"{feed_forward}/o_dense/kernel"] = f"{g}output/dense/kernel"
            mapping[f"{feed_forward}/o_dense/bias"] = f"{g}output/dense/bias"
            mapping[f"{feed_forward}-Norm/gamma"] = f"{g}output/LayerNorm/gamma"
            mapping[f"{feed_forward}-Norm/beta"] = f"{g}output/LayerNorm/beta"
        if not self.absolute_positions:
            del mapping[f"{p}Embedding-Position/embeddings"]
        return mapping

    def vocabulary_variables(self):
        return [f"{self.prefix}Embedding-Token/embeddings", f"{self.prefix}MLM-Bias/bias"]

    # NSP weights are stored [2, hidden] in both Google and HF files
    stored_transposed = ("cls/seq_relationship/output_weights",)

    # Hugging Face names that do not follow the mechanical translation
    hf_special_names = {
        "cls/predictions/output_bias": "cls.predictions.bias",
        "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
        "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
    }

    def hf_names(self, google_name):
        """Hugging Face candidate names for a Google name (canonical first), and
        whether the HF tensor is transposed relative to ours."""
        if google_name in self.hf_special_names:
            name = self.hf_special_names[google_name]
        else:
            name = re.sub(r"layer_(\d+)", r"layer.\1", google_name).replace("/", ".")
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("kernel", "gamma"):
                name = name[: -len(leaf)] + "weight"
            elif leaf == "beta":
                name = name[: -len(leaf)] + "bias"
            elif leaf.endswith("_embeddings"):
                name += ".weight"
        name = self.rename_hf(name)
        candidates = [name]
        prefix = self.hf_prefix + "."
        if name.startswith(prefix):  # a bare BertModel/RobertaModel saves without the prefix
            candidates.append(name[len(prefix):])
        for n in list(candidates):  # pytorch-pretrained-bert era names
            if n.endswith("LayerNorm.weight"):
                candidates.append(n[: -len("weight")] + "gamma")
            elif n.endswith("LayerNorm.bias"):
                candidates.append(n[: -len("bias")] + "beta")
        transpose = google_name.endswith("/kernel") or google_name in self.stored_transposed
        return tuple(candidates), transpose

    def rename_hf(self, name):
        """Hook for families whose HF names differ from BERT's (see RoBERTa)."""
        return name

    # checkpoint tensors that are recomputed, never loaded (HF buffers of fixed sinusoids)
    derived_tensors = ()

    def load_weights_from_checkpoint(self, checkpoint):
        """As :meth:`Transformer.load_weights_from_checkpoint`, skipping the family's
        ``derived_tensors`` (they are listed in ``load_report.ignored``)."""
        if not self.derived_tensors:
            return super().load_weights_from_checkpoint(checkpoint)
        if isinstance(checkpoint, (str, os.PathLike)):
            from kerasformer.checkpoints.resolve import open_checkpoint

            checkpoint = open_checkpoint(os.fspath(checkpoint))
        view = TensorsWithout(checkpoint, lambda n: any(re.search(p, n) for p in self.derived_tensors))
        report = super().load_weights_from_checkpoint(view)
        report.ignored = sorted(report.ignored + view.hidden)
        return report

    def check_family(self, names, naming):
        """A family without a position table (NEZHA, RoFormer) would load a BERT-style
        checkpoint without complaint and compute nonsense: refuse one that has a table."""
        if self.ignore_invalid_weights or self.absolute_positions:
            return
        absolute = [n for n in names if n.endswith(("embeddings/position_embeddings",
                                                     "embeddings.position_embeddings.weight"))]
        if absolute:
            raise FamilyMismatchError(
                f"the checkpoint holds absolute position embeddings ({absolute[0]}), which "
                f"{type(self).__name__} does not have: it is a BERT-style checkpoint; pass "
                "model='bert' (or ignore_invalid_weights=True to load it anyway)")
        if self.use_bias:
            kernels = any(n.endswith(("attention/self/query/kernel", "attention.self.query.weight"))
                          for n in names)
            if kernels and not any("LayerNorm" in n for n in names):
                raise FamilyMismatchError(
                    "the checkpoint has attention kernels but no LayerNorm weights: it looks like a "
                    "RoFormer-v2 checkpoint; pass model='roformer_v2'")

    def checkpoint_sources(self, naming):
        sources = {}
        for path, google_name in self.variable_mapping().items():
            if naming == "google":
                sources[path] = WeightSource((google_name,), google_name in self.stored_transposed)
            else:
                names, transpose = self.hf_names(google_name)
                sources[path] = WeightSource(names, transpose)
        return sources


class PaddingAwarePositions(keras.layers.Layer):
    """Hugging Face RoBERTa's position ids: real tokens are numbered from
    ``pad_id + 1``; padding tokens all get ``pad_id``."""

    def __init__(self, pad_id=1, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def call(self, token_ids):
        real = ops.cast(ops.not_equal(token_ids, self.pad_id), "int32")
        return ops.cumsum(real, axis=1) * real + self.pad_id

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


keras.saving.register_keras_serializable(package="kerasformer")(PaddingAwarePositions)


class RoBERTa(BERT):
    """RoBERTa. With a Hugging Face RoBERTa config (``model_type: roberta``) positions
    are numbered from ``pad_token_id + 1`` and skip padding, and the weights use HF
    RoBERTa's names; the Chinese RoBERTa-wwm releases are BERT-format and load as BERT.
    """

    model_key = "roberta"
    hf_prefix = "roberta"

    def __init__(self, model_type=None, **kwargs):
        super().__init__(**kwargs)
        self.hf_positions = model_type == "roberta"
        if self.hf_positions:
            self.position_offset = self.pad_token_id + 1

    def position_ids(self, token_ids):
        if not self.hf_positions:
            return None
        return self.apply(token_ids, PaddingAwarePositions, pad_id=self.pad_token_id,
                          name="Embedding-Position-Ids")

    def rename_hf(self, name):
        if not self.hf_positions:
            return name
        name = re.sub(r"^bert\.", "roberta.", name)
        name = name.replace("cls.predictions.transform.dense", "lm_head.dense")
        name = name.replace("cls.predictions.transform.LayerNorm", "lm_head.layer_norm")
        return name.replace("cls.predictions.bias", "lm_head.bias")
