"""A discrete VAE on sklearn's 8x8 digits with Gumbel-softmax latents.

The code is ``--latents`` categorical variables of ``--classes`` values each; the encoder's
logits are relaxed with Gumbel-softmax (temperature annealed from 1 to ``--min-temperature``,
optionally straight-through with ``--hard``), the decoder is Bernoulli on the pixel
intensities / 16, and the KL is to the uniform prior. Reported per epoch: reconstruction
(nats per image), KL, and the test reconstruction with the encoder's argmax code (a truly
discrete code); samples decode random one-hot codes.

    python recipes/generative/gumbel_vae.py --out gumbel_vae.json
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


def main(argv=None):
    p = shared.parser(__doc__.split("\n")[0], out="gumbel_vae.json", epochs=40, batch_size=100)
    p.add_argument("--latents", type=int, default=8)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--min-temperature", type=float, default=0.5)
    p.add_argument("--hard", action="store_true", help="straight-through Gumbel-softmax")
    args = shared.check(p.parse_args(argv))
    if args.smoke:
        args.hidden = 16

    import keras
    from keras import ops

    from kerasformer.backend import to_numpy
    from kerasformer.generative import TrainStep, gumbel_softmax

    started = time.time()
    train, test = shared.load_digits(args.smoke, seed=args.seed)
    flat = lambda a: (a.reshape(-1, 64) / 16.0).astype("float32")  # noqa: E731
    train, test = flat(train), flat(test)
    n, k = args.latents, args.classes
    encoder = keras.Sequential([keras.Input((64,)), keras.layers.Dense(args.hidden, activation="relu"),
                                keras.layers.Dense(n * k)])
    decoder = keras.Sequential([keras.Input((n * k,)), keras.layers.Dense(args.hidden, activation="relu"),
                                keras.layers.Dense(64)])

    def terms(x, code_fn):
        logits = ops.reshape(encoder(x), (-1, n, k))
        log_q = ops.log_softmax(logits, axis=-1)
        kl = ops.sum(ops.exp(log_q) * log_q, axis=(1, 2)) + n * math.log(k)  # KL(q || uniform)
        out = decoder(ops.reshape(code_fn(logits), (-1, n * k)))
        recon = ops.sum(ops.maximum(out, 0.0) - out * x + ops.log1p(ops.exp(-ops.abs(out))), axis=-1)  # BCE
        return ops.mean(recon), ops.mean(kl)

    def loss(x, noise, temperature):
        recon, kl = terms(x, lambda l: gumbel_softmax(l, temperature, hard=args.hard, noise=noise))
        return recon + kl, {"recon": recon, "kl": kl}

    step = TrainStep([encoder, decoder], loss, keras.optimizers.Adam(args.lr))
    evaluate = lambda x: terms(x, lambda l: ops.one_hot(ops.argmax(l, axis=-1), k))  # noqa: E731
    rng = np.random.default_rng(args.seed)
    timer, history, total = shared.StepTimer(), {"recon": [], "kl": [], "test_recon_argmax_code": []}, 0
    steps_per_epoch = len(shared.batches(len(train), args.batch_size, rng))
    anneal = math.log(args.min_temperature) / max(1, args.epochs * steps_per_epoch - 1)
    for _ in range(args.epochs):
        logs = []
        for idx in shared.batches(len(train), args.batch_size, rng):
            temperature = np.float32(max(args.min_temperature, math.exp(anneal * total)))
            noise = rng.gumbel(size=(len(idx), n, k)).astype("float32")
            _, aux = timer(step, train[idx], noise, temperature)
            logs.append({key: float(to_numpy(v)) for key, v in aux.items()})
            total += 1
        for key in ("recon", "kl"):
            history[key].append(float(np.mean([l[key] for l in logs])))
        history["test_recon_argmax_code"].append(float(to_numpy(evaluate(ops.convert_to_tensor(test))[0])))
    codes = np.eye(k, dtype="float32")[rng.integers(0, k, size=(30, n))].reshape(30, n * k)
    samples = to_numpy(ops.sigmoid(decoder(ops.convert_to_tensor(codes)))).reshape(-1, 8, 8)
    recon_img = to_numpy(ops.sigmoid(decoder(ops.reshape(ops.one_hot(ops.argmax(
        ops.reshape(encoder(ops.convert_to_tensor(test[:10])), (-1, n, k)), axis=-1), k), (-1, n * k)))))
    results = {"history": history, "final_temperature": float(temperature), "hard": args.hard,
               "seconds_per_step": timer.seconds_per_step(), "steps": total,
               "samples_png": shared.save_grid(args, "samples", samples, "random one-hot codes"),
               "reconstructions_png": shared.save_grid(
                   args, "reconstructions", np.concatenate([test[:10].reshape(-1, 8, 8), recon_img.reshape(-1, 8, 8)]),
                   "test digits (top) and their argmax-code reconstructions"),
               "curves_png": shared.save_curves(args, "curves", history, "Gumbel-softmax VAE (nats / image)")}
    print({k_: v[-1] for k_, v in history.items()})
    return shared.finish(args, results, started)


if __name__ == "__main__":
    main()
