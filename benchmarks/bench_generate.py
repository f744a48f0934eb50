"""Greedy generation speed: GPT-2 of 6 layers x 512 hidden x 8000 vocab, batch 4,
prompt 32, +64 new tokens, random weights.

kerasformer (JAX, torch) vs Hugging Face ``generate`` (PyTorch) vs KerasHub's
GPT2CausalLM (JAX, torch), alternating rounds, each contender in its own process with
the same thread count (benchmarks/alternate.py). Prints tokens/s and per-round ratios.

    python benchmarks/bench_generate.py [--rounds 5] [--threads 1]

KerasHub is optional (``pip install keras-hub``); without it its rows say "failed".
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternate  # noqa: E402

CONFIGS = {
    "default": dict(vocab=8000, layers=6, hidden=512, heads=8, intermediate=2048, positions=256,
                    batch=4, prompt=32, new=64),
    "tiny": dict(vocab=500, layers=1, hidden=32, heads=2, intermediate=64, positions=64,
                 batch=2, prompt=8, new=8),
}


def prompts(c):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(1, c["vocab"], size=(c["batch"], c["prompt"])).astype("int32")


def kerasformer(backend):
    def setup(args):
        os.environ["KERAS_BACKEND"] = backend
        import kerasformer  # noqa: F401
        from kerasformer import build_transformer_model, generate

        c = CONFIGS[args.config]
        model = build_transformer_model(
            model="gpt2", vocab_size=c["vocab"], hidden_size=c["hidden"], num_hidden_layers=c["layers"],
            num_attention_heads=c["heads"], intermediate_size=c["intermediate"], max_position=c["positions"])
        ids = prompts(c).tolist()

        def fn():
            out = generate(model, ids, c["new"])
            assert all(len(row) == c["new"] for row in out)
            return float(sum(map(sum, out)))

        return fn

    return setup


def hf(args):
    import torch
    import transformers

    c = CONFIGS[args.config]
    config = transformers.GPT2Config(vocab_size=c["vocab"], n_embd=c["hidden"], n_layer=c["layers"],
                                     n_head=c["heads"], n_inner=c["intermediate"], n_positions=c["positions"],
                                     bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.from_numpy(prompts(c)).long()
    mask = torch.ones_like(ids)

    def fn():
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=c["new"], min_new_tokens=c["new"],
                                 do_sample=False, pad_token_id=0)
        assert out.shape[1] == c["prompt"] + c["new"]
        return float(out[:, c["prompt"]:].sum())

    return fn


def keras_hub(backend):
    def setup(args):
        os.environ["KERAS_BACKEND"] = backend
        import keras_hub
        import numpy as np

        c = CONFIGS[args.config]
        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=c["vocab"], num_layers=c["layers"], num_heads=c["heads"], hidden_dim=c["hidden"],
            intermediate_dim=c["intermediate"], max_sequence_length=c["positions"])
        lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None, sampler="greedy")
        total = c["prompt"] + c["new"]
        token_ids = np.zeros((c["batch"], total), "int32")
        token_ids[:, :c["prompt"]] = prompts(c)
        mask = np.zeros((c["batch"], total), bool)
        mask[:, :c["prompt"]] = True
        inputs = {"token_ids": token_ids, "padding_mask": mask}
        return lambda: lm.generate(inputs, stop_token_ids=None)

    return setup


CONTENDERS = {
    "hf-torch": hf,
    "kf-jax": kerasformer("jax"),
    "kf-torch": kerasformer("torch"),
    "keras-hub-jax": keras_hub("jax"),
    "keras-hub-torch": keras_hub("torch"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="default")
    args, _ = parser.parse_known_args()
    c = CONFIGS[args.config]
    return alternate.main(
        __file__, CONTENDERS, parser, baseline="hf-torch", units=(c["batch"] * c["new"], "tokens/s"),
        describe=f"GPT-2 {c['layers']}x{c['hidden']}, vocab {c['vocab']}: batch {c['batch']}, "
                 f"prompt {c['prompt']}, +{c['new']} greedy",
        pairs=[("kf-jax", "keras-hub-jax"), ("kf-torch", "keras-hub-torch")])


if __name__ == "__main__":
    main()
