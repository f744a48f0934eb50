"""Training-step speed: one MLM update (forward, backward, AdamW) on a batch x 128.

kerasformer's pretraining model (``kerasformer.pretraining``: the MLM head, masked loss,
``train_on_batch`` as ``kerasformer pretrain`` runs it: the head on the gathered masked positions
only, ``masked_positions_model``; the ``*-full`` contenders run it on every position, as HF's
``BertForMaskedLM`` does) on JAX and on PyTorch against Hugging
Face ``BertForMaskedLM`` in a plain PyTorch loop (``loss.backward(); opt.step();
scheduler.step()``), float32; the same computation: every contender starts from the same
weights (HF's initialisation, seeded, loaded into ours) and uses the same optimizer (AdamW,
epsilon 1e-6, LayerNorm and biases not decayed, the same linear schedule), so the value
column (the loss) agrees between contenders; ``*-bf16`` contenders use mixed bfloat16 (Keras'
``mixed_bfloat16`` policy; ``torch.autocast`` for HF). Alternating rounds, one process per
contender, the same thread count (benchmarks/alternate.py); tokens/s per contender and the
per-round speed ratio to HF float32.

    python benchmarks/bench_train.py --size small --batch 16      # 4 x 256
    python benchmarks/bench_train.py --size base --batch 8        # BERT-base
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternate  # noqa: E402

SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
VOCAB = 21128
LR, WEIGHT_DECAY, STEPS = 1e-4, 0.01, 10 ** 6


def batch(args):
    """Random ids with 15% of positions to predict (targets -1 elsewhere)."""
    import numpy as np

    rng = np.random.default_rng(0)
    vocab = 1000 if args.size == "tiny" else VOCAB
    ids = rng.integers(106, vocab, size=(args.batch, args.length)).astype("int32")
    ids[:, 0] = 101
    chosen = rng.random(ids.shape) < 0.15
    targets = np.where(chosen, ids, -1).astype("int32")
    ids = np.where(chosen, 103, ids).astype("int32")
    return ids, np.zeros_like(ids), targets, vocab


def hf_model(args, vocab):
    """HF's ``BertForMaskedLM`` with HF's initialisation, seeded: every contender's start."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab, max_position_embeddings=512, type_vocab_size=2,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                     **SIZES[args.size])
    return transformers.BertForMaskedLM(config).train()


def kerasformer(backend, mixed=False, full_head=False):
    def setup(args):
        os.environ["KERAS_BACKEND"] = backend
        import shutil
        import tempfile

        import kerasformer  # noqa: F401
        from kerasformer.pretraining.objectives import gather_targets, prediction_slots
        from kerasformer.pretraining.train import (_MaskedLoss, build_pretraining_model, make_optimizer,
                                                   masked_positions_model)

        ids, segments, targets, vocab = batch(args)
        folder = tempfile.mkdtemp()
        try:  # HF's initial weights, through kerasformer's loader
            hf_model(args, vocab).save_pretrained(folder)
            transformer = build_pretraining_model("mlm", folder, vocab, init=folder, seq_len=args.length,
                                                  dtype_policy="mixed_bfloat16" if mixed else None,
                                                  dropout_rate=0.0)
        finally:
            shutil.rmtree(folder)
        x = [ids, segments] if len(transformer.model.inputs) > 1 else [ids]
        if full_head:
            model = transformer.model
        else:  # what `kerasformer pretrain` trains: the same loss, the head on the targets only
            slots = prediction_slots(args.length)
            model = masked_positions_model(transformer, slots)
            positions, targets, dropped = gather_targets(targets, slots)
            assert dropped == 0, dropped  # the same targets as the full head's
            x.append(positions)
        model.compile(optimizer=make_optimizer("adamw", LR, STEPS, 0, WEIGHT_DECAY), loss=_MaskedLoss())
        return lambda: float(model.train_on_batch(x, targets, return_dict=True)["loss"])

    return setup


def hf(mixed=False):
    def setup(args):
        import torch
        import transformers

        ids, segments, targets, vocab = batch(args)
        model = hf_model(args, vocab)
        # make_optimizer's AdamW: epsilon 1e-6, LayerNorm and biases not decayed, warm-up over
        # one step (the first update has rate 0) then linear decay to 0 at STEPS
        parameters = dict(model.named_parameters())
        decayed = [n for n in parameters if "LayerNorm" not in n and "bias" not in n]
        opt = torch.optim.AdamW([{"params": [parameters[n] for n in decayed]},
                                 {"params": [p for n, p in parameters.items() if n not in decayed],
                                  "weight_decay": 0.0}], lr=LR, eps=1e-6, weight_decay=WEIGHT_DECAY)
        scheduler = transformers.get_linear_schedule_with_warmup(opt, 1, STEPS)
        ids, segments = torch.from_numpy(ids).long(), torch.from_numpy(segments).long()
        labels = torch.from_numpy(targets).long().masked_fill(torch.from_numpy(targets) < 0, -100)

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
                loss = model(input_ids=ids, token_type_ids=segments, labels=labels).loss
            loss.backward()
            opt.step()
            scheduler.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())

        return step

    return setup


CONTENDERS = {
    "hf-torch": hf(),
    "kf-jax": kerasformer("jax"),
    "kf-torch": kerasformer("torch"),
    "hf-torch-bf16": hf(mixed=True),
    "kf-jax-bf16": kerasformer("jax", mixed=True),
    "kf-torch-bf16": kerasformer("torch", mixed=True),
    "kf-jax-full": kerasformer("jax", full_head=True),
    "kf-torch-full": kerasformer("torch", full_head=True),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    args, _ = parser.parse_known_args()
    tokens = args.batch * args.length
    return alternate.main(__file__, CONTENDERS, parser, baseline="hf-torch", units=(tokens, "tokens/s"),
                          describe=f"MLM training step, {args.size} ({SIZES[args.size]}), batch "
                                   f"{args.batch} x {args.length}, AdamW")


if __name__ == "__main__":
    main()
