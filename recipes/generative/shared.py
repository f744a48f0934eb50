"""What the generative recipes share: the digits, batching, the command line, PNG output
and the results JSON (atomic, via recipes/common.py). Keras is imported inside functions,
after the arguments are parsed, so ``--help`` is instant and ``KERAS_BACKEND`` is honoured."""
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, REPO)

from recipes import common  # noqa: E402

LEVELS = 17  # sklearn's digits take the values 0..16


def parser(description, out, epochs, batch_size=100, lr=1e-3):
    p = common.new_parser(description)
    p.add_argument("--smoke", action="store_true", help="a few steps on a few examples (the test suite's run)")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out, help="results JSON (written atomically); PNGs go next to it")
    p.add_argument("--no-png", action="store_true", help="skip the sample grids and curves")
    return p


def check(args):
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if args.smoke:
        args.epochs, args.batch_size = 1, min(args.batch_size, 16)
    import keras

    keras.utils.set_random_seed(args.seed)
    return args


def load_digits(smoke=False, test_size=297, seed=0):
    """sklearn's bundled 8x8 digits (1797 images, values 0..16; no download) as
    ``(train, test)`` int arrays of shape ``(n, 8, 8)``, split with a fixed permutation."""
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError:
        raise SystemExit("the digits recipes need scikit-learn: pip install 'kerasformer[generative]'")
    images = sk_load().images.astype("int64")
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = images[order[test_size:]], images[order[:test_size]]
    return (train[:32], test[:16]) if smoke else (train, test)


def batches(n, batch_size, rng):
    """Shuffled full batches (a ragged last batch would recompile a JAX step)."""
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


class StepTimer:
    """Seconds per step, skipping the first ``warmup`` steps (compilation)."""

    def __init__(self, warmup=2):
        self.warmup, self.times = warmup, []

    def __call__(self, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.times.append(time.perf_counter() - t0)
        return out

    def seconds_per_step(self):
        times = self.times[self.warmup:] or self.times
        return float(np.median(times)) if times else None


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def png_path(args, suffix):
    base = os.path.splitext(os.path.abspath(args.out))[0]
    return f"{base}-{suffix}.png"


def save_grid(args, suffix, images, title="", cols=10):
    """``images`` ``(n, 8, 8)`` (any range) as a grid PNG next to ``--out``; None without matplotlib."""
    plt = _plt()
    if plt is None or args.no_png:
        return None
    images = np.asarray(images)[: cols * max(1, len(images) // cols)]
    rows = max(1, len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4), squeeze=False)
    for ax, img in zip(axes.flat, images):
        ax.imshow(img, cmap="gray_r")
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    return _save(plt, fig, png_path(args, suffix))


def save_curves(args, suffix, curves, title="", xlabel="epoch"):
    """``curves``: ``{label: [values]}`` as one line plot per label."""
    plt = _plt()
    if plt is None or args.no_png:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker=".", label=label)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(plt, fig, png_path(args, suffix))


def _save(plt, fig, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)  # atomic, like the JSON
    return os.path.basename(path)


def finish(args, results, started):
    results = {**results, "smoke": bool(args.smoke), "seconds": round(time.time() - started, 1),
               "environment": common.environment(), "args": {k: v for k, v in vars(args).items()}}
    common.write_json(args.out, results)
    print(f"wrote {args.out}")
    return results
