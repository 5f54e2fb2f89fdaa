#!/usr/bin/env python3
"""Markdown summary of bench/vector.sh's results (JSON in OUT):
vector-offline.json (bench/vector_peers.py), and when the served phase ran
vector-upload.json, vector-http-recall.json, vector-http-wrk.json.

    python bench/vector_summarize.py bench/out > summary.md

Queries/s "at recall R" is read off each engine's sweep: the measured point
of the smallest ef whose recall reaches R, and a value interpolated between
the two ef points around R (log queries/s linear in recall), so that the
engines compare at the same recall rather than at the same ef.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

TARGET = 0.95


def load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def curve(engine: dict, mode: str) -> list[dict]:
    return sorted((c for c in engine["sweep"] if c["mode"] == mode), key=lambda c: c["ef"])


def at_recall(points: list[dict], target: float):
    """(first point reaching target, interpolated q/s at target) or Nones."""
    first = next((p for p in points if p["recall"] >= target), None)
    if first is None:
        return None, None
    i = points.index(first)
    if i == 0 or first["recall"] == target:
        return first, first["qps"]
    lo = points[i - 1]
    t = (target - lo["recall"]) / (first["recall"] - lo["recall"])
    return first, math.exp(math.log(lo["qps"]) + t * (math.log(first["qps"]) - math.log(lo["qps"])))


def fmt_qps(x) -> str:
    return "–" if x is None else f"{x:,.0f}"


def ratio(a, b) -> str:
    return "–" if a is None or not b else f"{a / b:.2f}×"


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out")
    off = load(out / "vector-offline.json")
    lines: list[str] = []
    w = lines.append
    if off:
        engines = list(off["engines"])
        peers = [e for e in engines if not e.startswith("neocloud")]
        v = off["versions"]
        w(f"## Vector search: GloVe-6B-50d, {off['n_base']:,} vectors × {off['dim']}, "
          f"{off['n_queries']:,} held-out queries, cosine, top-{off['k']}")
        w("")
        w(f"M={off['m']}, ef_construction={off['ef_construct']}, {off['threads']} threads; "
          f"medians of {off['repeats']} passes (queries/s) and {off['build_repeats']} builds. "
          f"hnswlib {v.get('hnswlib')}, faiss-cpu {v.get('faiss')}, numpy {v.get('numpy')}; "
          f"CPU {off.get('cpu')}.")
        w("")
        w("### Recall@10 and queries/s per ef")
        w("")
        w("seq = one query at a time on one thread; batch = all queries on "
          f"{off['threads']} threads.")
        w("")
        head = "| ef | " + " | ".join(f"{e} recall | {e} seq | {e} batch" for e in engines) + " |"
        w(head)
        w("|---" * (1 + 3 * len(engines)) + "|")
        efs = sorted({c["ef"] for e in engines for c in off["engines"][e]["sweep"]})
        for ef in efs:
            cells = []
            for e in engines:
                by = {(c["ef"], c["mode"]): c for c in off["engines"][e]["sweep"]}
                s, b = by.get((ef, "seq")), by.get((ef, "batch"))
                cells.append(f"{s['recall']:.4f}" if s else "–")
                cells.append(fmt_qps(s and s["qps"]))
                cells.append(fmt_qps(b and b["qps"]))
            w(f"| {ef} | " + " | ".join(cells) + " |")
        w("")
        w(f"### At recall@10 ≥ {TARGET}")
        w("")
        w("| engine | first ef ≥ target | its recall | seq q/s | batch q/s "
          f"| seq q/s @ {TARGET} (interp.) | batch q/s @ {TARGET} (interp.) |")
        w("|---|---|---|---|---|---|---|")
        interp = {}
        for e in engines:
            s_first, s_i = at_recall(curve(off["engines"][e], "seq"), TARGET)
            b_first, b_i = at_recall(curve(off["engines"][e], "batch"), TARGET)
            interp[e] = (s_i, b_i)
            if s_first is None:
                w(f"| {e} | not reached | – | – | – | – | – |")
                continue
            w(f"| {e} | {s_first['ef']} | {s_first['recall']:.4f} | {fmt_qps(s_first['qps'])} "
              f"| {fmt_qps(b_first and b_first['qps'])} | {fmt_qps(s_i)} | {fmt_qps(b_i)} |")
        w("")
        if "neocloud" in interp and peers:
            for idx, mode in ((0, "sequential"), (1, "batch")):
                best = max(peers, key=lambda p: interp[p][idx] or 0)
                parts = ", ".join(f"÷ {p} {ratio(interp['neocloud'][idx], interp[p][idx])}"
                                  for p in peers)
                w(f"- neocloud {mode} q/s at recall {TARGET}: {parts} "
                  f"(best peer: {best}, goal ≥ 1.0×: "
                  f"{ratio(interp['neocloud'][idx], interp[best][idx])})")
            w("")
        w("### Build and memory")
        w("")
        w("| engine | build s (median) | builds | neocloud ÷ engine | RSS after − before, MiB "
          "| peak − before, MiB |")
        w("|---|---|---|---|---|---|")
        neo_build = off["engines"].get("neocloud", {}).get("build_s")
        for e in engines:
            x = off["engines"][e]
            runs = ", ".join(f"{r:.1f}" for r in x["build_runs"])
            w(f"| {e} | {x['build_s']:.1f} | {runs} | {ratio(neo_build, x['build_s'])} "
              f"| {x['rss_delta_mib']:.0f} | {x['peak_delta_mib']:.0f} |")
        w("")
        if neo_build and peers:
            best = min(peers, key=lambda p: off["engines"][p]["build_s"])
            w(f"- build time, neocloud ÷ fastest peer ({best}): "
              f"{ratio(neo_build, off['engines'][best]['build_s'])} (goal ≤ 1.2×)")
            w("")
        w(f"(The raw vectors alone are {off['n_base'] * off['dim'] * 4 / 2**20:.0f} MiB.)")
        w("")

    up = load(out / "vector-upload.json")
    rec = load(out / "vector-http-recall.json")
    wrk = load(out / "vector-http-wrk.json")
    if up or rec or wrk:
        w("### Served: `neocloud up`, Qdrant REST")
        w("")
    if up:
        rss0, rss1 = up.get("server_rss_before_kib"), up.get("server_rss_after_kib")
        mem = (f"; server RSS {rss0 / 1024:.0f} → {rss1 / 1024:.0f} MiB"
               if rss0 and rss1 else "")
        w(f"- upload: {up['points']:,} points in {up['requests']} `PUT /points` requests of "
          f"{up['batch']} (largest body {up['largest_body_bytes'] / 2**20:.2f} MiB): "
          f"**{up['upload_s']:.1f} s**, {up['points_per_s']:,.0f} points/s; request p50 "
          f"{up['batch_ms']['p50']:.0f} ms, p99 {up['batch_ms']['p99']:.0f} ms, first "
          f"{up['batch_ms']['first']:.0f} ms, last {up['batch_ms']['last']:.0f} ms{mem}")
        if off and "neocloud" in off["engines"]:
            w(f"  (÷ offline build {off['engines']['neocloud']['build_s']:.1f} s: "
              f"{up['upload_s'] / off['engines']['neocloud']['build_s']:.2f}×)")
    if rec:
        for r in rec["runs"]:
            w(f"- over HTTP, 1 client, ef={r['ef']}: recall@{rec['k']} {r['recall']:.4f}, "
              f"{r['qps_1_client']:,.0f} q/s, p50 {r['latency_ms']['p50']:.2f} ms, "
              f"p99 {r['latency_ms']['p99']:.2f} ms")
    if wrk:
        x = wrk["result"]
        ef = rec["chosen_ef"] if rec else None
        w("")
        w("| clients | ef | recall@10 | q/s | p50 ms | p90 ms | p99 ms | non-200 / errors |")
        w("|---|---|---|---|---|---|---|---|")
        r_at = next((r["recall"] for r in rec["runs"] if r["ef"] == ef), None) if rec else None
        errs = sum(x["errors"].values())
        w(f"| {wrk['connections']} | {ef} | {r_at:.4f} | **{x['rps']:,.0f}** | "
          f"{x['latency_ms']['p50']:.2f} | {x['latency_ms']['p90']:.2f} | "
          f"{x['latency_ms']['p99']:.2f} | {x['non_200']} / {errs} |")
        w("")
        if off and "neocloud" in off["engines"] and ef is not None:
            by = {(c["ef"], c["mode"]): c for c in off["engines"]["neocloud"]["sweep"]}
            b = by.get((ef, "batch"))
            s = by.get((ef, "seq"))
            if b:
                w(f"- served ÷ offline at ef={ef}: ÷ batch ({off['threads']} threads) "
                  f"{x['rps'] / b['qps']:.0%}, ÷ seq (1 thread) {x['rps'] / s['qps']:.0%}")
        w(f"- server RSS after the run: {wrk['server_rss_kib'] / 1024:.0f} MiB")
        w("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
