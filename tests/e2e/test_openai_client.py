"""The OpenAI-compatible API, driven by the official `openai` Python client.

Every vector is compared with the sentence-transformers reference in
tests/fixtures/minilm_reference.json (cosine >= 0.9999), alone and in batches.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

import e2e_util as u

REF = u.load_reference()
N = len(REF.sentences)


@pytest.fixture(scope="module")
def client(url) -> openai.OpenAI:
    c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                      timeout=u.HTTP_TIMEOUT_S)
    yield c
    c.close()


def check_response(resp, indices: list[int], *, tokens: int | None = None) -> None:
    """resp answers REF.sentences[i] for i in indices, in order."""
    assert resp.object == "list"
    assert resp.model == u.MODEL
    assert len(resp.data) == len(indices)
    for pos, (item, i) in enumerate(zip(resp.data, indices)):
        assert item.object == "embedding"
        assert item.index == pos
        assert isinstance(item.embedding, list), type(item.embedding)
        u.assert_close(item.embedding, REF.embeddings[i], f"sentence {i} at {pos}")
    want = sum(u.expected_prompt_tokens(REF.token_counts[i]) for i in indices)
    if tokens is not None:
        want = tokens
    assert resp.usage.prompt_tokens == want
    assert resp.usage.total_tokens == resp.usage.prompt_tokens


@pytest.mark.parametrize("i", range(N), ids=lambda i: f"s{i}")
def test_single_string_default_format(client, i):
    # The client asks for base64 by default and decodes it to floats.
    resp = client.embeddings.create(model=u.MODEL, input=REF.sentences[i])
    check_response(resp, [i])


@pytest.mark.parametrize("i", [0, 3, 8, 10, 19, N - 3], ids=lambda i: f"s{i}")
def test_single_string_float_format(client, i):
    resp = client.embeddings.create(model=u.MODEL, input=REF.sentences[i],
                                    encoding_format="float")
    check_response(resp, [i])


def test_explicit_base64_is_little_endian_f32(client):
    idx = [1, 4, 9, N - 1]
    resp = client.embeddings.create(model=u.MODEL, input=[REF.sentences[i] for i in idx],
                                    encoding_format="base64")
    assert len(resp.data) == len(idx)
    for pos, (item, i) in enumerate(zip(resp.data, idx)):
        assert item.index == pos
        assert isinstance(item.embedding, str), "asked for base64, got no string"
        u.assert_close(u.decode_b64_f32(item.embedding), REF.embeddings[i], f"sentence {i}")


def test_base64_and_float_agree(url):
    text = REF.sentences[5]
    f = requests.post(url + "/v1/embeddings", timeout=u.HTTP_TIMEOUT_S,
                      json={"model": u.MODEL, "input": text, "encoding_format": "float"})
    b = requests.post(url + "/v1/embeddings", timeout=u.HTTP_TIMEOUT_S,
                      json={"model": u.MODEL, "input": text, "encoding_format": "base64"})
    assert f.status_code == 200 and b.status_code == 200, (f.text[:300], b.text[:300])
    vf = f.json()["data"][0]["embedding"]
    vb = u.decode_b64_f32(b.json()["data"][0]["embedding"])
    assert all(isinstance(x, float) for x in vf)
    # The same vector: base64 carries the f32 values exactly.
    assert len(vf) == len(vb) == u.DIM
    assert max(abs(x - y) for x, y in zip(vf, vb)) < 1e-6


def test_whole_fixture_in_one_request(client):
    resp = client.embeddings.create(model=u.MODEL, input=REF.sentences)
    check_response(resp, list(range(N)))


def test_whole_fixture_in_one_request_float(client):
    resp = client.embeddings.create(model=u.MODEL, input=REF.sentences,
                                    encoding_format="float")
    check_response(resp, list(range(N)))


def test_shuffled_subsets_concurrently(client):
    """Shuffled, overlapping subsets (with duplicates) sent at the same time."""
    rng = random.Random(1234)
    jobs = []
    for _ in range(12):
        k = rng.randint(1, N)
        idx = rng.sample(range(N), k)
        if k > 2:
            idx.append(idx[0])  # a duplicate inside one request
        rng.shuffle(idx)
        jobs.append(idx)

    def run(idx):
        # odd sizes ask for floats, even ones take the client's default (base64)
        kw = {"encoding_format": "float"} if len(idx) % 2 else {}
        return client.embeddings.create(model=u.MODEL, input=[REF.sentences[i] for i in idx],
                                        **kw)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(run, jobs))
    for idx, resp in zip(jobs, results):
        check_response(resp, idx)


def test_token_ids_single(client):
    for i in (0, 3, 10, N - 2):
        resp = client.embeddings.create(model=u.MODEL, input=REF.token_ids[i])
        check_response(resp, [i])


def test_token_ids_batch(client):
    idx = [2, 7, 11, 0, N - 1, 15]
    resp = client.embeddings.create(model=u.MODEL, input=[REF.token_ids[i] for i in idx],
                                    encoding_format="float")
    check_response(resp, idx)


def test_token_ids_equal_text(client):
    i = 6
    by_text = client.embeddings.create(model=u.MODEL, input=REF.sentences[i])
    by_ids = client.embeddings.create(model=u.MODEL, input=REF.token_ids[i])
    assert u.cosine(by_text.data[0].embedding, by_ids.data[0].embedding) >= 0.99999
    assert by_text.usage.prompt_tokens == by_ids.usage.prompt_tokens


def test_dimensions_384_and_user_ignored(client):
    resp = client.embeddings.create(model=u.MODEL, input=REF.sentences[3], dimensions=384,
                                    user="someone@example.com")
    check_response(resp, [3])


def test_dimensions_other_rejected(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=u.MODEL, input="hello", dimensions=128)
    assert e.value.status_code == 400
    assert "dimensions" in str(e.value).lower()


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="no-such-model", input="hello")
    assert e.value.status_code == 404
    assert "no-such-model" in str(e.value)


def test_truncate_via_extra_body(client):
    long = REF.long_inputs[0]
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=u.MODEL, input=long["text"])
    resp = client.embeddings.create(model=u.MODEL, input=long["text"],
                                    extra_body={"truncate": True})
    assert len(resp.data) == 1
    u.assert_close(resp.data[0].embedding, long["embedding"], "truncated long input")
    assert resp.usage.prompt_tokens == u.expected_prompt_tokens(u.MAX_TOKENS)


def test_models_list(client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [u.MODEL, u.LLM]  # embedding and generation models together
    m = models.data[0]
    assert m.object == "model"
    assert m.owned_by == "neocloud"
    assert isinstance(m.created, int) and m.created > 0


def test_models_list_raw_shape(url):
    r = requests.get(url + "/v1/models", timeout=u.HTTP_TIMEOUT_S)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert len(body["data"]) == 2
    m = body["data"][0]
    assert set(m) == {"id", "object", "created", "owned_by"}
    assert (m["id"], m["object"], m["owned_by"]) == (u.MODEL, "model", "neocloud")
    assert isinstance(m["created"], int)


def test_raw_response_shape(url):
    r = requests.post(url + "/v1/embeddings", timeout=u.HTTP_TIMEOUT_S,
                      json={"model": u.MODEL, "input": REF.sentences[:3],
                            "encoding_format": "float"})
    assert r.status_code == 200, r.text[:300]
    assert "application/json" in r.headers["content-type"]
    body = r.json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list" and body["model"] == u.MODEL
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    for pos, item in enumerate(body["data"]):
        assert set(item) == {"object", "index", "embedding"}
        assert item["object"] == "embedding" and item["index"] == pos
        u.assert_close(item["embedding"], REF.embeddings[pos], f"sentence {pos}")
