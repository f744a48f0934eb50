"""NICE, RealNVP, Glow and an invertible ResNet on sklearn's 8x8 digits (dequantised).

Each model maximises the exact log-likelihood (the i-ResNet: its power-series estimate,
``--iresnet-terms`` terms while training, 20 at evaluation); the script reports the test
negative log-likelihood in bits per dimension of the 17-level data, the invertibility error
``max |inverse(forward(x)) - x|`` on the test set, samples and the training curves.

    python recipes/generative/flows.py --models nice,realnvp,glow,iresnet --out flows.json
"""
import math
import time

import numpy as np

try:
    from recipes.generative import shared
except ImportError:  # run as a script
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from recipes.generative import shared

MODELS = ("nice", "realnvp", "glow", "iresnet")
DIM = 64


def build(name, hidden, smoke, terms):
    from kerasformer import generative as gen

    couplings = 2 if smoke else 4
    if name == "nice":
        # an ActNorm first (data-initialised) on every vector flow: with Adam's ~lr-sized steps a
        # scale learned from 1 takes hundreds of steps to reach the data's (about 0.3)
        return gen.FlowSequence([gen.ActNorm()] + [gen.AdditiveCoupling(gen.parity_mask(DIM, i % 2), hidden=(hidden, hidden))
                                                   for i in range(couplings)] + [gen.Scaling()]), False
    if name == "realnvp":
        return gen.FlowSequence([gen.ActNorm()] + [gen.AffineCoupling(gen.checkerboard_mask(8, 8, i % 2), hidden=(hidden,))
                                                   for i in range(couplings)]), False
    if name == "glow":
        return gen.Glow(levels=2, steps=1 if smoke else 3, hidden=hidden // 4), True
    if name == "iresnet":
        blocks = []
        for i in range(couplings):
            blocks += [gen.ActNorm(), gen.InvertibleResidual(hidden=(hidden,), coeff=0.9, terms=terms, seed=i)]
        return gen.FlowSequence(blocks), False
    raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def run_model(name, args, train, test):
    import keras
    from keras import ops

    from kerasformer import generative as gen
    from kerasformer.backend import to_numpy
    from kerasformer.utils import sublayers

    rng = np.random.default_rng(args.seed)
    flow, image = build(name, args.hidden, args.smoke, args.iresnet_terms)
    shape = (-1, 8, 8, 1) if image else (-1, DIM)

    def dequantise(v):  # uniform noise in each of the 17 levels' cells, centred on 0
        return ((v + rng.uniform(size=v.shape)) / shared.LEVELS - 0.5).reshape(shape).astype("float32")

    gen.data_init(flow, ops.convert_to_tensor(dequantise(train[:200])))

    def nll_bits(x):  # mean continuous NLL, bits/dim (the training loss)
        z, log_det = flow.forward(x)
        log_prob = gen.standard_normal_log_prob(z) + log_det
        return -ops.mean(log_prob) / (DIM * math.log(2.0)), {}

    step = gen.TrainStep([flow], nll_bits, keras.optimizers.Adam(args.lr))
    timer, curve = shared.StepTimer(), []
    for _ in range(args.epochs):
        losses = []
        for idx in shared.batches(len(train), args.batch_size, rng):
            loss, _ = timer(step, dequantise(train[idx]))
            gen.update_spectral_norms(flow)  # i-ResNet: keep sigma estimates tracking the kernels
            losses.append(float(to_numpy(loss)))
        curve.append(float(np.mean(losses)))

    for layer in sublayers(flow):
        if isinstance(layer, gen.InvertibleResidual):
            layer.terms = 20  # evaluate with a tighter series
    x = ops.convert_to_tensor(dequantise(test))
    z, log_det = flow.forward(x)
    log_prob = to_numpy(gen.standard_normal_log_prob(z) + log_det)
    bpd = float(np.mean(to_numpy(gen.bits_per_dim(log_prob, DIM, levels=shared.LEVELS))))
    inv_err = float(np.abs(to_numpy(flow.inverse(z)) - to_numpy(x)).max())
    samples = to_numpy(flow.inverse(ops.convert_to_tensor(
        (0.8 * rng.normal(size=(30, DIM))).astype("float32"))))  # temperature 0.8
    samples = np.clip((samples.reshape(-1, 8, 8) + 0.5) * shared.LEVELS, 0, 16)
    png = shared.save_grid(args, f"{name}-samples", samples, f"{name} samples (T=0.8)")
    return {"test_bits_per_dim": bpd, "train_curve_bits_per_dim": curve, "invertibility_error": inv_err,
            "seconds_per_step": timer.seconds_per_step(), "steps": len(timer.times),
            "parameters": int(sum(np.prod(v.shape) for v in flow.trainable_variables)), "samples_png": png}


def main(argv=None):
    p = shared.parser(__doc__.split("\n")[0], out="flows.json", epochs=30)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    p.add_argument("--hidden", type=int, default=128, help="hidden width of the coupling / residual networks")
    p.add_argument("--iresnet-terms", type=int, default=5, help="power-series terms of the i-ResNet log det (training)")
    args = shared.check(p.parse_args(argv))
    if args.smoke:
        args.hidden = 16
    started = time.time()
    train, test = shared.load_digits(args.smoke, seed=args.seed)
    results = {"data": {"train": len(train), "test": len(test), "levels": shared.LEVELS}, "models": {}}
    for name in args.models.split(","):
        results["models"][name] = run_model(name.strip(), args, train, test)
        print(name, {k: v for k, v in results["models"][name].items() if k != "train_curve_bits_per_dim"})
    results["curves_png"] = shared.save_curves(
        args, "curves", {n: r["train_curve_bits_per_dim"] for n, r in results["models"].items()},
        "train NLL (bits/dim, continuous)")
    return shared.finish(args, results, started)


if __name__ == "__main__":
    main()
