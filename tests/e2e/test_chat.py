"""Chat and completions on SmolLM2 through the official `openai` client.

The default server serves `smollm2-135m-instruct` on llama.cpp next to the
embedding model. Greedy answers are compared with each other (streamed vs
not, alone vs concurrent), never with hard-coded text, except that the
answer to the capital of France must name Paris.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

import e2e_util as u

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


@pytest.fixture(scope="module")
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def ask(client, question, **kw):
    return client.chat.completions.create(
        model=u.LLM, messages=[SYSTEM, {"role": "user", "content": question}], **kw)


def test_greedy_chat_names_paris(client):
    r = ask(client, "What is the capital of France?", temperature=0, max_tokens=40)
    c = r.choices[0]
    assert "Paris" in c.message.content
    assert c.message.role == "assistant"
    assert c.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streaming_chat_matches_the_whole_answer(client):
    whole = ask(client, "Name three fruits.", temperature=0, max_tokens=32)
    stream = ask(client, "Name three fruits.", temperature=0, max_tokens=32, stream=True,
                 stream_options={"include_usage": True})
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
    assert chunks > 3, "the answer arrived in pieces"
    assert text == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_completions_and_length(client):
    r = client.completions.create(model=u.LLM, prompt="The capital of France is",
                                  max_tokens=6, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 6
    assert "Paris" in r.choices[0].text


def test_max_tokens_gives_length(client):
    r = ask(client, "Write a long story about a dragon.", temperature=0, max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5


def test_stop_sequence_cuts_the_answer(client):
    q = "Count from 1 to 10, separated by commas."
    full = ask(client, q, temperature=0, max_tokens=40).choices[0].message.content
    assert "5" in full, full
    cut = ask(client, q, temperature=0, max_tokens=40, stop=["5"]).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.message.content == full[: full.index("5")]


def test_seed_reproduces_sampled_output(client):
    kw = dict(temperature=0.9, top_p=0.95, seed=1234, max_tokens=24)
    a = ask(client, "Tell me a story about a fox.", **kw).choices[0].message.content
    b = ask(client, "Tell me a story about a fox.", **kw).choices[0].message.content
    assert a == b


def test_greedy_output_is_the_same_among_concurrent_requests(client):
    questions = ["What is the capital of France?", "Name three colours.",
                 "What is 7 times 8?", "Who wrote Hamlet?", "Describe the sea.",
                 "What is a CPU?", "List the planets.", "What is rain?"]
    alone = [ask(client, q, temperature=0, max_tokens=24).choices[0].message.content
             for q in questions]
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(
            lambda q: ask(client, q, temperature=0, max_tokens=24).choices[0].message.content,
            questions))
    assert together == alone


@pytest.mark.parametrize("body,status,needle", [
    ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "nope"),
    ({"model": u.LLM, "messages": []}, 400, "messages"),
    ({"model": u.LLM, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ({"model": u.LLM, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1},
     400, "max_tokens"),
    ({"model": u.LLM, "messages": [{"role": "user", "content": "hi"}], "n": 3}, 400, "'n'"),
    ({"model": u.LLM, "messages": [{"role": "user", "content": "word " * 5000}]},
     400, "maximum"),
    ({"model": u.MODEL, "messages": [{"role": "user", "content": "hi"}]}, 400, "embedding"),
])
def test_bad_chat_requests(url, body, status, needle):
    r = requests.post(url + "/v1/chat/completions", json=body, timeout=u.HTTP_TIMEOUT_S)
    assert r.status_code == status, r.text[:300]
    err = r.json()["error"]
    assert needle in err["message"], err
    assert err["type"]


def test_openai_client_raises_on_bad_input(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=u.LLM, messages=[])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_tokenize_and_detokenize_round_trip(url):
    r = requests.post(url + "/tokenize", json={"model": u.LLM, "prompt": "Hello world"},
                      timeout=u.HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["tokens"]) > 0
    assert body["max_model_len"] > 0
    back = requests.post(url + "/detokenize", json={"model": u.LLM, "tokens": body["tokens"]},
                         timeout=u.HTTP_TIMEOUT_S).json()
    assert back["prompt"].strip() == "Hello world"
    chat = requests.post(url + "/tokenize", timeout=u.HTTP_TIMEOUT_S, json={
        "model": u.LLM, "messages": [{"role": "user", "content": "Hello world"}]}).json()
    assert chat["count"] > body["count"]  # the template's markup adds tokens
    bad = requests.post(url + "/detokenize", json={"model": u.LLM, "tokens": [-5]},
                        timeout=u.HTTP_TIMEOUT_S)
    assert bad.status_code == 400 and "token" in bad.json()["error"]["message"]


VLLM_METRICS = [
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds", "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total", "vllm:request_success_total",
]


def _scrape(url) -> dict[str, float]:
    """Samples by `name{labels}`, summed over the replicas (the platform's
    /metrics labels each worker's samples with its service and replica)."""
    text = requests.get(url + "/metrics", timeout=u.HTTP_TIMEOUT_S).text
    out: dict[str, float] = {}
    for name, labels, value in u.parse_metrics(text).samples:
        kept = ",".join(f'{k}="{v}"' for k, v in labels.items()
                        if k not in ("service", "replica"))
        key = f"{name}{{{kept}}}" if kept else name
        out[key] = out.get(key, 0.0) + value
    return out


def test_vllm_metrics_count_requests_and_tokens(url, client):
    before = _scrape(url)
    r = ask(client, "Say hello.", temperature=0, max_tokens=7)
    after = _scrape(url)
    text = requests.get(url + "/metrics", timeout=u.HTTP_TIMEOUT_S).text
    for name in VLLM_METRICS:
        assert f"# TYPE {name} " in text, name
    label = f'model_name="{u.LLM}"'
    gen = f"vllm:generation_tokens_total{{{label}}}"
    prompt = f"vllm:prompt_tokens_total{{{label}}}"
    assert after[gen] - before.get(gen, 0) == r.usage.completion_tokens
    assert after[prompt] - before.get(prompt, 0) == r.usage.prompt_tokens
    ok = f'vllm:request_success_total{{finished_reason="{r.choices[0].finish_reason}",{label}}}'
    assert after[ok] - before.get(ok, 0) == 1
    ttft = f"vllm:time_to_first_token_seconds_count{{{label}}}"
    assert after[ttft] > before.get(ttft, 0)
    assert 0.0 <= after[f"vllm:kv_cache_usage_perc{{{label}}}"] <= 1.0
