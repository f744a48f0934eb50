"""Every benchmark script runs at tiny sizes, so none of them rots (issue: benchmarks that
can be trusted). Timing is never asserted: only that every contender ran and the report
has its columns. The scripts start their own processes, one per contender and backend,
so this runs once, in the JAX half of the suite."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks")

pytestmark = pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "jax") != "jax",
                                reason="backend-independent: runs in the JAX half of the suite")


def run(script, *argv, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}  # each worker picks its own
    proc = subprocess.run([sys.executable, os.path.join(BENCH, script), *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def run_alternating(tmp_path, script, *argv):
    out = tmp_path / f"{script}.json"
    text = run(script, *argv, "--rounds", "2", "--warmup", "1", "--threads", "1", "--json", str(out))
    results = json.loads(out.read_text())
    assert results["rounds"] == 2 and results["contenders"], text
    for name, entry in results["contenders"].items():
        assert "failed" not in entry, f"{name}: {entry}\n{text}"
        assert len(entry["times_s"]) == 2
        assert "ratio_median" in entry or results["baseline"] not in results["contenders"]
    return results, text


def test_alternate_reports_ratios_per_round():
    sys.path.insert(0, BENCH)
    import alternate

    r = alternate.ratios([1.0, 2.0, 4.0], [2.0, 2.0, 2.0])
    assert (r["ratio_median"], r["ratio_min"], r["ratio_max"]) == (1.0, 0.5, 2.0)


def test_bench_encoder(tmp_path):
    results, text = run_alternating(tmp_path, "bench_encoder.py", "--tiny", "--batch", "2", "--length", "16",
                                    "--only", "hf-torch", "kf-torch-int8")
    assert set(results["contenders"]) == {"hf-torch", "kf-torch-int8"}
    assert "GFLOP/s" in text


def test_bench_train(tmp_path):
    results, _ = run_alternating(tmp_path, "bench_train.py", "--size", "tiny", "--batch", "2", "--length", "16",
                                 "--only", "hf-torch", "kf-torch", "kf-torch-full", "kf-jax-bf16")
    for entry in results["contenders"].values():  # every contender really trained: a finite MLM loss
        assert 0.0 < entry["value"] < 20.0
    # the same start (HF's weights loaded into ours) and optimizer: the same computation
    values = {name: entry["value"] for name, entry in results["contenders"].items()}
    # the head on the gathered masked positions (as `kerasformer pretrain` trains) or on every one
    for name in ("kf-torch", "kf-torch-full"):
        assert abs(values[name] - values["hf-torch"]) < 1e-3 * values["hf-torch"], values


def test_bench_generate(tmp_path):
    results, _ = run_alternating(tmp_path, "bench_generate.py", "--config", "tiny", "--only", "hf-torch", "kf-jax")
    assert set(results["contenders"]) == {"hf-torch", "kf-jax"}


def test_bench_unilm_beam(tmp_path):
    results, _ = run_alternating(tmp_path, "bench_unilm_beam.py", "--batch", "2", "--layers", "1", "--hidden", "32",
                                 "--vocab", "300", "--prompt", "8", "--new", "4",
                                 "--only", "b4k-jax", "engine-jax")
    c = results["contenders"]
    assert c["b4k-jax"]["value"] == c["engine-jax"]["value"]  # the same beams, found faster
    assert "engine-jax vs b4k-jax" in results["pairs"]


def test_bench_unilm_train_step(tmp_path):
    csl = tmp_path / "csl"
    csl.mkdir()
    rows = [f"标题{i}\t本文研究第{i}种模型的训练方法与实验结果。\t标题{i}" for i in range(8)]
    (csl / "ts_dev.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    results, _ = run_alternating(tmp_path, "bench_unilm_train_step.py", "--tiny", "--batch", "4",
                                 "--data-dir", str(csl), "--backend", "torch")
    values = {name: entry["value"] for name, entry in results["contenders"].items()}
    assert set(values) == {"full-head", "title-head"} and values["full-head"] > 1.0
    # the same weights, batch and optimizer: the same losses, step after step
    assert abs(values["full-head"] - values["title-head"]) < 1e-4 * values["full-head"], values


def test_bench_tokenizer():
    assert "sentences/s" in run("bench_tokenizer.py", "-n", "50", "--repeat", "1")


def test_bench_load_memory():
    text = run("bench_load_memory.py", "--size", "small", "--formats", "safetensors")
    assert "safetensors" in text


def test_bench_words():
    pytest.importorskip("nlp_zero", exc_type=ImportError)
    text = run("bench_words.py", "--chars", "20000", "--rounds", "1")
    assert "round 1" in text


def test_bench_pretrain_data():
    corpus = os.path.join(REPO, "..", "shared", "data", "sentiment", "chnsenticorp", "train.tsv")
    if not os.path.exists(corpus):
        pytest.skip("../shared/data is not beside the project")
    text = run("bench_pretrain_data.py", "--docs", "200", "--batches", "3", "--steps", "1", "--config", "tiny",
               "--workers", "1", "--batch-size", "4", "--seq-len", "32")
    assert "chars/s" in text and "faster than the step" in text


def test_bench_pretrain_step(tmp_path):
    """Both heads train on the same masked batch: the same loss (gathering changes no value)."""
    results, _ = run_alternating(tmp_path, "bench_pretrain_step.py", "--size", "tiny", "--vocab", "300",
                                 "--batch", "4", "--length", "32")
    values = [entry["value"] for entry in results["contenders"].values()]
    assert len(values) == 2 and abs(values[0] - values[1]) < 1e-3 * abs(values[0])
