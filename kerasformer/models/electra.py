"""ELECTRA (Clark et al., 2020): a BERT encoder trained as a replaced-token detector.

The network is BERT's (embeddings of ``embedding_size``, projected up to
``hidden_size`` when they differ, then post-LN blocks); what changes is the heads and
the names. By default the model is the discriminator's encoder and returns its
sequence output, as in bert4keras. Heads:

* ``with_discriminator=True``: bert4keras' 'Discriminator-Dense' + 'Discriminator-
  Prediction', the probability (sigmoid; or another activation given as a string) that
  each token was replaced, shaped ``[batch, length, 1]``;
* ``with_mlm=True`` on a *generator* config: the generator's masked-LM head (dense,
  LayerNorm, tied token embedding, bias), as Hugging Face's ``ElectraForMaskedLM``.

A Google ELECTRA checkpoint holds both networks: the discriminator under ``electra/``,
the generator under ``generator/`` (sharing ``electra/embeddings``). ``with_mlm`` selects
the generator's names; Hugging Face keeps each network in its own file under
``electra.``.
"""
import keras

from kerasformer.errors import KerasformerError, WeightMismatchError
from kerasformer.layers import get_activation
from kerasformer.models.bert import BERT
from kerasformer.models.transformer import WeightSource


class ELECTRA(BERT):
    info_heads = ("with_discriminator", "with_mlm")  # what `kerasformer info` looks for

    """ELECTRA discriminator (default) or generator (``with_mlm``); see the module doc."""

    model_key = "electra"
    hf_prefix = "electra"

    def __init__(self, with_discriminator=False, with_mlm=False, with_pool=False, with_nsp=False,
                 **kwargs):
        if with_pool or with_nsp:
            raise KerasformerError(
                "ELECTRA checkpoints have no pooler or next-sentence head: take the first "
                "token of the sequence output instead of with_pool / with_nsp")
        if with_discriminator and with_mlm:
            raise KerasformerError(
                "with_discriminator and with_mlm belong to different networks (the "
                "discriminator and the smaller generator): build one model for each")
        super().__init__(with_mlm=with_mlm, **kwargs)
        self.with_discriminator = with_discriminator
        # the scope of the encoder's own weights in a Google checkpoint
        self.scope = "generator" if with_mlm else "electra"

    # --------------------------------------------------------------- the network
    def apply_final_layers(self, inputs, decoding=None, logits=False):
        if not self.with_discriminator:
            return super().apply_final_layers(inputs, decoding, logits)  # sequence output, or the generator MLM
        sequence = inputs
        x = self.apply(sequence, keras.layers.Dense, units=self.hidden_size,
                       activation=get_activation(self.hidden_act),
                       kernel_initializer=self.initializer, name="Discriminator-Dense")
        activation = "sigmoid" if self.with_discriminator is True else self.with_discriminator
        x = self.apply(x, keras.layers.Dense, units=1, activation=activation,
                       kernel_initializer=self.initializer, name="Discriminator-Prediction")
        return [sequence, x] if self.with_sequence_output else x

    # --------------------------------------------------------------- the weights
    def variable_mapping(self):
        """Model variable path -> Google ELECTRA checkpoint name."""
        renames = [  # BERT's name prefix -> ELECTRA's
            ("bert/embeddings/", "electra/embeddings/"),  # shared by both networks
            ("bert/encoder/embedding_hidden_mapping_in/", f"{self.scope}/embeddings_project/"),
            ("bert/encoder/", f"{self.scope}/encoder/"),
            ("cls/predictions/transform/", "generator_predictions/"),
            ("cls/predictions/output_bias", "generator_predictions/output_bias"),
        ]
        mapping = {}
        for path, name in super().variable_mapping().items():
            for old, new in renames:
                if name.startswith(old):
                    mapping[path] = new + name[len(old):]
                    break
            # BERT's pooler and NSP names have no ELECTRA counterpart and are dropped
        p = self.prefix
        mapping.update({
            f"{p}Discriminator-Dense/kernel": "discriminator_predictions/dense/kernel",
            f"{p}Discriminator-Dense/bias": "discriminator_predictions/dense/bias",
            f"{p}Discriminator-Prediction/kernel": "discriminator_predictions/dense_1/kernel",
            f"{p}Discriminator-Prediction/bias": "discriminator_predictions/dense_1/bias",
        })
        return mapping

    # Hugging Face names that do not follow BERT's mechanical translation
    hf_special_names = {
        "discriminator_predictions/dense_1/kernel": "discriminator_predictions.dense_prediction.weight",
        "discriminator_predictions/dense_1/bias": "discriminator_predictions.dense_prediction.bias",
        "generator_predictions/output_bias": "generator_lm_head.bias",
    }

    def checkpoint_sources(self, naming):
        sources = {}
        for path, name in self.variable_mapping().items():
            # Hugging Face files (and a Google-format file holding one network) name the
            # generator's encoder 'electra' too
            shared = "electra/" + name[len("generator/"):] if name.startswith("generator/") else None
            if naming == "google":
                sources[path] = WeightSource((name, shared) if shared else (name,))
            else:
                sources[path] = WeightSource(*self.hf_names(shared or name))
        return sources

    def check_family(self, names, naming):
        """Name a missing head in one sentence instead of listing its variables."""
        if self.ignore_invalid_weights:
            return
        names = list(names)
        heads = []
        if self.with_mlm:
            heads.append(("with_mlm", "generator_predictions", "the generator's MLM head"))
        if self.with_discriminator:
            heads.append(("with_discriminator", "discriminator_predictions", "the discriminator head"))
        for option, scope, what in heads:
            if not any(n.startswith(scope) for n in names):
                raise WeightMismatchError(
                    f"{option} asks for {what}, but the checkpoint holds no '{scope}' weights; "
                    f"drop {option} or pass ignore_invalid_weights=True")
