"""T5 (t5.1.0) and T5 v1.1 / mT5 (t5.1.1): Google's encoder-decoder Transformer.

Reads top to bottom: the small layers T5 needs (relative position buckets, masks),
then the encoder (token ids -> encodings), the decoder (encodings + decoder token ids
-> next-token probabilities), the model joining both, and finally the weight names.

What differs from BERT, and why:

* pre-LN blocks with an RMS norm that only scales (``LayerNorm(rms=True, center=False)``),
  no biases anywhere, and attention scores that are *not* divided by sqrt(d_kv): the
  scale was folded into the initialisation when T5 was trained;
* no absolute positions: each attention adds a learned bias per (relative-position
  bucket, head). The table lives in the first block of each stack and is shared by all
  blocks, so it is one layer here ('Encoder-Embedding-Relative-Position',
  'Decoder-Embedding-Relative-Position'), applied once per stack. The encoder's buckets
  are bidirectional, the decoder's look only backwards; cross-attention has no bias;
* t5.1.0: ReLU feed-forward, output tied to the token embedding and scaled by
  d_model**-0.5; t5.1.1 / mT5: gated-GELU feed-forward (gelu_tanh(x W0) * (x W1)) and an
  untied, unscaled output layer 'Decoder-Output-LM'.

Outputs follow bert4keras' ``T5``: ``transformer.encoder`` maps ``[token_ids]`` to the
encodings (zero at padding), ``transformer.decoder`` maps ``[encodings, decoder_token_ids]``
to probabilities, and ``transformer.model`` joins both (``[encoder_token_ids,
decoder_token_ids]`` -> probabilities) for training. The decoder finds the encoder's
padding from the all-zero encodings, so it needs no extra mask input.

Two deliberate differences from bert4keras, both to match the released models (and
Hugging Face's T5, the reference in the tests): cross-attention gets no relative position
bias, and the t5.1.1 logits are not scaled by d_model**-0.5. The decoder's own tokens are
not padding-masked either: T5's decoder start token is id 0, the pad id, and causality
already keeps later padding from reaching earlier positions.
"""
import math

import keras
import numpy as np
from keras import ops

from kerasformer import masks
from kerasformer.errors import FamilyMismatchError, KerasformerError
from kerasformer.layers import Embedding, FeedForward, MultiHeadAttention
from kerasformer.layers.masking import Add
from kerasformer.checkpoints.weights import WeightSource, row
from kerasformer.models.transformer import Transformer


# ----------------------------------------------------------------------------- layers
def relative_position_buckets(bidirectional, num_buckets, max_distance):
    """Bucket of every relative position ``key - query`` in ``[-max_distance, max_distance]``.

    Mesh TensorFlow's (and Hugging Face's) rule: half the buckets (per direction, when
    bidirectional) hold exact small distances, the rest grow logarithmically up to
    ``max_distance``; every longer distance shares the last bucket, so clipping the
    relative position to +-max_distance loses nothing. The table is computed once, in
    numpy float32 with the reference's exact operation order, so the truncation of the
    logarithm lands on the same side as in the reference instead of depending on each
    backend's log.
    """
    relative = np.arange(-max_distance, max_distance + 1, dtype=np.int64)
    buckets = np.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).astype(np.int64) * num_buckets
        distance = np.abs(relative)
    else:
        distance = -np.minimum(relative, 0)  # future positions all fall in bucket 0
    max_exact = num_buckets // 2
    safe = np.maximum(distance, max(max_exact, 1)).astype(np.float32)  # no log(0) below
    large = max_exact + (np.log(safe / np.float32(max_exact or 1))
                         / np.float32(math.log(max_distance / max(max_exact, 1)))
                         * np.float32(num_buckets - max_exact)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(distance < max_exact, distance, large)


@keras.saving.register_keras_serializable(package="kerasformer")
class RelativePositionEmbeddingT5(keras.layers.Layer):
    """T5's relative position bias: called on ``[queries, keys]`` (only their lengths
    matter), returns ``[1, heads, q_len, k_len]`` to add to the attention scores.

    Weight ``embeddings``: ``[num_buckets, heads]`` (Hugging Face's layout; Mesh TF
    stores it transposed).
    """

    def __init__(self, input_dim, output_dim, bidirectional=True, max_distance=128,
                 embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = input_dim  # number of buckets
        self.output_dim = output_dim  # number of heads
        self.bidirectional = bidirectional
        self.max_distance = max_distance
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.buckets = relative_position_buckets(bidirectional, input_dim, max_distance).astype("int32")

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.input_dim, self.output_dim),
                                          initializer=self.embeddings_initializer)

    def call(self, inputs, query_offset=0, key_length=None, decoding=None):
        """``query_offset``/``key_length``: the queries' first position and the keys'
        length; a cached pass (``decoding``) puts the queries at its cache index and the
        keys over the whole cache."""
        if decoding is not None:
            query_offset, key_length = decoding.cache_index, decoding.key_length
        queries, keys = inputs
        q_len = ops.shape(queries)[1]
        k_len = ops.shape(keys)[1] if key_length is None else key_length
        q_pos = ops.arange(q_len, dtype="int32") + ops.cast(query_offset, "int32")
        relative = ops.arange(k_len, dtype="int32")[None, :] - q_pos[:, None]
        relative = ops.clip(relative, -self.max_distance, self.max_distance) + self.max_distance
        buckets = ops.take(ops.convert_to_tensor(self.buckets), relative, axis=0)  # [q, k]
        bias = ops.take(self.embeddings, buckets, axis=0)  # [q, k, heads]
        bias = ops.cast(bias, self.compute_dtype)
        return ops.expand_dims(ops.transpose(bias, (2, 0, 1)), 0)

    def compute_mask(self, inputs, mask=None):
        return None  # a bias table, not a sequence of the batch

    def compute_output_shape(self, input_shape):
        q_shape, k_shape = input_shape
        return (1, self.output_dim, q_shape[1], k_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(input_dim=self.input_dim, output_dim=self.output_dim,
                      bidirectional=self.bidirectional, max_distance=self.max_distance,
                      embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer))
        return config


@keras.saving.register_keras_serializable(package="kerasformer")
class PaddingMask(keras.layers.Layer):
    """``[batch, 1, 1, length]``: True at real tokens of ``token_ids`` (ids != pad_id)."""

    def __init__(self, pad_id=0, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def call(self, token_ids):
        return masks.padding_mask(token_ids, self.pad_id)

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor((token_ids.shape[0], 1, 1, token_ids.shape[1]), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="kerasformer")
class CausalMask(keras.layers.Layer):
    """``[1, 1, length, length]``: position i sees positions <= i."""

    def call(self, token_ids):
        return masks.causal_mask(ops.shape(token_ids)[1])

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor((1, 1, token_ids.shape[1], token_ids.shape[1]), dtype="bool")


@keras.saving.register_keras_serializable(package="kerasformer")
class ContextMask(keras.layers.Layer):
    """``[batch, 1, 1, length]``: True where an encoding is not all zeros (the encoder
    zeroes its padding), i.e. the encoder positions the decoder may attend to."""

    def call(self, context):
        real = ops.any(ops.not_equal(context, 0), axis=-1)
        return ops.expand_dims(ops.expand_dims(real, 1), 1)

    def compute_mask(self, inputs, mask=None):
        return None  # an attention mask, not a sequence of the batch

    def compute_output_spec(self, context):
        return keras.KerasTensor((context.shape[0], 1, 1, context.shape[1]), dtype="bool")


@keras.saving.register_keras_serializable(package="kerasformer")
class ZeroPadding(keras.layers.Layer):
    """Called on ``[x, token_ids]``: x with the vectors of padding tokens set to zero."""

    def __init__(self, pad_id=0, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def call(self, inputs):
        x, token_ids = inputs
        real = ops.cast(ops.not_equal(token_ids, self.pad_id), x.dtype)
        return x * ops.expand_dims(real, -1)

    def compute_mask(self, inputs, mask=None):
        return mask[0] if isinstance(mask, (list, tuple)) else mask  # x's padding mask

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


# ----------------------------------------------------------------------------- the model
def _first(*values):
    return next((v for v in values if v is not None), None)


class T5(Transformer):
    """T5 v1.0 (``model='t5'`` / ``'t5.1.0'``): ReLU feed-forward, tied output layer.

    Configs: a Hugging Face ``config.json`` (``d_model``, ``d_kv``, ``d_ff``,
    ``num_layers``, ``num_decoder_layers``, ``num_heads``, ``feed_forward_proj``,
    ``relative_attention_num_buckets``, ``relative_attention_max_distance``,
    ``layer_norm_epsilon``) or bert4keras' T5 configs (``hidden_size``,
    ``num_hidden_layers``, ``num_attention_heads``, ``attention_head_size``,
    ``intermediate_size``, ``hidden_act``). In a T5 config ``"gelu"`` means Mesh
    TensorFlow's gelu, the tanh approximation (``gelu_new`` in Hugging Face); pass
    ``hidden_act="gelu_erf"`` for the exact one.

    Options: ``with_lm=True`` (probabilities), ``'linear'`` (logits) or ``False``
    (the decoder's final hidden states).
    """

    model_key = "t5"
    version = "t5.1.0"
    gated = False  # the feed-forward this version has (checked against the config)

    def __init__(self, vocab_size=None, hidden_size=None, num_hidden_layers=None,
                 num_attention_heads=None, intermediate_size=None, hidden_act=None,
                 attention_head_size=None, layer_norm_eps=None, application="encoder",
                 num_decoder_layers=None, relative_attention_num_buckets=32,
                 relative_attention_max_distance=128, tie_word_embeddings=None, with_lm=True,
                 **kwargs):
        if kwargs.get("layer_norm_cond") is not None or kwargs.get("additional_input_layers"):
            raise KerasformerError("layer_norm_cond / additional_input_layers are not supported for T5 "
                                   "yet (they are for the BERT-like families and GPT-2)")
        if application != "encoder":
            raise KerasformerError(
                f"T5 is an encoder-decoder model: application={application!r} is not supported "
                "(the decoder is already causal; use transformer.encoder / .decoder / .model)")
        settings = dict(vocab_size=vocab_size, hidden_size=hidden_size,
                        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                        intermediate_size=intermediate_size)
        missing = [k for k, v in settings.items() if v is None]
        if missing:
            raise KerasformerError(f"missing T5 settings {', '.join(missing)}: pass a config "
                                   "(Hugging Face config.json or bert4keras T5 config) or keywords")
        if hidden_act is None:  # none given: this version's own
            hidden_act = ["gelu", "linear"] if self.gated else "relu"
        acts = list(hidden_act) if isinstance(hidden_act, (list, tuple)) else [hidden_act]
        # Mesh TF's (and so T5's) gelu is the tanh approximation; HF calls it gelu_new
        acts = ["gelu_tanh" if a == "gelu" else a for a in acts]
        if (len(acts) > 1) != self.gated:
            other = "t5.1.0" if self.gated else "t5.1.1"
            kind = ("a gated feed-forward (T5 v1.1 / mT5)" if len(acts) > 1
                    else "a plain feed-forward (T5 v1.0)")
            raise KerasformerError(
                f"the config describes {kind} (activation {hidden_act!r}), but model="
                f"{self.version!r} was asked for; pass model={other!r}")
        super().__init__(hidden_act=acts if len(acts) > 1 else acts[0],
                         attention_head_size=attention_head_size,
                         layer_norm_eps=_first(layer_norm_eps, 1e-6),
                         application=application, **settings, **kwargs)
        self.num_decoder_layers = _first(num_decoder_layers, self.num_hidden_layers)
        self.relative_attention_num_buckets = relative_attention_num_buckets or 32
        self.relative_attention_max_distance = relative_attention_max_distance or 128
        # Hugging Face 5 writes tie_word_embeddings=true even for v1.1 models, so the
        # version (the model key), not this flag, decides the output layer
        self.tie_word_embeddings = tie_word_embeddings
        self.with_lm = with_lm

    # Hugging Face T5 / mT5 config.json names (bert4keras' T5 configs use ours)
    config_aliases = Transformer.config_aliases + (
        ("d_model", "hidden_size"), ("num_layers", "num_hidden_layers"),
        ("num_heads", "num_attention_heads"), ("d_ff", "intermediate_size"),
        ("d_kv", "attention_head_size"), ("layer_norm_epsilon", "layer_norm_eps"))

    @classmethod
    def from_config(cls, raw):
        """A Hugging Face T5 / mT5 ``config.json`` (whose ``feed_forward_proj``, 'relu',
        'gated-gelu', 'gated-silu', ..., gives the activation) or a bert4keras T5 config in
        this class's argument names."""
        config = super().from_config(raw)
        proj = raw.get("feed_forward_proj")
        if config.get("hidden_act") is None and isinstance(proj, str):
            act = proj[len("gated-"):] if proj.startswith("gated-") else proj
            config["hidden_act"] = [act, "linear"] if proj.startswith("gated-") else act
        return config

    # --------------------------------------------------------------- building
    def build(self, **kwargs):
        """Build ``self.encoder``, ``self.decoder`` and the joined ``self.model``.

        The three Keras models share their layers (and so their weights): the encoder
        and decoder graphs are built once each, and the decoder layers are applied a
        second time to the encoder's output for the joined model.
        """
        if self.built:
            return self.model
        for key, value in kwargs.items():
            setattr(self, key, value)
        prefix = f"{self.name}_" if self.name else ""

        encoder_ids = keras.Input(shape=(self.sequence_length,), dtype="int32",
                                  name=self.prefixed("Encoder-Input-Token"))
        encodings = self.call_encoder(encoder_ids)
        self.encoder = keras.Model(encoder_ids, encodings, name=f"{prefix}Encoder")

        context = keras.Input(shape=(self.sequence_length, self.hidden_size),
                              name=self.prefixed("Input-Context"))
        decoder_ids = keras.Input(shape=(self.sequence_length,), dtype="int32",
                                  name=self.prefixed("Decoder-Input-Token"))
        self.decoder = keras.Model([context, decoder_ids], self.call_decoder(context, decoder_ids),
                                   name=f"{prefix}Decoder")

        self.inputs = [encoder_ids, decoder_ids]
        self.outputs = self.call_decoder(encodings, decoder_ids)
        self.model = self.keras_model(self.inputs, self.outputs, name=self.name or "T5")
        for model in (self.encoder, self.decoder):  # generate() finds its way back
            model._kerasformer_transformer = self
        self.built = True
        return self.model

    def call(self, inputs):
        encoder_ids, decoder_ids = inputs
        return self.call_decoder(self.call_encoder(encoder_ids), decoder_ids)

    def apply_token_embedding(self, token_ids, stack):
        x = self.apply(token_ids, Embedding, input_dim=self.vocab_size,
                       output_dim=self.embedding_size, mask_id=self.mask_id,
                       embeddings_initializer=self.initializer, name="Embedding-Token")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name=f"{stack}-Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size, use_bias=False,
                           kernel_initializer=self.initializer, name=f"{stack}-Embedding-Mapping")
        return x

    def apply_norm(self, x, name, decoding=None):
        return super().apply_norm(x, name, center=False, rms=True)

    def apply_attention(self, x, name, kv=None, mask=None, bias=None, decoding=None, key=None):
        """Pre-LN residual attention: x + Attn(RMSNorm(x)) (kv: the encodings, for
        cross-attention, whose cache in a cached pass is projected once)."""
        h = self.apply_norm(x, f"{name}-Norm")
        arguments = {"attention_mask": mask}
        if bias is not None:
            arguments["attention_bias"] = bias
        if kv is not None and decoding is not None:
            arguments["cross"] = True
        h = self.apply_cached(h if kv is None else [h, kv, kv], MultiHeadAttention, decoding, key,
                              arguments=arguments, heads=self.num_attention_heads,
                              head_size=self.attention_head_size, key_size=self.attention_key_size,
                              out_dim=self.hidden_size, use_bias=False, attention_scale=False,
                              attention_dropout=self.attention_dropout_rate,
                              kernel_initializer=self.initializer, name=name)
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate, name=f"{name}-Dropout")
        return self.apply([x, h], Add, name=f"{name}-Add")

    def apply_feed_forward(self, x, name):
        h = self.apply_norm(x, f"{name}-Norm")
        h = self.apply(h, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
                       use_bias=False, kernel_initializer=self.initializer, name=name)
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate, name=f"{name}-Dropout")
        return self.apply([x, h], Add, name=f"{name}-Add")

    def call_encoder(self, token_ids):
        """Token ids -> encodings ``[batch, length, hidden]``, zero at padding."""
        mask = self.apply(token_ids, PaddingMask, pad_id=self.pad_token_id, name="Encoder-Attention-Mask")
        x = self.apply_token_embedding(token_ids, "Encoder")
        bias = self.apply([x, x], RelativePositionEmbeddingT5,
                          input_dim=self.relative_attention_num_buckets,
                          output_dim=self.num_attention_heads, bidirectional=True,
                          max_distance=self.relative_attention_max_distance,
                          embeddings_initializer=self.initializer,
                          name="Encoder-Embedding-Relative-Position")
        for index in range(self.num_hidden_layers):
            name = f"Encoder-Transformer-{index}"
            x = self.apply_attention(x, f"{name}-MultiHeadSelfAttention", mask=mask, bias=bias)
            x = self.apply_feed_forward(x, f"{name}-FeedForward")
        x = self.apply_norm(x, "Encoder-Output-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Encoder-Output-Dropout")
        return self.apply([x, token_ids], ZeroPadding, pad_id=self.pad_token_id,
                          name="Encoder-Output-Masked")

    def call_decoder(self, context, token_ids, decoding=None):
        """Encodings and decoder token ids -> next-token probabilities (see ``with_lm``).
        ``decoding``: a cached pass (``Transformer.call``), which brings the causal mask
        over its cache and gets logits."""
        context_mask = self.apply(context, ContextMask, name="Decoder-Context-Mask")
        if decoding is None:
            causal = self.apply(token_ids, CausalMask, name="Decoder-Attention-Mask")
        else:
            causal = decoding.attention_mask
        x = self.apply_token_embedding(token_ids, "Decoder")
        bias = self.apply([x, x], RelativePositionEmbeddingT5,
                          arguments=None if decoding is None else {"decoding": decoding},
                          input_dim=self.relative_attention_num_buckets,
                          output_dim=self.num_attention_heads, bidirectional=False,
                          max_distance=self.relative_attention_max_distance,
                          embeddings_initializer=self.initializer,
                          name="Decoder-Embedding-Relative-Position")
        for index in range(self.num_decoder_layers):
            name = f"Decoder-Transformer-{index}"
            x = self.apply_attention(x, f"{name}-MultiHeadSelfAttention", mask=causal, bias=bias,
                                     decoding=decoding, key=f"self-{index}")
            x = self.apply_attention(x, f"{name}-MultiHeadCrossAttention", kv=context,
                                     mask=context_mask, decoding=decoding, key=f"cross-{index}")
            x = self.apply_feed_forward(x, f"{name}-FeedForward")
        x = self.apply_norm(x, "Decoder-Output-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Decoder-Output-Dropout")
        if not self.with_lm:
            return x
        x = self.apply_lm_head(x)
        if decoding is not None:  # generation decodes from logits
            return x
        activation = "softmax" if self.with_lm is True else self.with_lm
        return self.apply(x, keras.layers.Activation, activation=activation,
                          name="Decoder-Output-LM-Activation")

    def apply_lm_head(self, x):
        """t5.1.0: the transposed token embedding, after scaling by d_model**-0.5 (the
        scale keeps logits of a tied embedding in range)."""
        x = self.apply(x, keras.layers.Rescaling, scale=self.hidden_size ** -0.5,
                       name="Decoder-Output-Scale")
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.embedding_size, use_bias=False,
                           kernel_initializer=self.initializer, name="Decoder-Output-Mapping")
        return self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")

    # --------------------------------------------------------------- the weights
    def weight_rows(self):
        """Google names are Mesh TensorFlow's (the released T5 / mT5 checkpoints): q/k/v/o
        and feed-forward kernels are stored ``[in, out]`` like Keras, the relative bias
        ``[heads, buckets]``. Hugging Face stores every matrix ``[out, in]``. Norm names
        differ by version ('layer_norm' in t5.1.0, 'rms_norm' in t5.1.1): both are
        accepted, the version's own is written.
        """
        p, v11 = self.prefix, self.version != "t5.1.0"

        def norm(scope, final=False):
            old = f"{scope}/final_layer_norm/scale" if final else f"{scope}/layer_norm/scale"
            new = f"{scope}/rms_norm/scale"
            return (new, old) if v11 else (old, new)

        def matrix(path, google, hf):  # a kernel: HF's is [out, in]
            return row(p + path, google=google, hf=WeightSource((hf,), transpose=True))

        rows = [row(p + "Embedding-Token/embeddings", vocab_axis=0, google="shared/embedding",
                    hf=("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"))]
        ffn = ["wi_0", "wi_1"] if isinstance(self.hidden_act, list) else ["wi"]
        for stack, layers in (("encoder", self.num_hidden_layers), ("decoder", self.num_decoder_layers)):
            Stack = stack.title()
            rows += [
                row(f"{p}{Stack}-Embedding-Relative-Position/embeddings",
                    google=WeightSource((f"{stack}/block_000/layer_000/SelfAttention/relative_attention_bias",),
                                        transpose=True),
                    hf=f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                row(f"{p}{Stack}-Output-Norm/gamma", google=norm(stack, final=True),
                    hf=f"{stack}.final_layer_norm.weight")]
            parts = [("MultiHeadSelfAttention", "SelfAttention")]
            if stack == "decoder":
                parts.append(("MultiHeadCrossAttention", "EncDecAttention"))
            for i in range(layers):
                ours = f"{Stack}-Transformer-{i}-"
                for j, (name, theirs) in enumerate(parts + [("FeedForward", "DenseReluDense")]):
                    g, h = f"{stack}/block_{i:03d}/layer_{j:03d}/", f"{stack}.block.{i}.layer.{j}."
                    rows.append(row(f"{p}{ours}{name}-Norm/gamma", google=norm(g.rstrip("/")),
                                    hf=f"{h}layer_norm.weight"))
                    if theirs == "DenseReluDense":
                        rows += [matrix(f"{ours}{name}/i{k}_dense/kernel", f"{g}{theirs}/{w}/kernel",
                                        f"{h}{theirs}.{w}.weight") for k, w in enumerate(ffn)]
                        rows.append(matrix(f"{ours}{name}/o_dense/kernel", f"{g}{theirs}/wo/kernel",
                                           f"{h}{theirs}.wo.weight"))
                    else:
                        rows += [matrix(f"{ours}{name}/{w}_dense/kernel", f"{g}{theirs}/{w}",
                                        f"{h}{theirs}.{w}.weight") for w in "qkvo"]
        return rows

    def check_family(self, names, naming):
        """A T5 checkpoint of the other version fails with the model key to use."""
        names = list(names)
        gated = any("DenseReluDense/wi_0" in n or "DenseReluDense.wi_0" in n for n in names)
        plain = any(n.endswith(("DenseReluDense/wi/kernel", "DenseReluDense.wi.weight")) for n in names)
        if (gated and not self.gated) or (plain and self.gated):
            have, use = (("T5 v1.1 / mT5 (gated feed-forward)", "t5.1.1") if gated
                         else ("T5 v1.0 (ReLU feed-forward)", "t5.1.0"))
            raise FamilyMismatchError(f"the checkpoint is a {have} checkpoint, but model={self.version!r} "
                                      f"was asked for; pass model={use!r}")


class T5_V1_1(T5):
    """T5 v1.1 and mT5 (``model='t5.1.1'`` / ``'mt5.1.1'``): gated-GELU feed-forward
    (``wi_0`` / ``wi_1``) and an untied output layer ``Decoder-Output-LM``, unscaled."""

    version = "t5.1.1"
    gated = True

    def apply_lm_head(self, x):
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.embedding_size, use_bias=False,
                           kernel_initializer=self.initializer, name="Decoder-Output-Mapping")
        return self.apply(x, keras.layers.Dense, units=self.vocab_size, use_bias=False,
                          kernel_initializer=self.initializer, name="Decoder-Output-LM")

    def weight_rows(self):
        # Hugging Face 5 ties lm_head to shared.weight and then saves only the latter,
        # so a file without lm_head.weight means "the output layer is the embedding"
        return super().weight_rows() + [row(
            f"{self.prefix}Decoder-Output-LM/kernel", vocab_axis=1, google="decoder/logits/kernel",
            hf=WeightSource(("lm_head.weight", "shared.weight"), transpose=True))]


class _OnePart:
    """bert4keras' ``t5_encoder`` / ``t5_decoder`` keys: the whole T5 is built (the parts
    share their layers, so a full checkpoint loads as is, the other part's tensors reported
    unused) and ``.model`` is the one part: ``encoder`` maps token ids to encodings,
    ``decoder`` maps ``[encodings, decoder ids]`` to next-token probabilities."""

    part = None

    def build(self, **kwargs):
        if not self.built:
            super().build(**kwargs)
            self.model = getattr(self, self.part)
        return self.model


class T5_Encoder(_OnePart, T5):
    part = "encoder"


class T5_Decoder(_OnePart, T5):
    part = "decoder"


class T5_V1_1_Encoder(_OnePart, T5_V1_1):
    part = "encoder"


class T5_V1_1_Decoder(_OnePart, T5_V1_1):
    part = "decoder"


__all__ = ["T5", "T5_V1_1", "T5_Encoder", "T5_Decoder", "T5_V1_1_Encoder", "T5_V1_1_Decoder",
           "RelativePositionEmbeddingT5", "relative_position_buckets"]
