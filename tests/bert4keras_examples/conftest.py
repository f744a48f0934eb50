"""Faithful ports of bert4keras 0.11.5's examples (``ports/<example>.py``), run as scripts.

Each port is the example's code with only ``bert4keras.X`` -> ``kerasformer.X`` in the
imports, its paths pointed at a tiny random checkpoint and tiny dataset (relative paths, as
some examples already use), and its sizes made tiny (sequence lengths, batch size, epochs,
decoding lengths). ``run_port`` executes one as ``__main__`` in its own working directory
(so it trains for an epoch, runs its Evaluator -- decoding included -- and saves / loads
``best_model.weights`` like the real script) and returns its globals for the tests to poke.

The tiny checkpoints are written once per session by kerasformer's own Google-format writer
(``save_weights_as_checkpoint(path, format='tf')``) from random weights of a tiny config.
"""
import json
import math
import os

import numpy as np
import pytest

import kerasformer  # noqa: F401,I001  (sets the default Keras backend before keras loads)
import keras  # noqa: E402

from . import datasets

PORTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ports")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# hidden 32 / 1 layer (each layer costs JAX compile time); no dropout, so that a repeated
# batch trains smoothly
TINY_BERT_CONFIG = dict(
    attention_probs_dropout_prob=0.0, hidden_act="gelu", hidden_dropout_prob=0.0, hidden_size=32,
    initializer_range=0.02, intermediate_size=48, max_position_embeddings=128,
    num_attention_heads=4, num_hidden_layers=1, type_vocab_size=2)
TINY_ALBERT_CONFIG = dict(TINY_BERT_CONFIG, embedding_size=16, num_hidden_groups=1,
                          inner_group_num=1, down_scale_factor=1, gap_size=0,
                          net_structure_type=0, num_memory_blocks=0)
TINY_MT5_CONFIG = dict(attention_head_size=8, hidden_act=["gelu", "linear"], hidden_dropout_prob=0.0,
                       hidden_size=16, initializer_range=0.02, intermediate_size=24,
                       num_attention_heads=2, num_hidden_layers=1, relative_attention_max_distance=20,
                       relative_attention_num_buckets=8)


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
    return path


def _write_checkpoint(config_path, prefix, model, **kwargs):
    """Random weights of the config, saved as a Google TF checkpoint at ``prefix``."""
    from kerasformer import build_transformer_model

    family = build_transformer_model(config_path, None, model=model, return_keras_model=False,
                                     **kwargs)
    family.save_weights_as_checkpoint(prefix, format="tf")


@pytest.fixture(scope="session")
def example_root(tmp_path_factory):
    """A folder with ``datasets/`` (every example's data) and ``kg/`` (tiny checkpoints;
    built lazily by the family fixtures below)."""
    root = tmp_path_factory.mktemp("bert4keras_examples")
    datasets.write_all(str(root))
    os.makedirs(root / "kg", exist_ok=True)
    return root


@pytest.fixture(scope="session")
def tiny_bert(example_root):
    """``kg/bert/{bert_config.json, bert_model.ckpt, vocab.txt}``: a random 1-layer BERT with
    the MLM and pooler weights, over a vocabulary of the datasets' characters (plus 16
    unused ids, so that ``load_vocab(simplified=True)`` really drops rows)."""
    folder = example_root / "kg" / "bert"
    folder.mkdir()
    vocab = SPECIAL + datasets.characters() + [f"[unused{i}]" for i in range(16)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    _write_json(folder / "bert_config.json", dict(TINY_BERT_CONFIG, vocab_size=len(vocab)))
    _write_checkpoint(str(folder / "bert_config.json"), str(folder / "bert_model.ckpt"), "bert",
                      with_pool=True, with_mlm=True)
    return folder


@pytest.fixture(scope="session")
def tiny_albert(example_root, tiny_bert):
    """``kg/albert/{albert_config.json, albert_model.ckpt, vocab.txt}`` (BERT's vocabulary)."""
    folder = example_root / "kg" / "albert"
    folder.mkdir()
    vocab = (tiny_bert / "vocab.txt").read_text(encoding="utf-8")
    (folder / "vocab.txt").write_text(vocab, encoding="utf-8")
    _write_json(folder / "albert_config.json",
                dict(TINY_ALBERT_CONFIG, vocab_size=len(vocab.split())))
    _write_checkpoint(str(folder / "albert_config.json"), str(folder / "albert_model.ckpt"),
                      "albert")
    return folder


@pytest.fixture(scope="session")
def tiny_mt5(example_root):
    """``kg/mt5/{mt5_config.json, model.ckpt-1000000, sentencepiece_cn.model,
    sentencepiece_cn_keep_tokens.json}``, laid out as bert4keras' mT5 release: a reduced
    SentencePiece model whose ids map into a larger checkpoint vocabulary via keep_tokens."""
    spm = pytest.importorskip("sentencepiece")
    folder = example_root / "kg" / "mt5"
    folder.mkdir()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(datasets.SENTENCES * 4), model_prefix=str(folder / "sentencepiece_cn"),
        model_type="unigram", vocab_size=len(datasets.characters()) + 8, character_coverage=1.0,
        hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
        num_threads=1)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "sentencepiece_cn.model"))
    size = sp.get_piece_size()
    # the checkpoint's vocabulary is larger; the kept rows are a scattered subset, specials first
    rng = np.random.default_rng(0)
    keep_tokens = [0, 1, 2] + sorted(rng.choice(np.arange(3, size + 20), size - 3, replace=False).tolist())
    _write_json(folder / "sentencepiece_cn_keep_tokens.json", [int(i) for i in keep_tokens])
    _write_json(folder / "mt5_config.json", dict(TINY_MT5_CONFIG, vocab_size=size + 20))
    _write_checkpoint(str(folder / "mt5_config.json"), str(folder / "model.ckpt-1000000"), "mt5.1.1")
    return folder


# ----------------------------------------------------------------------------- running a port

def run_port(name, root, tmp_path):
    """Execute ``ports/<name>.py`` as ``__main__`` in ``tmp_path/work`` (which sees the shared
    ``datasets/`` and ``kg/``); returns the script's globals."""
    work = tmp_path / "work"
    work.mkdir()
    for entry in ("datasets", "kg"):
        os.symlink(root / entry, work / entry)
    path = os.path.join(PORTS, name + ".py")
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")
    namespace = {"__name__": "__main__", "__file__": path}
    old = os.getcwd()
    os.chdir(work)
    try:
        keras.utils.set_random_seed(0)  # the random head weights, dropout, np.random
        exec(code, namespace)
    finally:
        os.chdir(old)
        from kerasformer.backend import set_gelu

        set_gelu("erf")  # scripts switch the global GELU ('tanh'); later tests expect the default
    return namespace


def port_fixture(name, checkpoint="tiny_bert"):
    """A module-scoped fixture ``example``: the globals of ``ports/<name>.py`` after running
    it on the tiny ``checkpoint`` fixture's model (in a test file: ``example = port_fixture(...)``)."""
    @pytest.fixture(scope="module")
    def example(request, example_root, tmp_path_factory):
        request.getfixturevalue(checkpoint)
        return run_port(name, example_root, tmp_path_factory.mktemp(name))

    return example


def assert_predicts_to_file(example, in_file, out_file, lines):
    """The port's ``predict_to_file(in_file, out_file)`` writes one line per input."""
    example["predict_to_file"](str(in_file), str(out_file))
    with open(out_file, encoding="utf-8") as f:
        assert len(f.read().splitlines()) == lines


def first_batch(generator):
    """The first batch a port's data_generator yields: ``(inputs, targets)``."""
    return next(iter(generator))


def assert_trained(model):
    """The port's own ``model.fit`` ran two epochs of one batch (the tiny data is one batch):
    each epoch's loss is finite and the second is below the first (one optimizer step
    between them). Reading Keras' ``model.history`` costs nothing; a new train step shape
    would cost a compile on JAX, and a third decoding epoch a trace per shape on torch."""
    losses = model.history.history["loss"]
    assert len(losses) >= 2, losses
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0], losses
    return losses


def assert_trains_on_batch(model, inputs, targets=None, steps=2):
    """For a model with dropout (its training losses are noisy): the inference loss on one
    batch is finite and lower after ``steps`` optimizer steps on that batch."""
    before = row_loss(model, inputs, targets)
    for _ in range(steps):
        model.train_on_batch(inputs, targets)
    after = row_loss(model, inputs, targets)
    assert math.isfinite(before) and math.isfinite(after), (before, after)
    assert after < before, (before, after)


def row_loss(model, inputs, targets=None):
    """The model's loss on a batch (inference mode: no dropout, no update)."""
    return float(np.ravel(model.test_on_batch(inputs, targets))[0])


def assert_padding_invariant(model, inputs, targets=None, sequences=((0, 1),), pad_targets=False,
                             pad=3, atol=1e-5):
    """The loss of one row alone equals the loss of the same row followed by ``pad``
    padding positions (zeros): bert4keras masks padding (token id 0) all the way to the
    losses. The row is the batch's shortest (the one the batch pads). ``sequences`` groups
    the inputs that share one length (token ids first: its last non-zero id ends the row);
    other inputs pass unchanged. ``pad_targets``: the targets are a sequence of the first
    group's length (CRF tags). One row only: every new shape costs a compile on JAX."""
    inputs = [np.asarray(x) for x in inputs]
    ends = [int(np.max(np.nonzero(row)[0])) + 1 for row in inputs[sequences[0][0]]]
    i = int(np.argmin(ends))
    alone = [x[i:i + 1] for x in inputs]
    padded = list(alone)
    lengths = []
    for group in sequences:
        length = int(np.max(np.nonzero(alone[group[0]][0])[0])) + 1  # drop the batch's padding
        lengths.append(length)
        for k in group:
            alone[k] = alone[k][:, :length]
            padded[k] = np.pad(alone[k], ((0, 0), (0, pad)))
    y_alone = y_padded = None
    if targets is not None:
        y_alone = y_padded = np.asarray(targets)[i:i + 1]
        if pad_targets:
            y_alone = y_alone[:, :lengths[0]]
            y_padded = np.pad(y_alone, ((0, 0), (0, pad)))
    a = row_loss(model, alone, y_alone)
    b = row_loss(model, padded, y_padded)
    assert math.isfinite(a), a
    assert abs(a - b) <= atol * max(1.0, abs(a)), f"loss {a} alone, {b} with {pad} padding positions"
