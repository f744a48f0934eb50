"""Every ```python snippet of README.md runs as written (issue 10, defect 1), on tiny
stand-ins for the folders it names: ``chinese_L-12_H-768_A-12/`` is the TF-format BERT
fixture (Google's file names: bert_config.json, bert_model.ckpt.*, vocab.txt) and ``gpt2/``
a byte-level BPE tokenizer.json trained here. Each snippet runs in its own namespace from a
temporary working directory."""
import os
import re
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF_BERT = os.path.join(ROOT, "tests", "fixtures", "tf", "bert_tiny")

# Names a snippet uses that the reader supplies, replaced before it runs:
# {first line of the snippet: [(text in the README, text the test runs), ...]}.
# Empty today: every snippet is self-contained; add an entry rather than skipping one.
SUBSTITUTIONS = {}


def snippets():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    found = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        line = text.count("\n", 0, match.start()) + 2
        found.append(pytest.param(match.group(1), line, id=f"README.md:{line}"))
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(TF_BERT, root / "chinese_L-12_H-768_A-12")
    tokenizers = pytest.importorskip("tokenizers")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(["Hello world, hello tokens."] * 5, vocab_size=280, min_frequency=1,
                            special_tokens=["<|endoftext|>"])
    (root / "gpt2").mkdir()
    bpe.save(str(root / "gpt2" / "tokenizer.json"))
    return root


def test_readme_has_snippets():
    assert len(snippets()) >= 4


@pytest.mark.parametrize("code, line", snippets())
def test_readme_snippet_runs(code, line, workdir, monkeypatch):
    if "plot_attention" in code:
        pytest.importorskip("matplotlib")
    for old, new in SUBSTITUTIONS.get(code.splitlines()[0], []):
        assert old in code, f"README.md:{line}: substitution {old!r} is stale"
        code = code.replace(old, new)
    monkeypatch.chdir(workdir)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
