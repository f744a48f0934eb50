"""The cached generation engine: equal to Hugging Face's generate, to uncached
recomputation, batched to unbatched; beam search exact; sampling honest."""
import itertools
import os

import numpy as np
import pytest
import torch

from kerasformer import build_transformer_model, generate
from kerasformer.backend import predict
from kerasformer.errors import KerasformerError

from conftest import perturb_

PROMPTS = [[5, 17, 23, 9, 40], [7, 3], [11, 12, 13, 14, 15, 16, 17, 18, 19]]
TINY = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position=64)


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=60, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    hf = perturb_(transformers.GPT2LMHeadModel(config), scale=0.5).eval()
    directory = str(tmp_path_factory.mktemp("gpt2_gen"))
    hf.save_pretrained(directory)
    model = build_transformer_model(os.path.join(directory, "config.json"), directory, model="gpt2")
    return hf, model


def hf_greedy(hf, prompt, n, **kwargs):
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                          attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          pad_token_id=0, **kwargs)
    return out[0, len(prompt):].tolist()


def test_gpt2_greedy_equals_hf_for_a_ragged_batch(hf_gpt2):
    hf, model = hf_gpt2
    ours = generate(model, PROMPTS, 12)  # one left-padded batch
    for prompt, tokens in zip(PROMPTS, ours):
        assert tokens == hf_greedy(hf, prompt, 12)


def test_gpt2_greedy_stops_at_end_id_like_hf(hf_gpt2):
    hf, model = hf_gpt2
    reference = [hf_greedy(hf, p, 12) for p in PROMPTS]
    end_id = reference[0][3]  # a token the first prompt produces: it must stop right there
    ours = generate(model, PROMPTS, 12, end_id=end_id)
    for prompt, tokens in zip(PROMPTS, ours):
        expected = hf_greedy(hf, prompt, 12, eos_token_id=end_id)
        assert tokens == expected
    assert ours[0][-1] == end_id and len(ours[0]) <= 4


def test_repetition_penalty_equals_hf(hf_gpt2):
    hf, model = hf_gpt2
    ours = generate(model, PROMPTS, 10, repetition_penalty=1.8)
    for prompt, tokens in zip(PROMPTS, ours):
        assert tokens == hf_greedy(hf, prompt, 10, repetition_penalty=1.8)


@pytest.fixture(scope="module")
def hf_t5(tmp_path_factory):
    import transformers

    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=2,
                                   num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
                                   dropout_rate=0.0, feed_forward_proj="relu",
                                   tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0)
    hf = perturb_(transformers.T5ForConditionalGeneration(config), scale=0.5).eval()
    directory = str(tmp_path_factory.mktemp("t5_gen"))
    hf.save_pretrained(directory)
    t5 = build_transformer_model(os.path.join(directory, "config.json"), directory, model="t5",
                                 return_keras_model=False)
    return hf, t5


def test_t5_greedy_equals_hf_for_a_ragged_batch(hf_t5):
    hf, t5 = hf_t5
    prompts = [[5, 17, 23, 9, 30], [7, 3], [11, 12, 13, 14, 15, 16, 17, 18, 19]]
    ours = generate(t5, prompts, 10)
    for prompt, tokens in zip(prompts, ours):
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False,
                              eos_token_id=None)
        assert tokens == out[0, 1:].tolist()  # HF's output starts with the decoder start token


def full_forward(model, ids, segments, width=32):
    """The model on the whole sequence, right-padded to ``width`` so that one compiled
    shape serves every length: under a causal (LM) or UniLM mask no real token sees the
    padding after it (padding takes the last segment), so the real positions are exact."""
    pad = width - len(ids)
    x = np.array([list(ids) + [0] * pad], "int32")
    s = np.array([list(segments) + [segments[-1]] * pad], "int32")
    return predict(model, [x, s])[0, : len(ids)]


def uncached_greedy(model, prompt, n, unilm=False):
    """bert4keras' way: run the whole sequence through the model for every new token."""
    ids, segments = list(prompt), [0] * len(prompt)
    for _ in range(n):
        probs = full_forward(model, ids, segments)
        ids.append(int(probs[-1].argmax()))
        segments.append(1 if unilm else 0)
    return ids[len(prompt):]


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_cached_equals_uncached_and_batched_equals_unbatched(application):
    model = build_transformer_model(**TINY, application=application, with_mlm=True)
    batched = generate(model, PROMPTS, 8)
    for prompt, tokens in zip(PROMPTS, batched):
        assert tokens == generate(model, [prompt], 8)[0]
        assert tokens == uncached_greedy(model, prompt, 8, unilm=application == "unilm")


def randomize_(model, scale=2.0, seed=0):
    """Matrices of a healthy scale: a fresh model's near-uniform outputs would let a wrong
    position encoding still produce the same (degenerate) tokens."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if len(variable.shape) == 2:
            fan_in = 1 if "Embedding" in variable.path else variable.shape[0]
            variable.assign(rng.normal(0.0, scale / fan_in ** 0.5, variable.shape).astype("float32"))
    return model


@pytest.mark.parametrize("application", ["lm", "unilm"])
@pytest.mark.parametrize("family,options", [
    ("roformer", {}),
    ("roformer", {"rotary_value": True}),
    ("roformer_v2", {}),
    ("nezha", {"max_relative_position": 3}),  # small K: the clipping is exercised
])
def test_position_encodings_decode_cached_as_uncached(family, options, application):
    """Rotary and relative positions under the cache: per-row positions of a left-padded
    batch, the newest query against the whole cache."""
    model = randomize_(build_transformer_model(**TINY, model=family, application=application,
                                               with_mlm=True, **options))
    unilm = application == "unilm"
    batched = generate(model, PROMPTS, 8)
    assert len({tuple(t) for t in batched}) > 1  # not a degenerate model
    for prompt, tokens in zip(PROMPTS, batched):
        assert tokens == uncached_greedy(model, prompt, 8, unilm=unilm)
        assert tokens == generate(model, [prompt], 8)[0]
    # scores are sums of log-probabilities through the cache: compare them, not just argmaxes
    for prompt, beams in zip(PROMPTS, generate(model, PROMPTS, 4, strategy="beam", num_beams=2,
                                               return_all_beams=True)):
        for tokens, score in beams:
            assert abs(score - sequence_log_prob(model, prompt, tokens, unilm=unilm)) < 1e-3


def sequence_log_prob(model, prompt, tokens, unilm=True):
    ids = list(prompt) + list(tokens)
    segments = [0] * len(prompt) + [1 if unilm else 0] * len(tokens)
    probs = full_forward(model, ids, segments)
    return float(sum(np.log(probs[len(prompt) - 1 + i, t]) for i, t in enumerate(tokens)))


@pytest.mark.parametrize("steps,beams", [(2, 6), (3, 36)])
def test_beam_search_is_exhaustive_when_wide_enough(steps, beams):
    """Vocabulary 6: beam >= V finds the best 2-token sequence, beam >= V^2 the best 3."""
    model = build_transformer_model(**{**TINY, "vocab_size": 6}, application="unilm", with_mlm=True)
    prompt = [2, 3, 4]
    best = max(itertools.product(range(6), repeat=steps),
               key=lambda seq: sequence_log_prob(model, prompt, seq))
    found = generate(model, [prompt], steps, strategy="beam", num_beams=beams, return_all_beams=True)[0]
    assert tuple(found[0][0]) == best
    assert abs(found[0][1] - sequence_log_prob(model, prompt, best)) < 1e-3


def test_a_generated_padding_id_is_masked_as_in_the_full_forward_pass():
    """The full forward pass masks the key of every padding token (id 0); a generated 0 must
    be masked in the cache too, else the scores of later steps differ (silently)."""
    model = build_transformer_model(**{**TINY, "vocab_size": 6}, application="unilm", with_mlm=True)
    bias = model.get_layer("MLM-Bias").weights[0]
    bias.assign(np.array([4.0, 0, 0, 0, 0, 0], "float32"))  # the pad id wins the first steps
    prompt = [2, 3, 4]
    for tokens, score in generate(model, [prompt], 3, strategy="beam", num_beams=3, return_all_beams=True)[0]:
        assert abs(score - sequence_log_prob(model, prompt, tokens)) < 1e-4
    tokens = generate(model, [prompt], 3)[0]
    assert tokens[0] == 0 and tokens == uncached_greedy(model, prompt, 3, unilm=True)


def test_beam_search_batched_equals_unbatched():
    model = build_transformer_model(**TINY, application="unilm", with_mlm=True)
    batched = generate(model, PROMPTS, 6, strategy="beam", num_beams=3)
    for prompt, tokens in zip(PROMPTS, batched):
        assert tokens == generate(model, [prompt], 6, strategy="beam", num_beams=3)[0]


def test_sampling_respects_top_k_and_top_p_and_seed():
    model = build_transformer_model(**TINY, application="lm", with_mlm="linear")
    prompt = [5, 17, 23]
    probs = predict(model, [np.array([prompt], "int32"), np.zeros((1, 3), "int32")])[0, -1]
    probs = np.exp(probs - probs.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    top3 = set(order[:3].tolist())
    nucleus = set(order[: int(np.searchsorted(np.cumsum(probs[order]), 0.5)) + 1].tolist())
    first_k = {generate(model, [prompt], 1, strategy="sample", top_k=3, seed=s)[0][0] for s in range(40)}
    assert first_k <= top3 and len(first_k) > 1
    first_p = {generate(model, [prompt], 1, strategy="sample", top_p=0.5, seed=s)[0][0] for s in range(40)}
    assert first_p <= nucleus
    a = generate(model, PROMPTS, 6, strategy="sample", top_k=10, seed=7)
    b = generate(model, PROMPTS, 6, strategy="sample", top_k=10, seed=7)
    c = generate(model, PROMPTS, 6, strategy="sample", top_k=10, seed=8)
    assert a == b and a != c


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampling_draws_from_the_softmax(temperature):
    """3,000 copies of one prompt in a batch, one draw each: the frequencies match
    softmax(logits / temperature) within four standard errors."""
    model = randomize_(build_transformer_model(**{**TINY, "vocab_size": 8}, application="lm",
                                               with_mlm="linear"), scale=0.5)
    prompt, n = [5, 1, 3], 3000
    logits = predict(model, [np.array([prompt], "int32"), np.zeros((1, 3), "int32")])[0, -1]
    probs = np.exp((logits - logits.max()) / temperature)
    probs /= probs.sum()
    drawn = generate(model, [prompt] * n, 1, strategy="sample", temperature=temperature, seed=11)
    freq = np.bincount([row[0] for row in drawn], minlength=8) / n
    assert np.all(np.abs(freq - probs) <= 4 * np.sqrt(probs * (1 - probs) / n) + 1e-3), (freq, probs)


def test_uniform_noise_is_uniform_and_keyed_by_seed_and_step():
    from kerasformer.backend import uniform_noise

    u = np.asarray(ops_to_numpy(uniform_noise((200, 500), 3, 0)))
    assert u.min() > 0 and u.max() < 1
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - 10_000) < 500)  # ~5 standard deviations
    assert np.array_equal(u, ops_to_numpy(uniform_noise((200, 500), 3, 0)))
    for other in (uniform_noise((200, 500), 4, 0), uniform_noise((200, 500), 3, 1)):
        assert abs(np.corrcoef(u.ravel(), ops_to_numpy(other).ravel())[0, 1]) < 0.02


def ops_to_numpy(x):
    import keras

    return keras.ops.convert_to_numpy(x)


def test_stream_sampling_equals_sampling(hf_gpt2):
    _, model = hf_gpt2
    steps = list(generate(model, PROMPTS, 5, strategy="sample", top_k=20, seed=3, stream=True))
    assert [list(column) for column in zip(*steps)] == generate(model, PROMPTS, 5, strategy="sample",
                                                                top_k=20, seed=3)


def test_generate_follows_weight_updates():
    """Compiled programs (and torch's prepacked weights) must see weights assigned later."""
    model = randomize_(build_transformer_model(**TINY, application="lm", with_mlm=True), seed=1)
    other = randomize_(build_transformer_model(**TINY, application="lm", with_mlm=True), seed=2)
    before = generate(model, PROMPTS, 6)
    model.set_weights(other.get_weights())
    after = generate(model, PROMPTS, 6)
    assert after == generate(other, PROMPTS, 6) and after != before


def test_stream_yields_the_greedy_tokens(hf_gpt2):
    _, model = hf_gpt2
    steps = list(generate(model, PROMPTS, 5, stream=True))
    assert [list(column) for column in zip(*steps)] == generate(model, PROMPTS, 5)


def test_min_new_tokens_blocks_the_end(hf_gpt2):
    _, model = hf_gpt2
    first = generate(model, [PROMPTS[0]], 1)[0][0]
    tokens = generate(model, [PROMPTS[0]], 5, end_id=first, min_new_tokens=3)[0]
    assert first not in tokens[:3]


def test_bad_arguments_are_named(hf_gpt2):
    _, model = hf_gpt2
    with pytest.raises(KerasformerError, match="unknown strategy 'topk'"):
        generate(model, PROMPTS, 4, strategy="topk")
    with pytest.raises(KerasformerError, match="exceeds the position table of 64"):
        generate(model, PROMPTS, 60)
    with pytest.raises(KerasformerError, match="non-empty"):
        generate(model, [[]], 4)
    encoder = build_transformer_model(**TINY)
    with pytest.raises(KerasformerError, match="with_mlm=True"):
        generate(encoder, PROMPTS, 4)


@pytest.mark.parametrize("family,application", [("gpt2", "lm"), ("roformer", "unilm"), ("albert", "lm")])
def test_generate_on_a_model_loaded_from_keras_file(tmp_path, family, application):
    """The family is rebuilt from the settings saved in the model's config and bound to
    the loaded layers, so the cached engine works on a reloaded model."""
    import keras

    options = {} if family == "gpt2" else {"application": application, "with_mlm": True}
    model = randomize_(build_transformer_model(**TINY, model=family, **options))
    path = str(tmp_path / f"{family}.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    expected = generate(model, PROMPTS, 6)
    assert generate(restored, PROMPTS, 6) == expected
    assert generate(restored, PROMPTS, 3, strategy="beam", num_beams=2) == \
        generate(model, PROMPTS, 3, strategy="beam", num_beams=2)


def test_generate_on_a_t5_loaded_from_keras_file(tmp_path, hf_t5):
    import keras

    _, transformer = hf_t5
    path = str(tmp_path / "t5.keras")
    transformer.model.save(path)
    restored = keras.saving.load_model(path)
    prompts = [[5, 6, 7, 1], [9, 1]]
    assert generate(restored, prompts, 5) == generate(transformer, prompts, 5)
