"""Greedy generation speed: GPT-2 of 6 layers x 512 hidden x 8000 vocab, batch 4,
prompt 32, +64 new tokens, random weights.

kerasformer (JAX, torch) vs Hugging Face ``generate`` (PyTorch) vs KerasHub's
GPT2CausalLM (JAX, torch), in one run on one machine, each in its own process (a Keras
backend is fixed per process). Prints tokens/s and ratios.

    python benchmarks/bench_generate.py [--repeats 3]

KerasHub is optional (``pip install keras-hub``); without it its rows are skipped.
"""
import argparse
import json
import os
import subprocess
import sys
import time

CONFIG = dict(vocab=8000, layers=6, hidden=512, heads=8, intermediate=2048, positions=256)
BATCH, PROMPT, NEW = 4, 32, 64


def prompts():
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(1, CONFIG["vocab"], size=(BATCH, PROMPT)).astype("int32")


def timed(fn, repeats):
    fn()  # warm-up: compilation / first-call costs are not part of steady-state speed
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run_kerasformer(backend, repeats):
    os.environ["KERAS_BACKEND"] = backend
    import kerasformer  # noqa: F401
    from kerasformer import build_transformer_model, generate

    model = build_transformer_model(
        model="gpt2", vocab_size=CONFIG["vocab"], hidden_size=CONFIG["hidden"],
        num_hidden_layers=CONFIG["layers"], num_attention_heads=CONFIG["heads"],
        intermediate_size=CONFIG["intermediate"], max_position=CONFIG["positions"])
    ids = prompts().tolist()
    out = []
    seconds = timed(lambda: out.append(generate(model, ids, NEW)), repeats)
    assert all(len(row) == NEW for row in out[-1])
    return seconds


def run_hf(repeats):
    import torch
    import transformers

    config = transformers.GPT2Config(vocab_size=CONFIG["vocab"], n_embd=CONFIG["hidden"],
                                     n_layer=CONFIG["layers"], n_head=CONFIG["heads"],
                                     n_inner=CONFIG["intermediate"], n_positions=CONFIG["positions"],
                                     bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.from_numpy(prompts()).long()
    mask = torch.ones_like(ids)

    def fn():
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, min_new_tokens=NEW,
                                 do_sample=False, pad_token_id=0)
        assert out.shape[1] == PROMPT + NEW

    return timed(fn, repeats)


def run_keras_hub(backend, repeats):
    os.environ["KERAS_BACKEND"] = backend
    import keras_hub
    import numpy as np

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=CONFIG["vocab"], num_layers=CONFIG["layers"], num_heads=CONFIG["heads"],
        hidden_dim=CONFIG["hidden"], intermediate_dim=CONFIG["intermediate"],
        max_sequence_length=CONFIG["positions"])
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None, sampler="greedy")
    token_ids = np.zeros((BATCH, PROMPT + NEW), "int32")
    token_ids[:, :PROMPT] = prompts()
    mask = np.zeros((BATCH, PROMPT + NEW), bool)
    mask[:, :PROMPT] = True
    inputs = {"token_ids": token_ids, "padding_mask": mask}
    return timed(lambda: lm.generate(inputs, stop_token_ids=None), repeats)


CONTENDERS = {
    "kerasformer-jax": lambda r: run_kerasformer("jax", r),
    "kerasformer-torch": lambda r: run_kerasformer("torch", r),
    "hf-transformers-torch": run_hf,
    "keras-hub-jax": lambda r: run_keras_hub("jax", r),
    "keras-hub-torch": lambda r: run_keras_hub("torch", r),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(CONTENDERS))
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads for every torch contender (on a shared "
                             "machine, 1 avoids threads waiting on a busy core)")
    parser.add_argument("--worker", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.torch_threads:
            import torch

            torch.set_num_threads(args.torch_threads)
        print(json.dumps({"seconds": CONTENDERS[args.worker](args.repeats)}))
        return
    results = {}
    for name in args.only or CONTENDERS:
        cmd = [sys.executable, __file__, "--worker", name, "--repeats", str(args.repeats)]
        if args.torch_threads:
            cmd += ["--torch-threads", str(args.torch_threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{name}: skipped ({last})", file=sys.stderr)
            continue
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    tokens = BATCH * NEW
    print(f"GPT-2 {CONFIG['layers']}x{CONFIG['hidden']}, vocab {CONFIG['vocab']}: batch {BATCH}, "
          f"prompt {PROMPT}, +{NEW} greedy; median of {args.repeats}; {os.cpu_count()} CPU cores"
          + (f"; torch threads {args.torch_threads}" if args.torch_threads else ""))
    hf = results.get("hf-transformers-torch")
    print(f"{'contender':24s} {'seconds':>8s} {'tokens/s':>9s} {'vs HF':>7s}")
    for name, seconds in results.items():
        ratio = f"{hf / seconds:.2f}x" if hf else "-"
        print(f"{name:24s} {seconds:8.3f} {tokens / seconds:9.1f} {ratio:>7s}")
    for ours, theirs in [("kerasformer-torch", "keras-hub-torch"), ("kerasformer-jax", "keras-hub-jax")]:
        if ours in results and theirs in results:
            print(f"{ours} vs {theirs}: {results[theirs] / results[ours]:.2f}x")


if __name__ == "__main__":
    main()
