"""A GAN on sklearn's 8x8 digits: the single-loss step vs the classic alternating step.

Both modes start from the same weights and see the same batches and noise in one run
(interleaved step by step, so the machine's load hits both alike); the
script reports seconds per step (median after compilation) and the losses of each, and
saves their samples. The claim (Su Jianlin, 训练GAN只需一个loss): one forward/backward pass
instead of two makes a step cheaper, with the same gradients (tests/test_generative.py
checks the gradients are equal).

    python recipes/generative/gan.py --out gan.json
    python recipes/generative/gan.py --loss wgan --gp 10 --out wgan.json   (= wgan_gp.py)
"""
import time

import numpy as np

try:
    from recipes.generative import shared
except ImportError:  # run as a script
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from recipes.generative import shared

MODES = ("single", "alternating")


def build_models(latent, hidden, spectral):
    import keras

    from kerasformer.generative import SpectralDense

    g = keras.Sequential([keras.Input((latent,)), keras.layers.Dense(hidden, activation="relu"),
                          keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(64, activation="tanh")])
    dense = (lambda n: SpectralDense(n)) if spectral else (lambda n: keras.layers.Dense(n))
    d = keras.Sequential([keras.Input((64,)), dense(hidden), keras.layers.LeakyReLU(0.2),
                          dense(hidden), keras.layers.LeakyReLU(0.2), dense(1)])
    return g, d


def main(argv=None, defaults=None):
    defaults = {"out": "gan.json", "loss": "standard", "gp": 0.0, "lr": 2e-4, "beta_2": 0.999, **(defaults or {})}
    p = shared.parser(__doc__.split("\n")[0], out=defaults["out"], epochs=60, batch_size=64, lr=defaults["lr"])
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    p.add_argument("--loss", default=defaults["loss"], help="standard, hinge or wgan")
    p.add_argument("--gp", type=float, default=defaults["gp"], help="WGAN-GP gradient-penalty weight (0: none)")
    p.add_argument("--spectral", action="store_true", help="spectral-normalised discriminator")
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--beta-2", type=float, default=defaults["beta_2"], help="Adam's beta_2 (beta_1 is 0.5)")
    args = shared.check(p.parse_args(argv))
    if args.smoke:
        args.hidden = 16

    import keras

    from kerasformer.backend import to_numpy
    from kerasformer.generative import GAN

    started = time.time()
    train, _ = shared.load_digits(args.smoke, seed=args.seed)
    data = (train.reshape(-1, 64) / 8.0 - 1.0).astype("float32")  # [-1, 1], like the tanh output
    modes = [m.strip() for m in args.modes.split(",")]
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    # one generator / discriminator pair per mode, from the same initial weights; the modes
    # take turns batch by batch (same batches, same noise), so a change in the machine's load
    # during the run hits both alike
    g, d = build_models(args.latent, args.hidden, args.spectral)
    initial = [g.get_weights(), d.get_weights()]
    runs = {}
    for mode in modes:
        if runs:
            g, d = build_models(args.latent, args.hidden, args.spectral)
            g.set_weights(initial[0])
            d.set_weights(initial[1])
        opt = lambda: keras.optimizers.Adam(args.lr, beta_1=0.5, beta_2=args.beta_2)  # noqa: E731
        gan = GAN(g, d, opt(), opt(), loss=args.loss, gp_weight=args.gp)
        runs[mode] = {"gan": gan, "step": gan.single_step if mode == "single" else gan.alternating_step,
                      "timer": shared.StepTimer(), "curves": {"d_loss": [], "g_loss": []}}
    fixed_z = np.random.default_rng(123).normal(size=(30, args.latent)).astype("float32")
    results = {"loss": args.loss, "gp": args.gp, "spectral": args.spectral, "modes": {}}
    rng = np.random.default_rng(args.seed)
    for _ in range(args.epochs):
        logs = {mode: [] for mode in modes}
        for idx in shared.batches(len(data), args.batch_size, rng):
            z = rng.normal(size=(len(idx), args.latent)).astype("float32")
            eps = rng.uniform(size=(len(idx), 1)).astype("float32")
            for mode, run in runs.items():
                logs[mode].append(run["timer"](run["step"], data[idx], z, eps))
        for mode, run in runs.items():
            for key in run["curves"]:
                run["curves"][key].append(float(np.mean([l[key] for l in logs[mode]])))
    for mode, run in runs.items():
        samples = (to_numpy(run["gan"].generator(fixed_z)).reshape(-1, 8, 8) + 1.0) * 8.0
        results["modes"][mode] = {
            "seconds_per_step": run["timer"].seconds_per_step(), "steps": len(run["timer"].times), **run["curves"],
            "samples_png": shared.save_grid(args, f"{mode}-samples", samples, f"{args.loss} GAN, {mode} step")}
        print(mode, {k: v for k, v in results["modes"][mode].items() if not isinstance(v, list)})
    modes = results["modes"]
    if len(modes) == 2 and all(m["seconds_per_step"] for m in modes.values()):
        results["speedup_single_vs_alternating"] = modes["alternating"]["seconds_per_step"] / modes["single"]["seconds_per_step"]
    results["curves_png"] = shared.save_curves(
        args, "curves", {f"{m} {k}": modes[m][k] for m in modes for k in ("d_loss", "g_loss")}, f"{args.loss} GAN losses")
    return shared.finish(args, results, started)


if __name__ == "__main__":
    main()
