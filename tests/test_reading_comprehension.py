"""recipes/reading_comprehension.py: the official CMRC 2018 evaluation against hand-computed
cases, the windows, and a smoke run of both variants (seq2seq with span-constrained beam
search in the engine, MLM with span-constrained position-wise decoding)."""
import json
import os
import sys

import pytest

import kerasformer  # noqa: F401  (sets the default Keras backend before keras loads)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))

import reading_comprehension as rc  # noqa: E402


def test_mixed_segmentation_as_the_official_script():
    # Chinese characters one by one, Latin runs as words, numbers whole, lower case
    assert rc.mixed_segmentation("光荣和ω-Force开发") == ["光", "荣", "和", "ω", "-", "force", "开", "发"]
    assert rc.mixed_segmentation("约3.5亿 iPhone手机") == ["约", "3.5", "亿", "iphone", "手", "机"]
    # rm_punc drops the listed punctuation; '……' is one entry, so a lone '…' stays
    assert rc.mixed_segmentation("《战国》，…", rm_punc=True) == ["战", "国", "…"]
    assert rc.remove_punctuation("「光荣」和 ω-force。") == "光荣和 ωforce"


def test_f1_and_em_hand_computed():
    # prediction 北京大学 vs answer 北京: LCS 2, precision 2/4, recall 2/2 -> F1 2/3
    assert rc.cmrc_f1(["北京"], "北京大学") == pytest.approx(2 / 3)
    # the best over several answers; punctuation ignored by both
    assert rc.cmrc_f1(["上海", "北京大学"], "《北京大学》") == pytest.approx(1.0)
    assert rc.cmrc_em(["北京大学"], "《北京大学》") == 1.0
    assert rc.cmrc_em(["北京"], "北京大学") == 0.0
    # longest common SUBSTRING, not subsequence: 甲乙丙丁 vs 甲丙丁: LCS 丙丁 = 2 -> p 2/3, r 2/4
    assert rc.cmrc_f1(["甲乙丙丁"], "甲丙丁") == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert rc.cmrc_f1(["北京"], "") == 0.0 and rc.cmrc_f1(["北京"], "上海") == 0.0
    # Latin words count as one unit each: "new york" vs "york": p 1/1, r 1/2
    assert rc.cmrc_f1(["New York"], "york") == pytest.approx(2 / 3)
    examples = [{"id": "a", "answers": ["北京"]}, {"id": "b", "answers": ["上海"]}, {"id": "c", "answers": ["x"]}]
    scores = rc.evaluate(examples, {"a": "北京", "b": "上海市"})  # c unanswered: counts as 0
    assert scores["em"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8) / 3)
    assert scores["average"] == pytest.approx((scores["f1"] + scores["em"]) / 2)


def test_word_regex_agrees_with_nltk_where_it_is_installed():
    tokenizer = pytest.importorskip("nltk.tokenize").NLTKWordTokenizer()
    for text in ["hello, world", "3.5 million", "iphone x", "1,000 km", "it's (new)", "a.b c.d", "u.s. army",
                 "ok.", "dr. who", "e.g. this", "$100", "50%", "x&y!", "u.s. "]:
        assert rc._WORDS.findall(text) == tokenizer.tokenize(text), text


def test_windows_and_window_answers():
    context = "".join(chr(0x4e00 + i) for i in range(25))
    wins = rc.windows(context, 10, 7)
    assert [s for s, _ in wins] == [0, 7, 14, 15] and all(len(t) == 10 for _, t in wins)
    assert "".join(t for _, t in wins[:3]) != context  # overlapping
    example = {"answers": [context[8:12]], "start": 8}
    assert [rc.window_answer(example, s, t) for s, t in wins] == ["", context[8:12], "", ""]
    assert rc.windows("短文", 10, 7) == [(0, "短文")]
    assert rc.vote({"甲": [0.9], "乙": [0.5, 0.5]}) == "甲"  # 0.81/1.9 > 0.5/2
    assert rc.vote({}) == ""


def _cmrc_dir(tmp_path):
    real = os.path.normpath(os.path.join(rc.common.REPO, "..", "shared", "data", "cmrc2018"))
    if os.path.isfile(os.path.join(real, "trial.json")):
        return real
    context = "北京是中国的首都，上海是中国最大的城市，广州在南方。" * 3
    qas = [{"id": f"Q{i}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
           for i, (q, a) in enumerate([("中国的首都是哪里？", "北京"), ("最大的城市是？", "上海"),
                                       ("哪个城市在南方？", "广州")] * 8)]
    data = {"version": "v1", "data": [{"paragraphs": [{"id": "P", "context": context, "qas": qas}]}]}
    for name in ("dev.json", "trial.json"):
        (tmp_path / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return str(tmp_path)


def test_smoke_run_both_variants(tmp_path):
    out = tmp_path / "rc.json"
    results = rc.main(["--smoke", "--quiet", "--data-dir", _cmrc_dir(tmp_path), "--out", str(out),
                       "--max-test", "2", "--window", "64", "--stride", "64", "--decode-batch", "64"])
    on_disk = json.loads(out.read_text(encoding="utf-8"))
    assert set(on_disk["variants"]) == {"seq2seq", "mlm"}
    for name, variant in on_disk["variants"].items():
        assert variant["metrics"] == results["variants"][name]["metrics"]
        assert set(variant["metrics"]) == {"f1", "em", "average"}
        assert all(0.0 <= v <= 100.0 for v in variant["metrics"].values())
        assert len(variant["train_loss_per_epoch"]) == 1
    assert on_disk["test_questions"] == 2 and os.path.isfile(on_disk["vocab_path"])
