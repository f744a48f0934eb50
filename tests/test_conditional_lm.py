"""recipes/conditional_lm.py: the article's conditional LayerNorm LM decoded through
bert4keras' AutoRegressiveDecoder with the label as an extra model input.

The decoding tests compare every step with an uncached forward of the whole sequence
through the Keras model (rows with different labels in one batch), on a tiny model whose
conditional projections are given random values (they start at zero, which would make the
label invisible and the tests unable to fail). The end-to-end run is the recipe's --smoke.
"""
import json
import os
import sys

import numpy as np
import pytest
from keras import ops

import kerasformer  # noqa: F401  (sets the default Keras backend before keras loads)
from kerasformer import backend

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))
import conditional_lm as clm  # noqa: E402

VOCAB, START, END, PREFIX = 24, 2, 3, [22, 23]


@pytest.fixture(scope="module")
def models():
    """Tiny CLN and prefix LMs (2 layers x 16, no dropout), CLN projections made non-zero."""
    args = clm.parse_args(["--layers", "2", "--hidden-size", "16", "--heads", "2", "--maxlen", "16",
                           "--cond-size", "8", "--cond-hidden-size", "4", "--cond-hidden-act", "swish",
                           "--dropout", "0"])
    clm.common.set_seed(0)
    cln = clm.build_lm(args, "cln", VOCAB).model
    prefix = clm.build_lm(args, "prefix", VOCAB).model
    rng = np.random.default_rng(0)
    conditional = [w for w in cln.weights if "dense" in w.path and ("gamma" in w.path or "beta" in w.path
                                                                    or "hidden" in w.path)]
    assert conditional, "no conditional LayerNorm projections in the CLN model"
    for w in conditional + [w for w in cln.weights if "Embedding-Label" in w.path]:
        w.assign(rng.normal(0.0, 0.5, w.shape).astype("float32"))
    return {"cln": cln, "prefix": prefix}


def _forward_last(model, variant, output_ids, labels):
    """Next-token probabilities at the last position, from one uncached call of the model."""
    if variant == "cln":
        inputs = [output_ids, np.zeros_like(output_ids), labels.reshape(-1, 1)]
    else:
        output_ids = np.concatenate([np.asarray(PREFIX)[labels].reshape(-1, 1), output_ids], 1)
        inputs = [output_ids, np.zeros_like(output_ids)]
    return ops.convert_to_numpy(model(inputs))[:, -1]


@pytest.mark.parametrize("variant", ["cln", "prefix"])
def test_decoder_steps_equal_full_forward(models, variant):
    """Every step's distribution, for a batch mixing both labels, equals the model's own."""
    model = models[variant]
    sampler = clm.make_sampler(model, variant, START, END, PREFIX, maxlen=8)
    labels = np.array([0, 1, 1, 0])
    first = labels.reshape(-1, 1) if variant == "cln" else np.asarray(PREFIX)[labels].reshape(-1, 1)
    rng = np.random.default_rng(1)
    for length in (1, 2, 5, 9, 5):  # 5 twice: a repeated shape (the JAX fast path's second visit)
        output_ids = rng.integers(4, VOCAB - 2, size=(len(labels), length))
        if variant == "cln":
            output_ids[:, 0] = START
        got, _ = sampler.predict([first], output_ids, None)
        np.testing.assert_allclose(got, _forward_last(model, variant, output_ids, labels), atol=1e-5)
    if variant == "cln":  # the label reaches the output: the same ids under the other label differ
        other = _forward_last(model, variant, output_ids, 1 - labels)
        assert np.abs(other - got).max() > 1e-3
    # on JAX the steps ran in shape buckets (the label input padded in rows only), not one
    # compiled program per length
    assert sampler.last_token(model).bucketing is (backend.name() == "jax")


@pytest.mark.parametrize("variant", ["cln", "prefix"])
def test_sampling_with_top_1_is_greedy_decoding_by_full_forwards(models, variant):
    """random_sample(topk=1) through the decoder = a greedy loop of uncached forwards, per label."""
    model = models[variant]
    sampler = clm.make_sampler(model, variant, START, END, PREFIX, maxlen=6)
    for label in (0, 1):
        got = sampler.generate(label, 2, topk=1)
        ids = np.array([[START]] if variant == "cln" else np.empty((1, 0), "int64"))
        expected = []
        for _ in range(6):
            token = int(np.argmax(_forward_last(model, variant, ids, np.array([label]))[0]))
            if token == END:
                break
            ids = np.concatenate([ids, [[token]]], 1)
            if token not in PREFIX:  # label tokens are not text: generate() drops them
                expected.append(token)
        assert [list(map(int, x)) for x in got] == [expected, expected]


def test_batches_and_metrics():
    class Data:
        ids = [[2, 5, 6, 3], [2, 7, 3]]
        labels = np.array([1, 0], "int32")
        lengths = [4, 3]

    args = clm.parse_args(["--maxlen", "16"])
    (ids, segments, labels), targets = clm.make_batch(Data, [0, 1], args, "cln", PREFIX)
    assert ids.shape == (2, 16) and labels.tolist() == [[1], [0]] and not segments.any()
    assert targets[0, :4].tolist() == [5, 6, 3, -1] and targets[1, :3].tolist() == [7, 3, -1]
    (ids, _), prefix_targets = clm.make_batch(Data, [0, 1], args, "prefix", PREFIX)
    assert ids[:, 0].tolist() == [PREFIX[1], PREFIX[0]]  # the label's token replaces [CLS]
    np.testing.assert_array_equal(prefix_targets, targets)  # the same tokens to predict
    assert clm.distinct(["好好好", "好的"], 1) == pytest.approx(2 / 5)
    assert clm.distinct(["好好好", "好的"], 2) == pytest.approx(2 / 3)
    assert clm.distinct(["", "a"], 2) == 0.0
    assert clm.spread(list(range(10)), 3) == [0, 3, 6] and clm.spread([1, 2], 5) == [1, 2]
    with pytest.raises(SystemExit):
        clm.parse_args(["--variants", "cln,bogus"])


def test_smoke_end_to_end(tmp_path):
    out = tmp_path / "clm.json"
    data_dir = clm.common.data_path("sentiment", "chnsenticorp")
    if not os.path.isfile(os.path.join(data_dir, "train.tsv")):  # a synthetic set in the same format
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        rng = np.random.default_rng(0)
        for name in ("train.tsv", "dev.tsv"):
            rows = [f"{'很好，不错' if k else '太差了，失望'}{rng.integers(100)}\t{clm.LABELS[k]}"
                    for k in rng.integers(2, size=32)]
            (data_dir / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    results = clm.main(["--smoke", "--quiet", "--data-dir", str(data_dir), "--out", str(out)])
    on_disk = json.loads(out.read_text(encoding="utf-8"))
    assert on_disk["environment"]["backend"] == backend.name()
    assert set(on_disk["metrics"]) == {"cln", "prefix"} and on_disk["metrics"] == json.loads(
        json.dumps(clm.common._jsonable(results["metrics"])))
    for m in on_disk["metrics"].values():
        assert m["samples"] == 8 and 0.0 <= m["requested_sentiment_share"] <= 1.0
        assert 0.0 <= m["distinct_1"] <= 1.0 and 0.0 <= m["distinct_2"] <= 1.0
        assert 0.0 <= m["average_length"] <= 8
    runs = on_disk["runs"]
    assert runs["cln"]["parameters"] > runs["prefix"]["parameters"]  # the CLN projections
    assert 0.0 <= on_disk["judge"]["dev_accuracy"] <= 1.0
    assert set(on_disk["samples"]["cln"]) == {"negative", "positive"}
    assert os.path.isfile(os.path.splitext(str(out))[0] + "_vocab.txt")
