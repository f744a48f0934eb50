"""Constrained decoding: the allowed-token constraints (span of a passage, trie of
sequences, prefix function) in the compiled engine and in ``AutoRegressiveDecoder``.
Outputs never leave the allowed set, and constrained beam search equals exhaustive search
over every allowed sequence on a tiny vocabulary."""
import numpy as np
import pytest

from kerasformer import build_transformer_model, generate
from kerasformer.errors import KerasformerError
from kerasformer.generation.constraints import Guide, SpanConstraint, TrieConstraint

from test_autoregressive import make_decoder
from test_generation import randomize_, sequence_log_prob, uncached_greedy

END = 1
VOCAB = 12
PROMPTS = [[5, 9, 2, 7], [3, 4], [10, 11, 6, 2, 8, 9]]
PASSAGES = [[3, 4, 3, 5, 6], [7, 8, 9], [2, 2, 10]]
TRIE = [[3], [3, 4], [5, 6, 7], [8, 3, 4], [11]]


@pytest.fixture(scope="module")
def model():
    return randomize_(build_transformer_model(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position=64, application="unilm", with_mlm=True), scale=1.5)


def substrings(seq):
    return {tuple(seq[i:j]) for i in range(len(seq)) for j in range(i + 1, len(seq) + 1)}


def span_ok(tokens, passage, max_new):
    """A non-empty substring followed by the end token, or a substring cut at max_new."""
    body = tokens[:-1] if tokens and tokens[-1] == END else tokens
    finished = len(body) < len(tokens)
    return bool(body) and tuple(body) in substrings(passage) and (finished or len(tokens) == max_new)


def trie_ok(tokens, sequences, max_new):
    body = tokens[:-1] if tokens and tokens[-1] == END else tokens
    if len(body) < len(tokens):
        return body in sequences
    return len(tokens) == max_new and any(s[:max_new] == body for s in sequences)


def test_guide_masks_follow_the_passage_and_the_trie():
    """The tensor state against a plain reading of the definitions, step by step."""
    passage = [3, 4, 3, 5]
    guide = Guide(SpanConstraint([passage]), END)
    prefix = []
    for token in [3, 4, 3]:
        mask = guide.mask([prefix], VOCAB)[0]
        expected = {s[len(prefix)] for s in substrings(passage)
                    if len(s) > len(prefix) and list(s[:len(prefix)]) == prefix}
        assert set(np.flatnonzero(mask)) == expected | ({END} if prefix else set())
        prefix.append(token)
        guide.update([token])
    assert set(np.flatnonzero(guide.mask([prefix], VOCAB)[0])) == {5, END}
    # allow_empty: the end token from the start (a model may answer "not here")
    assert Guide(SpanConstraint([passage], allow_empty=True), END).mask([[]], VOCAB)[0, END]
    guide = Guide(TrieConstraint(TRIE), END)
    assert set(np.flatnonzero(guide.mask([[]], VOCAB)[0])) == {3, 5, 8, 11}
    guide.update([3])
    assert set(np.flatnonzero(guide.mask([[3]], VOCAB)[0])) == {4, END}
    guide.update([4])
    assert set(np.flatnonzero(guide.mask([[3, 4]], VOCAB)[0])) == {END}


def assert_outputs_allowed(model, strategy, trie=None, **options):
    """Outputs of ``strategy`` stay in each constraint's set: spans of the per-row passages,
    per-row tries (and one ``trie`` for all); with beams, every beam returned."""
    kwargs = dict(strategy=strategy, num_beams=3, seed=7, end_id=END, **options)
    spans = generate(model, PROMPTS, 5, constraint=SpanConstraint(PASSAGES), **kwargs)
    for tokens, passage in zip(spans, PASSAGES):
        assert span_ok(tokens, passage, 5), (tokens, passage)
    # per-row tries: each prompt its own candidates (one list for all: the exhaustive test)
    groups = [[[3, 4]], [[5], [6, 7]], [[9, 0, 9]]]
    for tokens, group in zip(generate(model, PROMPTS, 5, constraint=TrieConstraint(groups, per_row=True),
                                      **kwargs), groups):
        assert trie_ok(tokens, group, 5), (tokens, group)
    if trie is not None:
        for tokens in generate(model, PROMPTS, 5, constraint=TrieConstraint(trie), **kwargs):
            assert trie_ok(tokens, trie, 5), tokens
    if strategy == "beam":  # every beam returned, not only the best
        for beams, passage in zip(generate(model, PROMPTS, 5, constraint=SpanConstraint(PASSAGES),
                                           return_all_beams=True, **kwargs), PASSAGES):
            assert beams and all(span_ok(t, passage, 5) for t, _ in beams)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_constrained_outputs_stay_in_the_allowed_set(model, strategy):
    assert_outputs_allowed(model, strategy)


def test_the_constraint_changes_what_greedy_picks(model):
    """Not vacuous: unconstrained, the model leaves the passage; constrained, it does not."""
    free = generate(model, PROMPTS, 5, end_id=END)
    assert not all(span_ok(t, p, 5) for t, p in zip(free, PASSAGES))
    # a new constraint object with the same data decodes the same
    first = generate(model, PROMPTS, 5, end_id=END, constraint=SpanConstraint(PASSAGES))
    assert generate(model, PROMPTS, 5, end_id=END, constraint=SpanConstraint(PASSAGES)) == first


def allowed_sequences(kind, data, max_new):
    """Every output the constraint allows within max_new tokens."""
    if kind == "span":
        bodies = substrings(data)
    else:
        bodies = {tuple(s[:n]) for s in data for n in range(1, len(s) + 1)}
    out = [list(b) + [END] for b in bodies if len(b) < max_new and (kind == "span" or list(b) in data)]
    out += [list(b) for b in bodies if len(b) == max_new]
    return out


@pytest.mark.parametrize("kind", ["span", "trie"])
def test_constrained_beam_search_equals_exhaustive_search(model, kind):
    prompt, max_new = PROMPTS[0], 4
    data = PASSAGES[0] if kind == "span" else TRIE
    constraint = SpanConstraint([data]) if kind == "span" else TrieConstraint(data)
    candidates = allowed_sequences(kind, data, max_new)
    scored = sorted(((sequence_log_prob(model, prompt, seq), seq) for seq in candidates), reverse=True)
    beams = generate(model, [prompt], max_new, strategy="beam", num_beams=32, end_id=END,
                     constraint=constraint, return_all_beams=True)[0]
    assert beams[0][0] == scored[0][1]
    assert abs(beams[0][1] - scored[0][0]) < 1e-3  # the model's log-probability, not renormalised
    # wide enough to hold them all: the beams are exactly the allowed sequences, best first
    assert sorted(map(tuple, (t for t, _ in beams))) == sorted(map(tuple, candidates))
    # bert4keras' decoder drops finished beams that are not the best (its semantics, not
    # exhaustive): its output stays allowed, and a prefix function gives the same as the object
    decoder = _decoder(model, max_new)
    found = list(decoder.beam_search([prompt, [0] * len(prompt)], topk=32, constraint=constraint))
    assert found in candidates
    if kind == "span":
        prefix_fn = lambda ids: ({s[len(ids)] for s in substrings(data)  # noqa: E731
                                  if len(s) > len(ids) and list(s[:len(ids)]) == ids} | ({END} if ids else set()))
        assert list(decoder.beam_search([prompt, [0] * len(prompt)], topk=32, constraint=prefix_fn)) == found


def _decoder(model, maxlen):
    return make_decoder(model, start_id=None, end_id=END, maxlen=maxlen)


def test_autoregressive_decoder_sampling_and_greedy_stay_in_the_set(model):
    decoder = _decoder(model, 5)
    np.random.seed(0)
    prompt = PROMPTS[1]
    for tokens in decoder.random_sample([prompt, [0] * len(prompt)], 6, constraint=SpanConstraint([PASSAGES[1]])):
        assert span_ok(list(tokens), PASSAGES[1], 5), tokens
    for tokens in decoder.random_sample([prompt, [0] * len(prompt)], 4, topk=3, constraint=TrieConstraint(TRIE)):
        assert trie_ok(list(tokens), TRIE, 5), tokens
    # greedy (topk=1) through the decoder equals greedy through the engine
    engine = generate(model, [prompt], 5, end_id=END, constraint=SpanConstraint([PASSAGES[1]]))[0]
    assert list(decoder.beam_search([prompt, [0] * len(prompt)], topk=1,
                                    constraint=SpanConstraint([PASSAGES[1]]))) == engine


def test_unconstrained_decoding_is_unchanged(model):
    greedy = generate(model, PROMPTS, 6)
    for prompt, tokens in zip(PROMPTS, greedy):
        assert tokens == uncached_greedy(model, prompt, 6, unilm=True)


def test_bad_constraints_are_clear_errors(model):
    with pytest.raises(KerasformerError, match="end_id"):
        generate(model, PROMPTS, 4, constraint=SpanConstraint(PASSAGES))
    with pytest.raises(KerasformerError, match="Constraint"):
        generate(model, PROMPTS, 4, end_id=END, constraint=lambda ids: [3])
    with pytest.raises(KerasformerError, match="stream"):
        generate(model, PROMPTS, 4, end_id=END, stream=True, constraint=SpanConstraint(PASSAGES))
    with pytest.raises(KerasformerError, match="2 given for 3 prompts"):
        generate(model, PROMPTS, 4, end_id=END, constraint=SpanConstraint(PASSAGES[:2]))
    with pytest.raises(KerasformerError, match="vocabulary"):
        generate(model, PROMPTS, 4, end_id=END, constraint=SpanConstraint([[3, VOCAB]]))
    with pytest.raises(KerasformerError, match="non-empty"):
        SpanConstraint([[]])
    with pytest.raises(KerasformerError, match="non-empty"):
        TrieConstraint([])
    decoder = _decoder(model, 3)
    with pytest.raises(KerasformerError, match="allows no token"):
        decoder.beam_search([PROMPTS[0], [0] * 4], topk=2, constraint=lambda ids: [])
