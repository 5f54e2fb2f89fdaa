"""Generation beyond the OpenAI surface: KServe v2's generate extension, a
client that goes away mid-stream, the prefix cache, `neocloud chat`, and a
second architecture (Gemma 3) with its own chat template.

Greedy outputs are compared with each other across APIs, never with
hard-coded text, except that a question about France's capital must name
Paris.
"""

from __future__ import annotations

import socket
import subprocess
import time

import openai
import pytest
import requests

import e2e_util as u

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
PROMPT = "The capital of France is"


def generate(url, model, body, status=200):
    r = requests.post(f"{url}/v2/models/{model}/generate", json=body, timeout=u.HTTP_TIMEOUT_S)
    assert r.status_code == status, r.text[:300]
    return r.json()


def test_kserve_generate_matches_openai_completions(url):
    body = generate(url, u.LLM, {"text_input": PROMPT,
                                 "parameters": {"max_tokens": 8, "temperature": 0}})
    assert body["model_name"] == u.LLM and body["model_version"] == "1"
    assert "Paris" in body["text_output"]
    assert body["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 8
    oa = requests.post(url + "/v1/completions", timeout=u.HTTP_TIMEOUT_S, json={
        "model": u.LLM, "prompt": PROMPT, "max_tokens": 8, "temperature": 0}).json()
    assert body["text_output"] == oa["choices"][0]["text"]
    # Triton's style: the knobs at the top level.
    top = generate(url, u.LLM, {"text_input": PROMPT, "max_tokens": 8, "temperature": 0})
    assert top["text_output"] == body["text_output"]


def test_kserve_generate_stream_matches_generate(server):
    body = {"text_input": "List three colours:", "parameters": {"max_tokens": 24,
                                                                "temperature": 0}}
    whole = generate(server.url, u.LLM, body)
    events = server.sse(f"/v2/models/{u.LLM}/generate_stream", body)
    assert len(events) > 3, "the answer arrived in pieces"
    assert all(e["model_name"] == u.LLM for e in events)
    assert "".join(e["text_output"] for e in events) == whole["text_output"]
    assert events[-1]["finish_reason"] == whole["finish_reason"]
    assert events[-1]["usage"] == whole["usage"]
    assert all("finish_reason" not in e for e in events[:-1])


@pytest.mark.parametrize("model,body,status,needle", [
    (u.LLM, {"parameters": {"max_tokens": 4}}, 400, "text_input"),
    (u.LLM, {"text_input": ""}, 400, "text_input"),
    (u.LLM, {"text_input": "hi", "parameters": {"max_tokens": -1}}, 400, "max_tokens"),
    (u.LLM, {"text_input": "hi", "parameters": "fast"}, 400, "parameters"),
    (u.LLM, {"text_input": "word " * 5000}, 400, "maximum"),
    ("nope", {"text_input": "hi"}, 404, "nope"),
    (u.MODEL, {"text_input": "hi"}, 400, "embedding"),
])
def test_kserve_generate_bad_input(url, model, body, status, needle):
    for path in ("generate", "generate_stream"):
        r = requests.post(f"{url}/v2/models/{model}/{path}", json=body,
                          timeout=u.HTTP_TIMEOUT_S)
        u.assert_v2_error(r, status, needle)


def test_kserve_metadata_describes_the_generative_model(url):
    meta = requests.get(f"{url}/v2/models/{u.LLM}", timeout=u.HTTP_TIMEOUT_S).json()
    assert meta["platform"] == "neocloud_llama_cpp"
    assert [i["name"] for i in meta["inputs"]] == ["text_input"]
    assert [o["name"] for o in meta["outputs"]] == ["text_output"]
    assert requests.get(f"{url}/v2/models/{u.LLM}/ready",
                        timeout=u.HTTP_TIMEOUT_S).status_code == 200
    assert "generate" in requests.get(url + "/v2", timeout=u.HTTP_TIMEOUT_S).json()["extensions"]
    r = requests.post(f"{url}/v2/models/{u.LLM}/infer", timeout=u.HTTP_TIMEOUT_S, json={
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})
    u.assert_v2_error(r, 400, "generate")


def _llm_metric(server, name, **labels) -> float:
    return server.metrics().total(name, model_name=u.LLM, **labels)


def test_a_client_that_disconnects_frees_its_sequence(server):
    """Reads a few tokens of a long answer, hangs up, and watches the engine
    let go of the sequence long before the answer would have ended."""
    aborted = _llm_metric(server, "vllm:request_success_total", finished_reason="abort")
    body = (b'{"model":"%s","stream":true,"max_tokens":1500,"temperature":0,'
            b'"messages":[{"role":"user","content":"Write a very long story about a dragon."}]}'
            % u.LLM.encode())
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                  + body)
        got = b""
        while got.count(b"data:") < 4:
            chunk = s.recv(4096)
            assert chunk, "the server closed the stream early"
            got += chunk
        assert _llm_metric(server, "vllm:num_requests_running") == 1
    hung_up = time.monotonic()
    while _llm_metric(server, "vllm:num_requests_running") != 0:
        assert time.monotonic() - hung_up < 5, "the sequence is still running"
        time.sleep(0.05)
    assert _llm_metric(server, "vllm:request_success_total", finished_reason="abort") \
        == aborted + 1


def test_prefix_cache_reuses_a_shared_system_prompt(server):
    notes = "".join(f"Note {i}: shelf {i} holds {i * 3 % 17} blue books.\n" for i in range(40))
    system = {"role": "system", "content": "You are a helpful assistant. Notes:\n" + notes}
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    hits = _llm_metric(server, "vllm:prefix_cache_hits_total")
    queries = _llm_metric(server, "vllm:prefix_cache_queries_total")
    answers = []
    for q in ("How many books are on shelf 4?", "Which shelf has the most books?"):
        r = client.chat.completions.create(model=u.LLM, temperature=0, max_tokens=16,
                                           messages=[system, {"role": "user", "content": q}])
        answers.append(r)
    shared = requests.post(server.url + "/tokenize", timeout=u.HTTP_TIMEOUT_S, json={
        "model": u.LLM, "messages": [system]}).json()["count"]
    assert shared > 400
    new_hits = _llm_metric(server, "vllm:prefix_cache_hits_total") - hits
    new_queries = _llm_metric(server, "vllm:prefix_cache_queries_total") - queries
    assert new_queries == sum(r.usage.prompt_tokens for r in answers)
    # The second prompt reused (at least) the system message's tokens.
    assert new_hits >= shared - 8, (new_hits, shared)


def _chat_cli(*args, stdin: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(u.neocloud_bin()), "chat", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def test_chat_cli_streams_answers_and_keeps_the_conversation(server):
    r = _chat_cli(u.LLM, "--url", server.url, "--temperature", "0", "--max-tokens", "40",
                  "--system", SYSTEM["content"],
                  stdin="What is the capital of France?\nAnd what is its population?\n")
    assert r.returncode == 0, r.stderr
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    first = client.chat.completions.create(
        model=u.LLM, temperature=0, max_tokens=40,
        messages=[SYSTEM, {"role": "user", "content": "What is the capital of France?"}])
    answer = first.choices[0].message.content
    assert "Paris" in answer
    assert r.stdout.startswith(answer + "\n"), r.stdout
    # The second turn was asked with the first in context.
    second = client.chat.completions.create(
        model=u.LLM, temperature=0, max_tokens=40,
        messages=[SYSTEM, {"role": "user", "content": "What is the capital of France?"},
                  {"role": "assistant", "content": answer},
                  {"role": "user", "content": "And what is its population?"}])
    assert r.stdout == answer + "\n" + second.choices[0].message.content + "\n"


def test_chat_cli_names_the_models_when_the_model_is_unknown(server):
    r = _chat_cli("nope", "--url", server.url, stdin="hi\n")
    assert r.returncode == 1
    assert "nope" in r.stderr and u.LLM in r.stderr, r.stderr


# ---------------------------------------------------------------- Gemma 3


def test_gemma_loads_chats_and_completes(gemma_server):
    client = openai.OpenAI(base_url=gemma_server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == [u.GEMMA]
    # A base model of 270M parameters: it continues a sequence, it does not
    # know capitals.
    r = client.completions.create(model=u.GEMMA, prompt="1, 2, 3, 4, 5,", max_tokens=8,
                                  temperature=0)
    assert r.choices[0].text.startswith(" 6, 7"), r.choices[0].text
    assert r.usage.completion_tokens <= 8
    # Gemma's own template: turns marked <start_of_turn>user / model.
    t = requests.post(gemma_server.url + "/tokenize", timeout=u.HTTP_TIMEOUT_S, json={
        "model": u.GEMMA, "messages": [{"role": "user", "content": "Hi"}]}).json()
    back = requests.post(gemma_server.url + "/detokenize", timeout=u.HTTP_TIMEOUT_S, json={
        "model": u.GEMMA, "tokens": t["tokens"]}).json()["prompt"]
    assert "<start_of_turn>user" in back and back.endswith("<start_of_turn>model\n"), back
    chat = client.chat.completions.create(
        model=u.GEMMA, temperature=0, max_tokens=24,
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert chat.choices[0].message.content.strip()
    assert chat.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=u.GEMMA, temperature=0, max_tokens=24, stream=True,
            messages=[{"role": "user", "content": "What is the capital of France?"}])
        if c.choices)
    assert streamed == chat.choices[0].message.content
