"""kerasformer.pretraining: data pipeline, objectives, resumable training, distribution."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kerasformer.errors import KerasformerError
from kerasformer.pretraining.corpus import SentenceEncoder, build_shards, build_vocab, pack_document, split_sentences
from kerasformer.pretraining.loader import Loader
from kerasformer.pretraining.objectives import Masker, Objective, unilm_segments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
DOCS = ["今天天气很好。我们去公园散步吧！机器学习是人工智能的一个分支。",
        "北京是中国的首都。Hello world, kerasformer works?",
        "自然语言处理很有趣。深度学习模型需要大量数据。中国人民银行发布了新的政策。"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    text = root / "corpus.txt"
    text.write_text("\n".join(f"{d}第{i}篇。" for i in range(30) for d in DOCS) + "\n", encoding="utf-8")
    vocab = str(root / "vocab.txt")
    build_vocab([str(text)], vocab, progress=False)
    data = str(root / "data")
    build_shards([str(text)], data, vocab, seq_len=16, shard_size=25, workers=1, progress=False)
    return {"root": root, "text": str(text), "vocab": vocab, "data": data}


@pytest.fixture(scope="module")
def tokenizer(corpus):
    from kerasformer.tokenizers.wordpiece import Tokenizer

    return Tokenizer(corpus["vocab"], do_lower_case=True)


# ---------------------------------------------------------------- data pipeline

def test_sentences_and_bert4keras_packing():
    assert split_sentences("你好。天气好！真的吗？是\n下一行") == ["你好。", "天气好！", "真的吗？", "是", "下一行"]
    s = lambda n, v: ([v] * n, [1] * n)  # noqa: E731
    ids, starts = pack_document([s(5, 7), s(5, 8), s(20, 9), s(3, 6)], 12, cls_id=2, sep_id=3)
    # s1 + s2 fill [CLS] .. [SEP] exactly; a long sentence is cut to 10; s4 would overflow it
    assert ids.tolist() == [[2] + [7] * 5 + [8] * 5 + [3],
                            [2] + [9] * 10 + [3],
                            [2] + [6] * 3 + [3] + [0] * 7]
    assert starts[1].tolist() == [0] + [1] * 10 + [0]


def test_stream_packing_shares_rows_between_short_documents():
    from kerasformer.pretraining.corpus import pack_stream

    s = lambda n, v: ([v] * n, [1] * n)  # noqa: E731
    rows = [pack_document([s(n, v)], 12, cls_id=2, sep_id=3) for n, v in ((3, 7), (4, 8), (6, 9), (10, 5))]
    ids, starts = pack_stream(np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows]), 12)
    assert ids.tolist() == [[2, 7, 7, 7, 3, 8, 8, 8, 8, 3, 0, 0],  # 3 + 4 share a row
                            [2, 9, 9, 9, 9, 9, 9, 3, 0, 0, 0, 0],  # 6 + 10 would not fit
                            [2] + [5] * 10 + [3]]
    assert starts[0].tolist() == [0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0]


def test_whole_words_from_jieba_and_wordpieces(tokenizer):
    ids, starts = SentenceEncoder(tokenizer, "jieba")("北京是中国的首都")
    assert tokenizer.ids_to_tokens(ids) == list("北京是中国的首都")
    assert starts == [1, 0, 1, 1, 0, 1, 1, 0]  # 北京 / 是 / 中国 / 的 / 首都
    ids, starts = SentenceEncoder(tokenizer, "char")("中国hello")
    assert tokenizer.ids_to_tokens(ids)[:3] == ["中", "国", "h"] and starts == [1, 1, 1, 0, 0, 0, 0]


def test_shards_and_vocab(corpus, tokenizer):
    index = json.load(open(os.path.join(corpus["data"], "index.json")))
    assert index["examples"] == sum(s["count"] for s in index["shards"]) and len(index["shards"]) > 1
    ids = np.load(os.path.join(corpus["data"], "shard-00000.ids.npy"), mmap_mode="r")
    assert ids.shape[1] == 16 and (ids[:, 0] == tokenizer._token_start_id).all()
    assert "##o" in tokenizer._token_dict and "##中" not in tokenizer._token_dict
    # written once: the same settings reuse it, other settings are refused
    assert build_shards([corpus["text"]], corpus["data"], corpus["vocab"], seq_len=16, workers=1,
                        progress=False) == index
    with pytest.raises(KerasformerError, match="other settings"):
        build_shards([corpus["text"]], corpus["data"], corpus["vocab"], seq_len=32, workers=1, progress=False)


# ---------------------------------------------------------------- objectives

def test_whole_word_masking_statistics():
    vocab, mask_id, special = 1000, 4, [0, 1, 2, 3, 4]
    masker = Masker(vocab, mask_id, special)
    rng = np.random.default_rng(0)
    length = 4000
    ids = rng.integers(5, vocab, length).astype("int32")
    ids[0], ids[-1] = 2, 3
    starts = (rng.random(length) < 0.5).astype("int8")  # words of ~2 tokens
    starts[0] = starts[-1] = 0
    chosen_words, chosen_tokens, mask, rand, keep, total_words = 0, 0, 0, 0, 0, 0
    for seed in range(30):
        inputs, targets = masker(ids, starts, np.random.default_rng(seed))
        word = np.cumsum(starts)
        picked = targets >= 0
        assert not picked[[0, -1]].any()  # [CLS] / [SEP] never
        for w in np.unique(word[1:-1]):  # whole words: all of a word's tokens, or none
            members = picked[1:-1][word[1:-1] == w]
            assert members.all() or not members.any()
        total_words += len(np.unique(word[1:-1]))
        chosen_words += len(np.unique(word[picked]))
        chosen_tokens += picked.sum()
        mask += (inputs[picked] == mask_id).sum()
        keep += (inputs[picked] == ids[picked]).sum()
        changed = picked & (inputs != mask_id) & (inputs != ids)
        rand += changed.sum()
        assert not np.isin(inputs[changed], special).any()
        assert (targets[picked] == ids[picked]).all() and (inputs[~picked] == ids[~picked]).all()
    assert abs(chosen_words / total_words - 0.15) < 0.01
    assert abs(mask / chosen_tokens - 0.8) < 0.02
    assert abs(keep / chosen_tokens - 0.1) < 0.015 and abs(rand / chosen_tokens - 0.1) < 0.015


def test_masks_keyed_by_example_not_by_batch(corpus, tokenizer):
    """Rows give the same masks whatever batch or process they land in; dynamic masks
    change with the stream position, static ones do not."""
    obj = Objective("mlm", tokenizer._vocab_size, tokenizer._token_mask_id, [0, 1, 2, 3, 4], seed=3)
    whole = Loader(corpus["data"], 8, obj, seed=1, prefetch=0)
    halves = [Loader(corpus["data"], 8, obj, seed=1, prefetch=0, process_index=i, process_count=2) for i in range(2)]
    for _ in range(3):
        (x, seg), y = next(whole)
        parts = [next(h) for h in halves]
        np.testing.assert_array_equal(x, np.concatenate([p[0][0] for p in parts]))
        np.testing.assert_array_equal(y, np.concatenate([p[1] for p in parts]))
    ids, starts, _, data_keys = whole.rows(0, 8)
    a = obj(ids, starts, np.arange(8), data_keys)[1]
    b = obj(ids, starts, np.arange(8) + 1000, data_keys)[1]
    assert (a != b).any()
    static = Objective("mlm", tokenizer._vocab_size, tokenizer._token_mask_id, [0, 1, 2, 3, 4], seed=3, static=True)
    np.testing.assert_array_equal(static(ids, starts, np.arange(8), data_keys)[1],
                                  static(ids, starts, np.arange(8) + 1000, data_keys)[1])


def test_gather_targets():
    from kerasformer.pretraining.objectives import gather_targets, prediction_slots

    y = np.array([[-1, 5, -1, 7, 8], [-1, -1, -1, -1, -1], [1, 2, 3, 4, 5]])
    positions, targets, dropped = gather_targets(y, 3)
    assert positions.tolist() == [[1, 3, 4], [0, 0, 0], [0, 1, 2]]
    assert targets.tolist() == [[5, 7, 8], [-1, -1, -1], [1, 2, 3]] and dropped == 2
    assert prediction_slots(128) == 48 and prediction_slots(16) == 16


def test_masked_positions_head_trains_as_the_full_head(corpus, tokenizer, objective="mlm"):
    """The head on gathered masked positions: same variables in the same order (checkpoints
    of either load in the other), same loss, same update as the head on every position.
    (unilm takes the same path; its runs in test_other_objectives_and_families use it.)"""
    from kerasformer.pretraining.objectives import gather_targets, masked_loss
    from kerasformer.pretraining.train import build_pretraining_model, masked_positions_model

    keras.utils.set_random_seed(0)
    transformer = build_pretraining_model(objective, dict(TINY), tokenizer._vocab_size, seq_len=16)
    full = transformer.model
    gathered = masked_positions_model(transformer, 12)
    assert [v.path for v in gathered.variables] == [v.path for v in full.variables]
    obj = Objective(objective, tokenizer._vocab_size, tokenizer._token_mask_id, [0, 1, 2, 3, 4], seed=3)
    (x, seg), y = Loader(corpus["data"], 6, obj, seed=1, prefetch=0).batch_at(0)
    positions, y_small, dropped = gather_targets(y, 12)
    assert dropped == 0 and (y >= 0).sum() > 6
    loss_full = float(masked_loss(y, full.predict([x, seg], verbose=0)))
    loss_small = float(masked_loss(y_small, gathered.predict([x, seg, positions], verbose=0)))
    assert abs(loss_full - loss_small) < 1e-5
    start = [v.numpy() for v in full.variables]
    after = []
    for model, inputs, targets in ((full, [x, seg], y), (gathered, [x, seg, positions], y_small)):
        for v, a in zip(full.variables, start):
            v.assign(a)
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=masked_loss)
        model.train_on_batch(inputs, targets)
        after.append([v.numpy() for v in full.variables])
    moved = max(np.abs(a - b).max() for a, b in zip(after[0], start))
    assert moved > 1e-3  # the step changed the weights
    for a, b, v in zip(*after, full.variables):
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=v.path)


def test_lm_and_unilm_examples():
    obj = Objective("lm", 50)
    ids = np.array([[2, 7, 8, 3, 0, 0]])
    (x, seg), y = obj(ids, np.zeros_like(ids), [0], [0])
    assert x.tolist() == ids.tolist() and y.tolist() == [[7, 8, 3, -1, -1, -1]]
    from kerasformer.masks import unilm_mask

    modes = []
    row = np.array([2] + [9] * 10 + [3, 0, 0, 0, 0], "int32")
    for key in range(300):
        s = unilm_segments(row, 0, np.random.default_rng([0, key]))
        modes.append("bi" if not s.any() else "l2r" if s.all() else "s2s")
        if modes[-1] == "s2s":  # source [CLS] + >= 1 token, target inside the row
            assert s[0] == 0 and s[1] == 0 and s.sum() >= 5
    counts = {m: modes.count(m) / len(modes) for m in ("bi", "l2r", "s2s")}
    assert all(abs(v - 1 / 3) < 0.08 for v in counts.values()), counts
    causal = np.asarray(keras.ops.convert_to_numpy(unilm_mask(np.ones((1, 5), "int32"))))[0, 0]
    np.testing.assert_array_equal(causal, np.tril(np.ones((5, 5), bool)))  # all-1 segments: left-to-right


# ---------------------------------------------------------------- loader

def test_loader_epochs_shuffle_and_resume(corpus):
    obj = Objective("lm", 200)
    loader = Loader(corpus["data"], 7, obj, seed=5, prefetch=2)
    n = len(loader.dataset)
    keys = np.concatenate([loader.rows(p, p + 7)[3] for p in range(0, n - n % 7, 7)])
    assert len(set(keys.tolist())) == len(keys)  # an epoch visits every row once
    assert (loader.rows(0, n)[3] != loader.rows(n, 2 * n)[3]).any()  # and epochs differ in order
    batches = [next(loader)[0][0] for _ in range(5)]
    state = loader.state_dict()
    after = [next(loader)[0][0] for _ in range(3)]
    loader.close()
    again = Loader(corpus["data"], 7, obj, seed=5, prefetch=2)
    again.load_state_dict(state)
    for a, b in zip(after, [next(again)[0][0] for _ in range(3)]):
        np.testing.assert_array_equal(a, b)
    again.close()
    assert state["position"] == 35 and batches[0].shape == (7, 16)


def test_permutation_is_a_bijection_that_mixes_shards():
    """Every row once per epoch for awkward sizes, and a batch draws from many shards: the
    shards hold the corpus in file order, so reading one shard at a time fed one source for
    hundreds of steps (the old loader did; its first batches came from a single shard)."""
    from kerasformer.pretraining.loader import permute

    keys = np.random.default_rng(0).integers(0, 2**63, size=4, dtype="uint64")
    for n in (1, 2, 3, 17, 1000, 4097):
        out = permute(np.arange(n), n, keys)
        assert sorted(out.tolist()) == list(range(n))
    n, shard_size, batch = 100_000, 10_000, 32
    shards_per_batch = [len(np.unique(permute(np.arange(b * batch, (b + 1) * batch), n, keys) // shard_size))
                        for b in range(50)]
    assert np.mean(shards_per_batch) > 8  # 10 shards: a uniform draw of 32 rows touches ~9.7
    assert (permute(np.arange(n), n, keys) != np.arange(n)).mean() > 0.99


# ---------------------------------------------------------------- training

def _pretrain(corpus, out, **kwargs):
    from kerasformer.pretraining.train import pretrain

    settings = dict(config=TINY, seq_len=16, batch_size=8, steps=4, save_every=2, progress=False, lr=1e-2,
                    warmup=1, dropout_rate=0.1, seed=0)
    settings.update(kwargs)
    return pretrain(kwargs.pop("objective", "mlm") if "objective" in kwargs else "mlm", corpus["data"],
                    corpus["vocab"], str(out), **{k: v for k, v in settings.items() if k != "objective"})


@pytest.fixture(scope="module")
def full_run(corpus):
    out = corpus["root"] / "full"
    return out, _pretrain(corpus, out)


def test_resume_continues_exactly(corpus, full_run):
    out, losses = full_run
    assert len(losses) == 4 and np.isfinite(losses).all()

    class Killed(Exception):
        pass

    def kill(step, loss):
        if step == 2:
            raise Killed

    cut = corpus["root"] / "cut"
    with pytest.raises(Killed):
        _pretrain(corpus, cut, on_step=kill)
    with pytest.raises(KerasformerError, match="--resume"):
        _pretrain(corpus, cut)
    resumed = _pretrain(corpus, cut, resume=True)
    np.testing.assert_allclose(resumed, losses[2:], rtol=0, atol=1e-6)
    assert sorted(os.listdir(cut / "checkpoints")) == ["step-000000002", "step-000000004"]
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,tokens_per_s,mfu") and len(rows) == 5


def test_tensorboard_log(full_run):
    """The same loss curve in TensorBoard's event files (written by tensorboardX, no TensorFlow)."""
    pytest.importorskip("tensorboardX")
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out, losses = full_run
    scalars = {}
    for name in os.listdir(out / "tensorboard"):
        data = (out / "tensorboard" / name).read_bytes()
        while data:  # TFRecord framing: length, its CRC, the record, its CRC
            (length,) = struct.unpack("<Q", data[:8])
            event = Event.FromString(data[12:12 + length])
            data = data[16 + length:]
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    np.testing.assert_allclose([v for _, v in sorted(scalars["pretrain/loss"])], losses, rtol=1e-6)
    assert [s for s, _ in sorted(scalars["pretrain/mfu"])] == [1, 2, 3, 4]


def test_model_folder_loads_here_and_in_hf(full_run):
    from kerasformer import build_transformer_model

    out, _ = full_run
    folder = str(out / "model")
    assert {"config.json", "model.safetensors", "vocab.txt"} <= set(os.listdir(folder))
    model = build_transformer_model(folder, folder, with_mlm="linear")
    ids = np.array([[2, 10, 11, 12, 3, 0]], "int32")
    logits = np.asarray(keras.ops.convert_to_numpy(model.predict([ids, np.zeros_like(ids)], verbose=0)))
    transformers = pytest.importorskip("transformers")
    import torch

    hf = transformers.BertForMaskedLM.from_pretrained(folder).eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids, dtype=torch.long),
                 attention_mask=torch.tensor(ids != 0, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(logits[0, :5], ref[0, :5], atol=1e-4)


@pytest.mark.parametrize("objective,family,extra", [("lm", "gpt2", {}),
                                                    ("unilm", "roformer", {"mixed_precision": True,
                                                                           "recompute": True})])
def test_other_objectives_and_families(corpus, objective, family, extra):
    losses = _pretrain(corpus, corpus["root"] / objective, objective=objective, model=family, steps=1,
                       save_every=1, optimizer="lamb", ema=0.99, grad_accum=2, **extra)
    assert len(losses) == 1 and np.isfinite(losses).all()
    with pytest.raises(KerasformerError, match="causal LM head only"):
        _pretrain(corpus, corpus["root"] / "bad", objective="mlm", model="gpt2")


def test_distribution_options_need_jax(corpus):
    if keras.backend.backend() == "jax":
        pytest.skip("the JAX path is tested with virtual devices below")
    with pytest.raises(KerasformerError, match="JAX backend"):
        _pretrain(corpus, corpus["root"] / "dp", data_parallel=2)


DISTRIBUTED = r"""
import os, sys, json
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["KERAS_BACKEND"] = "jax"
import numpy as np

def weights(out):
    ck = os.path.join(out, "checkpoints")
    with np.load(os.path.join(ck, sorted(os.listdir(ck))[-1], "model.npz")) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]

def main():
    import keras
    from kerasformer.pretraining.distribution import model_parallel
    from kerasformer.pretraining.train import build_pretraining_model, pretrain
    data, vocab, out = sys.argv[1:4]
    cfg = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    runs = {}
    for name, kw in [("single", {}), ("dp", {"data_parallel": 4}), ("mp", {"mesh": "2x2"})]:
        losses = pretrain("mlm", data, vocab, os.path.join(out, name), config=cfg, seq_len=16, batch_size=8,
                          steps=2, save_every=100, progress=False, lr=1e-2, warmup=1, **kw)
        runs[name] = (losses, weights(os.path.join(out, name)))
    keras.utils.set_random_seed(0)
    init = [np.asarray(v.numpy()) for v in build_pretraining_model("mlm", cfg, 200).model.variables]
    keras.distribution.set_distribution(model_parallel(2, 2))
    sharded = build_pretraining_model("mlm", cfg, 200).model
    specs = {v.path: list(v.value.sharding.spec) for v in sharded.weights}
    base_l, base_w = runs["single"]
    report = {"moved": float(max(np.abs(a - b).max() for a, b in zip(base_w, init) if a.shape == b.shape)),
              "specs": specs, "single": base_l}
    for name in ("dp", "mp"):
        l, w = runs[name]
        report[name] = [float(np.abs(np.subtract(l, base_l)).max()),
                        float(max(np.abs(a - b).max() for a, b in zip(w, base_w)))]
    print("REPORT" + json.dumps(report))

if __name__ == "__main__":
    main()
"""


MULTIHOST = r"""
import os, sys, json
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["KERAS_BACKEND"] = "jax"

def main():
    data, vocab, out, port, pid = sys.argv[1:6]
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", 2, int(pid), initialization_timeout=60)
    from kerasformer.pretraining.train import pretrain
    cfg = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    losses = pretrain("mlm", data, vocab, out, config=cfg, seq_len=16, batch_size=8, steps=2, save_every=100,
                      progress=False, lr=1e-2, warmup=1, data_parallel=4)
    print("LOSSES" + json.dumps([jax.process_index(), jax.device_count(), losses]), flush=True)

if __name__ == "__main__":
    main()
"""


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_data_and_model_parallel_match_one_device(corpus):
    if keras.backend.backend() != "jax":
        pytest.skip("keras.distribution runs on JAX")
    script = corpus["root"] / "distributed.py"
    script.write_text(DISTRIBUTED)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(script), corpus["data"], corpus["vocab"], str(corpus["root"] / "dist")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("REPORT")]
    assert lines, done.stderr[-3000:]
    report = json.loads(lines[0][6:])
    assert report["moved"] > 1e-3  # the steps changed the weights: the comparison means something
    assert report["dp"][0] <= 1e-5 and report["dp"][1] <= 1e-5, report["dp"]
    assert report["mp"][0] <= 1e-5 and report["mp"][1] <= 1e-5, report["mp"]
    specs = report["specs"]
    assert specs["Transformer-0-MultiHeadSelfAttention/q_dense/kernel"] == [None, "model"]
    assert specs["Transformer-0-FeedForward/o_dense/kernel"] == ["model", None]
    assert specs["Embedding-Token/embeddings"] == [None, "model"]

    # two processes on localhost through jax.distributed (2 devices each): the same losses
    script = corpus["root"] / "multihost.py"
    script.write_text(MULTIHOST)
    port, out = str(_free_port()), str(corpus["root"] / "multihost")
    procs = [subprocess.Popen([sys.executable, str(script), corpus["data"], corpus["vocab"], out, port, str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for i in range(2)]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    single = report["single"]
    for stdout, stderr in outputs:
        lines = [ln for ln in stdout.splitlines() if ln.startswith("LOSSES")]
        assert lines, stderr[-3000:]
        _, devices, losses = json.loads(lines[0][6:])
        assert devices == 4
        np.testing.assert_allclose(losses, single, rtol=0, atol=1e-5)
    assert os.path.isdir(os.path.join(out, "model"))


# ---------------------------------------------------------------- command line

def test_cli_vocab_and_pretrain(corpus, tmp_path):
    from kerasformer.cli import main

    vocab = tmp_path / "v.txt"
    assert main(["vocab", corpus["text"], "--out", str(vocab), "--max-size", "50"]) == 0
    assert len(vocab.read_text(encoding="utf-8").splitlines()) == 50
    assert main(["pretrain", "--data", corpus["data"], "--vocab", corpus["vocab"], "--config", "tiny",
                 "--seq-len", "32", "--out", str(tmp_path / "o"), "--steps", "1"]) == 2  # a clear error
