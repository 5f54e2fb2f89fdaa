"""Concurrent requests of different lengths: batching must never mix answers.

Each request carries one input and is checked against its own reference
vector; the batch-size histogram shows that requests really were batched.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import requests

import e2e_util as u

REF = u.load_reference()
N = len(REF.sentences)

REQUESTS = 64
THREADS = 32


def _plan(seed: int, n: int) -> list[int]:
    """n fixture indices, every sentence at least once, long and short mixed."""
    rng = random.Random(seed)
    if n < N:
        return rng.sample(range(N), n)
    idx = list(range(N)) + rng.choices(range(N), k=n - N)
    rng.shuffle(idx)
    return idx


def _fire(url: str, payloads: list[dict], threads: int) -> list[requests.Response]:
    barrier = threading.Barrier(min(threads, len(payloads)))
    local = threading.local()

    def one(k: int) -> requests.Response:
        if not hasattr(local, "s"):
            local.s = requests.Session()
            barrier.wait()  # first wave starts together
        return local.s.post(url + "/v1/embeddings", json=payloads[k], timeout=u.HTTP_TIMEOUT_S)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, range(len(payloads))))


def test_concurrent_single_texts(server):
    idx = _plan(7, REQUESTS)
    assert set(idx) == set(range(N))
    before = server.metrics()
    payloads = [
        {"model": u.MODEL, "input": REF.sentences[i],
         "encoding_format": "float" if k % 2 else "base64"}
        for k, i in enumerate(idx)
    ]
    responses = _fire(server.url, payloads, THREADS)
    for k, (i, r) in enumerate(zip(idx, responses)):
        assert r.status_code == 200, f"request {k}: {r.status_code} {r.text[:300]}"
        body = r.json()
        assert len(body["data"]) == 1 and body["data"][0]["index"] == 0
        v = body["data"][0]["embedding"]
        if isinstance(v, str):
            assert payloads[k]["encoding_format"] == "base64"
            v = u.decode_b64_f32(v)
        else:
            assert payloads[k]["encoding_format"] == "float"
        u.assert_close(v, REF.embeddings[i], f"request {k} (sentence {i})")
        assert body["usage"]["prompt_tokens"] == u.expected_prompt_tokens(REF.token_counts[i])

    after = server.metrics()
    ones0, all0 = u.batch_size_buckets(before, u.MODEL)
    ones1, all1 = u.batch_size_buckets(after, u.MODEL)
    batches, singles = all1 - all0, ones1 - ones0
    assert 0 < batches <= REQUESTS, f"{batches} batches for {REQUESTS} requests"
    # 64 requests from 32 threads at once cannot all have run alone:
    # at least one batch held more than one request.
    assert singles < batches, "no batch ever held more than one request"


def test_concurrent_mixed_inputs(server):
    """Lists of texts, token ids and single texts, all at the same time."""
    rng = random.Random(99)
    jobs = []
    for k in range(48):
        kind = k % 4
        if kind == 0:
            idx = [rng.randrange(N)]
            inp = REF.sentences[idx[0]]
        elif kind == 1:
            idx = rng.sample(range(N), rng.randint(2, 6))
            inp = [REF.sentences[i] for i in idx]
        elif kind == 2:
            idx = [rng.randrange(N)]
            inp = REF.token_ids[idx[0]]
        else:
            idx = rng.sample(range(N), rng.randint(2, 5))
            inp = [REF.token_ids[i] for i in idx]
        jobs.append((idx, {"model": u.MODEL, "input": inp, "encoding_format": "float"}))

    responses = _fire(server.url, [p for _, p in jobs], 24)
    for k, ((idx, _), r) in enumerate(zip(jobs, responses)):
        assert r.status_code == 200, f"job {k}: {r.status_code} {r.text[:300]}"
        data = r.json()["data"]
        assert [d["index"] for d in data] == list(range(len(idx)))
        for d, i in zip(data, idx):
            u.assert_close(d["embedding"], REF.embeddings[i], f"job {k} sentence {i}")
