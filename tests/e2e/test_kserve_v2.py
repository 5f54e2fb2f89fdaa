"""The KServe v2 (Open Inference Protocol) endpoints and /metrics."""

from __future__ import annotations

import pytest
import requests

import e2e_util as u

REF = u.load_reference()
N = len(REF.sentences)
M = u.MODEL
T = u.HTTP_TIMEOUT_S


def infer(url: str, body, model: str = M) -> requests.Response:
    if isinstance(body, bytes):
        return requests.post(f"{url}/v2/models/{model}/infer", data=body, timeout=T,
                             headers={"Content-Type": "application/json"})
    return requests.post(f"{url}/v2/models/{model}/infer", json=body, timeout=T)


def text_input(texts: list[str], shape=None, datatype="BYTES", name="text") -> dict:
    return {"name": name, "shape": [len(texts)] if shape is None else shape,
            "datatype": datatype, "data": texts}


def rows(output: dict) -> list[list[float]]:
    n, d = output["shape"]
    flat = output["data"]
    assert len(flat) == n * d, f"{len(flat)} values for shape {output['shape']}"
    return [flat[k * d:(k + 1) * d] for k in range(n)]


# --------------------------------------------------------------------------
# server and model metadata


def test_server_metadata(url):
    r = requests.get(url + "/v2", timeout=T)
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "neocloud"
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["extensions"], list)
    assert all(isinstance(e, str) for e in body["extensions"])


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready"])
def test_health(url, path):
    assert requests.get(url + path, timeout=T).status_code == 200


def test_model_metadata(url):
    r = requests.get(f"{url}/v2/models/{M}", timeout=T)
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["name"] == M
    assert isinstance(body["versions"], list)
    assert isinstance(body["platform"], str) and body["platform"]
    assert body["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert body["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]


def test_model_ready(url):
    assert requests.get(f"{url}/v2/models/{M}/ready", timeout=T).status_code == 200


def test_unknown_model_metadata_and_ready(url):
    r = requests.get(url + "/v2/models/no-such-model", timeout=T)
    u.assert_v2_error(r, 404, "no-such-model")
    r = requests.get(url + "/v2/models/no-such-model/ready", timeout=T)
    assert r.status_code == 404


# --------------------------------------------------------------------------
# inference


def test_infer_two_texts_with_id(url):
    idx = [3, 8]
    r = infer(url, {"id": "req-42", "inputs": [text_input([REF.sentences[i] for i in idx])]})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["model_name"] == M
    assert body["id"] == "req-42"
    assert len(body["outputs"]) == 1
    out = body["outputs"][0]
    assert out["name"] == "embedding" and out["datatype"] == "FP32"
    assert out["shape"] == [2, 384]
    for row, i in zip(rows(out), idx):
        u.assert_close(row, REF.embeddings[i], f"sentence {i}")


def test_infer_without_id(url):
    r = infer(url, {"inputs": [text_input([REF.sentences[0]])]})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["model_name"] == M
    assert body.get("id") in (None, "")
    u.assert_close(rows(body["outputs"][0])[0], REF.embeddings[0], "sentence 0")


def test_infer_whole_fixture(url):
    r = infer(url, {"id": "all", "inputs": [text_input(REF.sentences)]})
    assert r.status_code == 200, r.text[:300]
    out = r.json()["outputs"][0]
    assert out["shape"] == [N, 384]
    for i, row in enumerate(rows(out)):
        u.assert_close(row, REF.embeddings[i], f"sentence {i}")


# (id, body, message keywords); all 400
BAD = [
    ("bad-json", b'{"inputs": [', ("json", "parse", "eof", "expected", "invalid")),
    ("missing-inputs", {"id": "x"}, ("inputs",)),
    ("empty-inputs", {"inputs": []}, ("inputs", "input", "empty")),
    ("inputs-not-list", {"inputs": "hello"}, ("inputs", "sequence", "invalid")),
    ("wrong-datatype", {"inputs": [text_input(["a"], datatype="FP32")]},
     ("datatype", "bytes", "fp32")),
    ("shape-mismatch", {"inputs": [text_input(["a", "b"], shape=[3])]},
     ("shape",)),
    ("data-not-strings", {"inputs": [text_input([1, 2])]}, ("data", "string", "bytes")),
]


@pytest.mark.parametrize("body,keywords", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_infer_bad_request(url, body, keywords):
    u.assert_v2_error(infer(url, body), 400, *keywords)


def test_infer_unknown_model(url):
    r = infer(url, {"inputs": [text_input(["hello"])]}, model="no-such-model")
    u.assert_v2_error(r, 404, "no-such-model")


# --------------------------------------------------------------------------
# /metrics

FAMILIES = {
    "neocloud_requests_total": "counter",
    "neocloud_request_duration_seconds": "histogram",
    "neocloud_queue_duration_seconds": "histogram",
    "neocloud_inference_duration_seconds": "histogram",
    "neocloud_batch_size": "histogram",
    "neocloud_batch_tokens": "histogram",
    "neocloud_queue_depth": "gauge",
}


def test_metrics_families(url, server):
    # make sure every family has samples
    assert server.embed({"model": M, "input": "warm up"}).status_code == 200
    r = requests.get(url + "/metrics", timeout=T)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    m = u.parse_metrics(r.text)
    for name, kind in FAMILIES.items():
        assert m.types.get(name) == kind, f"{name}: TYPE {m.types.get(name)!r}, want {kind}"
    labels = [lab for lab, _ in m.select("neocloud_requests_total")]
    assert labels, "neocloud_requests_total has no samples"
    assert all({"model", "endpoint", "status"} <= set(lab) for lab in labels), labels
    depth = m.select("neocloud_queue_depth", model=M)
    assert depth, "no neocloud_queue_depth{model=...} sample"
    assert all(v >= 0 for _, v in depth)


def test_metrics_count_requests(server):
    before = server.metrics()
    ok = 0
    for i in (0, 1, 2):
        r = server.embed({"model": M, "input": REF.sentences[i]})
        assert r.status_code == 200
        ok += 1
    r = infer(server.url, {"inputs": [text_input(REF.sentences[3:5])]})
    assert r.status_code == 200
    ok += 1
    bad = server.embed({"model": M, "input": ""})
    assert bad.status_code == 400
    after = server.metrics()

    def delta(name, **labels):
        return after.total(name, **labels) - before.total(name, **labels)

    assert delta("neocloud_requests_total", model=M, status="200") >= ok
    assert delta("neocloud_requests_total", status="400") >= 1
    # both front ends are counted, under different endpoint labels
    endpoints = {lab["endpoint"] for lab, _ in after.select("neocloud_requests_total", model=M)}
    assert len(endpoints) >= 2, endpoints
    assert delta("neocloud_request_duration_seconds_count") >= ok
    # five inputs in four requests went through the model
    for name in ("neocloud_queue_duration_seconds_count",
                 "neocloud_inference_duration_seconds_count",
                 "neocloud_batch_size_count", "neocloud_batch_tokens_count"):
        assert delta(name) >= 1, name
    assert delta("neocloud_batch_size_sum") >= 4
    tokens = sum(REF.token_counts[i] for i in range(5))
    assert delta("neocloud_batch_tokens_sum") >= tokens - 2 * 5
    assert after.total("neocloud_queue_depth", model=M) >= 0
