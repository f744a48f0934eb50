"""The UniLM recipes' training step with the LM head on every position vs on the title only.

recipes/unilm_csl.py (and recipes/couplet.py's UniLM) train the head on the positions that
predict a second-segment token (``unilm_csl.training_model``): the same loss and update as
the head on every position with bert4keras' title loss (tested in tests/test_recipes.py),
less work. This times one ``train_on_batch`` of each on the same real CSL batch (the
recipe's own batching, its longest bucket), alternating, one process per contender
(benchmarks/alternate.py). The model is the embedded ``chinese-small`` (4 x 256, vocabulary
11,328), as ``--pretrained chinese-small`` fine-tunes it.

    python benchmarks/bench_unilm_train_step.py                 # 16 x 160, JAX
    python benchmarks/bench_unilm_train_step.py --backend torch
"""
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternate  # noqa: E402


def contender(gathered):
    def setup(args):
        os.environ["KERAS_BACKEND"] = args.backend
        sys.path.insert(0, os.path.join(alternate.REPO, "recipes"))
        import common
        import unilm_csl

        import keras

        model_args = ["--layers", "1", "--hidden-size", "32"] if args.tiny else ["--pretrained", "chinese-small"]
        recipe = unilm_csl.parse_args(model_args + ["--batch-size", str(args.batch), "--dropout", "0"]
                                      + (["--data-dir", args.data_dir] if args.data_dir else []))
        pairs = unilm_csl.load_pairs(os.path.join(recipe.data_dir, "ts_dev.tsv"), 0)
        tokenizer, token_dict, keep_tokens, _ = common.make_tokenizer(
            recipe, [a + t for a, t in pairs], os.path.join(tempfile.mkdtemp(), "csl.json"))
        batches = unilm_csl.make_batches(pairs, tokenizer, recipe)
        # the longest padded batch: the shape most steps of the recipe run at
        (ids, segments, positions), targets = max(batches, key=lambda b: b[0][0].shape[1])
        keras.utils.set_random_seed(0)
        transformer = unilm_csl.build(recipe, len(token_dict), keep_tokens)
        if gathered:
            model, x, y, loss = (unilm_csl.training_model(transformer, batches.slots), [ids, segments, positions],
                                 targets, unilm_csl.gathered_title_loss)
        else:  # the same targets at every position
            model, x, loss = transformer.model, [ids, segments], unilm_csl.title_loss
            y = np.full(ids.shape, -1, "int32")
            for row, (p, t) in enumerate(zip(positions, targets)):
                y[row, p[t >= 0]] = t[t >= 0]
        model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=loss)
        print(f"batch {ids.shape[0]} x {ids.shape[1]}, {batches.slots} title slots", file=sys.stderr)
        return lambda: float(model.train_on_batch(x, y))

    return setup

CONTENDERS = {"full-head": contender(False), "title-head": contender(True)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["jax", "torch"], default="jax")
    p.add_argument("--batch", type=int, default=16, help="the recipe's --batch-size")
    p.add_argument("--data-dir", help="CSL folder (default: the recipe's, ../shared/data/csl)")
    p.add_argument("--tiny", action="store_true", help="1 layer x 32 from scratch (the test suite's size)")
    args, _ = p.parse_known_args()
    alternate.main(__file__, CONTENDERS, p, baseline="full-head", units=(args.batch, "pairs/s"),
                   describe=f"UniLM CSL training step, chinese-small, batch {args.batch}, {args.backend}: "
                            "LM head on every position vs on the title positions")


if __name__ == "__main__":
    main()
