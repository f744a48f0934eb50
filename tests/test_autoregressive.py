"""bert4keras' AutoRegressiveDecoder: search results, end / minlen rules, sampling filters,
``last_token``, and a bert4keras UniLM script (AutoTitle) ported by changing imports only.

The model is a tiny random UniLM BERT with a large initialiser, so its next-token
distributions are peaked and the searches below have no near-ties to trip over.
"""
import itertools

import keras
import numpy as np
import pytest

from kerasformer import Tokenizer, build_transformer_model
from kerasformer.backend import name as backend_name
from kerasformer.backend import predict as run
from kerasformer.generation.autoregressive import AutoRegressiveDecoder, LastTokenModel, softmax

VOCAB = 12
CHARS = "天地人和风云雨"
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(CHARS)


def tiny(application="unilm", **kwargs):
    settings = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=24, max_position=64, initializer_range=1.0,
                    application=application, with_mlm=True)
    settings.update(kwargs)
    return build_transformer_model(None, None, **settings)


@pytest.fixture(scope="module")
def unilm():
    return tiny()


PROMPT = ([2, 5, 6, 7, 8, 3], [0, 0, 0, 0, 0, 0])


def next_probas(model, prompt, prefix):
    """The model's next-token distribution after ``prompt`` + ``prefix`` (segment 1)."""
    token_ids = np.array([list(prompt[0]) + list(prefix)])
    segment_ids = np.array([list(prompt[1]) + [1] * len(prefix)])
    return run(model, [token_ids, segment_ids])[0, -1]


def make_decoder(model, **kwargs):
    class Decoder(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            token_ids, segment_ids = inputs
            token_ids = np.concatenate([token_ids, output_ids], 1)
            segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
            return self.last_token(model).predict([token_ids, segment_ids])

    return Decoder(**kwargs)


# ---------------------------------------------------------------- beam search
@pytest.mark.parametrize("topk", [VOCAB, 2 * VOCAB])
def test_beam_search_with_full_beam_is_exhaustive(unilm, topk):
    """A beam as wide as the vocabulary keeps every first token, so after two steps it has
    compared every two-token continuation: its answer is the exhaustive argmax."""
    decoder = make_decoder(unilm, start_id=None, end_id=None, maxlen=2)
    found = decoder.beam_search(PROMPT, topk=topk)

    first = np.log(next_probas(unilm, PROMPT, []) + 1e-12)
    best, best_score = None, -np.inf
    for a in range(VOCAB):
        second = np.log(next_probas(unilm, PROMPT, [a]) + 1e-12)
        b = int(second.argmax())
        if first[a] + second[b] > best_score:
            best, best_score = [a, b], first[a] + second[b]
    scores = sorted(first[a] + np.log(next_probas(unilm, PROMPT, [a]) + 1e-12).max()
                    for a in range(VOCAB))
    assert scores[-1] - scores[-2] > 1e-3, "the random model has a near-tie; change its seed"
    assert found.tolist() == best


def test_beam_search_narrow_beam_and_greedy(unilm):
    """topk=1 is greedy decoding, step by step."""
    decoder = make_decoder(unilm, start_id=None, end_id=None, maxlen=4)
    greedy = []
    for _ in range(4):
        greedy.append(int(next_probas(unilm, PROMPT, greedy).argmax()))
    assert decoder.beam_search(PROMPT, topk=1).tolist() == greedy


class Scripted(AutoRegressiveDecoder):
    """No model: the distribution depends only on how many ids were output so far, which
    makes the end / minlen rules easy to follow by hand. V = 6, end id = 5."""

    table = {0: [0.3, 0.025, 0.025, 0.025, 0.025, 0.6]}  # step 0: the end id is most likely
    later = [0.0, 0.5, 0.1, 0.05, 0.05, 0.3]  # later: id 1, then the end id

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        row = self.table.get(output_ids.shape[1], self.later)
        return np.tile(np.array(row, dtype="float64"), (len(output_ids), 1))


def test_end_and_minlen():
    inputs = [[1, 2, 3]]
    # the end id wins at once
    assert Scripted(None, 5, maxlen=5).beam_search(inputs, topk=1).tolist() == [5]
    assert Scripted(None, 5, maxlen=5).beam_search(inputs, topk=3).tolist() == [5]
    # before minlen nothing is finished, so decoding goes on past the end id (bert4keras)
    assert Scripted(None, 5, maxlen=5, minlen=2).beam_search(inputs, topk=1).tolist() == [5, 1]
    # min_ends=2 waits for a second end id: greedy goes 5, 1, 1, ... until maxlen
    assert Scripted(None, 5, maxlen=4).beam_search(inputs, topk=1, min_ends=2).tolist() == [5, 1, 1, 1]
    # a start id is prepended to every output
    out = Scripted(7, 5, maxlen=5).beam_search(inputs, topk=2)
    assert out[0] == 7
    # maxlen is the most steps
    assert len(Scripted(None, None, maxlen=3).beam_search(inputs, topk=2)) == 3


def test_beam_search_all_candidates_overfinished():
    """minlen=3 with an end id at every early step: every candidate holds several end ids
    and none can finish with min_ends=1; bert4keras went on with an empty beam and crashed,
    here the best candidate comes back."""

    class AlwaysEnd(Scripted):
        table = {}
        later = [0.1, 0.1, 0.05, 0.05, 0.0, 0.7]

    out = AlwaysEnd(None, 5, maxlen=6, minlen=3).beam_search([[1]], topk=1)
    assert out.tolist() == [5, 5, 5]


def test_wraps_rtype_and_temperature():
    logits = np.array([[1.0, 2.0, 0.5]])

    class FromLogits(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="logits")
        def predict(self, inputs, output_ids, states):
            return logits

    class FromProbas(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas", use_states=True)
        def predict(self, inputs, output_ids, states):
            return softmax(logits), {"seen": states}

    d = FromLogits(None, 0, 3)
    # rtype defaults to default_rtype: log-probabilities here
    np.testing.assert_allclose(d.predict(None, None, None)[0], np.log(softmax(logits) + 1e-12))
    np.testing.assert_allclose(d.predict(None, None, None, 1, "probas")[0], softmax(logits))
    np.testing.assert_allclose(d.predict(None, None, None, 2.0, "probas")[0], softmax(logits / 2))
    p = FromProbas(None, 0, 3)
    probas, states = p.predict(None, None, "s", 0.5)
    np.testing.assert_allclose(probas, softmax(logits / 0.5), rtol=1e-6)
    assert states == {"seen": "s"}
    np.testing.assert_allclose(p.predict(None, None, None, 1, "logits")[0],
                               np.log(softmax(logits) + 1e-12))
    assert d.predict(None, None, None)[1] is None
    with pytest.raises(AssertionError):
        d.predict(None, None, None, 1, "scores")


# ---------------------------------------------------------------- sampling
def _allowed_topp(p, topp):
    order = np.argsort(-p)
    cum = np.cumsum(p[order])
    keep = int(np.searchsorted(cum, topp) + 1)  # up to and including the id reaching topp
    return set(order[:keep].tolist())


@pytest.mark.parametrize("mode", ["topk", "topp", "both"])
def test_random_sample_respects_filters(unilm, mode):
    topk = 2 if mode in ("topk", "both") else None
    topp = 0.5 if mode in ("topp", "both") else None
    decoder = make_decoder(unilm, start_id=None, end_id=3, maxlen=3)
    np.random.seed(3)
    samples = decoder.random_sample(PROMPT, 4, topk=topk, topp=topp)
    assert len(samples) == 4
    for ids in samples:
        for t, token in enumerate(ids.tolist()):
            p = next_probas(unilm, PROMPT, ids[:t].tolist()).astype("float64")
            allowed = set(range(VOCAB))
            if topk:
                allowed &= set(np.argsort(-p)[:topk].tolist())
                p = np.where(np.isin(np.arange(VOCAB), list(allowed)), p, 0)
                p /= p.sum()
            if topp:
                allowed &= _allowed_topp(p, topp)
            assert token in allowed, (mode, ids, t)


def test_random_sample_reproducible_and_end_rules():
    inputs = [[1, 2]]
    decoder = Scripted(None, 5, maxlen=6, minlen=2)
    np.random.seed(0)
    first = decoder.random_sample(inputs, 8)
    np.random.seed(0)
    second = decoder.random_sample(inputs, 8)
    assert [a.tolist() for a in first] == [b.tolist() for b in second]
    np.random.seed(1)
    third = decoder.random_sample(inputs, 8)
    assert [a.tolist() for a in first] != [c.tolist() for c in third]
    assert len(first) == 8
    # finished: exactly min_ends=1 end id, and at least minlen=2 ids (an end id drawn at
    # the first step does not finish a sample, which goes on: [5, 1] is finished);
    # unfinished: maxlen=6 ids (none, or several end ids drawn before minlen)
    done = []
    for ids in first:
        ids = ids.tolist()
        assert len(ids) >= 2
        done.append(ids.count(5) == 1)
        if done[-1]:
            assert ids[-1] == 5 or ids[:1] == [5], ids
        else:
            assert len(ids) == 6, ids
    assert any(done)
    assert done == sorted(done, reverse=True)  # finished samples come first


def test_random_sample_topk_one_is_greedy(unilm):
    decoder = make_decoder(unilm, start_id=None, end_id=None, maxlen=3)
    greedy = make_decoder(unilm, start_id=None, end_id=None, maxlen=3).beam_search(PROMPT, 1)
    for ids in decoder.random_sample(PROMPT, 3, topk=1):
        assert ids.tolist() == greedy.tolist()


# ---------------------------------------------------------------- last_token
def test_last_token_matches_full_model(unilm):
    decoder = AutoRegressiveDecoder(None, 3, 4)
    model = decoder.last_token(unilm)
    assert decoder.last_token(unilm) is model and isinstance(model, LastTokenModel)
    rng = np.random.default_rng(0)
    for batch, length in [(1, 5), (3, 7), (3, 8)]:
        x = [rng.integers(1, VOCAB, (batch, length)), np.repeat([[0] * 3 + [1] * (length - 3)], batch, 0)]
        expect = run(unilm, x)[:, -1]
        np.testing.assert_allclose(model.predict(x), expect, atol=1e-5)
    # still a Keras model (an eager call is slow on JAX: once is enough)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expect, atol=1e-5)
    # on JAX the ids are padded to shape buckets once right padding was shown harmless
    assert model.bucketing is (True if backend_name() == "jax" else False)


@pytest.mark.skipif(backend_name() != "jax", reason="shape buckets are a JAX-only optimisation")
def test_last_token_refuses_buckets_when_padding_matters():
    """An encoder whose pad id is not 0 attends to zero-padding: buckets would change its
    output, so the check turns them off and the exact shapes are used."""
    # seeded, logits and moderate weights: with initializer_range=1.0 the attention saturates
    # and some draws hide the padded keys almost entirely (a 3e-4 relative change: flaky)
    keras.utils.set_random_seed(0)
    encoder = tiny(application="encoder", pad_token_id=VOCAB - 1, with_mlm="linear", initializer_range=0.3)
    model = AutoRegressiveDecoder(None, 3, 4).last_token(encoder)
    x = [np.array([[2, 5, 6, 7, 3]]), np.zeros((1, 5), "int32")]
    expect = run(encoder, x)[:, -1]
    np.testing.assert_allclose(model.predict(x), expect, atol=1e-5)
    assert model.bucketing is False
    np.testing.assert_allclose(model.predict(x), expect, atol=1e-5)


def test_last_token_never_pads_past_the_position_table():
    short = tiny(max_position=8)
    model = AutoRegressiveDecoder(None, 3, 4).last_token(short)
    for length in (5, 8):
        x = [np.arange(2, 2 + length)[None] % VOCAB, np.zeros((1, length), "int32")]
        np.testing.assert_allclose(model.predict(x), run(short, x)[:, -1], atol=1e-5)
    assert model.max_length == 8


def test_last_token_keeps_several_outputs():
    model = build_transformer_model(None, None, vocab_size=VOCAB, hidden_size=16,
                                    num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=24, application="unilm", with_mlm=True,
                                    with_sequence_output=True)
    x = [np.array([[2, 5, 6, 3, 7]]), np.array([[0, 0, 0, 0, 1]])]
    out = AutoRegressiveDecoder(None, 3, 4).last_token(model).predict(x)
    full = run(model, x)
    assert len(out) == 2
    for got, want in zip(out, full):
        np.testing.assert_allclose(got, want[:, -1], atol=1e-5)


# ---------------------------------------------------------------- a bert4keras script, ported
def test_bert4keras_autotitle_ports_unchanged(unilm):
    """bert4keras/examples/task_seq2seq_autotitle_csl.py's decoder, verbatim but for imports."""
    tokenizer = Tokenizer({t: i for i, t in enumerate(TOKENS)}, do_lower_case=True)
    model = unilm
    maxlen = 16

    class AutoTitle(AutoRegressiveDecoder):
        """seq2seq解码器
        """
        @AutoRegressiveDecoder.wraps(default_rtype='probas')
        def predict(self, inputs, output_ids, states):
            token_ids, segment_ids = inputs
            token_ids = np.concatenate([token_ids, output_ids], 1)
            segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
            return self.last_token(model).predict([token_ids, segment_ids])

        def generate(self, text, topk=1):
            max_c_len = maxlen - self.maxlen
            token_ids, segment_ids = tokenizer.encode(text, maxlen=max_c_len)
            output_ids = self.beam_search([token_ids, segment_ids],
                                          topk=topk)  # 基于beam search
            return tokenizer.decode(output_ids)

    autotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=4)
    text = "天地人和风云雨天地人和风云雨"
    for topk in (1, 3):
        title = autotitle.generate(text, topk)
        assert isinstance(title, str) and set(title) <= set(CHARS)
    # the same search by hand: the prompt truncated to maxlen - 4 ids
    token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen - 4)
    assert len(token_ids) == 12
    ids = make_decoder(unilm, start_id=None, end_id=3, maxlen=4).beam_search(
        [token_ids, segment_ids], topk=3)
    assert autotitle.generate(text, 3) == tokenizer.decode(ids)
    # greedy agrees with a step-by-step argmax that stops at [SEP]
    greedy = []
    for _ in range(4):
        greedy.append(int(next_probas(unilm, (token_ids, segment_ids), greedy).argmax()))
        if greedy[-1] == 3:
            break
    assert autotitle.generate(text, 1) == tokenizer.decode(greedy)


def test_itertools_reference_for_three_steps_small_vocab():
    """Scripted model, three steps, beam = vocabulary: beam search equals brute force over
    all 6**3 sequences (no end id, so every sequence is three long)."""

    class Markov(AutoRegressiveDecoder):
        rng = np.random.default_rng(5)
        first = softmax(rng.normal(size=6) * 2)
        trans = softmax(rng.normal(size=(6, 6)) * 2)

        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            if output_ids.shape[1] == 0:
                return np.tile(self.first, (len(output_ids), 1))
            return self.trans[output_ids[:, -1]]

    decoder = Markov(None, None, maxlen=3)
    found = decoder.beam_search([[0]], topk=36)  # wide enough to keep every 2-prefix
    log = lambda p: np.log(p + 1e-12)  # noqa: E731
    best = max(itertools.product(range(6), repeat=3),
               key=lambda s: log(Markov.first[s[0]]) + log(Markov.trans[s[0], s[1]])
               + log(Markov.trans[s[1], s[2]]))
    assert tuple(found.tolist()) == best
