"""GAU-alpha (ZhuiyiTechnology; Su, 2022, https://kexue.fm/archives/9052): RoFormer-v2 with
every block one Gated Attention Unit.

Reads top to bottom: RoFormer-v2's embeddings (token + segment, dropout, scale-free norm)
-> N blocks ``x = norm(x + GAU(x))`` -> RoFormer-v2's MLM head (the tied token embedding),
then the weight names. bert4keras' ``GAU_alpha`` (a RoFormerV2 subclass) is the model.

The unit (``kerasformer.layers.compat.GatedAttentionUnit``, one head, no bias anywhere):
``u, v, z = split(swish(x W_i), [intermediate, intermediate, key_size])``, ``q = z * g_q``
and ``k = z * g_k`` (per-dimension scales), both rotated by RoPE; scores
``q k^T / sqrt(key_size)`` normalised by ``softmax_plus`` -- a softmax of the scores times
``log(n) / log(512)``, ``n`` the number of keys the query may see (at least 16), so the
sharpness does not depend on the length; output ``(u * (A v)) W_o``. The keys a query may
see: the real (non-padding) ones, and under ``application='lm'`` / ``'unilm'`` only those the
causal / UniLM mask allows -- bert4keras passes that mask as a boolean ``a_bias``, which
``attention_normalize`` combines with the padding mask before counting ``n``, so ``n`` is
per query (an LM's position i: its real keys up to i). That keeps the model causal, so the
unit's key/value cache decodes exactly as the full forward pass.

Checkpoints: Zhuiyi's TF release (written by bert4keras): ``bert/embeddings/*`` for the
token and segment tables, ``GAU_alpha/encoder/layer_<i>/gau/{i_dense,o_dense}/kernel`` and
``.../{q,k}_scaleoffset/gamma``. There is no Hugging Face format.
"""
import keras

from kerasformer.checkpoints.weights import row
from kerasformer.errors import FamilyMismatchError, KerasformerError
from kerasformer.layers.compat import GatedAttentionUnit
from kerasformer.layers.masking import Add
from kerasformer.models.roformer import RoFormerV2


class GAU_alpha(RoFormerV2):  # noqa: N801 - bert4keras' name
    """GAU-alpha with bert4keras' options: ``with_mlm`` (probabilities, or ``'linear'``
    for logits) and ``with_sequence_output``, as :class:`~kerasformer.models.roformer.RoFormerV2`.

    ``intermediate_size`` is the width of ``u`` and ``v``, ``attention_key_size`` that of
    ``q`` and ``k`` (128 in the release); ``hidden_act`` is the unit's activation (swish).
    ``application`` 'encoder', 'lm' or 'unilm' (bert4keras' ``LM_Mask`` / ``UniLM_Mask``
    mixins): the mask reaches the unit as bert4keras' boolean ``a_bias``, so softmax_plus'
    length counts the keys each query sees; the unit keeps a key/value cache for
    ``generate()``.
    """

    model_key = "gau_alpha"

    def __init__(self, hidden_act="swish", **kwargs):
        super().__init__(hidden_act=hidden_act, **kwargs)

    def apply_main_layers(self, inputs, index, decoding=None):
        """One block: x = norm(x + GAU(x, rotary positions)) (bert4keras: GAU -> Add -> LN).
        The family's attention mask (padding, and the LM / UniLM mask) goes to the unit, which
        in a cached pass reads and returns its cache under ``"self-<index>"``."""
        name = f"Transformer-{index}-GatedAttentionUnit"
        x = inputs
        arguments = {"p_bias": "rotary", "attention_mask": self.block_attention_mask(decoding)}
        h = self.apply_cached([x, self.compute_position_bias(x, decoding)], GatedAttentionUnit,
                              decoding, f"self-{index}", arguments=arguments,
                              units=self.intermediate_size, key_size=self.attention_key_size,
                              activation=self.hidden_act, use_bias=False, normalization="softmax_plus",
                              attention_dropout=self.attention_dropout_rate,
                              kernel_initializer=self.initializer, name=name)
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate, name=f"{name}-Dropout")
        x = self.apply([x, h], Add, name=f"{name}-Add")
        return self.norm(x, f"{name}-Norm", decoding)

    recompute_layers = (GatedAttentionUnit,)

    # --------------------------------------------------------------- the weights
    def weight_rows(self):
        """Names in Zhuiyi's GAU-alpha checkpoint (bert4keras' ``GAU_alpha.variable_mapping``),
        'google' (bert4keras) naming only: there is no Hugging Face GAU-alpha."""
        p = self.prefix
        rows = [row(f"{p}Embedding-Token/embeddings", vocab_axis=0, google="bert/embeddings/word_embeddings"),
                row(f"{p}Embedding-Segment/embeddings", google="bert/embeddings/token_type_embeddings")]
        if self.embedding_size != self.hidden_size:  # not in the release; RoFormer-v2's name
            rows.append(row(f"{p}Embedding-Mapping/kernel",
                            google="bert/encoder/embedding_hidden_mapping_in/kernel"))
        for i in range(self.num_hidden_layers):
            unit, scope = f"{p}Transformer-{i}-GatedAttentionUnit", f"GAU_alpha/encoder/layer_{i}/gau"
            rows += [row(f"{unit}/{weight}", google=f"{scope}/{weight}")
                     for weight in ("i_dense/kernel", "o_dense/kernel", "q_scaleoffset/gamma",
                                    "k_scaleoffset/gamma")]
        return rows

    def export_tensors(self, naming="google"):
        if naming != "google":
            raise KerasformerError("GAU-alpha checkpoints are bert4keras-format TF checkpoints "
                                   "(there is no Hugging Face GAU-alpha); save with format='tf'")
        return super().export_tensors(naming)

    def check_family(self, names, naming):
        """Say which it is when a RoFormer / BERT checkpoint is given (no GAU weights), rather
        than list every unit as missing."""
        super().check_family(names, naming)
        if not self.ignore_invalid_weights and not any(n.startswith("GAU_alpha/") for n in names):
            raise FamilyMismatchError("the checkpoint holds no GAU_alpha/encoder/* weights: it is "
                                      "not a GAU-alpha checkpoint (pass the model= of its family)")
