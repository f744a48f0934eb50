"""Encoder forward speed: BERT-base size, random weights, batch 8 x 128 tokens.

kerasformer on JAX and on PyTorch, in float32, bfloat16 (``dtype_policy='bfloat16'``) and
int8 (``model.quantize('int8')``), through the user's path ``model.predict``, against
Hugging Face transformers (eager PyTorch, ``inference_mode``) in float32 and bfloat16.
The contenders run alternately, each in its own process with the same thread count
(benchmarks/alternate.py); the table shows the median time and the median and spread of
the per-round speed ratios to HF float32.

    python benchmarks/bench_encoder.py [--batch 8] [--length 128] [--rounds 5] [--threads 2]
    python benchmarks/bench_encoder.py --only hf-torch kf-torch --rounds 9
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternate  # noqa: E402

BERT_BASE = dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
TINY = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=128, max_position_embeddings=64, type_vocab_size=2)


def shape(args):
    return TINY if args.tiny else BERT_BASE


def forward_flops(batch, length, c=BERT_BASE):
    """Matmul FLOPs of one forward pass (2 per multiply-add): per token and layer, the
    four H x H projections, the two H x I feed-forward matmuls, and QK^T plus PV."""
    h, i, n = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    per_token_layer = 2 * (4 * h * h + 2 * h * i + 2 * length * h)
    return batch * length * n * per_token_layer


def inputs(args):
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(1, shape(args)["vocab_size"], size=(args.batch, args.length)).astype("int32")
    return ids, np.zeros_like(ids)


def kerasformer(backend, precision="float32"):
    def setup(args):
        os.environ["KERAS_BACKEND"] = backend
        import kerasformer  # noqa: F401
        from kerasformer import build_transformer_model

        c = shape(args)
        model = build_transformer_model(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
            num_attention_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
            max_position=c["max_position_embeddings"], segment_vocab_size=c["type_vocab_size"],
            dtype_policy="bfloat16" if precision == "bfloat16" else None)
        if precision == "int8":
            model.quantize("int8")
        x = list(inputs(args))
        return lambda: float(model.predict(x, batch_size=args.batch, verbose=0).astype("float32").mean())

    return setup


def hf(precision="float32"):
    def setup(args):
        import torch
        import transformers

        config = transformers.BertConfig(**shape(args))
        model = transformers.BertModel(config, add_pooling_layer=False).eval()
        if precision == "bfloat16":
            model = model.to(torch.bfloat16)
        ids, segments = (torch.from_numpy(a).long() for a in inputs(args))
        mask = torch.ones_like(ids)

        def fn():
            with torch.inference_mode():
                out = model(input_ids=ids, token_type_ids=segments, attention_mask=mask).last_hidden_state
                return float(out.float().mean())

        return fn

    return setup


CONTENDERS = {
    "hf-torch": hf(),
    "kf-jax": kerasformer("jax"),
    "kf-torch": kerasformer("torch"),
    "hf-torch-bf16": hf("bfloat16"),
    "kf-jax-bf16": kerasformer("jax", "bfloat16"),
    "kf-torch-bf16": kerasformer("torch", "bfloat16"),
    "kf-jax-int8": kerasformer("jax", "int8"),
    "kf-torch-int8": kerasformer("torch", "int8"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model (the test suite's smoke run)")
    args, _ = parser.parse_known_args()
    flops = forward_flops(args.batch, args.length, shape(args))
    return alternate.main(__file__, CONTENDERS, parser, baseline="hf-torch", units=(flops / 1e9, "GFLOP/s"),
                          describe=f"BERT{'-tiny' if args.tiny else '-base'} encoder forward, batch "
                                   f"{args.batch} x {args.length}, random weights")


if __name__ == "__main__":
    main()
