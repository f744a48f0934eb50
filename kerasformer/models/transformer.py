"""The base every family builds on: config -> inputs -> embeddings -> N blocks -> heads.

A family subclasses :class:`Transformer` and overrides the hooks it needs
(``get_inputs``, ``apply_embeddings``, ``apply_main_layers``, ``apply_final_layers``)
plus ``weight_rows`` (each model variable's names in each checkpoint naming). Layers are
created through :meth:`Transformer.apply`, which reuses a layer when the same name is
applied twice: that is how ALBERT shares one block across depth and how the MLM head reuses
the token embedding.
"""
import contextlib
import contextvars
import inspect
import json
import os

import keras
import numpy as np

from kerasformer import backend, masks
from kerasformer.checkpoints.weights import detect_naming, export_rows, load_rows, open_tensors
from kerasformer.errors import KerasformerError, WeightMismatchError
from kerasformer.layers import LayerNorm
from kerasformer.models.inputs import standardize_inputs


# True while Transformer.checked constructs a family whose settings are validated already
_CHECKED = contextvars.ContextVar("kerasformer_settings_checked", default=False)


class Transformer:
    """Shared machinery; see ``kerasformer.models.bert.BERT`` for a full family."""

    def __init__(
        self,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        hidden_act="gelu",
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        embedding_size=None,
        attention_head_size=None,
        attention_key_size=None,
        sequence_length=None,
        keep_tokens=None,
        compound_tokens=None,
        application="encoder",
        layer_norm_eps=1e-12,
        pad_token_id=0,
        initializer_range=0.02,
        ignore_invalid_weights=False,
        prefix=None,
        name=None,
        recompute=False,
        dtype_policy=None,
        layer_norm_cond=None,
        layer_norm_cond_hidden_size=None,
        layer_norm_cond_hidden_act=None,
        additional_input_layers=None,
    ):
        if not _CHECKED.get():  # direct construction; make_transformer has checked its settings
            from kerasformer.validation import check_config

            check_config({k: v for k, v in locals().items() if k != "self"}, f"{type(self).__name__}()")
        if keep_tokens is not None:
            vocab_size = len(keep_tokens)
        if compound_tokens is not None:
            vocab_size += len(compound_tokens)
        if hidden_size % num_attention_heads and attention_head_size is None:
            raise KerasformerError(f"hidden_size={hidden_size} is not divisible by "
                                   f"num_attention_heads={num_attention_heads}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.attention_head_size = attention_head_size or hidden_size // num_attention_heads
        self.attention_key_size = attention_key_size or self.attention_head_size
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.dropout_rate = dropout_rate or 0.0
        self.attention_dropout_rate = attention_dropout_rate or 0.0
        self.embedding_size = embedding_size or hidden_size
        self.sequence_length = sequence_length
        self.keep_tokens = keep_tokens
        self.compound_tokens = compound_tokens
        self.application = masks.check_application(application)
        self.layer_norm_eps = layer_norm_eps
        self.pad_token_id = pad_token_id if pad_token_id is not None else 0
        self.initializer = keras.initializers.TruncatedNormal(stddev=initializer_range)
        self.ignore_invalid_weights = ignore_invalid_weights
        self.prefix = prefix or ""
        self.name = name
        # build-time switches: gradient checkpointing of the attention and feed-forward layers
        # (``recompute_layers``), and a Keras dtype policy such as 'mixed_bfloat16' for every
        # layer the family creates (heads' final activations stay float32)
        self.recompute = bool(recompute)
        self.dtype_policy = dtype_policy
        # bert4keras' conditional LayerNorm: a tensor (one vector per example, e.g. a label
        # embedding) that shifts gamma and beta of every LayerNorm of the network through
        # zero-initialised projections; the Keras inputs it needs become extra model inputs
        self.layer_norm_cond = layer_norm_cond
        self.layer_norm_cond_hidden_size = layer_norm_cond_hidden_size
        self.layer_norm_cond_hidden_act = layer_norm_cond_hidden_act or "linear"
        if additional_input_layers is not None and not isinstance(additional_input_layers, (list, tuple)):
            additional_input_layers = [additional_input_layers]
        self.additional_input_layers = list(additional_input_layers or [])
        self.layers = {}
        self.built = False
        self.attention_mask = None

    # ------------------------------------------------------------------ configuration
    # Foreign names of the settings in the config files this family reads (Google's
    # bert_config.json, Hugging Face's config.json): (theirs, ours). A family extends the
    # tuple; the first name present wins, and a value under our own name is kept.
    config_aliases = (("max_position_embeddings", "max_position"), ("hidden_dropout_prob", "dropout_rate"),
                      ("attention_probs_dropout_prob", "attention_dropout_rate"),
                      ("type_vocab_size", "segment_vocab_size"))

    @classmethod
    def from_config(cls, raw):
        """Constructor arguments from a config file's raw dict (as ``load_config`` reads
        it): foreign names translated by ``config_aliases``, keys the family does not read
        dropped. The one place a family's foreign key names live; families that must check
        or derive more (GPT-2's attention scaling, T5's feed-forward kind) extend it."""
        config = dict(raw)
        for theirs, ours in cls.config_aliases:
            if config.get(theirs) is not None and config.get(ours) is None:
                config[ours] = config[theirs]
        accepted = cls.arguments()
        return {k: v for k, v in config.items() if k in accepted}

    @classmethod
    def arguments(cls):
        """The names of every constructor argument of the family (its classes' and the base's)."""
        accepted = set()
        for klass in cls.__mro__:
            if klass is object:
                continue
            accepted |= set(inspect.signature(klass.__init__).parameters) - {"self", "kwargs", "args"}
        return accepted

    @classmethod
    def checked(cls, settings):
        """The family object for ``settings`` that the caller has validated already (with
        their origins in the messages): the constructor does not check them a second time."""
        token = _CHECKED.set(True)
        try:
            return cls(**settings)
        finally:
            _CHECKED.reset(token)

    # ------------------------------------------------------------------ building
    def build(self, **kwargs):
        """Create the Keras model: ``get_inputs`` -> ``call`` -> ``keras_model`` (once: a
        second call returns the same model). ``kwargs`` are set as attributes of this object
        first, overriding what the constructor set (e.g. ``build(layer_norm_cond=...)``)."""
        if self.built:
            return self.model
        for key, value in kwargs.items():
            setattr(self, key, value)
        self.inputs = self.get_inputs()
        self.outputs = self.call(self.inputs)
        self.model = self.keras_model(self.inputs + self.additional_input_layers, self.outputs,
                                      name=self.name)
        self.built = True
        return self.model

    settings = None  # {"model": key, **constructor arguments}: set by build_transformer_model
    source_dir = None  # the folder of the config it was built from (save_pretrained copies its vocabulary)

    def keras_model(self, inputs, outputs, name=None):
        """The functional model over ``inputs`` -> ``outputs``, linked back to this family
        object (``generate(model, ...)`` finds the family's cached forward through it) and
        carrying ``settings`` in its config, so a model loaded from a ``.keras`` file can
        rebuild the link (see :func:`built_transformer`)."""
        model = TransformerModel(inputs, outputs, name=name, settings=_jsonable(self.settings))
        model._kerasformer_transformer = self
        return model

    def call(self, inputs, decoding=None):
        """The forward pass: symbolic while the model is built, and on real tensors as the
        cached forward pass of generation, where ``decoding`` (a
        ``kerasformer.generation.engine.DecodingState``) is handed down to the hooks and by
        them to the layers that use it; the heads then return logits."""
        x = self.apply_embeddings(inputs, decoding)
        for index in range(self.num_hidden_layers):
            x = self.apply_main_layers(x, index, decoding)
        if decoding is None:
            self.sequence_output = x  # the last block's output, for heads added later (pretraining)
            return self.apply_final_layers(x)
        if decoding.last_only:  # a prefill predicts from its last position only
            x = x[:, -1:]
        return self.apply_final_layers(x, decoding, logits=True)

    def block_attention_mask(self, decoding):
        """The mask every block's self-attention uses: the one built from the token ids
        (``compute_attention_mask``), or the cached pass's."""
        return self.attention_mask if decoding is None else decoding.attention_mask

    @property
    def mask_id(self):
        """The token id that marks padding in the Keras mask born at the token embedding
        (None: no mask). The mask reaches the outputs, where bert4keras-style ``Loss``
        layers and the CRF read it."""
        return self.pad_token_id

    def apply_norm(self, x, name, decoding=None, **kwargs):
        """LayerNorm ``name`` on ``x`` (``kwargs`` for the layer); conditional on
        ``layer_norm_cond`` when the model has one, as every norm is in bert4keras (a cached
        pass carries the condition's value for its batch)."""
        kwargs.setdefault("epsilon", self.layer_norm_eps)
        if self.layer_norm_cond is None:
            return self.apply(x, LayerNorm, name=name, **kwargs)
        cond = self.layer_norm_cond if decoding is None else decoding.layer_norm_cond
        return self.apply([x, cond], LayerNorm, conditional=True,
                          hidden_units=self.layer_norm_cond_hidden_size,
                          hidden_activation=self.layer_norm_cond_hidden_act,
                          hidden_initializer=self.initializer, name=name, **kwargs)

    def prefixed(self, name):
        return self.prefix + name if name else name

    def apply(self, inputs=None, layer=None, arguments=None, **kwargs):
        """Call layer ``kwargs['name']`` on ``inputs``, creating it on first use.

        A second ``apply`` with the same name reuses the existing layer (and its
        weights). ``arguments`` are call-time keyword arguments.
        """
        name = self.prefixed(kwargs.get("name"))
        kwargs["name"] = name
        if name not in self.layers:
            self.layers[name] = self._create_layer(layer, kwargs)
        if inputs is None:
            return self.layers[name]
        with self._dtype_scope():  # sub-layers are created on the first call
            return self.layers[name](inputs, **(arguments or {}))

    def apply_cached(self, inputs, layer, decoding, key, arguments=None, **kwargs):
        """``apply`` for a layer that keeps a cache while decoding (``MultiHeadAttention``):
        in a cached pass it gets the state and its entry ``decoding.caches[key]``, and
        returns its output and new cache, which goes back under ``key``. ``key`` names the
        application, not the layer (``"self-3"`` for block 3), so a layer shared across
        depth (ALBERT) keeps one cache per block."""
        if decoding is None:
            return self.apply(inputs, layer, arguments, **kwargs)
        arguments = dict(arguments or {}, decoding=decoding, cache=decoding.caches.get(key))
        output, decoding.caches[key] = self.apply(inputs, layer, arguments, **kwargs)
        return output

    # layers whose activations recompute=True does not keep for the backward pass: the
    # attention scores/probabilities and the feed-forward expansion, most of a block's memory
    # (a family may list its own classes; empty means MultiHeadAttention and FeedForward)
    recompute_layers = ()

    def _create_layer(self, layer, kwargs):
        is_class = isinstance(layer, type)
        if self.dtype_policy is not None and is_class and issubclass(layer, keras.layers.Activation):
            # the heads' softmax in float32, as Keras' mixed-precision guide advises
            kwargs.setdefault("dtype", "float32")
        with self._dtype_scope():
            instance = layer(**kwargs)
        if self.recompute and is_class and issubclass(layer, self._recompute_classes()):
            instance.call = backend.recompute_call(instance, instance.call)
        return instance

    def _recompute_classes(self):
        from kerasformer.layers import FeedForward, MultiHeadAttention

        return tuple(self.recompute_layers) or (MultiHeadAttention, FeedForward)

    def _dtype_scope(self):
        """The family's dtype policy as Keras' global policy while layers are created."""
        if self.dtype_policy is None:
            return contextlib.nullcontext()
        return _global_dtype_policy(self.dtype_policy)

    def get_inputs(self):
        raise NotImplementedError

    # The hooks take the cached pass's state (None while building) and hand it to the
    # layers that use it: attention (apply_cached), positions, conditional norms.
    def apply_embeddings(self, inputs, decoding=None):
        raise NotImplementedError

    def apply_main_layers(self, inputs, index, decoding=None):
        raise NotImplementedError

    def apply_final_layers(self, inputs, decoding=None, logits=False):
        """The heads; ``logits=True`` (generation) asks for the vocabulary logits alone,
        without the final activation."""
        raise NotImplementedError

    def compute_attention_mask(self, token_ids, segment_ids):
        """The boolean mask for ``self.application``, built once and shared by all blocks."""
        if self.attention_mask is None:
            self.attention_mask = self.apply(
                inputs=[token_ids, segment_ids], layer=masks.AttentionMask,
                application=self.application, pad_id=self.pad_token_id, name="Attention-Mask")
        return self.attention_mask

    # ------------------------------------------------------------------ weights
    def weight_rows(self):
        """``[WeightRow]``: every weight of the network and where it lives in each checkpoint
        naming the family reads (see :mod:`kerasformer.checkpoints.weights`). The one method
        a family writes for its weights: loading, export and ``info`` are generic over it."""
        raise NotImplementedError

    # patterns of checkpoint tensors the family derives instead of loading (e.g. Hugging
    # Face's sinusoid buffers): skipped, and listed in ``load_report.ignored``
    derived_tensors = ()

    def detect_naming(self, names):
        """The naming of a checkpoint's ``names``: a key of the rows' ``sources``."""
        return detect_naming(names)

    def variable_mapping(self):
        """``{variable path: canonical Google-style checkpoint name}`` (bert4keras' API)."""
        return {r.variable: r.sources["google"].name for r in self.weight_rows() if "google" in r.sources}

    def model_variables(self):
        """``{path: variable}`` for every weight of the network that a checkpoint holds, in
        creation order: not the weights of layers the user joined in (what feeds
        ``layer_norm_cond``), nor the conditional LayerNorm projections, which are new and
        start at zero (as in bert4keras, whose checkpoints never hold them either)."""
        own = {id(w) for layer in self.layers.values() for w in layer.weights}
        new = {id(w) for layer in self.layers.values() if getattr(layer, "conditional", False)
               for sub in ("hidden_dense", "gamma_dense", "beta_dense")
               for w in getattr(getattr(layer, sub, None), "weights", ())}
        return {v.path: v for v in self.model.weights if id(v) in own and id(v) not in new}

    def _embedding_transform(self, value):
        """Apply keep_tokens / compound_tokens to a table whose rows are vocabulary."""
        if self.keep_tokens is not None:
            value = value[np.asarray(self.keep_tokens)]
        if self.compound_tokens is not None:
            extra = []
            for ids in self.compound_tokens:
                if isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], (list, tuple)):
                    ids, weights = ids  # (ids, weights) pairs, as bert4keras allows
                else:
                    weights = [1.0] * len(ids)
                weights = np.asarray(weights, dtype=value.dtype)
                extra.append((value[list(ids)] * weights[:, None] if value.ndim > 1
                              else value[list(ids)] * weights).sum(0) / weights.sum())
            value = np.concatenate([value, np.stack(extra)], axis=0)
        return value

    def load_weights_from_checkpoint(self, checkpoint):
        """Load a Google TF checkpoint, safetensors or pytorch_model.bin (file, prefix or
        folder), or a mapping ``{name: array}``.

        Returns a :class:`~kerasformer.checkpoints.weights.LoadReport`; raises
        ``WeightMismatchError`` naming missing variables and shape mismatches.
        """
        tensors = open_tensors(checkpoint)
        names = list(tensors.keys())
        naming = self.detect_naming(names)
        rows = self.weight_rows()
        self.check_family(names, naming)
        self._check_any_match(rows, naming, names)
        self.load_report = load_rows(self.model_variables(), rows, tensors, naming,
                                     self._embedding_transform, ignore=self.derived_tensors,
                                     ignore_missing=self.ignore_invalid_weights)
        return self.load_report

    def _check_any_match(self, rows, naming, names):
        """A checkpoint holding none of the family's names is another family's: one sentence
        saying which, instead of a wall of 'missing' lines."""
        present = set(names)
        if any(n in present for r in rows if naming in r.sources for n in r.sources[naming].names):
            return
        from kerasformer.models import guess_family

        family = guess_family(names)
        hint = f"; it looks like a {family!r} checkpoint: pass model={family!r}" if family else ""
        raise WeightMismatchError(f"the checkpoint holds none of {type(self).__name__}'s weights "
                                  f"(read as {naming!r} names){hint}")

    def check_family(self, names, naming):
        """Hook: raise a clear error when the checkpoint is of another family."""

    def export_tensors(self, naming="google"):
        """``{checkpoint name: array}`` of every weight under ``naming`` (a key of the rows'
        sources: 'google', 'hf', ...)."""
        return export_rows(self.model_variables(), self.weight_rows(), naming)

    def save_weights_as_checkpoint(self, path, format="tf", dtype=None):
        """Write the weights under the original names: ``format='tf'`` writes a Google
        TF checkpoint at prefix ``path``; ``'safetensors'`` a Hugging Face file;
        ``'torch'`` a ``pytorch_model.bin``. ``dtype`` (``'float16'``, ``'bfloat16'``,
        ``'float32'``) casts the floating-point weights on the way out; loading casts them
        back to the model's dtype. Every write is atomic."""
        if format not in ("tf", "safetensors", "torch"):
            raise KerasformerError(f"unknown checkpoint format {format!r}; use 'tf', 'safetensors' or 'torch'")
        tensors = cast_floats(self.export_tensors("google" if format == "tf" else "hf"), dtype)
        if format == "tf":
            from kerasformer.checkpoints.tf_bundle import write_tf_checkpoint

            write_tf_checkpoint(path, tensors)
        elif format == "safetensors":
            from kerasformer.checkpoints.resolve import save_safetensors

            save_safetensors(path, tensors)
        else:
            from kerasformer.checkpoints.torch_pickle import save_torch_bin

            save_torch_bin(path, tensors)

    def save_pretrained(self, folder, format="safetensors", tokenizer=None, dtype=None):
        """A model folder (config, weights, vocabulary) that ``build_transformer_model(folder)``
        and Hugging Face's ``from_pretrained`` load; see :func:`kerasformer.pretrained.save_pretrained`."""
        from kerasformer.pretrained import save_pretrained

        return save_pretrained(self, folder, format=format, tokenizer=tokenizer, dtype=dtype)


SAVE_DTYPES = ("float32", "float16", "bfloat16")


def cast_floats(tensors, dtype):
    """``tensors`` with every floating-point array cast to ``dtype`` (None: unchanged)."""
    if dtype is None:
        return tensors
    if dtype not in SAVE_DTYPES:
        raise KerasformerError(f"cannot save weights as {str(dtype)[:40]!r}; use one of {', '.join(SAVE_DTYPES)}")
    if dtype == "bfloat16":
        import ml_dtypes

        target = np.dtype(ml_dtypes.bfloat16)
    else:
        target = np.dtype(dtype)
    return {name: (np.asarray(a).astype(target) if np.issubdtype(np.asarray(a).dtype, np.floating) else a)
            for name, a in tensors.items()}


@contextlib.contextmanager
def _global_dtype_policy(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def find_config_file(path):
    """``path`` itself, or for a directory the config in it: ``config.json``,
    ``bert_config.json``, ``hparams.json``, else the only ``*_config.json`` (Google's
    releases name theirs after the model: ``albert_config.json``, ...)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return path
    for candidate in ("config.json", "bert_config.json", "hparams.json"):
        if os.path.exists(os.path.join(path, candidate)):
            return os.path.join(path, candidate)
    found = sorted(n for n in os.listdir(path) if n.endswith("_config.json"))
    if len(found) == 1:
        return os.path.join(path, found[0])
    raise KerasformerError(
        f"no config.json, bert_config.json, hparams.json or single *_config.json in directory {path}"
        + (f" (several: {', '.join(found[:5])})" if found else ""))


def load_config(config_path):
    """Read Google's ``bert_config.json``, a Hugging Face ``config.json`` or any family's
    config file as it is: its keys are translated by the family's ``from_config``."""
    config_path = find_config_file(config_path)
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise KerasformerError(f"config file not found: {config_path}") from None
    except UnicodeDecodeError as e:
        raise KerasformerError(f"config file {config_path} is not UTF-8 text ({e.reason} at byte "
                               f"{e.start})") from None
    except (ValueError, RecursionError) as e:  # bad JSON, 100k-deep nesting, huge ints
        raise KerasformerError(f"config file {config_path} is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(config, dict):
        raise KerasformerError(f"config file {config_path} must hold a JSON object (name: value), "
                               f"got a JSON {type(config).__name__}")
    return config


@keras.saving.register_keras_serializable(package="kerasformer")
class TransformerModel(keras.Model):
    """A functional ``keras.Model`` (what ``build_transformer_model`` returns) whose config
    also records the family and its settings: ``keras.saving.load_model`` then gives back
    a model that ``generate`` can still decode with a cache."""

    def __init__(self, *args, settings=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = settings

    def get_config(self):
        config = super().get_config()
        if self.settings is not None:
            config["settings"] = self.settings
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        settings = config.pop("settings", None)
        model = super().from_config(config, custom_objects=custom_objects)
        model.settings = settings
        return model

    # Inputs are checked and nested Python lists made arrays before Keras sees them (see
    # kerasformer.models.inputs): bert4keras' model([[ids], [segments]]) works, and an
    # over-long sequence is a clear error that leaves the model usable. predict / fit /
    # evaluate and the saves get the same for every keras.Model (kerasformer.keras_compat).
    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(standardize_inputs(self, inputs), *args, **kwargs)

    def predict_step(self, *args, **kwargs):
        # torch: Keras' predict loop (batches, callbacks) around the traced graph that
        # backend.predict runs (no Keras dispatch per op, fused oneDNN linears); Keras' own
        # step on other backends (JAX's is ``predict_step(state, data)``, already compiled)
        # and when the user asked for torch.compile (jit_compile=True)
        if backend.name() == "torch" and not self.jit_compile and len(args) == 1 and not kwargs:
            x, _, _ = keras.utils.unpack_x_y_sample_weight(args[0])
            return backend.model_forward(self)(x)
        return super().predict_step(*args, **kwargs)


def _jsonable(settings):
    """``settings`` as plain JSON values (numpy arrays to lists, dtype policies to names),
    or None when something cannot be written: the model then saves without them."""
    if settings is None:
        return None
    try:
        text = json.dumps(settings, default=lambda v: v.tolist() if hasattr(v, "tolist")
                          else getattr(v, "name", None) or str(v))
    except (TypeError, ValueError):
        return None
    return json.loads(text)


def built_transformer(model):
    """The :class:`Transformer` that built ``model``, or None. A model loaded from a
    ``.keras`` file gets a family object rebuilt from the settings in its config, bound to
    the loaded layers (nothing is created, no weight is copied)."""
    transformer = getattr(model, "_kerasformer_transformer", None)
    settings = getattr(model, "settings", None)
    if transformer is None and settings:
        from kerasformer.models import get_family

        settings = dict(settings)
        family = get_family(settings.pop("model"))
        transformer = family(**family.from_config(settings))
        transformer.layers = {layer.name: layer for layer in model.layers}
        transformer.model, transformer.built = model, True
        transformer.inputs, transformer.outputs = model.inputs, model.outputs
        model._kerasformer_transformer = transformer
    return transformer
