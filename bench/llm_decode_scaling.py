#!/usr/bin/env python3
"""Pure decode scaling of a running `neocloud up`: N concurrent completions
of a short prompt ("Story i: Once upon a time"), greedy, each exactly
--max-tokens long unless the model ends first, all sent at once. Prefill is
a few tokens, so the time is decode steps: tokens/s and the mean step time
(wall time / longest answer) per N. This isolates what batching one step of
N sequences costs against one sequence, which the GSM8K workload of
llm_concurrency.py mixes with prefill.

    python bench/llm_decode_scaling.py --url http://127.0.0.1:18941 \\
        --model smollm2-135m-instruct --streams 1,4,16,32 --max-tokens 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


async def one(session, url, model, i, max_tokens) -> int:
    body = {"model": model, "prompt": f"Story {i}: Once upon a time",
            "max_tokens": max_tokens, "temperature": 0}
    async with session.post(url + "/v1/completions", json=body) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["usage"]["completion_tokens"]


async def level(url, model, n, max_tokens) -> dict:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as s:
        t = time.perf_counter()
        tokens = await asyncio.gather(*[one(s, url, model, i, max_tokens) for i in range(n)])
        wall = time.perf_counter() - t
    return {"streams": n, "tokens": sum(tokens), "wall_s": wall,
            "tokens_per_s": sum(tokens) / wall, "step_ms": 1000 * wall / max(tokens)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--streams", default="1,4,16,32")
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--out")
    a = ap.parse_args()
    asyncio.run(level(a.url, a.model, 1, 8))  # warm-up
    rows = []
    for n in [int(x) for x in a.streams.split(",")]:
        r = asyncio.run(level(a.url, a.model, n, a.max_tokens))
        r["vs_1"] = r["tokens_per_s"] / rows[0]["tokens_per_s"] if rows else 1.0
        rows.append(r)
        print(f"{a.model} N={n}: {r['tokens_per_s']:.1f} tok/s, step {r['step_ms']:.1f} ms, "
              f"{r['vs_1']:.2f}x one stream", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"model": a.model, "max_tokens": a.max_tokens, "levels": rows}, f, indent=1)


if __name__ == "__main__":
    main()
