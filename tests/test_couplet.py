"""The couplet robot (kerasformer.couplet, recipes/couplet.py, ``kerasformer couplet``):
the decoding constraints on random scores, then one tiny end-to-end run of the recipe
(CNN and UniLM on a synthetic couplet set) whose saved model the other tests reuse."""
import json
import os
import sys

import numpy as np
import pytest

import kerasformer  # noqa: F401  (sets the default Keras backend before keras loads)
from kerasformer import couplet
from kerasformer.errors import KerasformerError

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
sys.path.insert(0, RECIPES)

import common  # noqa: E402

FIRST = "春风花月山水云天"
SECOND = "秋雨草星河海雾地"  # the synthetic rule: each first-line character has its answer


def test_pattern():
    assert couplet.pattern("天天向上") == couplet.pattern("好好学习") == (0, 0, 2, 3)
    assert couplet.pattern("ABAB") == couplet.pattern("CDCD") != couplet.pattern("ABBA")
    assert couplet.pattern("春风，春雨") == (0, 1, "，", 0, 4)
    assert couplet.pattern("春风，春雨") != couplet.pattern("春风。春雨")


def _vocab(chars):
    return {t: i for i, t in enumerate(common.SPECIAL_TOKENS + ["，", "。"] + list(chars) + ["##a"])}


@pytest.mark.parametrize("seed", range(5))
def test_constrained_decoding_holds(seed):
    """On random scores that favour copying the input (the failure the constraints exist
    for): greedy copies; constrained never copies, keeps the punctuation where it was and
    nowhere else, and mirrors the repeated-character pattern; both keep the length."""
    rng = np.random.default_rng(seed)
    vocab = _vocab(FIRST + SECOND)
    decoder = couplet.Decoder(vocab)
    text = "".join(rng.choice(list(FIRST[:4]) + ["，"], size=9))
    text = "春" + text[1:]  # at least one repeat: 9 positions over 5 symbols
    probs = rng.random((len(text) + 3, len(vocab)))  # + 3: padding rows are ignored
    for i, c in enumerate(text):
        probs[i, vocab[c]] += 5.0  # copying is the likeliest choice
    probs[:, vocab["[UNK]"]] += 10.0  # so are tokens that are not characters
    probs[:, vocab["##a"]] += 10.0
    probs /= probs.sum(-1, keepdims=True)
    greedy = decoder(probs, text)
    assert greedy == text  # without constraints, the copy wins
    out = decoder(probs, text, constrained=True)
    assert len(out) == len(text) and couplet.pattern(out) == couplet.pattern(text)
    assert all((a == b) == (a == "，") for a, b in zip(text, out))
    assert all(c in vocab for c in out)
    # each repeated group takes the character that scores best summed over its positions
    positions = [i for i, c in enumerate(text) if c == "春"]
    logp = np.log(probs[positions]).sum(0)
    logp[[vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "，", "。", "##a", "春")]] = -np.inf
    if out[positions[0]] != decoder.chars[int(np.argmax(logp))]:  # only when another group took it first
        taken = {out[i] for i, c in enumerate(text) if c not in ("春", "，")}
        assert decoder.chars[int(np.argmax(logp))] in taken


def test_decoding_errors():
    decoder = couplet.Decoder(_vocab("春秋"))
    probs = np.full((3, len(decoder.chars)), 0.1)
    with pytest.raises(KerasformerError, match="too few characters"):
        decoder(probs, "春秋冬", constrained=True)  # three groups, two characters that are not theirs
    for bad in ("", "春 风", "x" * 300, 5):
        with pytest.raises(KerasformerError):
            couplet.check_line(bad)


# ---------------------------------------------------------------------------- end to end

def _write_pairs(path, rng, n):
    rows = []
    for _ in range(n):
        idx = rng.integers(len(FIRST), size=rng.integers(4, 8))
        idx[2] = idx[0]  # a repeat in every line
        first = "".join(FIRST[i] for i in idx)
        second = "".join(SECOND[i] for i in idx)
        if rng.random() < 0.3:
            first, second = first + "，" + first[:2], second + "，" + second[:2]
        rows.append(f"{first}\t{second}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run of the recipe (both models), its results and its saved CNN folder."""
    import couplet as recipe

    folder = tmp_path_factory.mktemp("couplet")
    rng = np.random.default_rng(0)
    _write_pairs(folder / "train.tsv", rng, 96)
    _write_pairs(folder / "dev.tsv", rng, 12)
    _write_pairs(folder / "extra.tsv", rng, 6)
    out, model_dir = folder / "r.json", folder / "model"
    recipe.main(["--smoke", "--data-dir", str(folder), "--test", str(folder / "extra.tsv"), "--lr", "1e-2",
                 "--warmup", "0", "--out", str(out), "--save-model", str(model_dir)])
    return json.loads(out.read_text(encoding="utf-8")), str(model_dir)


def test_recipe_end_to_end(trained):
    results, _ = trained
    assert results["data"] == {**results["data"], "train_pairs": 88,
                               "eval_pairs": {"dev": 12, "holdout": 8, "extra": 6}}
    assert set(results["results"]) == {"cnn greedy", "cnn constrained", "unilm greedy", "unilm beam 2"}
    for decoder, sets in results["results"].items():
        assert set(sets) == {"dev", "holdout", "extra"}
        for m in sets.values():
            assert 0 <= m["bleu"] <= 100 and 0 <= m["char_accuracy"] <= 1 and m["lines_per_second"] > 0
            if decoder.startswith("cnn"):
                assert m["length_match"] == 1.0  # sequence labelling: always the input's length
            if decoder == "cnn constrained":
                assert m["pattern_match"] == 1.0 and m["copies_first_line"] == 0.0
    assert results["reference"]["dev"]["pattern_match"] == 1.0  # the synthetic second lines mirror the first
    assert results["models"]["cnn"]["parameters"] > 0 and results["models"]["unilm"]["parameters"] > 0
    assert len(results["examples"]) == 10 and "unilm beam 2" in results["examples"][0]
    assert os.path.isfile(results["vocab"]["path"])


def test_output_length_and_batch_independence(trained):
    """Any line (unknown characters, padding around it in a batch) gets an output of its
    length, and the same output alone as in a batch: padding is masked in every block."""
    from kerasformer.backend import predict

    model, token_dict, _ = couplet.load(trained[1])
    short, long = couplet.encode("春风花", token_dict), couplet.encode("春风花月山水云天春风花月山水云天春", token_dict)
    alone = predict(model, np.array([short], "int32"))[0]
    batch = np.zeros((2, 24), "int32")
    batch[0, :3], batch[1, :len(long)] = short, long
    np.testing.assert_allclose(predict(model, batch)[0, :3], alone, atol=1e-5)  # padding changes nothing
    lines = ["春风", "春风花月山水云天春风花月山水云天春", "龘靐春", "山，水。", "春"]
    together = couplet.pair(model, token_dict, lines, batch_size=8)
    alone = [couplet.pair(model, token_dict, [line], batch_size=1)[0] for line in lines]
    assert [len(x) for x in together] == [len(x) for x in lines] and together == alone
    constrained = couplet.pair(model, token_dict, lines, constrained=True, batch_size=3)
    assert [couplet.pattern(x) for x in constrained] == [couplet.pattern(x) for x in lines]


def test_cli_serves(trained, capsys):
    from kerasformer import cli

    model, token_dict, _ = couplet.load(trained[1])
    lines = ["春风花月", "山水，山水"]
    assert cli.main(["couplet", *lines, "--model", trained[1]]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"{a}\t{b}" for a, b in zip(lines, couplet.pair(model, token_dict, lines, True, 2))]
    assert cli.main(["couplet", "春 风", "--model", trained[1]]) == 2
    assert cli.main(["couplet", "春风", "--model", os.path.dirname(trained[1])]) == 2
    assert "not a couplet model folder" in capsys.readouterr().err
