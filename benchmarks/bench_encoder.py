"""Encoder forward speed: BERT-base size, random weights, batch 8 x 128 tokens.

kerasformer on JAX and on PyTorch vs Hugging Face transformers (PyTorch), in one run
on one machine. Each contender runs in its own process (a Keras backend is fixed per
process); the parent prints time per batch, achieved GFLOP/s and the ratio to HF.

    python benchmarks/bench_encoder.py [--batch 8] [--length 128] [--repeats 10]
"""
import argparse
import json
import os
import subprocess
import sys
import time

BERT_BASE = dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)


def forward_flops(batch, length, c=BERT_BASE):
    """Matmul FLOPs of one forward pass (2 per multiply-add): per token and layer, the
    four H x H projections, the two H x I feed-forward matmuls, and QK^T plus PV."""
    h, i, n = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    per_token_layer = 2 * (4 * h * h + 2 * h * i + 2 * length * h)
    return batch * length * n * per_token_layer


def inputs(batch, length):
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(1, BERT_BASE["vocab_size"], size=(batch, length)).astype("int32")
    return ids, np.zeros_like(ids)


def time_it(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]  # median


def run_kerasformer(backend, args):
    os.environ["KERAS_BACKEND"] = backend
    import kerasformer  # noqa: F401
    from kerasformer import build_transformer_model
    from kerasformer.backend import compiled_forward, to_numpy

    config = {**BERT_BASE, "max_position": 512, "segment_vocab_size": 2}
    for key in ("max_position_embeddings", "type_vocab_size"):
        config.pop(key)
    model = build_transformer_model(**config)
    forward = compiled_forward(model)
    ids, segments = inputs(args.batch, args.length)
    if backend == "torch":
        import torch

        ids, segments = torch.from_numpy(ids), torch.from_numpy(segments)
    return time_it(lambda: to_numpy(forward([ids, segments])), args.repeats)


def run_hf(args):
    import torch
    import transformers

    config = transformers.BertConfig(**BERT_BASE)
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    ids, segments = inputs(args.batch, args.length)
    ids, segments = torch.from_numpy(ids).long(), torch.from_numpy(segments).long()
    mask = torch.ones_like(ids)

    def fn():
        with torch.inference_mode():
            return model(input_ids=ids, token_type_ids=segments, attention_mask=mask).last_hidden_state.numpy()

    return time_it(fn, args.repeats)


CONTENDERS = {
    "kerasformer-jax": lambda a: run_kerasformer("jax", a),
    "kerasformer-torch": lambda a: run_kerasformer("torch", a),
    "hf-transformers-torch": run_hf,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--worker", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps({"seconds": CONTENDERS[args.worker](args)}))
        return
    flops = forward_flops(args.batch, args.length)
    results = {}
    for name in CONTENDERS:
        cmd = [sys.executable, __file__, "--worker", name, "--batch", str(args.batch),
               "--length", str(args.length), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    base = results.get("hf-transformers-torch")
    print(f"BERT-base forward, batch {args.batch} x {args.length} tokens, median of {args.repeats}, "
          f"{os.cpu_count()} CPU cores")
    print(f"{'contender':24s} {'ms/batch':>10s} {'GFLOP/s':>9s} {'speed vs HF':>12s}")
    for name, seconds in results.items():
        ratio = f"{base / seconds:.2f}x" if base else "-"
        print(f"{name:24s} {seconds * 1e3:10.1f} {flops / seconds / 1e9:9.1f} {ratio:>12s}")


if __name__ == "__main__":
    main()
