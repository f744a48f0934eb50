"""NEZHA (Huawei, Wei et al. 2019): BERT with functional relative positions.

NEZHA is BERT's network through BERT's hooks: no absolute positions
(``absolute_positions = False``), and every block's attention adds fixed sinusoidal
relative embeddings to keys and values (``compute_position_bias``, ``attention_options``);
inputs, heads and weight names are BERT's.

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
from kerasformer.errors import KerasformerError
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
    absolute_positions = False
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
        return {"position_bias_type": "typical_relative"}

    # --------------------------------------------------------------- the weights
    hf_renames = (("bert.", "nezha."),)
