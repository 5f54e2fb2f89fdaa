#!/usr/bin/env python3
"""Markdown summary of one bench/embed.sh run: offline sentences/s per
engine and batch size with ratios to neocloud, and served req/s and latency
with the ratio of served to offline throughput.

    python bench/summarize_embed.py OUT_DIR
"""

import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
peers = json.loads((out / "offline.json").read_text())
served = json.loads((out / "served.json").read_text())

offline = {}  # (engine label, batch) -> sentences/s
labels = {}
for r in peers["results"]:
    labels[r["engine"]] = r["label"]
    offline[(r["engine"], r["batch_size"])] = r["sentences_per_s"]
batches = sorted({r["batch_size"] for r in peers["results"]})
threads = peers["threads"]

print(f"### Offline throughput ({threads} threads, {peers['corpus']['sentences']} sentences, "
      f"median sentences/s)\n")
print("| engine | " + " | ".join(f"batch {b}" for b in batches) + " | "
      + " | ".join(f"neocloud ÷ engine @{b}" for b in batches) + " |")
print("|---" * (1 + 2 * len(batches)) + "|")
for engine in ["neocloud"] + [e for e in labels if e != "neocloud"]:
    if (engine, batches[0]) not in offline:
        continue
    rates = [offline.get((engine, b)) for b in batches]
    ratios = [offline[("neocloud", b)] / r if r else float("nan") for b, r in zip(batches, rates)]
    print(f"| {labels[engine]} | " + " | ".join(f"{r:.0f}" for r in rates) + " | "
          + " | ".join(f"{x:.2f}×" for x in ratios) + " |")

agree = peers.get("cosine_vs_st") or {}
if agree:
    print("\nCosine similarity to sentence-transformers over the corpus: " + "; ".join(
        f"{labels.get(k, k)} mean {v['mean']:.6f}, min {v['min']:.6f}" for k, v in agree.items()))

best_offline = max(offline[("neocloud", b)] for b in batches)
print(f"\n### Served (`neocloud up --threads {threads}`, wrk, one sentence per request)\n")
print("| connections | req/s | p50 ms | p99 ms | non-200 | ÷ best offline |")
print("|---|---|---|---|---|---|")
for r in served["runs"]:
    x = r["result"]
    print(f"| {r['connections']} | {x['rps']:.0f} | {x['latency_ms']['p50']:.2f} | "
          f"{x['latency_ms']['p99']:.2f} | {x['non_200']} | {x['rps'] / best_offline:.0%} |")
batches_file = out / "served-batches.txt"
if batches_file.exists():
    vals = dict(line.split() for line in batches_file.read_text().splitlines() if line.strip())
    s = next((float(v) for k, v in vals.items() if k.startswith("neocloud_batch_size_sum")), 0)
    c = next((float(v) for k, v in vals.items() if k.startswith("neocloud_batch_size_count")), 0)
    if c:
        print(f"\nMean batch size while served (all runs): {s / c:.1f} sequences.")
