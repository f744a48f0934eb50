"""``build_transformer_model``: one entry point for every family (bert4keras semantics)."""
import inspect
import os

from kerasformer.errors import FamilyMismatchError, KerasformerError, WeightMismatchError
from kerasformer.models.bert import BERT, RoBERTa
from kerasformer.models.transformer import Transformer, load_config
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
    ("bert", ("bert/encoder/layer_0/", "bert.encoder.layer.0.", "encoder.layer.0.")),
]


def guess_family(names):
    names = list(names)
    for family, marks in FAMILY_SIGNATURES:
        if any(mark in n for n in names for mark in marks):
            return family
    return None


def _accepted_kwargs(cls):
    accepted = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        accepted |= set(inspect.signature(klass.__init__).parameters) - {"self", "kwargs"}
    return accepted


def build_transformer_model(config_path=None, checkpoint_path=None, model="bert",
                            application="encoder", return_keras_model=True, **kwargs):
    """Build a Transformer as a Keras 3 model and load its checkpoint.

    Args:
        config_path: Google's ``bert_config.json``, a Hugging Face ``config.json``, or a
            directory holding one. Keyword arguments override its values.
        checkpoint_path: a Google TF checkpoint prefix (``.../bert_model.ckpt``), a
            ``model.safetensors`` (or sharded index), a ``pytorch_model.bin``, or a
            directory holding one of these. ``None`` keeps random weights.
        model: family key (``'bert'``, ``'roberta'``, ...) or a ``Transformer`` subclass.
        application: ``'encoder'``, ``'lm'`` (causal) or ``'unilm'`` (seq2seq mask).
        return_keras_model: return the ``keras.Model`` (default) or the family object,
            whose ``.model`` is the Keras model and which can load / save checkpoints.
        **kwargs: family options: ``with_pool``, ``with_nsp``, ``with_mlm``,
            ``keep_tokens``, ``compound_tokens``, ``sequence_length``,
            ``dropout_rate``, ``attention_dropout_rate``, ``name``, ``recompute``
            (gradient checkpointing of every block), ``dtype_policy`` (e.g.
            ``'mixed_bfloat16'``), ...
    """
    if isinstance(model, str):
        key = model.lower()
        if key not in MODELS:
            raise KerasformerError(f"unknown model {model!r}; available: {', '.join(sorted(MODELS))}")
        cls = get_family(key)
    elif isinstance(model, type) and issubclass(model, Transformer):
        cls = model
    else:
        raise KerasformerError(f"model must be a family name or a Transformer subclass, got {model!r}")
    accepted = _accepted_kwargs(cls)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise KerasformerError(f"unknown argument(s) for model {cls.__name__}: {', '.join(unknown)}")
    configs = load_config(config_path) if config_path is not None else {}
    if hasattr(cls, "normalize_config"):  # families whose configs use their own key names
        configs = cls.normalize_config(configs)
    configs = {k: v for k, v in configs.items() if k in accepted}
    # every value the family will read, named with where it came from
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
    transformer = cls(**configs)
    # recorded in the model's config, so a model loaded from .keras can rebuild its family
    if not isinstance(model, str):
        key = getattr(cls, "model_key", None)
        key = key if key in MODELS and get_family(key) is cls else None
    # a model conditioned on tensors of the user's graph cannot be rebuilt from settings
    conditioned = configs.get("layer_norm_cond") is not None or configs.get("additional_input_layers")
    transformer.settings = {"model": key, **configs} if key and not conditioned else None
    transformer.build()
    if checkpoint_path is not None:
        try:
            transformer.load_weights_from_checkpoint(checkpoint_path)
        except FamilyMismatchError:
            raise  # the family's own diagnosis is more precise than a guess from names
        except WeightMismatchError as e:
            from kerasformer.checkpoints.resolve import open_checkpoint

            family = guess_family(open_checkpoint(checkpoint_path).keys())
            own = getattr(cls, "model_key", None)
            if family and own and family != own and not (family == "bert" and own == "roberta"):
                raise FamilyMismatchError(
                    f"{checkpoint_path} looks like a {family!r} checkpoint, but model={own!r} was "
                    f"asked for; pass model={family!r}") from e
            raise
    return transformer.model if return_keras_model else transformer


__all__ = ["BERT", "MODELS", "RoBERTa", "Transformer", "build_transformer_model", "guess_family"]
