#!/usr/bin/env bash
# Served throughput and latency of /v1/embeddings, one sentence per request.
#
#   bench/served.sh URL CORPUS_FILE
#   e.g. bench/served.sh http://127.0.0.1:8080 /tmp/corpus.txt
#
# URL is the server's base address; CORPUS_FILE has one sentence a line
# (python bench/corpus.py --out FILE).  Runs wrk at 1, 16 and 64 connections
# (threads = min(connections, 2)) for DURATION each (default 15s) after a
# short warm-up, prints a table of req/s, p50 and p99, and writes JSON to
# OUT (default served-results.json).  Raw wrk output goes to OUT's folder as
# served-c<N>.txt.
#
# Environment: DURATION (15s), WARMUP (3s), CONNECTIONS ("1 16 64"),
#              MODEL (all-minilm-l6-v2), OUT (served-results.json), WRK (wrk).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
URL=${1%/}
CORPUS=$2
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-1 16 64}
MODEL=${MODEL:-all-minilm-l6-v2}
OUT=${OUT:-served-results.json}
WRK=${WRK:-wrk}
HERE=$(cd "$(dirname "$0")" && pwd)
SCRIPT=$HERE/served.lua
RAW_DIR=$(dirname "$OUT")

command -v "$WRK" >/dev/null || { echo "wrk not found" >&2; exit 1; }
[[ -s $CORPUS ]] || { echo "corpus file $CORPUS is missing or empty" >&2; exit 1; }

# one request first: fail early (and clearly) if the server is not serving
probe=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "{\"model\":\"$MODEL\",\"input\":\"warm up\"}" "$URL/v1/embeddings" || true)
if [[ $probe != 200 ]]; then
  echo "POST $URL/v1/embeddings answered '$probe', not 200" >&2
  exit 1
fi

echo "warm-up: $WARMUP at 16 connections" >&2
"$WRK" -t2 -c16 -d"$WARMUP" -s "$SCRIPT" "$URL" -- "$CORPUS" "$MODEL" >/dev/null

results=()
for c in $CONNECTIONS; do
  t=$(( c < 2 ? c : 2 ))
  raw=$RAW_DIR/served-c$c.txt
  echo "wrk -t$t -c$c -d$DURATION --latency ($raw)" >&2
  "$WRK" -t"$t" -c"$c" -d"$DURATION" --latency --timeout 30s -s "$SCRIPT" "$URL" \
    -- "$CORPUS" "$MODEL" | tee "$raw" >&2
  line=$(grep '^NEOCLOUD_RESULT ' "$raw" | tail -1 | sed 's/^NEOCLOUD_RESULT //')
  [[ -n $line ]] || { echo "no NEOCLOUD_RESULT line from wrk" >&2; exit 1; }
  results+=("{\"connections\":$c,\"threads\":$t,\"result\":$line}")
done

joined=$(IFS=,; echo "${results[*]}")
python3 - "$OUT" "$URL" "$CORPUS" "$DURATION" "$joined" <<'EOF'
import json, sys
out, url, corpus, duration, joined = sys.argv[1:]
runs = json.loads("[" + joined + "]")
sentences = sum(1 for l in open(corpus, encoding="utf-8") if l.strip())
doc = {"benchmark": "served /v1/embeddings, one sentence per request (wrk)",
       "url": url, "corpus_sentences": sentences, "duration": duration, "runs": runs}
with open(out, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(f"{'conns':>5} {'threads':>7} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'non-200':>8} {'errors':>7}")
for r in runs:
    x = r["result"]
    errs = sum(x["errors"].values()) - x["errors"]["status"]
    print(f"{r['connections']:>5} {r['threads']:>7} {x['rps']:>10.1f} "
          f"{x['latency_ms']['p50']:>9.2f} {x['latency_ms']['p99']:>9.2f} "
          f"{x['non_200']:>8} {errs:>7}")
print(f"wrote {out}")
EOF
