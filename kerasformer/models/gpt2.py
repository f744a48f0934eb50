"""GPT-2 (OpenAI, 2019) and GPT2-ML (imcaspar/gpt2-ml, the Chinese 1.5B model).

Both are causal language models with one input, the token ids, and one output, the
next-token probabilities: the last hidden state multiplied by the transposed token
embedding (tied weights, no bias), then softmax.

* GPT-2 is pre-LN: ``x + Attn(LN(x))``, ``x + FFN(LN(x))``, and a final LayerNorm
  ('Output-Norm') before the output projection; positions are learned; the FFN uses
  GELU's tanh approximation ('gelu_new').
* GPT2-ML, despite its name, is built like GPT / Grover (its code base): the summed
  embeddings are normalised, and each block is ``x = x + Attn(x)`` followed by
  ``x = LN1(x + FFN(LN0(x)))``; there is no final LayerNorm (bert4keras' ``GPT2_ML``).

Checkpoints (every one loads and saves back under its own names):

* GPT-2, Hugging Face (``GPT2LMHeadModel`` or a bare ``GPT2Model``; safetensors or
  pytorch_model.bin): ``transformer.h.0.attn.c_attn.weight`` ...; ``Conv1D`` weights are
  stored ``[in, out]``, like a Keras kernel, so nothing is transposed;
* GPT-2, OpenAI's original TF release: ``model/h0/attn/c_attn/w`` ..., its ``conv1d``
  kernels shaped ``[1, in, out]``;
* GPT-2 under the ``gpt/...`` names bert4keras' ``GPT2`` reads (the CPM-LM and DialoGPT
  conversions made for bert4keras), with separate query/key/value;
* GPT2-ML, its released TF checkpoint: ``newslm/layer00/query_layer/kernel`` ...
  (safetensors / .bin exports use the same names with dots).

OpenAI and Hugging Face fuse the query, key and value projections into one ``c_attn``
tensor ``[hidden, 3 * hidden]``; here each is a third of it (loading slices it, saving
concatenates it again), so the attention layer is the library's plain
``MultiHeadAttention`` with a causal mask.

Configs: Hugging Face ``config.json`` (``n_embd``, ``n_layer``, ``n_head``,
``n_positions``, ``n_inner``, ``activation_function``, ``layer_norm_epsilon``, ...),
OpenAI's ``hparams.json`` (``n_vocab``, ``n_ctx``, ...), or a BERT-style json (what
bert4keras uses with the ``gpt/`` and GPT2-ML checkpoints); see ``GPT2.from_config``.
"""
import re

import keras

from kerasformer import masks
from kerasformer.checkpoints.weights import WeightSource, row
from kerasformer.errors import KerasformerError
from kerasformer.layers import Embedding, FeedForward, MultiHeadAttention, PositionEmbedding
from kerasformer.layers.masking import Add
from kerasformer.models.transformer import Transformer


class GPT2(Transformer):
    """GPT-2; a causal LM whatever ``application`` says (bert4keras' GPT2 is always 'lm').

    Options:
        final_activation: the activation of the output, 'softmax' (probabilities, the
            default, as bert4keras) or e.g. 'linear' for logits.
        with_lm: True (default) keeps the LM head; False returns the normalised last
            hidden state ``[batch, length, hidden]`` instead; a string is a shorthand
            for ``final_activation`` (``with_lm='linear'`` gives logits, like BERT's
            ``with_mlm='linear'``).
        pad_token_id: GPT-2 has no padding token, so by default (None) nothing is masked
            but the future. Right-padded batches still give every real token the same
            output as unpadded input: a real token never attends to later positions, and
            real tokens are numbered 0..n-1. With a pad_token_id (from the config or as
            an argument) keys holding it are masked too.
    """

    model_key = "gpt2"

    def __init__(self, max_position=1024, hidden_act="gelu_new", layer_norm_eps=1e-5,
                 pad_token_id=None, application="lm", final_activation="softmax", with_lm=True,
                 **kwargs):
        if application == "unilm":
            raise KerasformerError(
                f"{type(self).__name__} is a causal language model and has no segment input, so "
                "application='unilm' cannot apply; leave application at 'lm' (or the default)")
        super().__init__(hidden_act=hidden_act, layer_norm_eps=layer_norm_eps,
                         pad_token_id=pad_token_id, application="lm", **kwargs)
        if self.embedding_size != self.hidden_size:
            raise KerasformerError(
                f"{type(self).__name__} ties its output projection to the token embedding, so "
                f"embedding_size ({self.embedding_size}) must equal hidden_size ({self.hidden_size})")
        self.max_position = max_position
        self.pad_token_id = pad_token_id  # the base turns None into 0, a real GPT-2 token
        if isinstance(with_lm, str):
            final_activation, with_lm = with_lm, True
        self.final_activation = final_activation
        self.with_lm = with_lm

    # Hugging Face config.json / OpenAI hparams.json names (bert4keras' gpt/ and GPT2-ML
    # configs use BERT's)
    config_aliases = Transformer.config_aliases + (
        ("n_vocab", "vocab_size"), ("n_embd", "hidden_size"), ("n_layer", "num_hidden_layers"),
        ("n_head", "num_attention_heads"), ("n_positions", "max_position"),
        ("n_ctx", "max_position"), ("n_inner", "intermediate_size"),
        ("activation_function", "hidden_act"), ("layer_norm_epsilon", "layer_norm_eps"),
        ("resid_pdrop", "dropout_rate"), ("attn_pdrop", "attention_dropout_rate"))

    @classmethod
    def from_config(cls, raw):
        """Translate a Hugging Face ``config.json`` or OpenAI ``hparams.json`` into this
        class's arguments (a BERT-style config passes through unchanged)."""
        if raw.get("scale_attn_by_inverse_layer_idx") or raw.get("scale_attn_weights") is False:
            raise KerasformerError(
                "this GPT-2 config changes the attention scaling (scale_attn_by_inverse_layer_idx / "
                "scale_attn_weights), which kerasformer's GPT2 does not implement")
        config = super().from_config(raw)
        if config.get("intermediate_size") is None and config.get("hidden_size") is not None:
            config["intermediate_size"] = 4 * config["hidden_size"]  # n_inner: null, and OpenAI's
        return config

    # --------------------------------------------------------------- the network
    def get_inputs(self):
        token_ids = keras.Input(shape=(self.sequence_length,), dtype="int32", name="Input-Token")
        return [token_ids]

    def compute_attention_mask(self, token_ids, segment_ids=None):
        """Causal, plus padding when there is a pad token; built once, shared by all blocks."""
        if self.attention_mask is None:
            # AttentionMask always compares keys with pad_id: -1 is never a token id, so
            # without a pad token only the causal part masks anything
            pad_id = -1 if self.pad_token_id is None else self.pad_token_id
            self.attention_mask = self.apply(
                inputs=[token_ids, token_ids], layer=masks.AttentionMask, application="lm",
                pad_id=pad_id, name="Attention-Mask")
        return self.attention_mask

    def token_position_embeddings(self, token_ids, decoding=None):
        """Token plus learned position embeddings; also builds the mask, once (a cached
        pass brings its own mask and positions)."""
        if decoding is None:
            self.compute_attention_mask(token_ids)
        x = self.apply(token_ids, Embedding, input_dim=self.vocab_size,
                       output_dim=self.embedding_size, mask_id=self.mask_id,
                       embeddings_initializer=self.initializer, name="Embedding-Token")
        return self.apply(x, PositionEmbedding, input_dim=self.max_position,
                          arguments=None if decoding is None else {"decoding": decoding},
                          output_dim=self.embedding_size, embeddings_initializer=self.initializer,
                          name="Embedding-Position")

    def apply_embeddings(self, inputs, decoding=None):
        x = self.token_position_embeddings(inputs[0], decoding)
        return self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")

    def attention(self, x, name, index, decoding=None):
        return self.apply_cached(x, MultiHeadAttention, decoding, f"self-{index}",
                                 arguments={"attention_mask": self.block_attention_mask(decoding)},
                                 heads=self.num_attention_heads, head_size=self.attention_head_size,
                                 out_dim=self.hidden_size, key_size=self.attention_key_size,
                                 attention_dropout=self.attention_dropout_rate,
                                 kernel_initializer=self.initializer, name=name)

    def feed_forward(self, x, name):
        return self.apply(x, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
                          kernel_initializer=self.initializer, name=name)

    def apply_main_layers(self, inputs, index, decoding=None):
        """One pre-LN block: x = x + Attn(LN(x)); x = x + FFN(LN(x))."""
        attention = f"Transformer-{index}-MultiHeadSelfAttention"
        feed_forward = f"Transformer-{index}-FeedForward"
        x = inputs
        h = self.apply_norm(x, f"{attention}-Norm", decoding)
        h = self.attention(h, attention, index, decoding)
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate, name=f"{attention}-Dropout")
        x = self.apply([x, h], Add, name=f"{attention}-Add")
        h = self.apply_norm(x, f"{feed_forward}-Norm", decoding)
        h = self.feed_forward(h, feed_forward)
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate, name=f"{feed_forward}-Dropout")
        return self.apply([x, h], Add, name=f"{feed_forward}-Add")

    def apply_final_layers(self, inputs, decoding=None, logits=False):
        x = self.apply_norm(inputs, "Output-Norm", decoding)
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Output-Dropout")
        return self.language_model_head(x, logits)

    def language_model_head(self, x, logits=False):
        """Logits from the token embedding used backwards, then ``final_activation``
        (not with ``logits=True``)."""
        if not self.with_lm:
            return x
        x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        if logits:
            return x
        return self.apply(x, keras.layers.Activation, activation=self.final_activation,
                          name="LM-Activation")

    # --------------------------------------------------------------- the weights
    # (variable, OpenAI TF name, Hugging Face name, bert4keras 'gpt/' name); block names are
    # relative to model/h{i}/, transformer.h.{i}., gpt/transformer/layer_{i}/.
    TOP = [
        ("Embedding-Token/embeddings", "model/wte", "wte.weight", "gpt/embeddings/word_embeddings"),
        ("Embedding-Position/embeddings", "model/wpe", "wpe.weight", "gpt/embeddings/position_embeddings"),
        ("Output-Norm/gamma", "model/ln_f/g", "ln_f.weight", "gpt/output/LayerNorm/gamma"),
        ("Output-Norm/beta", "model/ln_f/b", "ln_f.bias", "gpt/output/LayerNorm/beta"),
    ]
    BLOCK = [
        ("{att}-Norm/gamma", "ln_1/g", "ln_1.weight", "attention/input/LayerNorm/gamma"),
        ("{att}-Norm/beta", "ln_1/b", "ln_1.bias", "attention/input/LayerNorm/beta"),
        ("{att}/q_dense/kernel", "attn/c_attn/w", "attn.c_attn.weight", "attention/self/query/kernel"),
        ("{att}/q_dense/bias", "attn/c_attn/b", "attn.c_attn.bias", "attention/self/query/bias"),
        ("{att}/k_dense/kernel", "attn/c_attn/w", "attn.c_attn.weight", "attention/self/key/kernel"),
        ("{att}/k_dense/bias", "attn/c_attn/b", "attn.c_attn.bias", "attention/self/key/bias"),
        ("{att}/v_dense/kernel", "attn/c_attn/w", "attn.c_attn.weight", "attention/self/value/kernel"),
        ("{att}/v_dense/bias", "attn/c_attn/b", "attn.c_attn.bias", "attention/self/value/bias"),
        ("{att}/o_dense/kernel", "attn/c_proj/w", "attn.c_proj.weight", "attention/output/dense/kernel"),
        ("{att}/o_dense/bias", "attn/c_proj/b", "attn.c_proj.bias", "attention/output/dense/bias"),
        ("{ffn}-Norm/gamma", "ln_2/g", "ln_2.weight", "input/LayerNorm/gamma"),
        ("{ffn}-Norm/beta", "ln_2/b", "ln_2.bias", "input/LayerNorm/beta"),
        ("{ffn}/i0_dense/kernel", "mlp/c_fc/w", "mlp.c_fc.weight", "intermediate/dense/kernel"),
        ("{ffn}/i0_dense/bias", "mlp/c_fc/b", "mlp.c_fc.bias", "intermediate/dense/bias"),
        ("{ffn}/o_dense/kernel", "mlp/c_proj/w", "mlp.c_proj.weight", "output/dense/kernel"),
        ("{ffn}/o_dense/bias", "mlp/c_proj/b", "mlp.c_proj.bias", "output/dense/bias"),
    ]
    # Hugging Face's attention-mask buffers (``h.0.attn.bias``, ``h.0.attn.masked_bias`` in
    # older GPT-2 files) are not weights
    derived_tensors = (r"(^|\.)h\.\d+\.attn\.(masked_)?bias$",)

    def block_variables(self, index):
        p = self.prefix
        return {"att": f"{p}Transformer-{index}-MultiHeadSelfAttention",
                "ffn": f"{p}Transformer-{index}-FeedForward"}

    def weight_rows(self):
        """Namings 'google' (OpenAI's TF release: conv1d kernels ``[1, in, out]``), 'hf'
        (``GPT2LMHeadModel``, or a bare ``GPT2Model`` without 'transformer.') and
        'bert4keras'. OpenAI and HF fuse q|k|v into c_attn: each is a third of it. No
        GPT-2 layout stores a kernel transposed."""
        rows = [row(self.prefix + path, vocab_axis=0 if i == 0 else None, google=openai,
                    hf=("transformer." + hf, hf), bert4keras=b4k)
                for i, (path, openai, hf, b4k) in enumerate(self.TOP)]
        for i in range(self.num_hidden_layers):
            for path, openai, hf, b4k in self.BLOCK:
                path = path.format(**self.block_variables(i))
                fused = re.search(r"/([qkv])_dense/", path)
                part = ("qkv".index(fused.group(1)), 3) if fused else None
                rows.append(row(
                    path, google=WeightSource((f"model/h{i}/{openai}",), squeeze=openai.endswith("/w"), part=part),
                    hf=WeightSource((f"transformer.h.{i}.{hf}", f"h.{i}.{hf}"), part=part),
                    bert4keras=f"gpt/transformer/layer_{i}/{b4k}"))
        return rows

    def detect_naming(self, names):
        naming = super().detect_naming(names)
        return "bert4keras" if naming == "google" and any(n.startswith("gpt/") for n in names) else naming


class GPT2_ML(GPT2):
    """GPT2-ML (https://github.com/imcaspar/gpt2-ml), as bert4keras' ``GPT2_ML``: GPT /
    Grover-style blocks (see the module doc), LayerNorm epsilon 1e-5, the exact (erf)
    GELU its code uses under the name 'gelu'. Same options as :class:`GPT2`.
    """

    model_key = "gpt2_ml"

    def __init__(self, hidden_act="gelu", **kwargs):
        super().__init__(hidden_act=hidden_act, **kwargs)

    def apply_embeddings(self, inputs, decoding=None):
        x = self.token_position_embeddings(inputs[0], decoding)
        return self.apply_norm(x, "Embedding-Norm", decoding)

    def apply_main_layers(self, inputs, index, decoding=None):
        """x = x + Attn(x); x = LN1(x + FFN(LN0(x)))."""
        attention = f"Transformer-{index}-MultiHeadSelfAttention"
        feed_forward = f"Transformer-{index}-FeedForward"
        x = inputs
        h = self.attention(x, attention, index, decoding)
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate, name=f"{attention}-Dropout")
        x = self.apply([x, h], Add, name=f"{attention}-Add")
        h = self.apply_norm(x, f"{feed_forward}-Norm-0", decoding)
        h = self.feed_forward(h, feed_forward)
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate, name=f"{feed_forward}-Dropout")
        x = self.apply([x, h], Add, name=f"{feed_forward}-Add")
        return self.apply_norm(x, f"{feed_forward}-Norm-1", decoding)

    def apply_final_layers(self, inputs, decoding=None, logits=False):
        return self.language_model_head(inputs, logits)

    # --------------------------------------------------------------- the weights
    # (variable, GPT2-ML TF name); block names are relative to newslm/layer{i:02d}/
    TOP = [
        ("Embedding-Token/embeddings", "newslm/embeddings/word_embed"),
        ("Embedding-Position/embeddings", "newslm/embeddings/pos_embed"),
        ("Embedding-Norm/gamma", "newslm/embeddings/LayerNorm_embed_norm/gamma"),
        ("Embedding-Norm/beta", "newslm/embeddings/LayerNorm_embed_norm/beta"),
    ]
    BLOCK = [
        ("{att}/q_dense/kernel", "query_layer/kernel"),
        ("{att}/q_dense/bias", "query_layer/bias"),
        ("{att}/k_dense/kernel", "key_layer/kernel"),
        ("{att}/k_dense/bias", "key_layer/bias"),
        ("{att}/v_dense/kernel", "value_layer/kernel"),
        ("{att}/v_dense/bias", "value_layer/bias"),
        ("{att}/o_dense/kernel", "context_projection_layer/kernel"),
        ("{att}/o_dense/bias", "context_projection_layer/bias"),
        ("{ffn}-Norm-0/gamma", "LayerNorm_mlp_ln0/gamma"),
        ("{ffn}-Norm-0/beta", "LayerNorm_mlp_ln0/beta"),
        ("{ffn}/i0_dense/kernel", "intermediate/kernel"),
        ("{ffn}/i0_dense/bias", "intermediate/bias"),
        ("{ffn}/o_dense/kernel", "output/kernel"),
        ("{ffn}/o_dense/bias", "output/bias"),
        ("{ffn}-Norm-1/gamma", "LayerNorm_mlp_ln1/gamma"),
        ("{ffn}-Norm-1/beta", "LayerNorm_mlp_ln1/beta"),
    ]

    def weight_rows(self):
        """Namings 'google' (the released TF names) and 'hf' (the same, dotted)."""
        names = [(self.prefix + path, name) for path, name in self.TOP]
        for i in range(self.num_hidden_layers):
            names += [(path.format(**self.block_variables(i)), f"newslm/layer{i:02d}/{name}")
                      for path, name in self.BLOCK]
        return [row(path, vocab_axis=0 if i == 0 else None, google=name, hf=name.replace("/", "."))
                for i, (path, name) in enumerate(names)]
