"""Bad requests to /v1/embeddings: status codes and OpenAI error bodies;
truncation, `dimensions`, the body size limit and a full queue (429)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import e2e_util as u

REF = u.load_reference()
LONG = REF.long_inputs
M = u.MODEL

INPUT = ("input",)
TOO_LONG = ("256", "token", "long", "length")
EMPTY = ("empty", "input")
BAD_ID = ("30522", "vocab", "token id", "out of range")


def post_raw_json(url: str, body: bytes) -> requests.Response:
    return requests.post(url + "/v1/embeddings", data=body, timeout=u.HTTP_TIMEOUT_S,
                         headers={"Content-Type": "application/json"})


# (id, body, status, message keywords)
CASES = [
    # malformed or non-object JSON
    ("truncated-json", b'{"model": "all-minilm-l6-v2", "input": ', 400,
     ("json", "parse", "eof", "expected", "invalid")),
    ("not-json", b"input=hello", 400, ("json", "parse", "expected", "invalid")),
    ("json-array", b'["hello"]', 400, ("json", "object", "map", "invalid", "expected")),
    # wrong types
    ("input-int", {"model": M, "input": 5}, 400, INPUT),
    ("input-float-list", {"model": M, "input": [1.5]}, 400, INPUT),
    ("input-float-in-ids", {"model": M, "input": [[101, 2.5, 102]]}, 400, INPUT),
    ("input-mixed-list", {"model": M, "input": [101, "a"]}, 400, INPUT),
    ("input-object", {"model": M, "input": {"text": "hello"}}, 400, INPUT),
    ("input-null", {"model": M, "input": None}, 400, INPUT),
    ("input-missing", {"model": M}, 400, INPUT),
    ("model-int", {"model": 3, "input": "hello"}, 400, ("model",)),
    ("encoding-format", {"model": M, "input": "hello", "encoding_format": "int8"}, 400,
     ("encoding_format", "encoding format", "int8")),
    # empty inputs
    ("empty-string", {"model": M, "input": ""}, 400, EMPTY),
    ("empty-list", {"model": M, "input": []}, 400, EMPTY),
    ("list-of-empty-string", {"model": M, "input": [""]}, 400, EMPTY),
    ("one-empty-among-many", {"model": M, "input": ["hello", ""]}, 400, EMPTY),
    ("empty-id-list", {"model": M, "input": [[]]}, 400, EMPTY),
    # token ids out of the vocabulary
    ("id-eq-vocab", {"model": M, "input": [101, 30522, 102]}, 400, BAD_ID),
    ("id-huge-in-batch", {"model": M, "input": [[101, 2023, 102], [101, 99999, 102]]}, 400,
     BAD_ID),
    ("id-negative", {"model": M, "input": [101, -1, 102]}, 400, INPUT + ("token", "id")),
    # too long without truncate
    ("long-text", {"model": M, "input": LONG[0]["text"]}, 400, TOO_LONG),
    ("long-text-in-batch", {"model": M, "input": ["hello", LONG[1]["text"]]}, 400, TOO_LONG),
    ("long-text-truncate-false", {"model": M, "input": LONG[2]["text"], "truncate": False},
     400, TOO_LONG),
    ("long-ids", {"model": M, "input": [101] + [2023] * 255 + [102]}, 400, TOO_LONG),
    # dimensions other than 384
    ("dimensions-128", {"model": M, "input": "hello", "dimensions": 128}, 400,
     ("dimensions",)),
    ("dimensions-1536", {"model": M, "input": "hello", "dimensions": 1536}, 400,
     ("dimensions",)),
    ("dimensions-0", {"model": M, "input": "hello", "dimensions": 0}, 400, ("dimensions",)),
    # unknown model
    ("unknown-model", {"model": "no-such-model", "input": "hello"}, 404, ("no-such-model",)),
]


@pytest.mark.parametrize("body,status,keywords", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_request(url, body, status, keywords):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = post_raw_json(url, data)
    u.assert_openai_error(resp, status, *keywords)


def test_bad_requests_leave_server_healthy(url, server):
    for _, body, *_ in CASES:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        post_raw_json(url, data)
    r = server.embed({"model": M, "input": REF.sentences[3], "encoding_format": "float"})
    assert r.status_code == 200, r.text[:300]
    u.assert_close(r.json()["data"][0]["embedding"], REF.embeddings[3], "after bad requests")


def test_body_over_2mib_is_413(server):
    text = "hello world " * (2 * 1024 * 1024 // 12 + 1000)
    body = json.dumps({"model": M, "input": text}).encode()
    assert len(body) > 2 * 1024 * 1024
    resp = u.raw_post("127.0.0.1", server.port, "/v1/embeddings", body)
    u.assert_openai_error(resp, 413, "large", "limit", "size", "bytes", "body")


def test_body_under_2mib_is_read(server):
    # 1.5 MiB of text is accepted (and cut to the window with truncate).
    long = LONG[0]
    text = long["text"] + " " + "padding words " * (3 * 1024 * 1024 // 2 // 14)
    body = json.dumps({"model": M, "input": text, "truncate": True,
                       "encoding_format": "float"}).encode()
    assert 1024 * 1024 < len(body) < 2 * 1024 * 1024
    resp = u.raw_post("127.0.0.1", server.port, "/v1/embeddings", body, timeout=u.HTTP_TIMEOUT_S)
    assert resp.status == 200, resp.text[:300]
    u.assert_close(resp.json()["data"][0]["embedding"], long["embedding"], "1.5 MiB input")


# --------------------------------------------------------------------------
# truncate


@pytest.mark.parametrize("k", range(len(LONG)))
def test_truncate_true_matches_cut_text(server, k):
    r = server.embed({"model": M, "input": LONG[k]["text"], "truncate": True,
                      "encoding_format": "float"})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    u.assert_close(body["data"][0]["embedding"], LONG[k]["embedding"], f"long input {k}")
    assert body["usage"]["prompt_tokens"] == u.expected_prompt_tokens(u.MAX_TOKENS)


def test_truncate_true_in_mixed_batch(server):
    inputs = [REF.sentences[0], LONG[0]["text"], REF.sentences[10], LONG[2]["text"]]
    want = [REF.embeddings[0], LONG[0]["embedding"], REF.embeddings[10], LONG[2]["embedding"]]
    r = server.embed({"model": M, "input": inputs, "truncate": True, "encoding_format": "float"})
    assert r.status_code == 200, r.text[:300]
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2, 3]
    for k, (d, w) in enumerate(zip(data, want)):
        u.assert_close(d["embedding"], w, f"item {k}")
    tokens = (u.expected_prompt_tokens(REF.token_counts[0])
              + u.expected_prompt_tokens(REF.token_counts[10])
              + 2 * u.expected_prompt_tokens(u.MAX_TOKENS))
    assert r.json()["usage"]["prompt_tokens"] == tokens


def test_truncate_true_leaves_short_inputs_alone(server):
    r = server.embed({"model": M, "input": REF.sentences[5], "truncate": True,
                      "encoding_format": "float"})
    assert r.status_code == 200, r.text[:300]
    u.assert_close(r.json()["data"][0]["embedding"], REF.embeddings[5], "short, truncate")


def test_exactly_256_token_ids_accepted(server):
    ids = LONG[1]["truncated_token_ids"]
    assert len(ids) == u.MAX_TOKENS and ids[0] == u.CLS and ids[-1] == u.SEP
    r = server.embed({"model": M, "input": ids, "encoding_format": "float"})
    assert r.status_code == 200, r.text[:300]
    u.assert_close(r.json()["data"][0]["embedding"], LONG[1]["embedding"], "256 ids")
    assert r.json()["usage"]["prompt_tokens"] == u.expected_prompt_tokens(u.MAX_TOKENS)


def test_257_token_ids_rejected(server):
    ids = LONG[1]["truncated_token_ids"]
    r = server.embed({"model": M, "input": ids[:-1] + [2023, u.SEP]})
    u.assert_openai_error(r, 400, *TOO_LONG)


# --------------------------------------------------------------------------
# dimensions


def test_dimensions_384_accepted(server):
    r = server.embed({"model": M, "input": REF.sentences[4], "dimensions": 384,
                      "encoding_format": "float"})
    assert r.status_code == 200, r.text[:300]
    u.assert_close(r.json()["data"][0]["embedding"], REF.embeddings[4], "dimensions=384")


# --------------------------------------------------------------------------
# a full queue


def _burst(url: str, model: str, n: int) -> list[requests.Response]:
    barrier = threading.Barrier(n)
    long_idx = sorted(range(len(REF.sentences)), key=lambda i: -REF.token_counts[i])[:4]

    def one(k: int) -> tuple[int, requests.Response]:
        i = long_idx[k % len(long_idx)]
        with requests.Session() as s:
            barrier.wait()
            r = s.post(url + "/v1/embeddings", timeout=u.HTTP_TIMEOUT_S,
                       json={"model": model, "input": REF.sentences[i],
                             "encoding_format": "float"})
        return i, r

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def test_queue_full_is_429_with_retry_after(tiny_queue_server):
    srv = tiny_queue_server
    before = srv.metrics()
    results = []
    # One request per batch and a queue of one: a burst of 64 long requests
    # must overflow.  A few rounds in case the machine drains it in time.
    for _ in range(5):
        results = _burst(srv.url, "tiny-queue", 64)
        if any(r.status_code == 429 for _, r in results):
            break
    rejected = [r for _, r in results if r.status_code == 429]
    assert rejected, "no 429 from a queue of one under 64 concurrent requests"
    for r in rejected:
        u.assert_openai_error(r, 429, "queue", "busy", "capacity", "overload", "full",
                              "too many")
        ra = r.headers.get("Retry-After")
        assert ra is not None, f"429 without Retry-After: {dict(r.headers)}"
        assert ra.strip().isdigit() and int(ra) >= 0, f"Retry-After {ra!r} is not delta-seconds"
    served = [(i, r) for i, r in results if r.status_code != 429]
    assert served, "every request was rejected; the queue served none"
    for i, r in served:
        assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
        body = r.json()
        assert body["model"] == "tiny-queue"
        u.assert_close(body["data"][0]["embedding"], REF.embeddings[i], f"sentence {i}")

    after = srv.metrics()
    d429 = after.total("neocloud_requests_total", status="429") - \
        before.total("neocloud_requests_total", status="429")
    assert d429 >= len(rejected)

    # the server recovers once the burst is over
    r = srv.embed({"model": "tiny-queue", "input": REF.sentences[0], "encoding_format": "float"})
    assert r.status_code == 200, r.text[:300]
    u.assert_close(r.json()["data"][0]["embedding"], REF.embeddings[0], "after the burst")


def test_tiny_queue_serves_its_own_name(tiny_queue_server):
    r = requests.get(tiny_queue_server.url + "/v1/models", timeout=u.HTTP_TIMEOUT_S)
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["tiny-queue"]
    r = tiny_queue_server.embed({"model": u.MODEL, "input": "hello"})
    u.assert_openai_error(r, 404, u.MODEL)
