"""BERT and RoBERTa (Google's BERT, the Chinese RoBERTa-wwm releases, HF RoBERTa).

Reads top to bottom: inputs -> embeddings -> N post-LN blocks -> pooler / NSP / MLM
heads, then the weight names. Layer names follow bert4keras ('Embedding-Token',
'Transformer-3-FeedForward-Norm', 'MLM-Bias', ...), so code that fetches layers by
name keeps working.
"""
import keras
from keras import ops

from kerasformer.layers import (BiasAdd, Embedding, FeedForward, MultiHeadAttention,
                                PositionEmbedding, TakeToken, get_activation)
from kerasformer.errors import FamilyMismatchError
from kerasformer.layers.masking import Add
from kerasformer.checkpoints.weights import WeightSource, renamed, row
from kerasformer.models.transformer import Transformer


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

    def apply_token_segment_embeddings(self, token_ids, segment_ids, decoding=None):
        """Token embedding plus segment embedding (when there are segments); also builds
        the attention mask, once, from the same ids (a cached pass brings its own)."""
        if decoding is None:
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

    def apply_embeddings(self, inputs, decoding=None):
        token_ids, segment_ids = inputs
        x = self.apply_token_segment_embeddings(token_ids, segment_ids, decoding)
        if self.absolute_positions:
            if decoding is not None:  # positions of the new tokens
                arguments = {"decoding": decoding}
            else:
                position_ids = self.position_ids(token_ids)
                arguments = None if position_ids is None else {"position_ids": position_ids}
            x = self.apply(x, PositionEmbedding, arguments=arguments,
                           input_dim=self.max_position, output_dim=self.embedding_size,
                           offset=self.position_offset, embeddings_initializer=self.initializer,
                           name="Embedding-Position")
        if self.embedding_norm:
            x = self.apply_norm(x, "Embedding-Norm", decoding)
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

    def compute_position_bias(self, inputs, decoding=None):
        """The position tensor every block's attention reads (``position_bias``), built once
        per forward pass (in a cached pass: the new tokens' rows); None: BERT's positions
        are in the embeddings."""
        return None

    def attention_options(self):
        """Constructor options of every attention layer (NEZHA / RoFormer: the position kind)."""
        return {}

    def norm(self, x, name, decoding=None):
        """The post-LN normalisation of the blocks (RoFormer-v2 makes it scale-free)."""
        return self.apply_norm(x, name, decoding)

    def block_names(self, index):
        """(attention, feed-forward) layer names of block ``index`` (ALBERT returns the
        same names for every index: that is what shares one block across depth)."""
        return f"Transformer-{index}-MultiHeadSelfAttention", f"Transformer-{index}-FeedForward"

    def apply_main_layers(self, inputs, index, decoding=None):
        """One post-LN block: x = LN(x + Attn(x, positions)); x = LN(x + FFN(x))."""
        attention, feed_forward = self.block_names(index)
        x = inputs
        arguments = {"attention_mask": self.block_attention_mask(decoding)}
        position_bias = self.compute_position_bias(x, decoding)
        if position_bias is not None:
            arguments["position_bias"] = position_bias
        h = self.apply_cached(x, MultiHeadAttention, decoding, f"self-{index}", arguments=arguments,
                              heads=self.num_attention_heads, head_size=self.attention_head_size,
                              out_dim=self.hidden_size, key_size=self.attention_key_size,
                              attention_dropout=self.attention_dropout_rate, use_bias=self.use_bias,
                              kernel_initializer=self.initializer, name=attention,
                              **self.attention_options())
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate, name=f"{attention}-Dropout")
        x = self.apply([x, h], Add, name=f"{attention}-Add")
        x = self.norm(x, f"{attention}-Norm", decoding)
        h = self.apply(x, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
                       use_bias=self.use_bias, kernel_initializer=self.initializer, name=feed_forward)
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate, name=f"{feed_forward}-Dropout")
        x = self.apply([x, h], Add, name=f"{feed_forward}-Add")
        return self.norm(x, f"{feed_forward}-Norm", decoding)

    def apply_final_layers(self, inputs, decoding=None, logits=False):
        sequence = inputs
        outputs = []
        if self.with_pool and not logits:
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
            x = self.apply_norm(x, "MLM-Norm", decoding)
            # the output projection is the token embedding, transposed (tied weights)
            x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
            x = self.apply(x, BiasAdd, name="MLM-Bias")
            if logits:
                return x
            activation = "softmax" if self.with_mlm is True else self.with_mlm
            x = self.apply(x, keras.layers.Activation, activation=activation, name="MLM-Activation")
            outputs.append(x)
        if not outputs:
            return sequence
        if self.with_sequence_output:
            outputs.insert(0, sequence)
        return outputs[0] if len(outputs) == 1 else outputs

    # --------------------------------------------------------------- the weights
    # (variable, Google name, Hugging Face name); block rows are relative to the block's
    # layers ({att}, {ffn}) and to ``block_scopes``.
    TOP = [
        ("Embedding-Token/embeddings", "bert/embeddings/word_embeddings", "bert.embeddings.word_embeddings.weight"),
        ("Embedding-Segment/embeddings", "bert/embeddings/token_type_embeddings",
         "bert.embeddings.token_type_embeddings.weight"),
        ("Embedding-Position/embeddings", "bert/embeddings/position_embeddings",
         "bert.embeddings.position_embeddings.weight"),
        ("Embedding-Norm/gamma", "bert/embeddings/LayerNorm/gamma", "bert.embeddings.LayerNorm.weight"),
        ("Embedding-Norm/beta", "bert/embeddings/LayerNorm/beta", "bert.embeddings.LayerNorm.bias"),
        ("Embedding-Mapping/kernel", "bert/encoder/embedding_hidden_mapping_in/kernel",
         "bert.encoder.embedding_hidden_mapping_in.weight"),
        ("Embedding-Mapping/bias", "bert/encoder/embedding_hidden_mapping_in/bias",
         "bert.encoder.embedding_hidden_mapping_in.bias"),
        ("Pooler-Dense/kernel", "bert/pooler/dense/kernel", "bert.pooler.dense.weight"),
        ("Pooler-Dense/bias", "bert/pooler/dense/bias", "bert.pooler.dense.bias"),
        # stored [2, hidden] in both Google and HF files
        ("NSP-Proba/kernel", "cls/seq_relationship/output_weights", "cls.seq_relationship.weight"),
        ("NSP-Proba/bias", "cls/seq_relationship/output_bias", "cls.seq_relationship.bias"),
        ("MLM-Dense/kernel", "cls/predictions/transform/dense/kernel", "cls.predictions.transform.dense.weight"),
        ("MLM-Dense/bias", "cls/predictions/transform/dense/bias", "cls.predictions.transform.dense.bias"),
        ("MLM-Norm/gamma", "cls/predictions/transform/LayerNorm/gamma",
         "cls.predictions.transform.LayerNorm.weight"),
        ("MLM-Norm/beta", "cls/predictions/transform/LayerNorm/beta", "cls.predictions.transform.LayerNorm.bias"),
        ("MLM-Bias/bias", "cls/predictions/output_bias", "cls.predictions.bias"),
    ]
    BLOCK = [
        *[(f"{{att}}/{ours}_dense/{leaf}", f"attention/self/{theirs}/{leaf}",
           f"attention.self.{theirs}.{'weight' if leaf == 'kernel' else 'bias'}")
          for ours, theirs in [("q", "query"), ("k", "key"), ("v", "value")] for leaf in ("kernel", "bias")],
        ("{att}/o_dense/kernel", "attention/output/dense/kernel", "attention.output.dense.weight"),
        ("{att}/o_dense/bias", "attention/output/dense/bias", "attention.output.dense.bias"),
        ("{att}-Norm/gamma", "attention/output/LayerNorm/gamma", "attention.output.LayerNorm.weight"),
        ("{att}-Norm/beta", "attention/output/LayerNorm/beta", "attention.output.LayerNorm.bias"),
        ("{ffn}/i0_dense/kernel", "intermediate/dense/kernel", "intermediate.dense.weight"),
        ("{ffn}/i0_dense/bias", "intermediate/dense/bias", "intermediate.dense.bias"),
        ("{ffn}/o_dense/kernel", "output/dense/kernel", "output.dense.weight"),
        ("{ffn}/o_dense/bias", "output/dense/bias", "output.dense.bias"),
        ("{ffn}-Norm/gamma", "output/LayerNorm/gamma", "output.LayerNorm.weight"),
        ("{ffn}-Norm/beta", "output/LayerNorm/beta", "output.LayerNorm.bias"),
    ]
    # a family's names differ from BERT's by prefix: (BERT's prefix, the family's), first match
    google_renames = ()
    hf_renames = ()
    vocabulary_rows = ("Embedding-Token/embeddings", "MLM-Bias/bias")

    def block_scopes(self, index):
        """(Google scope, Hugging Face scope) of block ``index``'s names."""
        return f"bert/encoder/layer_{index}/", f"bert.encoder.layer.{index}."

    def table(self):
        """``[(variable, Google name, Hugging Face name)]``: ``TOP`` (less the position table
        where positions enter the attention), then ``BLOCK`` per block (a block shared
        across depth, ALBERT's, once)."""
        rows = [(self.prefix + path, google, hf) for path, google, hf in self.TOP
                if self.absolute_positions or path != "Embedding-Position/embeddings"]
        for i in range(self.num_hidden_layers):
            att, ffn = (self.prefix + name for name in self.block_names(i))
            google_scope, hf_scope = self.block_scopes(i)
            rows += [(path.format(att=att, ffn=ffn), google_scope + google, hf_scope + hf)
                     for path, google, hf in self.BLOCK]
        return list({path: (path, google, hf) for path, google, hf in rows}.values())

    def weight_rows(self):
        """Rows of ``table()`` with the family's renames; a Hugging Face kernel is stored
        ``[out, in]``, and a bare ``BertModel`` saves without its ``bert.`` scope."""
        rows = []
        for path, google, hf in self.table():
            google, hf = renamed(google, self.google_renames), renamed(hf, self.hf_renames)
            stored_transposed = google.endswith("/output_weights")
            rows.append(row(
                path, vocab_axis=0 if path[len(self.prefix):] in self.vocabulary_rows else None,
                google=WeightSource((google,), stored_transposed),
                hf=WeightSource(hf_candidates(hf, self.hf_prefix),
                                google.endswith("/kernel") or stored_transposed)))
        return rows

    def check_family(self, names, naming):
        """A family without a position table (NEZHA, RoFormer) would load a BERT-style
        checkpoint without complaint and compute nonsense: refuse one that has a table."""
        super().check_family(names, naming)
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


def hf_candidates(name, scope):
    """A Hugging Face name, then the same without the model's ``scope.`` (a bare model's
    file), then the pytorch-pretrained-bert era's ``LayerNorm.gamma`` / ``beta``; an MLM
    bias may also be found as the decoder's copy (files that saved only that)."""
    names = [name]
    if name.startswith(scope + "."):
        names.append(name[len(scope) + 1:])
    if name.endswith("predictions.bias"):
        names.append(name[: -len("bias")] + "decoder.bias")
    for n in list(names):
        if n.endswith("LayerNorm.weight"):
            names.append(n[: -len("weight")] + "gamma")
        elif n.endswith("LayerNorm.bias"):
            names.append(n[: -len("bias")] + "beta")
    return tuple(names)


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

    @property
    def hf_renames(self):
        if not self.hf_positions:  # the Chinese RoBERTa-wwm releases: BERT's names
            return ()
        return (("bert.", "roberta."), ("cls.predictions.transform.dense", "lm_head.dense"),
                ("cls.predictions.transform.LayerNorm", "lm_head.layer_norm"),
                ("cls.predictions.bias", "lm_head.bias"))
