"""NEZHA (Huawei, Wei et al. 2019): BERT with functional relative positions.

Reads top to bottom: inputs (BERT's) -> token + segment embeddings, no absolute positions
-> N post-LN blocks whose attention adds fixed sinusoidal relative embeddings to keys and
values -> BERT's pooler / NSP / MLM heads, then the weight names.

What differs from BERT, and why:

* there is no position embedding table: position enters only through the relative
  embeddings ``r_ij`` (a sinusoid of ``clip(j - i, -K, K) + K``, K = 64 as hard-coded in
  Huawei's release; see ``kerasformer.layers.positions``). They are functions, not
  weights, so nothing is loaded for them;
* attention scores are ``(q_i . k_j + q_i . r_ij) / sqrt(d)`` and the output is
  ``sum_j p_ij (v_j + r_ij)`` (bert4keras' ``p_bias='typical_relative'``).

Checkpoints: Huawei's TF release uses Google BERT's names without
``bert/embeddings/position_embeddings``; Hugging Face NEZHA files (transformers <= 4.40)
use ``nezha.*`` plus one ``relative_positions_encoding.positions_encoding`` buffer per
layer, which is derived, so it is skipped when loading.
"""
import keras

from kerasformer.errors import FamilyMismatchError, KerasformerError
from kerasformer.layers import FeedForward, MultiHeadAttention
from kerasformer.layers.masking import Add
from kerasformer.layers.positions import RelativePositionEmbedding
from kerasformer.models.bert import BERT


class NEZHA(BERT):
    """NEZHA with bert4keras' options (``with_pool``, ``with_nsp``, ``with_mlm``, ...;
    see :class:`~kerasformer.models.bert.BERT`).

    ``max_relative_position`` (K) defaults to Huawei's 64; Hugging Face NEZHA configs carry
    it as ``max_relative_position``. ``max_position`` is accepted for config compatibility
    but limits nothing: relative positions work at any length.
    """

    model_key = "nezha"
    hf_prefix = "nezha"
    position_bias_type = "typical_relative"
    use_bias = True  # RoFormer-v2 drops every bias
    # checkpoint tensors that are recomputed, never loaded (HF buffers of fixed sinusoids)
    derived_tensors = (r"relative_positions_encoding\.positions_encoding$",)

    def __init__(self, max_relative_position=None, use_relative_position=None, model_type=None,
                 **kwargs):
        if use_relative_position is False:
            raise KerasformerError("the config says use_relative_position=false: that network has "
                                   "absolute positions, i.e. it is BERT; pass model='bert'")
        if model_type is not None and model_type not in ("nezha", "bert"):
            raise KerasformerError(f"the config is for model_type {model_type!r}, not NEZHA; "
                                   f"pass model={model_type!r}")
        super().__init__(**kwargs)
        self.max_relative_position = 64 if max_relative_position is None else max_relative_position
        self.position_bias = None

    # --------------------------------------------------------------- the network
    def apply_embeddings(self, inputs, decoding=None):
        """Token (+ segment) embeddings, LayerNorm, dropout; no absolute positions."""
        x = self.apply_token_segment_embeddings(*inputs, decoding)
        x = self.apply_norm(x, "Embedding-Norm", decoding)
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size, use_bias=self.use_bias,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    def compute_position_bias(self, inputs, decoding=None):
        """The ``[L, L, head_size]`` relative embeddings, built once and shared by all
        blocks; in a cached pass, the new tokens' rows over the whole cache."""
        if decoding is not None:
            return self.apply(inputs, RelativePositionEmbedding, arguments={"decoding": decoding},
                              name="Embedding-Relative-Position")
        if self.position_bias is None:
            self.position_bias = self.apply(
                inputs, RelativePositionEmbedding, max_relative_position=self.max_relative_position,
                output_dim=self.attention_key_size, name="Embedding-Relative-Position")
        return self.position_bias

    def attention_options(self):
        """Constructor options of every attention layer beyond BERT's."""
        return {"position_bias_type": self.position_bias_type, "use_bias": self.use_bias}

    def norm(self, x, name, decoding=None):
        """The post-LN normalisation of the blocks (RoFormer-v2 makes it scale-free)."""
        return self.apply_norm(x, name, decoding)

    def apply_main_layers(self, inputs, index, decoding=None):
        """One post-LN block: x = LN(x + Attn(x, positions)); x = LN(x + FFN(x))."""
        attention = f"Transformer-{index}-MultiHeadSelfAttention"
        feed_forward = f"Transformer-{index}-FeedForward"
        x = inputs
        position_bias = self.compute_position_bias(x, decoding)
        arguments = {"attention_mask": self.block_attention_mask(decoding), "position_bias": position_bias}
        h = self.apply_cached(x, MultiHeadAttention, decoding, f"self-{index}", arguments=arguments,
                              heads=self.num_attention_heads, head_size=self.attention_head_size,
                              out_dim=self.hidden_size, key_size=self.attention_key_size,
                              attention_dropout=self.attention_dropout_rate,
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

    # --------------------------------------------------------------- the weights
    hf_renames = (("bert.", "nezha."),)

    def table(self):
        """BERT's names, less the absolute position table NEZHA does not have."""
        return [r for r in super().table() if r[0] != f"{self.prefix}Embedding-Position/embeddings"]

    def check_family(self, names, naming):
        """A checkpoint with an absolute position table is BERT (or RoBERTa, ...), whose
        weights would otherwise load here without complaint and compute nonsense."""
        if self.ignore_invalid_weights:
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
