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
import dataclasses

import keras

from kerasformer.errors import KerasformerError, WeightMismatchError
from kerasformer.layers import get_activation
from kerasformer.models.bert import BERT


class ELECTRA(BERT):
    """ELECTRA discriminator (default) or generator (``with_mlm``); see the module doc."""

    info_heads = ("with_discriminator", "with_mlm")  # what `kerasformer info` looks for

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
    # Hugging Face keeps each network in its own file under 'electra.'
    hf_renames = (("bert.encoder.embedding_hidden_mapping_in.", "electra.embeddings_project."),
                  ("bert.", "electra."), ("cls.predictions.transform.", "generator_predictions."),
                  ("cls.predictions.bias", "generator_lm_head.bias"))
    HEAD = [
        ("Discriminator-Dense/kernel", "discriminator_predictions/dense/kernel",
         "discriminator_predictions.dense.weight"),
        ("Discriminator-Dense/bias", "discriminator_predictions/dense/bias", "discriminator_predictions.dense.bias"),
        ("Discriminator-Prediction/kernel", "discriminator_predictions/dense_1/kernel",
         "discriminator_predictions.dense_prediction.weight"),
        ("Discriminator-Prediction/bias", "discriminator_predictions/dense_1/bias",
         "discriminator_predictions.dense_prediction.bias"),
    ]

    @property
    def google_renames(self):
        """BERT's Google names -> ELECTRA's: the discriminator's encoder is under 'electra/',
        the generator's under 'generator/'; both share 'electra/embeddings'."""
        return (("bert/embeddings/", "electra/embeddings/"),
                ("bert/encoder/embedding_hidden_mapping_in/", f"{self.scope}/embeddings_project/"),
                ("bert/encoder/", f"{self.scope}/encoder/"),
                ("cls/predictions/transform/", "generator_predictions/"),
                ("cls/predictions/output_bias", "generator_predictions/output_bias"))

    def table(self):
        # BERT's pooler and NSP names have no ELECTRA counterpart
        return [r for r in super().table() if not r[1].startswith(("bert/pooler/", "cls/seq_relationship/"))] \
            + [(self.prefix + path, google, hf) for path, google, hf in self.HEAD]

    def weight_rows(self):
        # a Google-format file holding the generator alone names its encoder 'electra' too
        rows = super().weight_rows()
        for r in rows:
            google = r.sources["google"]
            if google.name.startswith("generator/"):
                r.sources["google"] = dataclasses.replace(
                    google, names=google.names + ("electra/" + google.name[len("generator/"):],))
        return rows

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
