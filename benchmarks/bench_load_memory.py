"""Peak extra memory of loading a checkpoint, per format, against the file size.

For each format (TF bundle, safetensors, pytorch_model.bin) a checkpoint of random weights
with BERT shapes is written once; then, in a fresh process per format, the model's variables
are created, the peak-RSS counter is reset (``/proc/self/clear_refs``) and
``checkpoints.weights.load_weights`` loads the file. Reported: file size, peak RSS above the
level before the load, and their ratio (issue 11's goal: <= 1.3x). The model's own variables
exist before the load and are not counted; memory-mapped file pages (safetensors) are.

    python benchmarks/bench_load_memory.py --size small
    python benchmarks/bench_load_memory.py --size base            # BERT-base, 110M parameters
    python benchmarks/bench_load_memory.py --size base --source ../other-checkout   # compare

Linux only (reads /proc). Needs about 3x the checkpoint size in free memory.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {  # (vocab, hidden, layers, intermediate, positions)
    "small": (1000, 128, 2, 512, 128),
    "base": (30522, 768, 12, 3072, 512),
}
FORMATS = ("tf", "safetensors", "torch")


def shapes(size):
    vocab, hidden, layers, inter, positions = SIZES[size]
    out = {"embeddings/word": (vocab, hidden), "embeddings/position": (positions, hidden),
           "embeddings/segment": (2, hidden), "embeddings/norm/gamma": (hidden,)}
    for i in range(layers):
        for name in ("q", "k", "v", "o"):
            out[f"layer_{i}/{name}/kernel"] = (hidden, hidden)
            out[f"layer_{i}/{name}/bias"] = (hidden,)
        out[f"layer_{i}/ffn_in/kernel"] = (hidden, inter)
        out[f"layer_{i}/ffn_in/bias"] = (inter,)
        out[f"layer_{i}/ffn_out/kernel"] = (inter, hidden)
        out[f"layer_{i}/ffn_out/bias"] = (hidden,)
        out[f"layer_{i}/norm/gamma"] = (hidden,)
    return out


def write_checkpoints(size, directory):
    from kerasformer.checkpoints.resolve import save_safetensors
    from kerasformer.checkpoints.tf_bundle import write_tf_checkpoint
    from kerasformer.checkpoints.torch_pickle import save_torch_bin

    rng = np.random.default_rng(0)
    tensors = {n: rng.standard_normal(s, dtype=np.float32) for n, s in shapes(size).items()}
    paths = {"tf": os.path.join(directory, "model.ckpt"),
             "safetensors": os.path.join(directory, "model.safetensors"),
             "torch": os.path.join(directory, "pytorch_model.bin")}
    write_tf_checkpoint(paths["tf"], tensors)
    save_safetensors(paths["safetensors"], tensors)
    save_torch_bin(paths["torch"], tensors)
    checksum = float(tensors["embeddings/word"][:3].sum())
    files = {"tf": [p for p in os.listdir(directory) if p.startswith("model.ckpt.")]}
    sizes = {"tf": sum(os.path.getsize(os.path.join(directory, p)) for p in files["tf"]),
             "safetensors": os.path.getsize(paths["safetensors"]),
             "torch": os.path.getsize(paths["torch"])}
    return paths, sizes, checksum


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child(size, path):
    """Runs in a fresh process: variables, reset the peak, load, report."""
    import gc

    import keras

    from kerasformer.checkpoints.resolve import open_checkpoint
    from kerasformer.checkpoints.weights import WeightSource, load_weights

    variables = {n: keras.Variable(np.zeros(s, "float32"), name=n.replace("/", "_"))
                 for n, s in shapes(size).items()}
    sources = {n: WeightSource(names=(n,)) for n in variables}
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    with open_checkpoint(path) as tensors:
        load_weights(variables, sources, tensors)
    peak = _status("VmHWM")
    checksum = float(np.asarray(variables["embeddings/word"].numpy())[:3].sum())
    print(json.dumps({"before": before, "peak": peak, "checksum": checksum}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--source", default=REPO,
                        help="checkout whose kerasformer loads (to compare versions)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    directory = tempfile.mkdtemp(prefix="kf_load_memory_")
    try:
        sys.path.insert(0, REPO)
        paths, sizes, checksum = write_checkpoints(args.size, directory)
        env = dict(os.environ, PYTHONPATH=os.path.abspath(args.source))
        env.setdefault("KERAS_BACKEND", "jax")
        print(f"size={args.size} backend={env['KERAS_BACKEND']} source={args.source}")
        print(f"{'format':<12} {'file MB':>8} {'peak extra MB':>14} {'ratio':>6}")
        for fmt in args.formats:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", args.size,
                                  paths[fmt]], env=env, capture_output=True, text=True, cwd="/")
            if out.returncode:
                print(fmt, "failed:", out.stderr[-2000:])
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            assert abs(r["checksum"] - checksum) < 1e-3, "loaded values differ"
            extra = r["peak"] - r["before"]
            print(f"{fmt:<12} {sizes[fmt] / 1e6:>8.1f} {extra / 1e6:>14.1f} "
                  f"{extra / sizes[fmt]:>6.2f}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
