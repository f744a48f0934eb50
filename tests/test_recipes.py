"""The NER and classification recipes (recipes/ner_peoples_daily.py, recipes/classify.py):
their data handling and metrics, and a tiny end-to-end run of each that must write a valid
results JSON.

The end-to-end runs use the first few examples of the shared datasets (../shared/data) when
they are there, and otherwise a small synthetic set in the same format, so the tests run
anywhere. Each run is tiny (1 layer, hidden 32, maxlen 16: a single padded length, so JAX
compiles one training program).
"""
import json
import os
import sys

import numpy as np
import pytest

import kerasformer  # noqa: F401  (sets the default Keras backend before keras loads)
from kerasformer import backend

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
sys.path.insert(0, RECIPES)

import classify  # noqa: E402
import common  # noqa: E402
import ner_peoples_daily as ner  # noqa: E402
import unilm_csl  # noqa: E402

TINY = ["--epochs", "1", "--layers", "1", "--hidden-size", "32", "--maxlen", "16", "--batch-size", "16",
        "--quiet"]


# ---------------------------------------------------------------------------- data sets

def _data_dir(tmp_path, real, marker, write):
    """The shared dataset folder ``real`` when it holds ``marker``, else a small synthetic
    set in the same format, written by ``write(folder, rng)`` under ``tmp_path``."""
    if os.path.isfile(os.path.join(real, marker)):
        return real
    folder = tmp_path / os.path.basename(real)
    folder.mkdir()
    write(folder, np.random.default_rng(0))
    return str(folder)


def _ner_dir(tmp_path):
    def write(folder, rng):
        entities = [("张三", "nr"), ("北京", "ns"), ("国务院", "nt"), ("李四光", "nr"), ("上海", "ns")]
        for name, n in (("train.txt", 64), ("dev.txt", 32)):
            lines = []
            for _ in range(n):
                for _ in range(3):
                    lines.extend(f"{c} O" for c in "我们在说")
                    text, kind = entities[rng.integers(len(entities))]
                    tags = ["B"] + ["M"] * (len(text) - 2) + ["E"]
                    lines.extend(f"{c} {t}_{kind}" for c, t in zip(text, tags))
                lines.append("")
            (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    return _data_dir(tmp_path, common.data_path("ner_peoples_daily"), "train.txt", write)


def _classify_dir(tmp_path, task):
    labels = ["positive", "negative"] if task == "chnsenticorp" else ["news_a", "news_b", "news_c"]

    def write(folder, rng):
        for name, n in (("train.tsv", 64), ("dev.tsv", 32)):
            rows = [f"{'好很好不错' if k == 0 else '差太差了'}{rng.integers(1000)}\t{labels[k]}"
                    for k in rng.integers(len(labels), size=n)]
            (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
        if task == "tnews":
            (folder / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")

    return _data_dir(tmp_path, common.data_path(*classify.TASKS[task]["data_dir"]), "train.tsv", write)


# ---------------------------------------------------------------------------- NER pieces

def test_tags_to_entities():
    tags = ["B_nr", "M_nr", "E_nr", "O", "B_ns", "E_ns", "B_nt", "M_ns", "E_nt", "E_nr", "B_nt", "E_nt"]
    assert ner.tags_to_entities(tags) == {("nr", 0, 2), ("ns", 4, 5), ("nt", 10, 11)}
    assert ner.tags_to_entities(["B_nr", "O", "E_nr"]) == set()
    assert ner.tags_to_entities([]) == set()


def test_entity_scores():
    gold = [{("nr", 0, 1), ("ns", 3, 4)}, {("nt", 0, 3)}]
    pred = [{("nr", 0, 1), ("ns", 3, 5)}, {("nt", 0, 3), ("nr", 5, 6)}]
    s = ner.entity_scores(gold, pred, ["nr", "ns", "nt"])
    assert (s["correct"], s["predicted"], s["gold"]) == (2, 4, 3)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert s["per_type"]["ns (place)"]["f1"] == 0.0
    assert s["per_type"]["nt (organisation)"]["recall"] == 1.0


def test_ner_labels_round_trip():
    """The CRF tags and the GlobalPointer spans of a batch both give back the gold entities;
    an entity cut off by maxlen is missing from the labels but kept in the gold set."""
    sentences = [(list("张三在北京"), ["B_nr", "E_nr", "O", "B_ns", "E_ns"]),
                 (list("国务院"), ["B_nt", "M_nt", "E_nt"])]
    types = ["nr", "ns", "nt"]
    tag_names = ["O"] + [f"{p}_{t}" for t in types for p in "BME"]
    vocab = common.build_char_vocab(["".join(c) for c, _ in sentences])
    data = ner.Encoded(sentences, vocab, {t: i for i, t in enumerate(tag_names)}, types, maxlen=6)
    assert data.truncated == 1 and data.gold[0] == {("nr", 0, 1), ("ns", 3, 4)}
    (ids, segments), tags = ner.make_batch(data, [0, 1], "crf", 3, maxlen=6)
    assert ids.shape == tags.shape == (2, 6) and not segments.any()
    assert ids[0, 0] == vocab["[CLS]"] and ids[0, 5] == vocab["[SEP]"] and ids[1, 4] == vocab["[SEP]"]
    assert ner.tags_to_entities([tag_names[t] for t in tags[0, 1:5]]) == {("nr", 0, 1)}  # ns cut: "北京" half gone
    _, spans = ner.make_batch(data, [0, 1], "globalpointer", 3, maxlen=6)
    assert spans.shape == (2, 3, 6, 6)
    found = {(types[k], s - 1, e - 1) for k, s, e in np.argwhere(spans[1] > 0)}
    assert found == data.gold[1] == {("nt", 0, 2)}
    assert {(types[k], s - 1, e - 1) for k, s, e in np.argwhere(spans[0] > 0)} == {("nr", 0, 1)}


def test_viterbi_recovers_gold_path():
    from kerasformer.snippets import ViterbiDecoder

    tag_names = ["O", "B_nr", "M_nr", "E_nr"]
    gold = [0, 1, 2, 3, 0]
    nodes = np.full((5, 4), -2.0)
    nodes[np.arange(5), gold] = 2.0
    path = ViterbiDecoder(np.zeros((4, 4)), starts=[0], ends=[0]).decode(nodes)
    assert ner.tags_to_entities([tag_names[t] for t in path[1:-1]]) == {("nr", 0, 2)}


@pytest.mark.parametrize("head", ["crf", "globalpointer"])
def test_predict_entities_with_perfect_scores(head):
    """The decoding path of the evaluation (batching by length, [CLS]/[SEP] offsets, Viterbi or
    span thresholds) turns scores that point at the gold entities into exactly those entities."""
    import argparse

    import keras
    from keras import ops

    sentences = [(list("张三在北京开会"), ["B_nr", "E_nr", "O", "B_ns", "E_ns", "O", "O"]),
                 (list("国务院"), ["B_nt", "M_nt", "E_nt"]),
                 (list("他说"), ["O", "O"])]
    types = ["nr", "ns", "nt"]
    tag_names = ["O"] + [f"{p}_{t}" for t in types for p in "BME"]
    vocab = common.build_char_vocab(["".join(c) for c, _ in sentences])
    data = ner.Encoded(sentences, vocab, {t: i for i, t in enumerate(tag_names)}, types, maxlen=16)
    char_tags = {c: t for chars, tags in sentences for c, t in zip(chars, tags)}
    ids = keras.Input((None,), dtype="int32")
    segments = keras.Input((None,), dtype="int32")
    if head == "crf":  # emissions: +5 on each character's gold tag, O elsewhere
        table = np.full((len(vocab), len(tag_names)), -5.0, "float32")
        for token, i in vocab.items():
            table[i, tag_names.index(char_tags.get(token, "O"))] = 5.0
        layer = keras.layers.Embedding(len(vocab), len(tag_names))
        model = keras.Model([ids, segments], layer(ids))
        model.crf_layer = argparse.Namespace(trans=np.zeros((len(tag_names), len(tag_names)), "float32"))
    else:  # span (i, j) of type h scores 2 when i starts and j ends an h entity, < 0 otherwise
        start = np.full((len(vocab), len(types)), -10.0, "float32")
        end = start.copy()
        for token, i in vocab.items():
            tag = char_tags.get(token, "O")
            if tag[0] in "BE":
                (start if tag[0] == "B" else end)[i, types.index(tag[2:])] = 1.0
        layer = keras.layers.Embedding(len(vocab), len(types))
        end_layer = keras.layers.Embedding(len(vocab), len(types))
        scores = layer(ids)[:, :, None, :] + end_layer(ids)[:, None, :, :]
        model = keras.Model([ids, segments], ops.transpose(scores, (0, 3, 1, 2)))
        end_layer.set_weights([end])
        table = start
    layer.set_weights([table])
    args = argparse.Namespace(head=head, batch_size=1, maxlen=16)  # 2 per batch: two batches
    predicted = ner.predict_entities(model, data, args, types, tag_names, quiet=True)
    assert predicted == data.gold == [{("nr", 0, 1), ("ns", 3, 4)}, {("nt", 0, 2)}, set()]


# ---------------------------------------------------------------------------- shared pieces

def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "out" / "r.json"
    common.write_json(str(path), {"a": np.float32(0.5), "b": (1, 2)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [1, 2]}
    with pytest.raises(TypeError):
        common.write_json(str(path), {"bad": object()})
    assert json.loads(path.read_text())["a"] == 0.5  # the old file survives a failed write
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # and no temporary is left


def test_lr_schedule_and_buckets():
    assert common.lr_schedule(0, 100) is None
    assert common.lr_schedule(10, 100) == {10: 1.0}
    assert common.lr_schedule(10, 100, 0.1) == {10: 1.0, 100: 0.1}
    assert common.lr_schedule(0, 100, 0.5) == {0: 1.0, 100: 0.5}
    assert [common.bucket_length(n, 16, 40) for n in (1, 16, 17, 39, 90)] == [16, 16, 32, 40, 40]
    lengths = list(np.random.default_rng(0).integers(1, 50, size=103))
    batches = common.length_batches(lengths, 8, shuffle=True, rng=np.random.default_rng(1), pool=4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    assert max(len(b) for b in batches) == 8


def test_char_vocab():
    vocab = common.build_char_vocab(["北京北京 Apple 2018", "上海"])
    assert list(vocab)[:5] == common.SPECIAL_TOKENS
    assert vocab["北"] < vocab["上"] and "a" in vocab and "##a" in vocab and "##8" in vocab and " " not in vocab
    assert "上" in vocab and "A" not in vocab  # lower-cased


def test_classify_arguments():
    args = classify.parse_args(["--task", "chnsenticorp"])
    assert args.maxlen == 256 and args.pool == "mean"
    assert args.data_dir.endswith(os.path.join("sentiment", "chnsenticorp"))
    assert args.out.endswith("classify_chnsenticorp.json")
    with pytest.raises(SystemExit):
        classify.parse_args(["--ablation", "--ema"])
    with pytest.raises(SystemExit):
        ner.parse_args(["--checkpoint", "x.ckpt"])  # a checkpoint without its config and vocab


# ---------------------------------------------------------------------------- end to end

def _check_common(results, out):
    on_disk = json.loads(out.read_text(encoding="utf-8"))
    assert on_disk["args"]["out"] == str(out)
    assert on_disk["environment"]["backend"] == backend.name()
    assert os.path.isfile(os.path.splitext(str(out))[0] + "_vocab.txt")
    assert on_disk["timings_s"]["train"] > 0 and on_disk["timings_s"]["total"] >= on_disk["timings_s"]["train"]
    return on_disk


@pytest.mark.parametrize("head", ["crf", "globalpointer"])
def test_ner_end_to_end(tmp_path, head):
    data_dir = _ner_dir(tmp_path)
    out = tmp_path / f"ner_{head}.json"
    results = ner.main(["--data-dir", data_dir, "--head", head, "--max-train", "64", "--max-dev", "32",
                        "--warmup", "2", "--out", str(out)] + TINY)
    on_disk = _check_common(results, out)
    m = on_disk["metrics"]
    assert all(0.0 <= m[k] <= 1.0 for k in ("precision", "recall", "f1"))
    assert on_disk["data"] == {**on_disk["data"], "train_sentences": 64, "dev_sentences": 32}
    # the gold count is that of the dev slice, counted here independently
    dev = ner.load_sentences(os.path.join(data_dir, "dev.txt"), 32)
    gold = sum(t.startswith("B_") for _, tags in dev for t in tags)
    assert on_disk["counts"]["gold"] == gold > 0
    assert len(on_disk["history"]) == 1 and on_disk["training"]["lr_schedule"] == {"2": 1.0, "4": 0.1}


def test_classify_end_to_end(tmp_path):
    """TNEWS from scratch with EMA (ChnSentiCorp runs below, from a pretrained checkpoint)."""
    out = tmp_path / "tnews.json"
    results = classify.main(["--task", "tnews", "--data-dir", _classify_dir(tmp_path, "tnews"), "--max-train", "64",
                             "--max-dev", "32", "--ema", "--out", str(out)] + TINY)
    on_disk = _check_common(results, out)
    assert 0.0 <= on_disk["metrics"]["dev_accuracy"] <= 1.0
    real = on_disk["data"]["data_dir"] == common.data_path("clue", "tnews")
    assert on_disk["data"]["classes"] == (15 if real else 3)
    assert on_disk["tricks"]["ema_momentum"] == pytest.approx(0.9)  # 4 steps: the floor of the auto rule
    assert on_disk["tricks"]["fgm_epsilon"] == 0.0 and on_disk["model"]["from_scratch"]
    assert on_disk["data"]["dev_examples"] == 32 and on_disk["history"][0]["epoch"] == 1


def _csl_dir(tmp_path):
    def write(folder, rng):
        for name in ("ts_dev.tsv", "ts_test.tsv"):
            titles = ["".join(rng.choice(list("模型方法研究分析系统"), 5)) for _ in range(16)]
            rows = [f"{t}\t本文提出{t}的新方法，实验表明效果良好。\t{t}" for t in titles]
            (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")

    return _data_dir(tmp_path, common.data_path("csl"), "ts_dev.tsv", write)


def test_unilm_csl_end_to_end(tmp_path):
    """Train a tiny UniLM for one epoch, decode with the cached engine's beam search, score."""
    out = tmp_path / "csl.json"
    results = unilm_csl.main(["--data-dir", _csl_dir(tmp_path), "--max-train", "16", "--max-test", "4",
                              "--epochs", "1", "--layers", "1", "--hidden-size", "32", "--maxlen", "48",
                              "--title-maxlen", "6", "--batch-size", "8", "--beam", "2",
                              "--decode-batch", "4", "--out", str(out)])
    on_disk = json.loads(out.read_text(encoding="utf-8"))
    assert on_disk["metrics"] == results["metrics"]
    assert set(on_disk["metrics"]) == {"rouge-1", "rouge-2", "rouge-l", "bleu"}
    assert all(0.0 <= v <= 100.0 for v in on_disk["metrics"].values())
    assert on_disk["decoder"] == "engine" and on_disk["decoder_note"] is None
    assert on_disk["test_pairs"] == 4 and len(on_disk["train_loss_per_epoch"]) == 1
    assert os.path.isfile(on_disk["vocab_path"])


def test_unilm_gathered_head_trains_as_the_full_head(tmp_path):
    """The UniLM trains with its LM head on the title positions only: the same loss, and the
    same step, as the full model's head on every position with bert4keras' title loss."""
    import keras

    args = unilm_csl.parse_args(["--data-dir", _csl_dir(tmp_path), "--layers", "1", "--hidden-size", "32",
                                 "--maxlen", "48", "--batch-size", "8", "--dropout", "0"])
    pairs = unilm_csl.load_pairs(os.path.join(args.data_dir, "ts_dev.tsv"), 8)
    tokenizer, token_dict, _, _ = common.make_tokenizer(args, [a + t for a, t in pairs], str(tmp_path / "v.json"))
    batches = unilm_csl.make_batches(pairs, tokenizer, args)
    (ids, segments, positions), gathered = next(iter(batches))
    assert positions.shape[1] == batches.slots < ids.shape[1]
    full = np.full(ids.shape, -1, "int32")  # the same targets, at every position
    rows = np.arange(len(ids))[:, None].repeat(batches.slots, 1)
    full[rows[gathered >= 0], positions[gathered >= 0]] = gathered[gathered >= 0]
    assert (full >= 0).sum() == (segments == 1).sum()  # every title token, [SEP] included

    keras.utils.set_random_seed(0)
    transformer = unilm_csl.build(args, len(token_dict))
    start = [w.copy() for w in transformer.model.get_weights()]
    after = {}
    for name, model, x, y, loss in [
            ("full", transformer.model, [ids, segments], full, unilm_csl.title_loss),
            ("gathered", unilm_csl.training_model(transformer, batches.slots), [ids, segments, positions],
             gathered, unilm_csl.gathered_title_loss)]:
        transformer.model.set_weights(start)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
        after[name] = (float(model.train_on_batch(x, y)), transformer.model.get_weights())
    assert after["full"][0] == pytest.approx(after["gathered"][0], abs=1e-5)
    assert after["full"][0] > 1.0  # a real loss, not a masked-out zero
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(after["full"][1], start))
    assert moved > 1e-3
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(after["full"][1], after["gathered"][1])) <= 1e-5


def test_fgm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "kerasformer.training", None)  # as if the module were absent
    with pytest.raises(SystemExit, match="adversarial_training"):
        classify.fgm_function()


def test_classify_from_pretrained_checkpoint(tmp_path, tiny_hf_bert):
    """--config/--checkpoint/--vocab: the vocabulary is simplified as bert4keras does, the encoder
    gets the checkpoint's weights (the kept rows of its embedding, its pooler), and a ChnSentiCorp
    run with EMA and FGM (kerasformer.training) writes its results."""
    from kerasformer import load_vocab

    hf_model, config, paths = tiny_hf_bert
    data_dir = _classify_dir(tmp_path, "chnsenticorp")
    texts = [t for t, _ in classify.load_examples(os.path.join(data_dir, "train.tsv"), 32)]
    chars = [c for c in dict.fromkeys("".join(texts)) if not c.isspace()][:60]
    tokens = common.SPECIAL_TOKENS + ["##的", "##了"] + chars
    tokens += [f"w{i}" for i in range(config.vocab_size - len(tokens))]
    vocab_path = tmp_path / "vocab.txt"
    vocab_path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    model_dir = paths["safetensors"]
    argv = ["--task", "chnsenticorp", "--data-dir", data_dir, "--config", model_dir, "--checkpoint", model_dir,
            "--vocab", str(vocab_path), "--max-train", "32", "--max-dev", "16", "--out", str(tmp_path / "p.json"),
            "--epochs", "1", "--maxlen", "16", "--batch-size", "16", "--quiet", "--ema", "--fgm", "0.5"]

    args = classify.parse_args(argv)
    assert args.pool == "cls"  # the pretrained pooler
    token_dict, keep_tokens = load_vocab(str(vocab_path), simplified=True, startswith=common.SPECIAL_TOKENS)
    # the '##' CJK pieces go (bert4keras' rule); [MASK] stays (the MLM variants predict through
    # it); the other tokens keep their order
    assert len(token_dict) == config.vocab_size - 2 and keep_tokens[:6] == [0, 1, 2, 3, 4, 7]
    encoder = common.build_encoder(args, len(token_dict), keep_tokens, with_pool=True).model
    hf = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    np.testing.assert_allclose(encoder.get_layer("Embedding-Token").get_weights()[0],
                               hf["bert.embeddings.word_embeddings.weight"][keep_tokens], atol=1e-6)
    np.testing.assert_allclose(encoder.get_layer("Pooler-Dense").get_weights()[0],
                               hf["bert.pooler.dense.weight"].T, atol=1e-6)

    results = classify.main(argv)
    on_disk = _check_common(results, tmp_path / "p.json")
    assert on_disk["model"] == {"pretrained_config": model_dir, "checkpoint": model_dir}
    assert on_disk["vocab"]["pretrained"] and on_disk["vocab"]["size"] == len(token_dict)
    assert on_disk["data"]["classes"] == 2 and on_disk["data"]["dev_examples"] == 16
    assert on_disk["tricks"]["fgm_epsilon"] == 0.5 and on_disk["tricks"]["ema_momentum"] == pytest.approx(0.9)
    assert 0.0 <= on_disk["metrics"]["dev_accuracy"] <= 1.0


def test_pretrain_chinese_smoke(tmp_path):
    """The corpus of recipes/pretrain_chinese.py: Tang poems in simplified characters, the training
    splits only; the exported folder loads with the MLM head."""
    pytest.importorskip("opencc")
    if not os.path.isdir(common.data_path("poetry")):
        pytest.skip("../shared/data is not beside the project")
    import pretrain_chinese

    shipped = tmp_path / "shipped"
    assert pretrain_chinese.main(["--out", str(tmp_path), "--smoke", "--ship", str(shipped)]) == 0
    poetry = (tmp_path / "corpus" / "poetry.txt").read_text(encoding="utf-8")
    assert "無" not in poetry and "无" in poetry  # converted by OpenCC (t2s)
    from kerasformer import build_transformer_model

    model = build_transformer_model(str(tmp_path / "model"), str(tmp_path / "model"), with_mlm=True)
    assert model.output_shape[-1] == sum(1 for _ in open(tmp_path / "vocab.txt", encoding="utf-8"))
    # --ship: the half-precision folder predicts what the float32 one does, and has its card
    half = build_transformer_model(str(shipped), with_mlm=True)
    ids = np.array([[2, 10, 11, 12, 3]])
    full_probs, half_probs = (m.predict([ids, np.zeros_like(ids)], verbose=0) for m in (model, half))
    assert np.abs(full_probs - half_probs).max() < 1e-3
    # only the 32 position rows the run trained are shipped (of 512): a longer input is refused
    assert json.loads((shipped / "config.json").read_text())["max_position_embeddings"] == 32
    np.testing.assert_allclose(half.get_layer("Embedding-Position").get_weights()[0],
                               model.get_layer("Embedding-Position").get_weights()[0][:32], atol=1e-3)
    from kerasformer.errors import KerasformerError

    with pytest.raises(KerasformerError, match="position table holds 32"):
        half.predict([np.full((1, 33), 10), np.zeros((1, 33), "int32")], verbose=0)
    card = (shipped / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Inputs of up to 32 tokens" in card
    assert "batch 4 x\n32, 4 steps" in card and "No dev or test split" in card and "fine-tune with" in card.lower()


def test_pretrained_model_caps_the_length_to_its_positions(capsys):
    """``chinese-small`` holds the 128 positions it was pretrained at; each recipe's default
    length beyond that is capped, with a note, instead of reading untrained rows (or being
    refused mid-run). From scratch, and within the table, the options stay as given."""
    import reading_comprehension as rc

    from kerasformer import build_transformer_model
    from kerasformer.embedded import model_dir
    from kerasformer.errors import KerasformerError

    pretrained = ["--pretrained", "chinese-small"]
    assert common.pretrained_max_position(os.path.join(model_dir(), "config.json")) == 128
    assert classify.parse_args(["--task", "chnsenticorp"] + pretrained).maxlen == 128  # default 256
    assert "--maxlen 256 -> 128" in capsys.readouterr().out
    assert classify.parse_args(["--task", "chnsenticorp"]).maxlen == 256
    assert classify.parse_args(["--task", "tnews"] + pretrained).maxlen == 48
    # and its learning rate: 1e-3 diverged from chinese-small on both tasks; given wins
    assert classify.parse_args(["--task", "tnews"] + pretrained).lr == classify.PRETRAINED_LR == 2e-4
    assert classify.parse_args(["--task", "tnews"] + pretrained + ["--lr", "5e-4"]).lr == 5e-4
    config = ["--config", os.path.join(model_dir(), "config.json"), "--vocab", os.path.join(model_dir(), "vocab.txt")]
    assert classify.parse_args(["--task", "tnews"] + config).lr == classify.parse_args([]).lr == 1e-3  # random weights
    assert unilm_csl.parse_args(pretrained).maxlen == 128  # default 160: titles sat at 128-160
    assert unilm_csl.parse_args([]).maxlen == 160
    args = rc.parse_args(pretrained)  # window 160 + question 40 + answer 16 + 4 specials
    assert (args.window, args.stride) == (128 - 60, 100 * 68 // 160)
    assert (rc.parse_args([]).window, rc.parse_args([]).stride) == (160, 100)
    with pytest.raises(SystemExit, match="no room for the abstract"):
        unilm_csl.parse_args(pretrained + ["--title-maxlen", "128"])
    # the user's path outside the recipes: the model refuses a longer input, clearly
    model = build_transformer_model(model_dir())
    with pytest.raises(KerasformerError, match="position table holds 128"):
        model.predict([np.full((1, 129), 10), np.zeros((1, 129), "int32")], verbose=0)


@pytest.mark.parametrize("extra, rate, head", [([], 0.0, 0.1), (["--dropout", "0.2"], 0.2, 0.2)])
def test_pretrained_model_keeps_its_config_dropout_unless_given(extra, rate, head):
    """``--pretrained chinese-small`` (pretrained without dropout) is fine-tuned with its
    config's rates, as bert4keras and transformers build it: the old fixed 0.1 cost ChnSentiCorp
    17 points. ``--dropout`` still wins; from scratch the default stays 0.1."""
    args = classify.parse_args(["--task", "chnsenticorp", "--pretrained", "chinese-small"] + extra)
    assert common.encoder_dropout(args) == ({} if not extra else {"dropout_rate": rate})
    assert common.dropout_or_default(args) == head
    from kerasformer import load_vocab

    token_dict, keep_tokens = load_vocab(args.vocab, simplified=True, startswith=common.SPECIAL_TOKENS)
    encoder = common.build_encoder(args, len(token_dict), keep_tokens)
    assert encoder.dropout_rate == rate
    scratch = classify.parse_args(["--task", "chnsenticorp"])
    assert common.encoder_dropout(scratch) == {"dropout_rate": 0.1} and common.dropout_or_default(scratch) == 0.1
