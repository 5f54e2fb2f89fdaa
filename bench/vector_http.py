#!/usr/bin/env python3
"""The served half of the vector-search benchmark (bench/vector.sh): talks to
`neocloud up`'s Qdrant-compatible REST API with the files that
bench/vector_peers.py prepared (bench/out/vector/*.npy). Standard library
and numpy only.

    upload  creates the collection (dropping an old one of that name) and
            PUTs every base row in `{"batch": ...}` bodies of BATCH points
            (point id = base row), one request after another on one
            keep-alive connection; the bodies are encoded before the clock
            starts. Writes the upload time and the server's RSS around it.
    recall  sends the held-out queries one at a time (1 client) at each ef
            of --efs, ascending, until recall@k reaches --target; writes
            recall and 1-client latency per ef, and the request bodies of
            the first ef that reached the target (one JSON body a line) for
            bench/vector_search.lua.

    python bench/vector_http.py upload --url http://127.0.0.1:18951 --out up.json
    python bench/vector_http.py recall --url http://127.0.0.1:18951 --bodies-out q.jsonl --out r.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, url: str):
        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        try:
            doc = json.loads(data) if data else {}
        except json.JSONDecodeError:
            doc = {"raw": data[:200].decode("utf-8", "replace")}
        return r.status, doc

    def ok(self, method: str, path: str, body: bytes | None = None) -> dict:
        status, doc = self.call(method, path, body)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {doc}")
        return doc


def rss_kib(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def vectors_json(rows: np.ndarray) -> str:
    # float32 -> float64 is exact and repr round-trips the double, so the
    # server parses back the very f32 values the offline engines index.
    return json.dumps(rows.astype(np.float64).tolist())


def cmd_upload(args) -> None:
    base = np.load(args.base)
    c = Client(args.url)
    coll = f"/collections/{args.collection}"
    status, _ = c.call("DELETE", coll)
    if status not in (200, 404):
        raise RuntimeError(f"DELETE {coll}: {status}")
    c.ok("PUT", coll, json.dumps({
        "vectors": {"size": int(base.shape[1]), "distance": "Cosine"},
        "hnsw_config": {"m": args.m, "ef_construct": args.ef_construct},
    }).encode())
    t0 = time.perf_counter()
    bodies = []
    for s in range(0, base.shape[0], args.batch):
        ids = list(range(s, min(s + args.batch, base.shape[0])))
        bodies.append(('{"batch":{"ids":' + json.dumps(ids) + ',"vectors":'
                       + vectors_json(base[s:s + args.batch]) + "}}").encode())
    encode_s = time.perf_counter() - t0
    biggest = max(len(b) for b in bodies)
    print(f"upload: {base.shape[0]} points in {len(bodies)} bodies (largest "
          f"{biggest / 2**20:.2f} MiB, encoded in {encode_s:.1f} s)", file=sys.stderr)
    rss0 = rss_kib(args.server_pid)
    times = []
    t0 = time.perf_counter()
    for i, body in enumerate(bodies):
        t = time.perf_counter()
        c.ok("PUT", f"{coll}/points?wait=true", body)
        times.append(time.perf_counter() - t)
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(bodies)} batches, {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
    upload_s = time.perf_counter() - t0
    rss1 = rss_kib(args.server_pid)
    count = c.ok("POST", f"{coll}/points/count", b'{"exact":true}')["result"]["count"]
    if count != base.shape[0]:
        raise RuntimeError(f"the collection holds {count} points, expected {base.shape[0]}")
    doc = {"points": int(base.shape[0]), "batch": args.batch, "requests": len(bodies),
           "largest_body_bytes": biggest, "upload_s": upload_s,
           "points_per_s": base.shape[0] / upload_s,
           "batch_ms": {"p50": 1e3 * float(np.percentile(times, 50)),
                        "p99": 1e3 * float(np.percentile(times, 99)),
                        "first": 1e3 * times[0], "last": 1e3 * times[-1]},
           "server_rss_before_kib": rss0, "server_rss_after_kib": rss1,
           "m": args.m, "ef_construct": args.ef_construct}
    print(f"upload: {upload_s:.1f} s, {doc['points_per_s']:.0f} points/s; server RSS "
          f"{(rss0 or 0) / 1024:.0f} -> {(rss1 or 0) / 1024:.0f} MiB", file=sys.stderr)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


def cmd_recall(args) -> None:
    queries = np.load(args.queries)
    gt = np.load(args.gt)
    k = args.k
    c = Client(args.url)
    path = f"/collections/{args.collection}/points/search"
    runs = []
    chosen = None
    for ef in [int(e) for e in args.efs.split(",")]:
        bodies = [json.dumps({"vector": q, "limit": k, "params": {"hnsw_ef": ef}})
                  for q in queries.astype(np.float64).tolist()]
        for b in bodies[:args.warmup]:
            c.ok("POST", path, b.encode())
        lat, hits = [], 0
        for q, b in enumerate(bodies):
            t = time.perf_counter()
            doc = c.ok("POST", path, b.encode())
            lat.append(time.perf_counter() - t)
            ids = {int(h["id"]) for h in doc["result"]}
            hits += len(ids & set(gt[q, :k].tolist()))
        r = hits / (len(bodies) * k)
        run = {"ef": ef, "recall": r, "qps_1_client": len(lat) / sum(lat),
               "latency_ms": {"p50": 1e3 * float(np.percentile(lat, 50)),
                              "p99": 1e3 * float(np.percentile(lat, 99))}}
        runs.append(run)
        print(f"HTTP ef={ef}: recall@{k} {r:.4f}, 1 client {run['qps_1_client']:.0f} q/s, "
              f"p50 {run['latency_ms']['p50']:.2f} ms", file=sys.stderr)
        if r >= args.target:
            chosen = ef
            Path(args.bodies_out).write_text("\n".join(bodies) + "\n")
            break
    if chosen is None:
        raise SystemExit(f"no ef in {args.efs} reached recall {args.target} over HTTP")
    doc = {"collection": args.collection, "k": k, "target": args.target, "chosen_ef": chosen,
           "runs": runs}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upload")
    up.add_argument("--url", required=True)
    up.add_argument("--collection", default="glove")
    up.add_argument("--base", default="bench/out/vector/base.npy")
    up.add_argument("--batch", type=int, default=1000)
    up.add_argument("--m", type=int, default=16)
    up.add_argument("--ef-construct", type=int, default=100)
    up.add_argument("--server-pid", type=int)
    up.add_argument("--out", required=True)
    rc = sub.add_parser("recall")
    rc.add_argument("--url", required=True)
    rc.add_argument("--collection", default="glove")
    rc.add_argument("--queries", default="bench/out/vector/queries.npy")
    rc.add_argument("--gt", default="bench/out/vector/gt.npy")
    rc.add_argument("--k", type=int, default=10)
    rc.add_argument("--efs", default="64,128,256,512")
    rc.add_argument("--target", type=float, default=0.95)
    rc.add_argument("--warmup", type=int, default=100)
    rc.add_argument("--bodies-out", required=True)
    rc.add_argument("--out", required=True)
    args = ap.parse_args()
    {"upload": cmd_upload, "recall": cmd_recall}[args.cmd](args)


if __name__ == "__main__":
    main()
