"""``pretrain(...)``: build a family with its MLM / LM head, compile it with bert4keras'
pretraining optimizers, and train it on preprocessed shards with checkpoints, a progress
bar and a CSV log; the output folder holds ``config.json``, ``model.safetensors`` and
``vocab.txt``.

One training step is ``grad_accum`` micro-batches of ``batch_size`` rows (Keras' gradient
accumulation) and one optimizer update; the learning-rate schedule (linear warm-up to
``lr``, then linear decay to 0 at ``steps``) counts micro-batches, as bert4keras did.
The loss is bert4keras' ``mlm_loss`` / ``lm_loss``: mean cross-entropy over the target
positions of the whole global batch, so 1 device and N devices compute the same number.
"""
import csv
import json
import os
import shutil
import time

import numpy as np

from kerasformer.errors import KerasformerError
from kerasformer.pretraining import checkpoint as ckpt
from kerasformer.pretraining.corpus import build_shards, load_index
from kerasformer.pretraining.loader import Loader
from kerasformer.pretraining.objectives import (Objective, check_objective, gather_targets, masked_loss,
                                                prediction_slots)

# model configs by name (BERT-style keys; the family comes from --model)
PRESETS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "medium": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
LM_ONLY = ("gpt2", "gpt2_ml")  # families whose head is a causal LM only
# dense peak FLOP/s per device for MFU when the user gives none (bf16 tensor cores for GPUs)
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "V100": 125e12,
              "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5": 459e12}


def resolve_config(config):
    """A preset name, a config file / folder, or a dict -> constructor settings."""
    from kerasformer.models.transformer import load_config

    if isinstance(config, dict):
        return dict(config)
    if config in PRESETS:
        return dict(PRESETS[config])
    if config is None or not os.path.exists(config):
        raise KerasformerError(f"--config {str(config)[:200]!r} is neither a preset ({', '.join(PRESETS)}) "
                               "nor an existing config file")
    return load_config(config)


def build_pretraining_model(objective, config, vocab_size, model="bert", init=None, seq_len=None,
                            dtype_policy=None, recompute=False, dropout_rate=None):
    """The family object with its head giving logits: MLM for ``mlm`` / ``unilm`` (the latter
    with ``application='unilm'``), a causal LM for ``lm``."""
    from kerasformer import build_transformer_model

    from kerasformer.models import MODELS, _accepted_kwargs, get_family

    objective = check_objective(objective)
    family = str(model).lower()
    if family not in MODELS:
        raise KerasformerError(f"unknown model {str(model)[:50]!r}; available: {', '.join(sorted(MODELS))}")
    settings = resolve_config(config)  # validates; a file is read again by the loader
    config_path = None if isinstance(config, dict) or config in PRESETS else config
    if config_path is not None:
        settings = {}
    else:
        settings.setdefault("max_position", max(512, int(seq_len or 0)))
    settings["vocab_size"] = int(vocab_size)
    if dropout_rate is not None:
        settings["dropout_rate"] = settings["attention_dropout_rate"] = float(dropout_rate)
    if family in LM_ONLY:
        if objective != "lm":
            raise KerasformerError(f"model {family!r} has a causal LM head only: use --objective lm")
        head = {"with_lm": "linear"}
    else:
        head = {"with_mlm": "linear", "application": {"mlm": "encoder", "lm": "lm", "unilm": "unilm"}[objective]}
    if dtype_policy:
        head["dtype_policy"] = dtype_policy
    if recompute:
        head["recompute"] = True
    accepted = _accepted_kwargs(get_family(family)) | {"application"}
    settings = {k: v for k, v in settings.items() if k in accepted}
    return build_transformer_model(config_path, init, model=family, return_keras_model=False, **settings, **head)


def make_optimizer(name="adamw", lr=1e-4, steps=1000, warmup=0.1, weight_decay=0.01, grad_accum=1, ema=None):
    """AdamW or LAMB (bert4keras' ``extend_with_layer_adaptation``), both with decoupled weight
    decay (LayerNorm and biases excluded) and the piecewise-linear schedule; optional EMA
    and gradient accumulation."""
    import keras

    from kerasformer import optimizers as O

    name = str(name).lower()
    cls = O.extend_with_weight_decay(keras.optimizers.Adam)
    if name == "lamb":
        cls = O.extend_with_layer_adaptation(cls)
    elif name != "adamw":
        raise KerasformerError(f"unknown optimizer {name!r}; use adamw or lamb")
    cls = O.extend_with_piecewise_linear_lr(cls)
    kwargs = {}
    if grad_accum > 1:
        cls = O.extend_with_gradient_accumulation(cls)
        kwargs["grad_accum_steps"] = int(grad_accum)
    if ema:
        cls = O.extend_with_exponential_moving_average(cls)
        kwargs["ema_momentum"] = float(ema)
    warm = max(1, int(round(warmup * steps if warmup < 1 else warmup)))
    schedule = {warm * grad_accum: 1.0, max(steps, warm + 1) * grad_accum: 0.0}
    return cls(learning_rate=lr, weight_decay_rate=weight_decay, epsilon=1e-6,
               exclude_from_weight_decay=list(O.DEFAULT_WEIGHT_DECAY_EXCLUDE), lr_schedule=schedule, **kwargs)


class _MaskedLoss:
    """Keras reads the padding mask the model's outputs carry and re-weights a loss with
    it; our targets already mark the positions (-1 = none), so the mask is not applied."""

    def __new__(cls):
        import keras

        class MaskedLoss(keras.losses.Loss):
            def __init__(self):
                super().__init__(name="masked_loss")

            def __call__(self, y_true, y_pred, sample_weight=None):
                return masked_loss(y_true, y_pred)

            def call(self, y_true, y_pred):
                return masked_loss(y_true, y_pred)

        return MaskedLoss()


def flops_per_token(transformer, seq_len, head_fraction=1.0):
    """Training FLOPs per token: 6 x (weights used in matmuls, the tied output projection
    included) + 12 x layers x hidden x seq_len for attention scores (PaLM's estimate). The
    MLM head's weights count for ``head_fraction`` of the tokens when it runs on the masked
    positions alone."""
    body = head = 0
    for v in transformer.model.weights:
        if any(k in v.path for k in ("Embedding-Position", "Embedding-Segment")) or len(v.shape) < 2:
            continue
        if "MLM-" in v.path or "Embedding-Token" in v.path:
            head += int(np.prod(v.shape))
        else:
            body += int(np.prod(v.shape))
    return 6 * (body + head * head_fraction) + 12 * transformer.num_hidden_layers * transformer.hidden_size * seq_len


def masked_positions_model(transformer, slots):
    """The training model of a masked objective: the encoder, then the MLM head on ``slots``
    gathered positions per row (a third input) instead of on every position. The head is
    the same layers (shared weights), and the loss over the gathered targets equals the
    loss over the full rows; with a vocabulary of 11k and 4 x 256 blocks the head is half
    the model's FLOPs, and 15% of the positions carry a target."""
    import keras

    from kerasformer.layers.heads import TakePositions

    positions = keras.Input((slots,), dtype="int32", name=transformer.prefixed("Input-Masked-Positions"))
    x = transformer.apply([transformer.sequence_output, positions], TakePositions, name="MLM-Positions")
    logits = transformer.apply_final_layers(x, logits=True)
    return keras.Model(transformer.model.inputs + [positions], logits, name="masked_positions")


def peak_flops(user_tflops=None, bfloat16=False):
    """Peak FLOP/s of all devices in use: the user's figure per device, a known accelerator
    (its bfloat16 figure), or for CPUs cores x 2.5 GHz x 32 float32 FLOPs/cycle (two AVX2 FMA
    units), twice that for ``bfloat16`` matmuls (a bf16 dot-product instruction does twice
    the multiply-adds of a float32 FMA: AVX512-BF16, AMX aside)."""
    import keras

    n = 1
    kind = "cpu"
    if keras.backend.backend() == "jax":
        import jax

        devices = jax.devices()
        n, kind = len(devices), devices[0].device_kind
    if user_tflops:
        return float(user_tflops) * 1e12 * n
    for key, value in PEAK_FLOPS.items():
        if key.lower() in kind.lower():
            return value * n
    return (os.cpu_count() or 1) * 2.5e9 * 32 * (2 if bfloat16 else 1)


def export_model(transformer, out_dir, vocab):
    """``out_dir``: ``config.json`` + ``model.safetensors`` + ``vocab.txt``, loadable with
    ``build_transformer_model(out_dir, out_dir)``; written in a temporary folder, then renamed."""
    try:
        from kerasformer.pretrained import save_pretrained  # the shared writer, where present
    except ImportError:
        save_pretrained = None
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if save_pretrained is not None:
        save_pretrained(transformer, tmp)
    else:
        transformer.save_weights_as_checkpoint(os.path.join(tmp, "model.safetensors"), format="safetensors")
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(model_config(transformer), f, indent=1)
    shutil.copyfile(vocab, os.path.join(tmp, "vocab.txt"))
    old = out_dir.rstrip("/") + ".old"
    if os.path.exists(out_dir):
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def model_config(transformer):
    """A Hugging Face style config (BERT key names) of a family object."""
    settings = dict(transformer.settings or {})
    t = transformer
    config = {k: v for k, v in settings.items() if isinstance(v, (int, float, str, bool)) and k not in (
        "application", "with_mlm", "with_lm", "recompute", "dtype_policy", "name")}
    config.update({
        "model_type": settings.get("model") or "bert", "vocab_size": t.vocab_size,
        "hidden_size": t.hidden_size, "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads, "intermediate_size": t.intermediate_size,
        "hidden_act": t.hidden_act, "hidden_dropout_prob": t.dropout_rate,
        "attention_probs_dropout_prob": t.attention_dropout_rate, "layer_norm_eps": t.layer_norm_eps,
        "pad_token_id": t.pad_token_id,
    })
    if "max_position" in settings:
        config["max_position_embeddings"] = settings["max_position"]
    if "segment_vocab_size" in settings:
        config["type_vocab_size"] = settings["segment_vocab_size"]
    if config["model_type"] == "bert":
        config["architectures"] = ["BertForMaskedLM"]
        config.setdefault("type_vocab_size", 2)
        config.setdefault("max_position_embeddings", 512)
    return config


def _vocab_ids(vocab, do_lower_case=True):
    from kerasformer.tokenizers.wordpiece import Tokenizer

    t = Tokenizer(vocab, do_lower_case=do_lower_case)
    return dict(vocab_size=t.vocab_size, mask_id=t.mask_id, pad_id=t.pad_id or 0, sep_id=t.end_id,
                special_ids=[t.pad_id, t.unk_id, t.mask_id, t.start_id, t.end_id])


def pretrain(objective, data, vocab, out, config="small", model="bert", init=None, seq_len=128, batch_size=32,
             steps=1000, lr=1e-4, warmup=0.1, optimizer="adamw", weight_decay=0.01, grad_accum=1, ema=None,
             mixed_precision=False, recompute=False, dropout_rate=None, data_parallel=None, mesh=None,
             seed=0, static_masking=False, mask_rate=0.15, save_every=500, keep=3, resume=False,
             log_every=1, peak_tflops=None, segmenter="jieba", documents="line", workers=None,
             do_lower_case=True, progress=True, on_step=None, pack="document"):
    """Pretrain and write ``out/`` (model folder), ``out/checkpoints/`` and ``out/log.csv``.

    ``data`` is a preprocessed dataset folder, or raw text files (preprocessed once into
    ``out/data``). ``data_parallel=N`` / ``mesh=(D, M)`` distribute on JAX. ``on_step(step,
    loss)`` is called after every update. Returns the list of losses of the updates run.
    """
    import keras

    objective = check_objective(objective)
    if data_parallel and mesh:
        raise KerasformerError("--data-parallel and --mesh exclude each other")
    distribution = None
    if data_parallel:
        from kerasformer.pretraining.distribution import data_parallel as dp

        distribution = dp(data_parallel)
    elif mesh:
        from kerasformer.pretraining.distribution import model_parallel, parse_mesh

        mesh = parse_mesh(mesh) if isinstance(mesh, str) else tuple(mesh)
        distribution = model_parallel(*mesh)
    process_index, process_count = 0, 1
    if keras.backend.backend() == "jax":
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()

    os.makedirs(out, exist_ok=True)
    if isinstance(data, (list, tuple)) or not os.path.isdir(str(data)):
        data_dir = os.path.join(out, "data")
        if process_index == 0:
            build_shards(data, data_dir, vocab, seq_len=seq_len, do_lower_case=do_lower_case, segmenter=segmenter,
                         documents=documents, workers=workers, progress=progress, pack=pack)
        if process_count > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("kerasformer-pretrain-data")
        data = data_dir
    index = load_index(data)
    if int(index["seq_len"]) != int(seq_len):
        raise KerasformerError(f"the dataset was packed to length {index['seq_len']}, not --seq-len {seq_len}")

    checkpoints = os.path.join(out, "checkpoints")
    existing = ckpt.list_checkpoints(checkpoints)
    if existing and not resume:
        raise KerasformerError(f"{checkpoints} holds checkpoints: pass --resume to continue, "
                               "or choose another --out")
    keras.utils.set_random_seed(seed)
    previous = keras.distribution.distribution()
    if distribution is not None:
        keras.distribution.set_distribution(distribution)
    try:
        ids = _vocab_ids(vocab, do_lower_case)
        transformer = build_pretraining_model(
            objective, config, ids["vocab_size"], model=model, init=init, seq_len=seq_len,
            dtype_policy="mixed_bfloat16" if mixed_precision else None, recompute=recompute,
            dropout_rate=dropout_rate)
        if mesh:
            from kerasformer.pretraining.distribution import check_divisible

            check_divisible(transformer, mesh[1])
        # a masked objective runs its head on the masked positions only (mlm, unilm: every
        # target is a masked token); lm has a target at every position
        slots = prediction_slots(seq_len, mask_rate) if objective != "lm" else None
        train_model = masked_positions_model(transformer, slots) if slots else transformer.model
        train_model.compile(optimizer=make_optimizer(optimizer, lr, steps, warmup, weight_decay, grad_accum, ema),
                            loss=_MaskedLoss())
        loader = Loader(data, batch_size, Objective(objective, seed=seed, static=static_masking,
                                                    mask_rate=mask_rate, **ids),
                        seed=seed, process_index=process_index, process_count=process_count)
        two_inputs = len(transformer.model.inputs) > 1
        step = 0
        if resume and existing:
            state = ckpt.load_checkpoint(existing[-1], train_model)
            loader.load_state_dict(state["loader"])
            step = int(state["step"])
        log_path = os.path.join(out, "log.csv")
        rows = _read_log(log_path, step) if resume else []
        tokens_per_step = batch_size * seq_len * grad_accum
        flops = flops_per_token(transformer, seq_len, slots / seq_len if slots else 1.0)
        peak = peak_flops(peak_tflops, bfloat16=mixed_precision)
        losses = []
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=step, desc=f"pretrain {objective}", disable=not progress or process_index)
        board = _tensorboard(os.path.join(out, "tensorboard"), process_index)
        t_last, steps_since = time.perf_counter(), 0
        try:
            while step < steps:
                for _ in range(grad_accum):
                    x, y = next(loader)
                    x = list(x) if two_inputs else list(x[:1])
                    if slots:
                        positions, y, _ = gather_targets(y, slots)
                        x.append(positions)
                    logs = train_model.train_on_batch(x, y, return_dict=True)
                step += 1
                steps_since += 1
                loss = float(logs["loss"])
                losses.append(loss)
                if step % log_every == 0 or step == steps:
                    elapsed = time.perf_counter() - t_last
                    tps = tokens_per_step * steps_since / max(elapsed, 1e-9)
                    mfu = tps * flops / peak
                    rows.append({"step": step, "loss": f"{loss:.6f}", "tokens_per_s": f"{tps:.1f}",
                                 "mfu": f"{mfu:.4f}", "time": f"{time.time():.1f}"})
                    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:,.0f}", mfu=f"{mfu:.1%}")
                    if board is not None:
                        for tag, value in (("loss", loss), ("tokens_per_s", tps), ("mfu", mfu)):
                            board.add_scalar(f"pretrain/{tag}", value, step)
                    t_last, steps_since = time.perf_counter(), 0
                bar.update(1)
                if step % save_every == 0 or step == steps:
                    _save(checkpoints, train_model, step, loader, seed, keep)
                    _write_log(log_path, rows, process_index)
                if on_step is not None:  # after the checkpoint: a test may stop the run here
                    on_step(step, loss)
        finally:
            bar.close()
            loader.close()
            if board is not None:
                board.close()
        if process_index == 0:
            if ema:
                train_model.optimizer.apply_ema_weights(train_model)
            export_model(transformer, os.path.join(out, "model"), vocab)
        return losses
    finally:
        keras.distribution.set_distribution(previous)


def _save(directory, model, step, loader, seed, keep):
    ckpt.save_checkpoint(directory, model, {"step": step, "loader": loader.state_dict(), "seed": seed}, keep=keep)


def _tensorboard(directory, process_index):
    """A TensorBoard writer of the same rows as ``log.csv`` where ``tensorboardX`` is installed
    (it writes event files without TensorFlow); None elsewhere, and on every host but the first."""
    if process_index:
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(directory, flush_secs=30)


def _read_log(path, upto):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= upto]


def _write_log(path, rows, process_index):
    if process_index or not rows:
        return
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
