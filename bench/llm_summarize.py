#!/usr/bin/env python3
"""Markdown summary of one bench/llm.sh run: single-stream neocloud vs
llama.cpp (llama-cpp-python), aggregate throughput at N streams, and
prefix caching on vs off. Phases whose JSON is missing are skipped.

    python bench/llm_summarize.py OUT_DIR [--neocloud-bin PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import llm_common as lc  # noqa: E402

REPO = HERE.parent


def load(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def ms(v) -> str:
    return "–" if v is None else f"{1e3 * v:.0f}" if v >= 0.1 else f"{1e3 * v:.1f}"


def num(v, fmt=".1f") -> str:
    return "–" if v is None else format(v, fmt)


def ratio(v) -> str:
    return "–" if v is None else f"{v:.2f}×"


def lock_version(name: str) -> str | None:
    try:
        text = (REPO / "Cargo.lock").read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r'name = "' + re.escape(name) + r'"\nversion = "([^"]+)"', text)
    return m.group(1) if m else None


def run(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True,
                              cwd=REPO).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> int:
    p = argparse.ArgumentParser(description="Summarize bench/llm.sh results as markdown.")
    p.add_argument("out", type=Path)
    p.add_argument("--neocloud-bin", help="for `neocloud --version`")
    args = p.parse_args()
    out = args.out
    single = load(out / "llm-single.json")
    conc = load(out / "llm-concurrency.json")
    on, off = load(out / "llm-prefix-on.json"), load(out / "llm-prefix-off.json")
    any_doc = single or conc or on or off
    if any_doc is None:
        print(f"no llm-*.json in {out}", file=sys.stderr)
        return 1

    m = lc.machine()
    threads = next((d.get("threads") for d in (single, conc, on, off) if d and d.get("threads")),
                   None)
    nv = run([args.neocloud_bin, "--version"]) if args.neocloud_bin else None
    versions = [nv if nv and nv.startswith("neocloud") else f"neocloud {nv or '?'}"]
    rev = run(["git", "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"])
    if rev:
        versions.append(f"commit {rev}{' (modified)' if dirty else ''}")
    if lock_version("llama-cpp-2"):
        versions.append(f"llama-cpp-2 {lock_version('llama-cpp-2')} / llama-cpp-sys-2 "
                        f"{lock_version('llama-cpp-sys-2')}")
    if single and single.get("versions", {}).get("llama-cpp-python"):
        versions.append(f"llama-cpp-python {single['versions']['llama-cpp-python']}")
    versions.append(f"Python {m['python']}")
    print("## LLM generation (SmolLM2-135M-Instruct, Q4_1 GGUF)\n")
    print(f"Machine: {m['cpu']}, {m['physical_cores'] or '?'} cores / {m['logical_cpus']} "
          f"logical CPUs; {threads or '?'} inference threads. "
          + "; ".join(v for v in versions if v) + ".")
    loads = []
    for name, doc in (("single", single), ("streams", conc), ("prefix on", on),
                      ("prefix off", off)):
        mm = (doc or {}).get("machine", {})
        a, b = mm.get("loadavg_1m_before"), mm.get("loadavg_1m_after", mm.get("loadavg_1m"))
        if b is not None:
            loads.append(f"{name} {a}→{b}" if a is not None else f"{name} {b}")
    if loads:
        print(f"1-minute load average at the end of each phase (other work on the machine "
              f"skews the numbers): {', '.join(loads)}.")

    if single:
        s, r = single["summary"], single.get("ratios", {})
        print(f"\n### Single stream: neocloud vs llama.cpp ({single['threads']} threads, "
              f"{single['prompts']} GSM8K prompts × {single['repeats']} passes, "
              f"max_tokens {single['max_tokens']}, greedy; medians)\n")
        print("| engine | TTFT ms | decode tok/s | tokens/request | errors |")
        print("|---|---|---|---|---|")
        labels = {"llama.cpp": "llama.cpp (llama-cpp-python, in-process)",
                  "neocloud": "neocloud (HTTP, SSE)"}
        for engine, x in s.items():
            print(f"| {labels.get(engine, engine)} | {ms(x['ttft_s_median'])} | "
                  f"{num(x['decode_tok_s_median'])} | {num(x['tokens_median'], '.0f')} | "
                  f"{x['errors']} |")
        if r:
            dec, ttft = r.get("decode_neocloud_over_llama"), r.get("ttft_llama_over_neocloud")
            print(f"\nneocloud ÷ llama.cpp decode tok/s: **{ratio(dec)}** (goal ≥ 0.95); "
                  f"llama.cpp TTFT ÷ neocloud TTFT: **{ratio(ttft)}** (goal ≥ 0.95).")
        notes = list(single.get("notes", []))
        if single.get("llama_cold_prefill"):
            notes.append("llama-cpp-python was reset before each request (no prefix reuse).")
        else:
            notes.append("llama-cpp-python reuses the prompt prefix shared with its previous "
                         "request (its default), e.g. the chat template's system prompt.")
        chk = single.get("token_count_check", {})
        if "neocloud" in chk:
            c = chk["neocloud"]
            notes.append(f"neocloud prompt 0: usage.completion_tokens {c['usage_completion_tokens']}"
                         f" for {c['streamed_content_chunks']} content chunks, finish "
                         f"{c['finish_reason']} (a \"stop\" counts the end token).")
        if "llama.cpp" in chk:
            c = chk["llama.cpp"]
            notes.append(f"llama-cpp-python prompt 0: {c['streamed_content_chunks']} streamed "
                         f"content chunks, non-streamed usage.completion_tokens "
                         f"{c['plain_completion_tokens']}.")
        for engine, x in s.items():
            if x.get("anomalies"):
                notes.append(f"{engine} SSE anomalies: {', '.join(x['anomalies'])}")
        ggml = out / "llm-neocloud-ggml.txt"
        if ggml.exists():
            flags = {l.split(":", 1)[0][5:]: l.rsplit("=", 1)[-1]
                     for l in ggml.read_text().splitlines() if l.startswith("GGML_")}
            on_ = [k for k, v in flags.items() if v == "ON"]
            off_ = [k for k, v in flags.items() if v == "OFF" and k in
                    ("NATIVE", "LLAMAFILE", "AVX512", "AVX512_VNNI", "AVX_VNNI")]
            notes.append("neocloud's llama.cpp build (llama-cpp-sys-2's CMake cache): on "
                         + (", ".join(on_) or "–") + "; off " + (", ".join(off_) or "–") + ".")
        info = single.get("versions", {}).get("llama-cpp-python system info")
        if info:
            notes.append(f"llama-cpp-python's llama.cpp: `{info}`")
        for n in notes:
            print(f"- {n}")

    if conc:
        print(f"\n### Aggregate throughput at N streams (`neocloud up --threads "
              f"{conc.get('threads') or '?'}`, streaming, max_tokens {conc['max_tokens']})\n")
        print("| streams | requests | errors | tokens/s | ÷ 1 stream | requests/s | "
              "TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for l in conc["levels"]:
            print(f"| {l['concurrency']} | {l['requests']} | {l['errors']} | "
                  f"{num(l['tokens_per_s'])} | {ratio(l['tokens_per_s_over_1_stream'])} | "
                  f"{num(l['requests_per_s'], '.2f')} | {ms(l['ttft_s_p50'])} | "
                  f"{ms(l['ttft_s_p99'])} | {ms(l['itl_s_p50'])} | {ms(l['itl_s_p99'])} |")
        at16 = next((l for l in conc["levels"] if l["concurrency"] == 16), None)
        if at16:
            print(f"\nAt 16 streams: {ratio(at16['tokens_per_s_over_1_stream'])} the 1-stream "
                  f"tokens/s (goal ≥ 4×). Tokens are usage.completion_tokens (end token "
                  f"included).")
        for l in conc["levels"]:
            if l.get("note"):
                print(f"- {l['concurrency']} streams: {l['note']}")
            if l["anomalies"]:
                print(f"- {l['concurrency']} streams, SSE anomalies: {l['anomalies']}")
            if l["error_samples"]:
                print(f"- {l['concurrency']} streams, errors: {l['error_samples']}")

    if on or off:
        ref = on or off
        print(f"\n### Prefix caching ({ref['shots']}-shot GSM8K prompt, "
              f"~{ref.get('prompt_tokens_warmup') or '?'} prompt tokens, max_tokens "
              f"{ref['max_tokens']}; one fresh server per setting)\n")
        print("| prefix caching | streams | requests | errors | TTFT p50 ms | TTFT p99 ms | "
              "tokens/s | cache queries | cache hits | hit rate |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for doc in (on, off):
            if not doc:
                continue
            for l in doc["levels"]:
                d = l["server_deltas"]
                q, h = d["vllm:prefix_cache_queries_total"], d["vllm:prefix_cache_hits_total"]
                rate = l["prefix_hit_rate"]
                print(f"| {doc['label']} | {l['concurrency']} | {l['requests']} | {l['errors']} | "
                      f"{ms(l['ttft_s_p50'])} | {ms(l['ttft_s_p99'])} | {num(l['tokens_per_s'])} "
                      f"| {num(q, '.0f')} | {num(h, '.0f')} | "
                      f"{'–' if rate is None else f'{rate:.0%}'} |")
        if on and off:
            print("\n| streams | TTFT p50: off ÷ on | TTFT p99: off ÷ on | tokens/s: on ÷ off |")
            print("|---|---|---|---|")
            offl = {l["concurrency"]: l for l in off["levels"]}
            for l in on["levels"]:
                o = offl.get(l["concurrency"])
                if not o:
                    continue
                div = lambda a, b: a / b if a and b else None  # noqa: E731
                print(f"| {l['concurrency']} | {ratio(div(o['ttft_s_p50'], l['ttft_s_p50']))} | "
                      f"{ratio(div(o['ttft_s_p99'], l['ttft_s_p99']))} | "
                      f"{ratio(div(l['tokens_per_s'], o['tokens_per_s']))} |")
        missing = sorted({n for doc in (on, off) if doc
                          for n, ok in doc.get("metrics_exported", {}).items()
                          if not ok and "prefix" in n})
        if missing:
            print(f"\n- The server exported no {', '.join(missing)} (shown as –).")
        if any(doc and doc.get("config") and "prefixCaching" not in doc["config"]
               for doc in (on, off)):
            print("- The servers' configs set no prefixCaching (Model-only configs): "
                  "both ran the binary's default, so on and off differ only by noise.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
