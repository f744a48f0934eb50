"""Constrained decoding with an encoder-decoder model (T5 through ``EncoderDecoderEngine``):
the same constraints as ``test_constraints.py`` (which covers the decoder-only engine),
checked against the full T5 forward pass (encoder + decoder on the whole output)."""
import numpy as np
import pytest

from kerasformer import build_transformer_model, generate
from kerasformer.backend import predict
from kerasformer.generation.constraints import SpanConstraint, TrieConstraint

from test_constraints import (END, PASSAGES, PROMPTS, VOCAB, allowed_sequences, assert_outputs_allowed, span_ok,
                              trie_ok)

# the shapes of test_t5.py's HF_CONFIG (one encoder layer, two decoder layers, 8 buckets)
TINY_T5 = dict(model="t5", vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_decoder_layers=2,
               num_attention_heads=2, attention_head_size=6, intermediate_size=24,
               relative_attention_num_buckets=8, relative_attention_max_distance=20)
# holds T5's pad id 0 (also its decoder start token) inside sequences: a generated pad id
# must be read by later steps as the full forward pass reads it (T5 does not mask it)
TRIE = [[3], [3, 4], [5, 6, 7], [8, 3, 4], [11], [0, 3, 4], [3, 0, 5]]


@pytest.fixture(scope="module")
def t5():
    model = build_transformer_model(**TINY_T5, return_keras_model=False)
    rng = np.random.default_rng(0)
    for variable in model.model.weights:  # a healthy scale: peaked, non-degenerate outputs
        if len(variable.shape) == 2:
            fan_in = 1 if "Embedding" in variable.path else variable.shape[0]
            variable.assign(rng.normal(0.0, 1.5 / fan_in ** 0.5, variable.shape).astype("float32"))
    return model


def sequence_log_prob(t5, prompt, tokens):
    """log p(tokens | prompt) from one full forward pass: the prompt right-padded for the
    encoder (which masks padding), the decoder fed its start token then ``tokens``; fixed
    widths, so one compiled shape serves every sequence."""
    encoder_ids = np.zeros((1, 16), "int32")
    encoder_ids[0, : len(prompt)] = prompt
    decoder_ids = np.zeros((1, 8), "int32")  # 0: the decoder start token (and the pad id)
    decoder_ids[0, 1: 1 + len(tokens)] = tokens
    probs = predict(t5.model, [encoder_ids, decoder_ids])[0]
    return float(sum(np.log(probs[i, t]) for i, t in enumerate(tokens)))


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_constrained_outputs_stay_in_the_allowed_set(t5, strategy):
    assert_outputs_allowed(t5, strategy, trie=TRIE, temperature=1.5)


def test_the_constraint_changes_what_greedy_picks(t5):
    """Not vacuous: unconstrained, the model leaves the passages and the trie."""
    free = generate(t5, PROMPTS, 5, end_id=END)
    assert not all(span_ok(t, p, 5) for t, p in zip(free, PASSAGES))
    assert not all(trie_ok(t, TRIE, 5) for t in free)
    constrained = generate(t5, PROMPTS, 5, end_id=END, constraint=SpanConstraint(PASSAGES))
    assert constrained != free
    # batched equals alone (each row its own passage; the longest prompt)
    assert generate(t5, PROMPTS[2:], 5, end_id=END, constraint=SpanConstraint(PASSAGES[2:])) == constrained[2:]


@pytest.mark.parametrize("kind", ["span", "trie"])
def test_constrained_beam_search_equals_exhaustive_search(t5, kind):
    prompt, max_new = PROMPTS[0], 4
    data = PASSAGES[0] if kind == "span" else TRIE
    constraint = SpanConstraint([data]) if kind == "span" else TrieConstraint(data)
    candidates = allowed_sequences(kind, data, max_new)
    scored = sorted(((sequence_log_prob(t5, prompt, seq), seq) for seq in candidates), reverse=True)
    beams = generate(t5, [prompt], max_new, strategy="beam", num_beams=32, end_id=END,
                     constraint=constraint, return_all_beams=True)[0]
    # wide enough to hold them all: the beams are exactly the allowed sequences, best first,
    # each scored with its log-probability under the full forward pass (not renormalised)
    assert [t for t, _ in beams] == [seq for _, seq in scored]
    for (tokens, score), (expected, _) in zip(beams, scored):
        assert abs(score - expected) < 1e-4, (tokens, score, expected)
