"""``build_transformer_model``: one entry point for every family (bert4keras semantics)."""
import inspect
import os

from kerasformer.errors import FamilyMismatchError, KerasformerError, WeightMismatchError
from kerasformer.models.bert import BERT, RoBERTa
from kerasformer.models.transformer import Transformer, find_config_file, load_config
from kerasformer.validation import check_config, check_model_size

# model key -> family class, or "module:Class" imported on first use (one file per family)
MODELS = {
    "bert": BERT,
    "roberta": RoBERTa,
    "albert": "kerasformer.models.albert:ALBERT",
    "albert_unshared": "kerasformer.models.albert:ALBERT_Unshared",
    "electra": "kerasformer.models.electra:ELECTRA",
    "nezha": "kerasformer.models.nezha:NEZHA",
    "roformer": "kerasformer.models.roformer:RoFormer",
    "roformer_v2": "kerasformer.models.roformer:RoFormerV2",
    "gpt2": "kerasformer.models.gpt2:GPT2",
    "gpt2_ml": "kerasformer.models.gpt2:GPT2_ML",
    "t5": "kerasformer.models.t5:T5",
    "t5.1.0": "kerasformer.models.t5:T5",
    "t5.1.1": "kerasformer.models.t5:T5_V1_1",
    "mt5.1.1": "kerasformer.models.t5:T5_V1_1",
    "gpt": "kerasformer.models.gpt:GPT",
    "gau_alpha": "kerasformer.models.gau:GAU_alpha",
}
# bert4keras' keys for one part of T5: '<version>_encoder' / '<version>_decoder'
for _version, _cls in [("t5", "T5"), ("t5.1.0", "T5"), ("t5.1.1", "T5_V1_1"), ("mt5.1.1", "T5_V1_1")]:
    for _part in ("encoder", "decoder"):
        MODELS[f"{_version}_{_part}"] = f"kerasformer.models.t5:{_cls}_{_part.capitalize()}"


def get_family(key):
    """The family class for a model key (imports its module on first use)."""
    entry = MODELS[key]
    if isinstance(entry, str):
        import importlib

        module, _, attr = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise KerasformerError(f"model {key!r} is not available in this build ({e})") from None
        MODELS[key] = entry
    return entry

# What a checkpoint's names betray about its family, to turn a wall of "missing
# variable" lines into one useful sentence when the wrong model= is passed.
FAMILY_SIGNATURES = [
    ("albert", ("albert.", "albert_layer_groups", "bert/encoder/transformer/group_")),
    ("electra", ("electra/", "electra.", "discriminator_predictions", "generator_predictions",
                 "generator_lm_head")),
    ("roberta", ("roberta.",)),
    ("gpt2_ml", ("newslm/",)),
    ("gpt2", ("transformer.h.", "model/h0/", "wte.weight")),
    ("t5", ("encoder.block.", "shared.weight", "encoder/block_000/")),
    ("nezha", ("nezha.",)),
    ("roformer", ("roformer.", "roformer/")),
    ("gau_alpha", ("GAU_alpha/encoder/",)),
    ("bert", ("bert/encoder/layer_0/", "bert.encoder.layer.0.", "encoder.layer.0.")),
]


def guess_family(names):
    """The family key the checkpoint's names betray, or None (T5: its version, from the
    feed-forward's names)."""
    names = list(names)
    for family, marks in FAMILY_SIGNATURES:
        if any(mark in n for n in names for mark in marks):
            if family == "t5":
                return "t5.1.1" if any("wi_0" in n for n in names) else "t5.1.0"
            return family
    return None


def _accepted_kwargs(cls):
    return cls.arguments()


# Hugging Face ``model_type`` -> family key (T5 picks its version from the feed-forward)
HF_MODEL_TYPES = {"bert": "bert", "roberta": "roberta", "albert": "albert", "electra": "electra",
                  "roformer": "roformer", "nezha": "nezha", "gpt2": "gpt2"}


def declared_family(config, config_file=None):
    """The family key a checkpoint's own config names, or None when it names none (a
    Google BERT config names nothing: bert4keras' default, BERT, applies).

    Hugging Face configs say ``model_type``; Google's TF releases tell by their file name
    (``albert_config.json``, ``mt5_base_config.json``, OpenAI's ``hparams.json``) or keys
    (ALBERT's ``num_hidden_groups``, NEZHA's ``use_relative_position``). A ``model_type``
    kerasformer does not build raises "not supported yet"."""
    if config.get("kerasformer_model") in MODELS:  # written by save_pretrained
        return config["kerasformer_model"]
    model_type = config.get("model_type")
    gated = (str(config.get("feed_forward_proj", "")).startswith("gated-")
             or isinstance(config.get("hidden_act"), (list, tuple)))
    if model_type is not None:
        kind = str(model_type).lower()
        if kind == "mt5":
            return "mt5.1.1"
        if kind == "t5":
            return "t5.1.1" if gated else "t5.1.0"
        if kind in HF_MODEL_TYPES:
            return HF_MODEL_TYPES[kind]
        raise KerasformerError(
            f"model_type {str(model_type)[:40]!r} is not supported yet; kerasformer builds "
            f"{', '.join(sorted(set(HF_MODEL_TYPES) | {'t5', 'mt5'}))}")
    base = os.path.basename(config_file or "").lower()
    if base.startswith("albert") or "num_hidden_groups" in config:
        return "albert"
    if base.startswith("electra"):
        return "electra"
    if base.startswith("mt5"):
        return "mt5.1.1"
    if base.startswith("t5"):
        return "t5.1.1" if gated else "t5.1.0"
    if base == "hparams.json" or "n_embd" in config:
        return "gpt2"
    if config.get("use_relative_position"):
        return "nezha"
    return None


def _checkpoint_config(checkpoint_path):
    """The config file that sits with a checkpoint (its directory's), or None."""
    if not isinstance(checkpoint_path, (str, os.PathLike)):
        return None
    path = os.fspath(checkpoint_path)
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    try:
        return find_config_file(directory) if os.path.isdir(directory) else None
    except KerasformerError:  # no config there, or several
        return None


def _holds_checkpoint(directory):
    from kerasformer.checkpoints.resolve import _DIRECTORY_FILES

    names = set(os.listdir(directory))
    return (any(name in names for name, _ in _DIRECTORY_FILES) or "checkpoint" in names
            or any(n.endswith(".index") for n in names))


def resolve_family(model, config, config_file=None, checkpoint_path=None):
    """``(key or None, family class)`` for ``build_transformer_model``.

    ``model=None`` takes the family the config (or the config beside the checkpoint)
    declares, else BERT (bert4keras' default). An explicit
    ``model`` wins, unless the checkpoint's own config names another family: loading
    RoBERTa weights into BERT runs but computes something else, so that is an error."""
    declared = []  # (family, file that says so)
    for cfg, file in ((config, config_file), (None, _checkpoint_config(checkpoint_path))):
        if cfg is None and file is not None and file != config_file:
            cfg = load_config(file)
        if cfg is not None:
            family = declared_family(cfg, file)
            if family is not None:
                declared.append((family, file))
    if model is None:
        # bert4keras' default; a checkpoint of another family fails to load with a hint
        key = declared[0][0] if declared else "bert"
        return key, get_family(key)
    if isinstance(model, str):
        key = model.lower()
        if key not in MODELS:
            raise KerasformerError(f"unknown model {model[:40]!r}; available: {', '.join(sorted(MODELS))}")
        cls = get_family(key)
    elif isinstance(model, type) and issubclass(model, Transformer):
        key, cls = None, model
    else:
        raise KerasformerError(f"model must be a family name or a Transformer subclass, got {model!r:.80}")
    for family, file in declared:
        # a family's variants subclass it (RoBERTa, NEZHA and RoFormer are BERTs, roformer_v2
        # a RoFormer, albert_unshared an ALBERT): those load what the config declares
        if not issubclass(cls, get_family(family)):
            raise FamilyMismatchError(
                f"{file} declares a {family!r} model (the config is {get_family(family).__name__}'s), "
                f"but model={model if key is None else key!r} was asked for; pass model={family!r} "
                "(or leave model out)")
    return key, cls


def make_transformer(config_path=None, checkpoint_path=None, model=None, application="encoder",
                     **kwargs):
    """The family object ``build_transformer_model`` would build (not built yet), and the
    checkpoint path it would load (a model folder given as ``config_path`` holds one)."""
    if config_path is not None and checkpoint_path is None and os.path.isdir(config_path) \
            and _holds_checkpoint(config_path):
        checkpoint_path = config_path  # a model folder, as from_pretrained reads one
    config_file = find_config_file(config_path) if config_path is not None else None
    configs = load_config(config_file) if config_file is not None else {}
    key, cls = resolve_family(model, configs, config_file, checkpoint_path)
    unknown = sorted(set(kwargs) - cls.arguments())
    if unknown:
        raise KerasformerError(f"unknown argument(s) for model {cls.__name__}: {', '.join(unknown)}")
    configs = cls.from_config(configs)  # the family's own argument names
    # every value the family will read, named with where it came from, checked once here
    # (the constructor skips its own check: Transformer.checked)
    check_config({k: v for k, v in configs.items() if k not in kwargs}, os.fspath(config_path)
                 if config_path is not None else "")
    check_config(kwargs, "the keyword arguments")
    check_model_size({**configs, **kwargs}, os.fspath(config_path) if config_path is not None else "")
    configs.update(kwargs)
    configs["application"] = application
    required = [p.name for p in inspect.signature(Transformer.__init__).parameters.values()
                if p.default is inspect.Parameter.empty and p.name != "self"]
    missing = [r for r in required if r not in configs]
    if missing:
        raise KerasformerError(
            f"missing model settings {', '.join(missing)}: pass config_path or the keyword arguments")
    transformer = cls.checked(configs)
    # recorded in the model's config, so a model loaded from .keras can rebuild its family
    if key is None:
        key = getattr(cls, "model_key", None)
        key = key if key in MODELS and get_family(key) is cls else None
    # a model conditioned on tensors of the user's graph cannot be rebuilt from settings
    conditioned = configs.get("layer_norm_cond") is not None or configs.get("additional_input_layers")
    transformer.settings = {"model": key, **configs} if key and not conditioned else None
    # save_pretrained copies the vocabulary found beside the config
    transformer.source_dir = os.path.dirname(os.path.abspath(config_file)) if config_file else None
    return transformer, checkpoint_path


def _loads_family(cls, key):
    """Whether ``cls`` loads checkpoints of family ``key``: its own, or those of the family
    it is a variant of (ALBERT_Unshared an ALBERT, RoFormer-v2 a RoFormer; RoBERTa loads
    BERT's, as the Chinese RoBERTa-wwm releases are). Every BERT-like family subclasses BERT
    for its network, not its checkpoints, so BERT's count only for BERT and RoBERTa."""
    base = get_family(key)
    return issubclass(cls, RoBERTa) or cls is base if base is BERT else issubclass(cls, base)


def build_transformer_model(config_path=None, checkpoint_path=None, model=None,
                            application="encoder", return_keras_model=True, **kwargs):
    """Build a Transformer as a Keras 3 model and load its checkpoint.

    Args:
        config_path: Google's ``bert_config.json``, a Hugging Face ``config.json``, or a
            directory holding one. Keyword arguments override its values. A model
            folder given alone (no ``checkpoint_path``) also loads the checkpoint it
            holds, as ``from_pretrained`` does.
        checkpoint_path: a Google TF checkpoint prefix (``.../bert_model.ckpt``), a
            ``model.safetensors`` (or sharded index), a ``pytorch_model.bin``, or a
            directory holding one of these. ``None`` keeps random weights.
        model: family key (``'bert'``, ``'roberta'``, ...) or a ``Transformer`` subclass.
            Default: the family the checkpoint's own config declares (HF ``model_type``;
            the Google config's file name or keys), else the one its weight names show,
            else ``'bert'``. An explicit family that contradicts the checkpoint's config
            (``model='bert'`` on a RoBERTa folder) raises ``FamilyMismatchError``.
        application: ``'encoder'``, ``'lm'`` (causal) or ``'unilm'`` (seq2seq mask).
        return_keras_model: return the ``keras.Model`` (default) or the family object,
            whose ``.model`` is the Keras model and which can load / save checkpoints.
        **kwargs: family options: ``with_pool``, ``with_nsp``, ``with_mlm``,
            ``keep_tokens``, ``compound_tokens``, ``sequence_length``,
            ``dropout_rate``, ``attention_dropout_rate``, ``name``, ``recompute``
            (gradient checkpointing of every block), ``dtype_policy`` (e.g.
            ``'mixed_bfloat16'``), ...
    """
    transformer, checkpoint_path = make_transformer(config_path, checkpoint_path, model,
                                                    application, **kwargs)
    transformer.build()
    if checkpoint_path is not None:
        try:
            transformer.load_weights_from_checkpoint(checkpoint_path)
        except FamilyMismatchError:
            raise  # the family's own diagnosis is more precise than a guess from names
        except WeightMismatchError as e:
            from kerasformer.checkpoints.resolve import open_checkpoint

            family = guess_family(open_checkpoint(checkpoint_path).keys())
            if family and not _loads_family(type(transformer), family):
                raise FamilyMismatchError(
                    f"{checkpoint_path} looks like a {family!r} checkpoint, but "
                    f"model={type(transformer).model_key!r} was asked for; pass model={family!r}") from e
            raise
    return transformer.model if return_keras_model else transformer


__all__ = ["BERT", "MODELS", "RoBERTa", "Transformer", "build_transformer_model", "declared_family",
           "guess_family", "make_transformer", "resolve_family"]
