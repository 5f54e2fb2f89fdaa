"""The vector store through the official `qdrant-client` (REST mode) and
plain HTTP: collections, batches of points, search with and without
filters (checked against brute force), scroll, count, delete, payload
indexes, snapshots and restore, bad input, and data that outlives a
restart.
"""

from __future__ import annotations

import math
import random

import pytest
import requests
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

import e2e_util as u

DIM = 8
GENRES = ["sf", "crime", "poetry", "history"]


def _vec(rng: random.Random) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(DIM)]


def _cos(a, b) -> float:
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


@pytest.fixture(scope="module")
def qc(url) -> QdrantClient:
    return QdrantClient(url=url, prefer_grpc=False, timeout=60, check_compatibility=False)


@pytest.fixture(scope="module")
def books(qc):
    """A collection of 600 points with payloads, upserted in batches."""
    name = "books"
    if qc.collection_exists(name):
        qc.delete_collection(name)
    qc.create_collection(name, vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.COSINE))
    rng = random.Random(5)
    points = [(i, _vec(rng), {"genre": GENRES[i % 4], "year": 1900 + i % 120,
                              "title": f"book {i}"}) for i in range(600)]
    for start in range(0, 500, 100):
        chunk = points[start:start + 100]
        r = qc.upsert(name, wait=True, points=[
            models.PointStruct(id=i, vector=v, payload=p) for i, v, p in chunk])
        assert r.status == models.UpdateStatus.COMPLETED
    # The columnar form too.
    last = points[500:]
    qc.upsert(name, points=models.Batch(ids=[p[0] for p in last], vectors=[p[1] for p in last],
                                        payloads=[p[2] for p in last]))
    return name, points


def test_collection_info_and_listing(qc, books):
    name, points = books
    assert qc.collection_exists(name)
    assert not qc.collection_exists("nope")
    info = qc.get_collection(name)
    assert info.points_count == len(points)
    assert info.config.params.vectors.size == DIM
    assert info.config.params.vectors.distance == models.Distance.COSINE
    assert name in [c.name for c in qc.get_collections().collections]


def _truth(points, q, pred, k):
    ranked = sorted(((_cos(v, q), i) for i, v, p in points if pred(p)), reverse=True)
    return [i for _, i in ranked[:k]]


def test_search_without_and_with_filters_matches_brute_force(qc, books):
    name, points = books
    rng = random.Random(9)
    for _ in range(5):
        q = _vec(rng)
        hits = qc.query_points(name, query=q, limit=10, with_payload=True).points
        assert [h.id for h in hits] == _truth(points, q, lambda p: True, 10)
        assert abs(hits[0].score - _cos(points[hits[0].id][1], q)) < 1e-4
        flt = models.Filter(
            must=[models.FieldCondition(key="genre", match=models.MatchValue(value="poetry"))],
            must_not=[models.FieldCondition(key="year", range=models.Range(lt=1950))])
        hits = qc.query_points(name, query=q, limit=5, query_filter=flt).points
        want = _truth(points, q, lambda p: p["genre"] == "poetry" and p["year"] >= 1950, 5)
        assert [h.id for h in hits] == want
        assert all(h.payload["genre"] == "poetry" for h in hits)
    # The classic search endpoint and search/batch over plain HTTP.
    q = _vec(rng)
    r = requests.post(f"{qc._client.rest_uri}/collections/{name}/points/search", timeout=30,
                      json={"vector": q, "limit": 3, "with_payload": ["title"]}).json()
    assert r["status"] == "ok" and "time" in r
    assert [h["id"] for h in r["result"]] == _truth(points, q, lambda p: True, 3)
    assert set(r["result"][0]["payload"]) == {"title"}
    b = requests.post(f"{qc._client.rest_uri}/collections/{name}/points/search/batch",
                      timeout=30, json={"searches": [{"vector": q, "limit": 2},
                                                     {"vector": q, "limit": 1}]}).json()
    assert [len(x) for x in b["result"]] == [2, 1]


def test_scroll_count_retrieve(qc, books):
    name, points = books
    seen, offset = [], None
    while True:
        page, offset = qc.scroll(name, limit=128, offset=offset, with_payload=False)
        seen += [p.id for p in page]
        if offset is None:
            break
    assert seen == sorted(i for i, _, _ in points)
    crime = models.Filter(must=[models.FieldCondition(key="genre",
                                                      match=models.MatchValue(value="crime"))])
    assert qc.count(name, count_filter=crime).count == 150
    got = qc.retrieve(name, ids=[3, 7, 100000], with_vectors=True)
    assert [p.id for p in got] == [3, 7]
    assert got[0].payload["title"] == "book 3"
    assert len(got[0].vector) == DIM


def test_payload_index_delete_and_snapshot_restore(qc, books, server):
    name, points = books
    qc.create_payload_index(name, field_name="genre", field_schema="keyword")
    qc.create_payload_index(name, field_name="year", field_schema="integer")
    schema = qc.get_collection(name).payload_schema
    assert set(schema) == {"genre", "year"}
    snap = qc.create_snapshot(name)
    assert snap.size > 0
    assert snap.name in [s.name for s in qc.list_snapshots(name)]
    qc.delete(name, points_selector=models.PointIdsList(points=[0, 1, 2]))
    qc.delete(name, points_selector=models.FilterSelector(filter=models.Filter(
        must=[models.FieldCondition(key="genre", match=models.MatchValue(value="sf"))])))
    left = qc.count(name).count
    assert left == 600 - 150 - 2  # 0 is "sf"; 1 and 2 are not
    # Filtered search still works through the indexes after deletes.
    q = _vec(random.Random(1))
    hits = qc.query_points(name, query=q, limit=5, query_filter=models.Filter(
        must=[models.FieldCondition(key="year", range=models.Range(gte=2000))])).points
    alive = [(i, v, p) for i, v, p in points if p["genre"] != "sf" and i not in (1, 2)]
    assert [h.id for h in hits] == _truth(alive, q, lambda p: p["year"] >= 2000, 5)
    # Restore the snapshot: everything is back.
    path = server.data_dir / "snapshots" / name / snap.name
    assert path.is_file()
    assert qc.recover_snapshot(name, location=path.as_uri())
    assert qc.count(name).count == 600
    assert set(qc.get_collection(name).payload_schema) == {"genre", "year"}


@pytest.mark.parametrize("method,path,body,status,needle", [
    ("put", "/collections/books/points", {"points": [{"id": 1, "vector": [1, 2]}]}, 400,
     "dimension"),
    ("put", "/collections/books/points", {"points": [{"id": -4, "vector": [0] * DIM}]}, 400,
     "points[0].id"),
    ("post", "/collections/books/points/search", {"vector": [1e39] + [0] * (DIM - 1)}, 400,
     "finite"),
    ("post", "/collections/nope/points/search", {"vector": [0] * DIM}, 404, "nope"),
    ("post", "/collections/books/points/search",
     {"vector": [0] * DIM, "filter": {"must": [{"key": "year", "range": {}}]}}, 400, "range"),
    ("post", "/collections/books/points/scroll", {"filter": {"must": [{"wat": 1}]}}, 400,
     "must[0]"),
    ("put", "/collections/bad", {"vectors": {"size": 0, "distance": "Cosine"}}, 400, "size"),
    ("put", "/collections/bad", {"vectors": {"size": 4, "distance": "Hamming"}}, 400,
     "distance"),
    ("put", "/collections/books", {"vectors": {"size": 4, "distance": "Dot"}}, 400,
     "already exists"),
    ("put", "/collections/bad", {"vectors": {"size": 4, "distance": "Dot"},
                                 "quantization_config": {"product": {"compression": "x4"}}},
     400, "quantization_config.product"),
    ("put", "/collections/bad", {"vectors": {"size": 4, "distance": "Dot"},
                                 "quantization_config": {"scalar": {"type": "int8",
                                                                    "quantile": 2}}},
     400, "quantile"),
    ("post", "/collections/books/points/search",
     {"vector": [0] * DIM, "params": {"quantization": {"oversampling": 0.5}}}, 400,
     "oversampling"),
])
def test_bad_input_gets_a_4xx_naming_the_problem(url, books, method, path, body, status,
                                                  needle):
    r = getattr(requests, method)(url + path, json=body, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["status"]["error"]
    assert needle in err, err


def test_nan_is_refused(url, books):
    body = '{"points": [{"id": 1, "vector": [NaN, 0, 0, 0, 0, 0, 0, 0]}]}'
    r = requests.put(url + "/collections/books/points", data=body,
                     headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text


def test_the_client_raises_on_errors(qc):
    with pytest.raises(UnexpectedResponse):
        qc.get_collection("does-not-exist")


EMBED_ONLY = u.TINY_QUEUE_CONFIG.split("---")[0]


def test_data_outlives_a_restart(tmp_path, cache_dir):
    server = u.Server(tmp_path, cache_dir, config=EMBED_ONLY, name="restart")
    server.start()
    try:
        qc = QdrantClient(url=server.url, prefer_grpc=False, check_compatibility=False)
        qc.create_collection("keep", vectors_config=models.VectorParams(
            size=3, distance=models.Distance.EUCLID))
        qc.upsert("keep", points=[models.PointStruct(id=i, vector=[i, 0, 0],
                                                     payload={"n": i}) for i in range(50)])
        qc.delete("keep", points_selector=models.PointIdsList(points=[7]))
        assert server.stop() == 0
        server.start()
        qc = QdrantClient(url=server.url, prefer_grpc=False, check_compatibility=False)
        assert qc.count("keep").count == 49
        hit = qc.query_points("keep", query=[10.2, 0, 0], limit=1).points[0]
        assert hit.id == 10 and hit.payload == {"n": 10}
        assert abs(hit.score - 0.2) < 1e-5
    finally:
        server.stop()
        server.kill()


PASSAGES = [
    "The cat sat on the warm windowsill and purred.",
    "Stock markets fell sharply after the interest rate decision.",
    "A recipe for bread: flour, water, salt and yeast.",
    "The spacecraft entered orbit around Mars after a seven month journey.",
]


def test_text_in_vectors_out(url):
    """A collection that names an embedding service takes text for points
    and queries (Qdrant's inference objects), embedded through the same
    batching path as /v1/embeddings, and answers text retrieval."""
    r = requests.put(url + "/collections/docs", timeout=30, json={
        "vectors": {"size": u.DIM, "distance": "Cosine"}, "embed": u.MODEL})
    assert r.status_code == 200, r.text
    qc = QdrantClient(url=url, prefer_grpc=False, check_compatibility=False,
                      cloud_inference=True)
    qc.upsert("docs", points=[
        models.PointStruct(id=i, vector=models.Document(text=t, model=u.MODEL),
                           payload={"text": t})
        for i, t in enumerate(PASSAGES)])
    # Without "model": the collection's embed service.
    r = requests.put(url + "/collections/docs/points", timeout=30, json={
        "points": [{"id": 9, "vector": {"text": "Dogs love to play fetch in the park."},
                    "payload": {"text": "Dogs love to play fetch in the park."}}]})
    assert r.status_code == 200, r.text
    # The stored vectors are the embeddings /v1/embeddings gives.
    want = requests.post(url + "/v1/embeddings", timeout=30, json={
        "model": u.MODEL, "input": PASSAGES[0]}).json()["data"][0]["embedding"]
    got = qc.retrieve("docs", ids=[0], with_vectors=True)[0].vector
    assert _cos(got, want) > 0.9999
    hits = qc.query_points("docs", query=models.Document(text="a sleepy kitten", model=u.MODEL),
                           limit=2).points
    assert hits[0].id == 0
    r = requests.post(url + "/collections/docs/retrieve", timeout=30,
                      json={"query": "rocket to the red planet", "limit": 2}).json()
    top = r["result"]["passages"][0]
    assert top["id"] == 3 and top["text"] == PASSAGES[3] and top["score"] > 0.3
    assert len(r["result"]["passages"]) == 2
    # Text needs a service: a collection without one says so.
    requests.put(url + "/collections/plain", timeout=30,
                 json={"vectors": {"size": u.DIM, "distance": "Cosine"}})
    r = requests.post(url + "/collections/plain/retrieve", timeout=30, json={"query": "x"})
    assert r.status_code == 400 and "embed" in r.json()["status"]["error"]
    r = requests.put(url + "/collections/docs/points", timeout=30, json={
        "points": [{"id": 1, "vector": {"text": "x", "model": "nope"}}]})
    assert r.status_code == 400 and "nope" in r.json()["status"]["error"]


def test_int8_quantization_with_rescoring(qc):
    """A quantized collection walks its graph on int8 codes; rescoring puts
    the exact scores back, and `rescore=False` shows the codes' own."""
    name, dim = "quantized", 32
    if qc.collection_exists(name):
        qc.delete_collection(name)
    qc.create_collection(
        name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
        quantization_config=models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=0.99, always_ram=True)))
    info = qc.get_collection(name)
    assert info.config.quantization_config.scalar.type == models.ScalarType.INT8
    assert info.config.quantization_config.scalar.quantile == pytest.approx(0.99)
    rng = random.Random(21)
    data = [[rng.uniform(-1, 1) for _ in range(dim)] for _ in range(3000)]
    for start in range(0, len(data), 500):
        qc.upsert(name, points=models.Batch(ids=list(range(start, start + 500)),
                                            vectors=data[start:start + 500]))
    rescored = models.SearchParams(quantization=models.QuantizationSearchParams(
        rescore=True, oversampling=2.0))
    raw = models.SearchParams(quantization=models.QuantizationSearchParams(rescore=False))
    found, moved = 0, 0
    for _ in range(20):
        q = [rng.uniform(-1, 1) for _ in range(dim)]
        truth = sorted(range(len(data)), key=lambda i: -_cos(data[i], q))[:10]
        hits = qc.query_points(name, query=q, limit=10, search_params=rescored).points
        found += len({h.id for h in hits} & set(truth))
        for h in hits:
            assert h.score == pytest.approx(_cos(data[h.id], q), abs=1e-5)
        for h in qc.query_points(name, query=q, limit=10, search_params=raw).points:
            assert h.score == pytest.approx(_cos(data[h.id], q), abs=0.05)
            moved += abs(h.score - _cos(data[h.id], q)) > 1e-5
    assert found / 200 >= 0.9, found
    assert moved > 0, "rescore=False still gave exact scores: the codes were not used"
    qc.delete_collection(name)


FACTS = [
    "The office cat at the Lisbon branch is named Biscuit.",
    "The quarterly planning meeting takes place in room 4B.",
    "Our backup generator runs on diesel and was installed in 2019.",
    "The cafeteria serves soup every Thursday.",
]


def test_retrieval_augmented_generation(url):
    """`/retrieve` with `generate`: the served chat model answers from the
    retrieved passages, so it knows a fact only the collection holds."""
    r = requests.put(url + "/collections/facts", timeout=30, json={
        "vectors": {"size": u.DIM, "distance": "Cosine"}, "embed": u.MODEL})
    assert r.status_code == 200, r.text
    r = requests.put(url + "/collections/facts/points", timeout=30, json={
        "points": [{"id": i, "vector": {"text": t}, "payload": {"text": t}}
                   for i, t in enumerate(FACTS)]})
    assert r.status_code == 200, r.text
    question = "What is the name of the office cat?"
    r = requests.post(url + "/collections/facts/retrieve", timeout=120, json={
        "query": question, "limit": 2,
        "generate": {"model": u.LLM, "max_tokens": 48, "temperature": 0}})
    assert r.status_code == 200, r.text
    res = r.json()["result"]
    assert res["passages"][0]["id"] == 0
    answer = res["answer"]
    assert answer["model"] == u.LLM
    assert "Biscuit" in answer["text"], answer
    assert answer["finish_reason"] in ("stop", "length")
    # The prompt carried the passages: far more tokens than the question.
    assert answer["usage"]["prompt_tokens"] > 60, answer["usage"]
    # Without retrieval the model cannot know the name.
    bare = requests.post(url + "/v1/chat/completions", timeout=120, json={
        "model": u.LLM, "max_tokens": 48, "temperature": 0,
        "messages": [{"role": "user", "content": question}]}).json()
    assert "Biscuit" not in bare["choices"][0]["message"]["content"]
    # Bad generation requests are refused before any work, naming the field.
    for gen, needle in [({"max_tokens": 5}, "generate.model"),
                        ({"model": "nope"}, "nope"),
                        ({"model": u.LLM, "stream": True}, "generate.stream"),
                        ({"model": u.LLM, "temperature": -1}, "temperature"),
                        ("gpt", "generate")]:
        r = requests.post(url + "/collections/facts/retrieve", timeout=60,
                          json={"query": question, "generate": gen})
        assert r.status_code == 400, (gen, r.text)
        assert needle in r.json()["status"]["error"], (gen, r.text)
    # An embedding model is not a chat model.
    r = requests.post(url + "/collections/facts/retrieve", timeout=60,
                      json={"query": question, "generate": {"model": u.MODEL}})
    assert r.status_code == 400 and u.MODEL in r.json()["status"]["error"], r.text
