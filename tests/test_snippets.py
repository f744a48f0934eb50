"""snippets: padding, truncation, segmentation, DataGenerator, open, parallel_apply."""

import os
import subprocess
import sys

import numpy as np
import pytest

from kerasformer.snippets import (
    DataGenerator,
    is_string,
    open as kf_open,
    parallel_apply,
    sequence_padding,
    text_segmentate,
    to_array,
    truncate_sequences,
)


def test_sequence_padding_post_pre():
    x = [[1, 2, 3], [4], [5, 6]]
    np.testing.assert_array_equal(sequence_padding(x), [[1, 2, 3], [4, 0, 0], [5, 6, 0]])
    np.testing.assert_array_equal(sequence_padding(x, mode="pre"), [[1, 2, 3], [0, 0, 4], [0, 5, 6]])
    np.testing.assert_array_equal(sequence_padding(x, value=-1), [[1, 2, 3], [4, -1, -1], [5, 6, -1]])
    assert sequence_padding(x).dtype.kind == "i"


def test_sequence_padding_length_truncates():
    x = [[1, 2, 3, 4], [5]]
    np.testing.assert_array_equal(sequence_padding(x, length=2), [[1, 2], [5, 0]])
    np.testing.assert_array_equal(sequence_padding(x, length=2, mode="pre"), [[1, 2], [0, 5]])
    np.testing.assert_array_equal(sequence_padding(x, length=6), [[1, 2, 3, 4, 0, 0], [5, 0, 0, 0, 0, 0]])


def test_sequence_padding_trailing_dims():
    x = [np.ones((2, 3)), np.ones((1, 3))]
    out = sequence_padding(x)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[1, 1], 0)


def test_sequence_padding_seq_dims_2():
    a = np.ones((2, 2))
    b = np.full((3, 3), 2.0)
    out = sequence_padding([a, b], seq_dims=2)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out[1], b)
    # int length applies to both dims (and truncates)
    out = sequence_padding([a, b], length=2, seq_dims=2)
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out[1], [[2, 2], [2, 2]])
    out = sequence_padding([a, b], length=[4, 2], seq_dims=2, mode="pre")
    assert out.shape == (2, 4, 2)
    np.testing.assert_array_equal(out[0], [[0, 0], [0, 0], [1, 1], [1, 1]])


def test_sequence_padding_empty_row_keeps_int_dtype():
    out = sequence_padding([[1, 2], []])
    assert out.dtype.kind == "i"
    np.testing.assert_array_equal(out, [[1, 2], [0, 0]])


def test_sequence_padding_bad_mode_and_empty():
    with pytest.raises(ValueError):
        sequence_padding([[1]], mode="middle")
    assert sequence_padding([]).shape == (0,)


def test_truncate_sequences():
    a, b = [1, 2, 3, 4, 5], [6, 7, 8]
    out = truncate_sequences(6, -1, a, b)
    assert out[0] is a and out[1] is b
    assert a == [1, 2, 3] and b == [6, 7, 8]
    # longest first, first on ties, per-sequence index (keep a trailing [SEP])
    a, b = ["C", "x", "y", "S"], ["C", "u", "v", "S"]
    truncate_sequences(6, [-2, 1], a, b)
    assert a == ["C", "x", "S"] and b == ["C", "v", "S"]
    # no-op when short enough; None/empty sequences are skipped but keep their index slot
    a = [1, 2]
    assert truncate_sequences(5, -1, a, None) == [[1, 2]]
    c = [1, 2, 3]
    truncate_sequences(2, [0, -1], [], c)
    assert c == [1, 2]


def test_truncate_sequences_impossible():
    with pytest.raises(ValueError):
        truncate_sequences(0, -2, ["[CLS]", "[SEP]"])


def test_text_segmentate():
    text = "第一句话。第二句话很长很长很长很长。第三句！"
    pieces = text_segmentate(text, 10, "。！", "。！")
    assert pieces == ["第一句话", "第二句话很长很长很长很长", "第三句"]
    assert text_segmentate("short", 10) == ["short"]
    # pieces are re-joined greedily while they fit
    assert text_segmentate("a,b,c,d", 4, ",") == ["a,b,", "c,d"]
    assert text_segmentate("line one\nline two", 9) == ["line one", "line two"]


def test_to_array_is_string():
    a = to_array([1, 2])
    assert isinstance(a, np.ndarray)
    a, b = to_array([[1]], [[2, 3]])
    assert a.shape == (1, 1) and b.shape == (1, 2)
    assert is_string("x") and not is_string(b"x") and not is_string(1)


class _Gen(DataGenerator):
    def __iter__(self, random=False):
        batch = []
        for is_end, d in self.sample(random):
            batch.append(d)
            if len(batch) == self.batch_size or is_end:
                yield to_array(batch), None
                batch = []


def test_data_generator_batches_and_last_partial_batch():
    gen = _Gen(list(range(10)), batch_size=4)
    assert len(gen) == 3
    batches = [b[0].tolist() for b in gen]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(_Gen(list(range(8)), batch_size=4)) == 2


def test_data_generator_shuffle():
    np.random.seed(0)
    gen = _Gen(list(range(50)), batch_size=8)
    items = [x for b in gen.__iter__(True) for x in b[0].tolist()]
    assert sorted(items) == list(range(50)) and items != list(range(50))


def test_data_generator_forfit_fortest():
    gen = _Gen(list(range(5)), batch_size=2)
    it = gen.forfit(random=False)
    seen = [next(it)[0].tolist() for _ in range(4)]
    assert seen == [[0, 1], [2, 3], [4], [0, 1]]  # endless: starts over
    it = gen.fortest()
    assert next(it).tolist() == [0, 1]  # inputs only
    np.random.seed(1)
    it = gen.forfit()
    first_epoch = [x for _ in range(3) for x in next(it)[0].tolist()]
    assert sorted(first_epoch) == list(range(5))


def test_data_generator_iterable_without_len():
    def stream():
        yield from range(23)

    gen = _Gen(stream(), batch_size=5, buffer_size=7)
    assert gen.steps is None
    with pytest.raises(TypeError):
        len(gen)
    np.random.seed(2)
    items = [x for b in gen.__iter__(True) for x in b[0].tolist()]
    assert sorted(items) == list(range(23)) and items != list(range(23))
    # sequential order without random
    gen = _Gen((i for i in range(7)), batch_size=3)
    assert [b[0].tolist() for b in gen] == [[0, 1, 2], [3, 4, 5], [6]]


def test_data_generator_empty():
    gen = _Gen([], batch_size=4)
    assert len(gen) == 0 and list(gen) == []


def test_open_indexable(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("第一行\nsecond\nthird\n", encoding="utf-8")
    with kf_open(str(path), encoding="utf-8") as f:
        assert list(f) == ["第一行\n", "second\n", "third\n"]
    index_path = str(tmp_path / "index.json")
    with kf_open(str(path), encoding="utf-8", indexable=index_path) as f:
        assert len(f) == 3
        assert f[2] == "third\n" and f[0] == "第一行\n"
    with kf_open(str(path), encoding="utf-8", indexable=index_path) as f:  # cached offsets
        assert f[1] == "second\n"
    with kf_open(str(tmp_path / "out.txt"), "w", encoding="utf-8") as f:
        f.write("你好\n")
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "你好\n"


def _square(x):
    return x * x


def test_parallel_apply_threads_and_processes():
    out = parallel_apply(_square, range(50), workers=3, max_queue_size=4, dummy=True, unordered=False)
    assert out == [i * i for i in range(50)]
    # Worker processes are forked, as in bert4keras. Forking this test process, where the
    # backend's threads run, can deadlock the child (it hung the suite once under load), so
    # the process pool runs in a fresh interpreter -- as a user preprocesses before building
    # a model -- bounded by a timeout.
    script = ("from kerasformer.snippets import parallel_apply\n"
              "out = parallel_apply(lambda x: x * x, range(20), workers=2, max_queue_size=3, unordered=False)\n"
              "assert out == [i * i for i in range(20)], out\n"
              "print('ok')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
    got = []
    assert parallel_apply(_square, range(10), 2, 2, callback=got.append, dummy=True) is None
    assert sorted(got) == [i * i for i in range(10)]


def test_parallel_apply_raises_worker_error():
    def boom(x):
        if x == 3:
            raise RuntimeError("bad item")
        return x

    with pytest.raises(RuntimeError, match="bad item"):
        parallel_apply(boom, range(10), workers=2, max_queue_size=2, dummy=True)
