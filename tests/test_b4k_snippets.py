"""``kerasformer.snippets``' bert4keras helpers, with bert4keras 0.11.5's meanings."""
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from kerasformer import snippets


def test_text_helpers():
    assert snippets.strQ2B("ＡＢＣ　１２３，ｘ") == "ABC 123,x"
    assert snippets.strQ2B("中文。") == "中文。"  # not full-width ASCII: unchanged
    assert snippets.string_matching("Transformer-0-FeedForward-Norm/gamma", ["Norm", "bias"])
    assert not snippets.string_matching("kernel", ["Norm$", "^bias"])
    assert snippets.convert_to_unicode("abc".encode()) == "abc" and snippets.convert_to_str("x") == "x"
    assert snippets.lowercase_and_normalize("Héllo") == "hello"
    a = np.zeros(2)
    assert snippets.is_one_of(a, [np.zeros(2), a]) and not snippets.is_one_of(a, [np.zeros(2)])
    np.testing.assert_allclose(snippets.softmax(np.array([[0.0, np.log(3.0)]])), [[0.25, 0.75]])


def test_longest_common_substring_and_subsequence():
    assert snippets.longest_common_substring("abcdef", "zcdez") == (3, (2, 5, 1, 4))
    assert snippets.longest_common_substring("abc", "xyz") == (0, (0, 0, 0, 0))
    length, mapping = snippets.longest_common_subsequence("abcbdab", "bdcaba")
    assert length == 4
    assert all("abcbdab"[i] == "bdcaba"[j] for i, j in mapping)
    assert [i for i, _ in mapping] == sorted(i for i, _ in mapping) and len(mapping) == 4
    # bert4keras' tie-breaking picks this one
    assert mapping == [(1, 0), (2, 2), (3, 4), (5, 5)]


def test_orthogonally_resize():
    a = np.arange(1, 7, dtype="float64").reshape(2, 3)
    b = snippets.orthogonally_resize(a, (4, 2))
    # rows repeated in blocks of window=2 (one block here), then cut; norm kept
    want = np.concatenate([a, a])[:, :2]
    np.testing.assert_allclose(b, want / np.linalg.norm(want) * np.linalg.norm(a))
    with pytest.raises(Exception):
        snippets.orthogonally_resize(np.ones((3, 2)), (6, 2))  # 3 rows not a multiple of window 2


def test_insert_and_delete_arguments():
    class Base:
        @snippets.insert_arguments(rate=0.1, names=())
        @snippets.delete_arguments("forbidden")
        def __init__(self, x, **kwargs):
            self.x, self.kwargs = x, kwargs

    b = Base(1, rate=0.5, other=2)
    assert (b.x, b.rate, b.names, b.kwargs) == (1, 0.5, (), {"other": 2})
    with pytest.raises(TypeError, match="forbidden"):
        Base(1, forbidden=True)


def test_uniout_and_decoder_names():
    from kerasformer.snippets import AutoRegressiveDecoder, uniout  # noqa: F401

    assert uniout.__name__ == "uniout"


@pytest.fixture
def server():
    web = snippets.WebServing(host="127.0.0.1", port=0, max_body_bytes=1000)

    def gen(text, n=1):
        if text == "boom":
            raise ValueError("bad " + "x" * 2000)
        return {"text": text * n}

    web.route("/gen", gen, {"text": (None, True), "n": (int, False)})
    web.route("/gen", gen, {"text": (None, True), "n": (int, False)}, method="POST")
    httpd = web.make_server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def fetch(url, data=None):
    try:
        with urllib.request.urlopen(url, data=data, timeout=5) as r:
            return r.status, json.loads(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode("utf-8"))


def test_web_serving(server):
    query = urllib.parse.urlencode({"text": "你好", "n": "2"})
    assert fetch(f"{server}/gen?{query}") == (200, {"code": 0, "desc": "succeeded", "data": {"text": "你好你好"}})
    assert fetch(f"{server}/gen?n=2")[1] == {"code": 1, "desc": 'lack of "text" argument', "data": {}}
    status, answer = fetch(f"{server}/gen?text=boom")
    assert answer["code"] == 2 and answer["desc"].startswith("bad") and len(answer["desc"]) == 500
    assert fetch(f"{server}/gen", data=b"text=ab&n=3")[1]["data"] == {"text": "ababab"}
    assert fetch(f"{server}/nothing")[0] == 404
    assert fetch(f"{server}/gen", data=b"text=" + b"a" * 2000)[0] == 413
