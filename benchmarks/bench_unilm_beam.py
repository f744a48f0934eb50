"""UniLM beam search: the cached engine vs the uncached bert4keras-style decoder.

One random UniLM BERT (default 4 layers x 256, vocabulary 5,000), prompts of 64 tokens,
beam 4, exactly 64 new tokens (no end id, so both run every step). Contenders, on JAX
and on PyTorch:

* ``engine-*``: ``kerasformer.generate(model, prompts, strategy='beam', num_beams=4)``,
  key/value cache, all prompts of a batch decoded together;
* ``b4k-*``: ``AutoRegressiveDecoder.beam_search(..., topk=4)`` with the bert4keras
  ``predict`` (the whole sequence re-run at every step, one prompt at a time).

Alternating rounds, one process per contender, the same thread count
(benchmarks/alternate.py). The value column is a checksum of the generated tokens: where
both decoders find the same beams, engine and b4k show the same number::

    python benchmarks/bench_unilm_beam.py [--batch 8] [--rounds 3]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternate  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup_model(args, backend):
    os.environ["KERAS_BACKEND"] = backend
    sys.path.insert(0, REPO)
    import numpy as np

    import keras

    from kerasformer import build_transformer_model

    keras.utils.set_random_seed(0)  # the engine and the b4k process of a backend hold the same weights
    # a large initialiser gives peaked distributions, so both searches agree on the best
    # beam instead of splitting near-ties by float noise
    model = build_transformer_model(
        None, None, vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=max(2, args.hidden // 64), intermediate_size=4 * args.hidden,
        max_position=max(512, args.prompt + args.new), initializer_range=0.3,
        application="unilm", with_mlm=True)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(5, args.vocab, args.prompt).tolist() for _ in range(args.batch)]
    return model, prompts


def checksum(rows):
    """One number per output, position-weighted: equal only when the tokens are."""
    return float(sum(sum(int(t) * (i + 1) for i, t in enumerate(row)) for row in rows))


def engine(backend):
    def setup(args):
        model, prompts = setup_model(args, backend)
        from kerasformer import generate

        def fn():
            return checksum(generate(model, prompts, max_new_tokens=args.new, strategy="beam",
                                     num_beams=args.beam, end_id=None))

        return fn

    return setup


def bert4keras(backend):
    def setup(args):
        model, prompts = setup_model(args, backend)
        sys.path.insert(0, os.path.join(REPO, "recipes"))
        from unilm_csl import bert4keras_decoder  # bert4keras' AutoTitle: the uncached baseline

        decoder = bert4keras_decoder(model, end_id=None, maxlen=args.new)

        def fn():
            return checksum(decoder.beam_search([p, [0] * len(p)], topk=args.beam).tolist() for p in prompts)

        return fn

    return setup


CONTENDERS = {
    "b4k-jax": bert4keras("jax"),
    "engine-jax": engine("jax"),
    "b4k-torch": bert4keras("torch"),
    "engine-torch": engine("torch"),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8, help="prompts decoded per call")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=5000)
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    p.add_argument("--new", type=int, default=64, help="generated tokens")
    p.add_argument("--beam", type=int, default=4)
    args, _ = p.parse_known_args()
    return alternate.main(
        __file__, CONTENDERS, p, baseline="b4k-jax", units=(args.batch * args.new, "tokens/s"),
        describe=f"UniLM beam search: {args.layers} layers x {args.hidden}, vocab {args.vocab}, batch "
                 f"{args.batch}, prompt {args.prompt} tokens, beam {args.beam}, +{args.new} tokens",
        pairs=[("engine-jax", "b4k-jax"), ("engine-torch", "b4k-torch")])


if __name__ == "__main__":
    main()
