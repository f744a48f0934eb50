"""Cached decoding of models with a conditional LayerNorm and additional inputs
(bert4keras' task_conditional_language_model): ``generate(..., extra_inputs=...)`` equals
the uncached full forward pass, greedy and beam, for 'lm' and 'unilm'; bad extra inputs
are clear errors; bert4keras' ``AutoRegressiveDecoder`` runs on such models too."""
import itertools

import keras
import numpy as np
import pytest

from kerasformer import build_transformer_model, generate
from kerasformer.backend import predict
from kerasformer.errors import KerasformerError
from kerasformer.generation.autoregressive import AutoRegressiveDecoder

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position=64)
LABELS = [0, 2, 1]
PROMPTS = [[5, 3, 4, 2, 1], [4, 3], [1, 2, 3, 4, 5, 1, 2, 3, 4]]


def cln_model(application, vocab_size):
    keras.utils.set_random_seed(3)
    label = keras.layers.Input(shape=(1,), dtype="int32", name="Input-Label")
    embedding = keras.layers.Embedding(3, 8, embeddings_initializer=keras.initializers.RandomNormal(0, 1))
    cond = keras.layers.Reshape((8,))(embedding(label))
    model = build_transformer_model(**TINY, vocab_size=vocab_size, application=application,
                                    with_mlm=True, layer_norm_cond=cond,
                                    layer_norm_cond_hidden_size=4,
                                    layer_norm_cond_hidden_act="swish",
                                    additional_input_layers=label)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # the projections start at zero: give the condition a say
        for sub in ("hidden_dense", "gamma_dense", "beta_dense"):
            if getattr(layer, sub, None) is not None:
                for w in getattr(layer, sub).weights:
                    w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    bias = model.get_layer("MLM-Bias").bias  # token 0 (the pad id) is masked as a key by
    bias.assign(np.where(np.arange(vocab_size) == 0, -100.0, 0.0).astype("float32"))  # the full pass
    return model


@pytest.fixture(scope="module", params=["lm", "unilm"])
def models(request):
    return request.param, cln_model(request.param, 40), cln_model(request.param, 6)


def log_probs(model, application, prompt, tokens, label):
    ids = list(prompt) + list(tokens)
    segments = [0] * len(prompt) + [1 if application == "unilm" else 0] * len(tokens)
    probs = predict(model, [np.array([ids], "int32"), np.array([segments], "int32"),
                            np.array([[label]], "int32")])[0]
    return np.log(np.maximum(probs[len(prompt) - 1: len(ids)], 1e-30))


def uncached_greedy(model, application, prompt, n, label):
    out = []
    for _ in range(n):
        out.append(int(np.argmax(log_probs(model, application, prompt, out, label)[-1])))
    return out


def test_cached_greedy_equals_the_full_forward_pass(models):
    application, model, _ = models
    ours = generate(model, PROMPTS, 6, extra_inputs=[np.array(LABELS)[:, None]])
    for prompt, label, tokens in zip(PROMPTS, LABELS, ours):
        assert tokens == uncached_greedy(model, application, prompt, 6, label)
    # the condition decides: another label gives another continuation
    other = generate(model, PROMPTS, 6, extra_inputs=[np.array([1, 0, 2])[:, None]])
    assert other != ours
    stream = list(generate(model, PROMPTS, 6, extra_inputs=[np.array(LABELS)[:, None]], stream=True))
    assert [list(row) for row in zip(*stream)] == ours


def test_cached_beam_search_is_exact(models):
    application, _, small = models
    prompt, steps = [2, 3, 4], 2
    for label in (0, 2):
        def score(seq):
            logp = log_probs(small, application, prompt, seq, label)
            return float(sum(logp[i, t] for i, t in enumerate(seq)))

        best = max(itertools.product(range(6), repeat=steps), key=score)
        found = generate(small, [prompt], steps, strategy="beam", num_beams=6,
                         return_all_beams=True, extra_inputs=[[[label]]])[0]
        assert tuple(found[0][0]) == best
        assert abs(found[0][1] - score(best)) < 1e-3


def test_wrong_extra_inputs_are_clear_errors(models):
    _, model, _ = models
    with pytest.raises(KerasformerError, match="1 additional input.*got 0"):
        generate(model, PROMPTS, 2)
    with pytest.raises(KerasformerError, match="got 2 in extra_inputs"):
        generate(model, PROMPTS, 2, extra_inputs=[np.zeros((3, 1)), np.zeros((3, 1))])
    with pytest.raises(KerasformerError, match=r"shape \(2, 1\); expected \(3, 1\)"):
        generate(model, PROMPTS, 2, extra_inputs=[np.zeros((2, 1))])
    with pytest.raises(KerasformerError, match="must be numeric"):
        generate(model, PROMPTS, 2, extra_inputs=[[["a"], ["b"], ["c"]]])


def test_a_model_without_additional_inputs_refuses_extra_inputs():
    model = build_transformer_model(**TINY, vocab_size=40, application="lm", with_mlm=True)
    with pytest.raises(KerasformerError, match="0 additional input"):
        generate(model, PROMPTS, 2, extra_inputs=[np.zeros((3, 1))])


def test_autoregressive_decoder_runs_a_conditional_model(models):
    """bert4keras' task_conditional_language_model: predict() feeds the label as the third
    input of last_token(model); the beam search matches the cached engine's greedy path's
    first token and the sampled rows are valid ids."""
    application, model, _ = models

    class Generator(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            token_ids, segment_ids, label = inputs
            token_ids = np.concatenate([token_ids, output_ids], 1)
            fill = 1 if application == "unilm" else 0
            segment_ids = np.concatenate([segment_ids, np.full_like(output_ids, fill)], 1)
            return self.last_token(model).predict([token_ids, segment_ids, label])

    prompt, label = PROMPTS[0], LABELS[1]
    decoder = Generator(start_id=None, end_id=39, maxlen=4)
    ids = decoder.beam_search([prompt, [0] * len(prompt), [label]], topk=1)
    assert list(ids) == generate(model, [prompt], 4, end_id=39, extra_inputs=[[[label]]])[0]
    samples = decoder.random_sample([prompt, [0] * len(prompt), [label]], 2, topk=3)
    assert len(samples) == 2 and all(0 < t < 40 for row in samples for t in row)
