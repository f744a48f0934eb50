"""A text VAE on short Chinese sentences (ChnSentiCorp clauses): plain VAE vs VAE + BN.

Both models (GRU encoder, GRU decoder fed the latent at every step, a character
vocabulary) train on the same clauses in one run with the full KL weight from step one and
no tricks, which is where a text VAE's posterior collapses. The BN variant normalises the
posterior mean with Su Jianlin's constrained scales
(:class:`kerasformer.generative.PosteriorBatchNorm`, ``tau``), so its batch-mean KL cannot
fall below ``0.5 * tau * latent``. Reported per epoch, on the test clauses: KL, the
reconstruction (nats per sentence) and its perplexity per token, and the ELBO perplexity.

    python recipes/generative/text_vae.py --out text_vae.json
"""
import collections
import math
import re
import time

import numpy as np

try:
    from recipes.generative import shared
except ImportError:  # run as a script
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from recipes.generative import shared

from recipes import common  # noqa: E402

PAD, UNK, BOS, EOS = 0, 1, 2, 3


def load_clauses(path, min_len, max_len, limit):
    """Clauses (split at Chinese and Latin punctuation) of ``min_len..max_len`` characters."""
    out = []
    with open(common.require_file(path, "ChnSentiCorp train.tsv"), encoding="utf-8") as f:
        for line in f:
            text = line.rsplit("\t", 1)[0]
            for clause in re.split(r"[，。！？；、,.!?;~…\s]+", text):
                if min_len <= len(clause) <= max_len:
                    out.append(clause)
    return out[:limit]


def encode(clauses, vocab, max_len):
    """``(inputs, targets)``: ``BOS c1..cn`` and ``c1..cn EOS``, padded with 0."""
    inputs = np.zeros((len(clauses), max_len + 1), "int32")
    targets = np.zeros_like(inputs)
    for i, clause in enumerate(clauses):
        ids = [vocab.get(c, UNK) for c in clause]
        inputs[i, :len(ids) + 1] = [BOS] + ids
        targets[i, :len(ids) + 1] = ids + [EOS]
    return inputs, targets


def build(vocab_size, args, use_bn):
    import keras
    from keras import ops

    from kerasformer.generative import PosteriorBatchNorm, Sampling, kl_divergence

    embed = keras.layers.Embedding(vocab_size, args.embed)
    enc_rnn = keras.layers.GRU(args.hidden)
    to_posterior = keras.layers.Dense(2 * args.latent)
    bn = PosteriorBatchNorm(tau=args.tau, momentum=args.bn_momentum) if use_bn else None
    sampling = Sampling()
    to_state = keras.layers.Dense(args.hidden, activation="tanh")
    dec_rnn = keras.layers.GRU(args.hidden, return_sequences=True)
    to_logits = keras.layers.Dense(vocab_size)
    layers = [embed, enc_rnn, to_posterior, to_state, dec_rnn, to_logits] + ([bn] if bn else [])

    def terms(inputs, targets, noise, training):
        mask = ops.cast(ops.not_equal(targets, PAD), "float32")
        h = enc_rnn(embed(targets), mask=ops.not_equal(targets, PAD))  # the sentence, EOS included
        post = to_posterior(h)
        mean, log_var = post[:, :args.latent], post[:, args.latent:]
        if bn is not None:
            mean, log_var = bn([mean, log_var], training=training)
        z = sampling([mean, log_var], noise=noise)
        steps = ops.shape(inputs)[1]
        dec_in = ops.concatenate([embed(inputs), ops.repeat(z[:, None, :], steps, axis=1)], axis=-1)
        logits = to_logits(dec_rnn(dec_in, initial_state=to_state(z)))
        ce = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        recon = ops.sum(ce * mask, axis=-1)
        return ops.mean(recon), ops.mean(kl_divergence(mean, log_var)), ops.sum(mask)

    return layers, terms, bn


def main(argv=None):
    p = shared.parser(__doc__.split("\n")[0], out="text_vae.json", epochs=8, batch_size=64, lr=1e-3)
    p.add_argument("--data", default=common.data_path("sentiment", "chnsenticorp", "train.tsv"))
    p.add_argument("--max-train", type=int, default=6000)
    p.add_argument("--max-test", type=int, default=600)
    p.add_argument("--min-len", type=int, default=6)
    p.add_argument("--max-len", type=int, default=16)
    p.add_argument("--min-count", type=int, default=3, help="characters seen fewer times become [UNK]")
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--tau", type=float, default=0.5, help="BN-VAE: KL >= 0.5 * tau * latent")
    p.add_argument("--bn-momentum", type=float, default=0.9,
                   help="BN-VAE moving averages (used on the test set); Keras' 0.99 lags a few hundred steps")
    args = shared.check(p.parse_args(argv))
    if args.smoke:
        args.max_train, args.max_test, args.embed, args.hidden, args.latent = 32, 16, 8, 16, 4
        args.max_len = args.min_len = 6

    import keras
    from keras import ops

    from kerasformer.backend import to_numpy
    from kerasformer.generative import TrainStep

    started = time.time()
    clauses = load_clauses(args.data, args.min_len, args.max_len, args.max_train + args.max_test)
    rng = np.random.default_rng(args.seed)
    clauses = [clauses[i] for i in rng.permutation(len(clauses))]
    test_clauses, train_clauses = clauses[:args.max_test], clauses[args.max_test:]
    counts = collections.Counter(c for s in train_clauses for c in s)
    chars = sorted((c for c, m in counts.items() if m >= args.min_count), key=lambda c: (-counts[c], c))
    vocab = {c: i + 4 for i, c in enumerate(chars)}
    train, test = encode(train_clauses, vocab, args.max_len), encode(test_clauses, vocab, args.max_len)
    results = {"data": {"train": len(train_clauses), "test": len(test_clauses), "vocab": len(vocab) + 4,
                        "example": test_clauses[:3]}, "models": {}}
    for name, use_bn in [("plain", False), ("bn", True)]:
        keras.utils.set_random_seed(args.seed)
        layers, terms, bn = build(len(vocab) + 4, args, use_bn)
        first = [a[:2] for a in train]
        terms(ops.convert_to_tensor(first[0]), ops.convert_to_tensor(first[1]),
              ops.zeros((2, args.latent)), False)  # build the layers

        def loss(inputs, targets, noise, _terms=terms, _bn=bn):
            recon, kl, _ = _terms(inputs, targets, noise, True)
            # BN-VAE: the batch's KL minus its bound, which must never be negative
            margin = kl - _bn.kl_lower_bound() if _bn is not None else kl
            return recon + kl, {"recon": recon, "kl": kl, "margin": margin}

        step = TrainStep(layers, loss, keras.optimizers.Adam(args.lr))
        timer, history = shared.StepTimer(), collections.defaultdict(list)
        batch_rng = np.random.default_rng(args.seed)
        for _ in range(args.epochs):
            logs = []
            for idx in shared.batches(len(train[0]), args.batch_size, batch_rng):
                noise = batch_rng.normal(size=(len(idx), args.latent)).astype("float32")
                _, aux = timer(step, train[0][idx], train[1][idx], noise)
                logs.append({k: float(to_numpy(v)) for k, v in aux.items()})
            history["train_kl"].append(float(np.mean([l["kl"] for l in logs])))
            history["train_recon"].append(float(np.mean([l["recon"] for l in logs])))
            history["train_min_kl_minus_bound"].append(float(min(l["margin"] for l in logs)))
            noise = batch_rng.normal(size=(len(test[0]), args.latent)).astype("float32")
            recon, kl, tokens = (float(to_numpy(t)) for t in terms(
                ops.convert_to_tensor(test[0]), ops.convert_to_tensor(test[1]), ops.convert_to_tensor(noise), False))
            per_token = len(test[0]) / tokens  # sentence means -> per-token
            history["test_kl"].append(kl)
            history["test_recon"].append(recon)
            history["test_recon_perplexity"].append(math.exp(recon * per_token))
            history["test_elbo_perplexity"].append(math.exp((recon + kl) * per_token))
            print(name, {k: round(v[-1], 3) for k, v in history.items()})
        results["models"][name] = {"history": dict(history), "seconds_per_step": timer.seconds_per_step(),
                                   "steps": len(timer.times)}
        if bn is not None:
            results["models"][name]["kl_lower_bound"] = float(to_numpy(bn.kl_lower_bound()))
    m = results["models"]
    results["curves_png"] = shared.save_curves(
        args, "kl", {f"{n} {k}": m[n]["history"][k] for n in m for k in ("test_kl",)}, "test KL (nats / sentence)")
    results["recon_png"] = shared.save_curves(
        args, "recon", {f"{n} {k}": m[n]["history"][k] for n in m for k in ("test_recon_perplexity",)},
        "test reconstruction perplexity per token")
    return shared.finish(args, results, started)


if __name__ == "__main__":
    main()
