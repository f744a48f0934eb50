"""The pretraining step with the MLM head on every position vs on the masked positions only.

``kerasformer pretrain`` (mlm, unilm) gathers the masked positions before the MLM head
(``kerasformer.pretraining.train.masked_positions_model``): the same loss and update as the
head on every position (tested in tests/test_pretraining.py), less work. This times one
``train_on_batch`` of each on the same whole-word-masked batch (real masks, from the
objective), alternating, one process per contender (benchmarks/alternate.py).

    python benchmarks/bench_pretrain_step.py                       # small 4 x 256, vocab 11328, 32 x 128
    python benchmarks/bench_pretrain_step.py --backend torch
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternate  # noqa: E402

SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
}


def batch(args):
    """Rows of random characters in words of 1-3, masked by the pretraining objective."""
    import numpy as np

    from kerasformer.pretraining.objectives import Objective

    rng = np.random.default_rng(0)
    ids = rng.integers(5, args.vocab, size=(args.batch, args.length)).astype("int32")
    ids[:, 0], ids[:, -1] = 2, 3
    starts = (rng.random(ids.shape) < 0.5).astype("int8")
    objective = Objective("mlm", args.vocab, mask_id=4, special_ids=[0, 1, 2, 3, 4], seed=0)
    (x, segments), y = objective(ids, starts, np.arange(len(ids)), np.arange(len(ids)))
    return x, segments, y


def contender(gathered):
    def setup(args):
        os.environ["KERAS_BACKEND"] = args.backend
        import kerasformer  # noqa: F401
        from kerasformer.pretraining.objectives import gather_targets, prediction_slots
        from kerasformer.pretraining.train import (_MaskedLoss, build_pretraining_model, make_optimizer,
                                                   masked_positions_model)

        import keras

        x, segments, y = batch(args)
        keras.utils.set_random_seed(0)  # both contenders start from the same weights: same losses
        transformer = build_pretraining_model("mlm", dict(SIZES[args.size]), args.vocab, seq_len=args.length,
                                              dropout_rate=0.0)
        inputs = [x, segments]
        model = transformer.model
        if gathered:
            slots = prediction_slots(args.length)
            model = masked_positions_model(transformer, slots)
            positions, y, _ = gather_targets(y, slots)
            inputs.append(positions)
        model.compile(optimizer=make_optimizer("adamw", 1e-4, 10 ** 6, 0), loss=_MaskedLoss())
        return lambda: float(model.train_on_batch(inputs, y, return_dict=True)["loss"])

    return setup


CONTENDERS = {"full-head": contender(False), "gathered-head": contender(True)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["jax", "torch"], default="jax")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--vocab", type=int, default=11328, help="the embedded Chinese model's vocabulary")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=128)
    args, _ = p.parse_known_args()
    alternate.main(__file__, CONTENDERS, p, baseline="full-head", units=(args.batch * args.length, "tokens/s"),
                   describe=f"MLM pretraining step, {args.size} {args.batch} x {args.length}, vocab {args.vocab}, "
                            f"{args.backend}: head on every position vs on the masked ones")


if __name__ == "__main__":
    main()
