#!/usr/bin/env bash
# The gateway's overhead, side by side with nginx.
#
#   bench/gateway.sh
#
# Starts a trivial upstream (`echo-upstream`, fixed small JSON), `neocloud
# gateway` and nginx (reverse proxy with upstream keepalive) in front of
# it, then runs wrk against (a) the upstream directly, (b) the gateway,
# (c) nginx: for each connection count, REPEATS passes, each pass every
# target once (the order rotates from pass to pass). Prints medians of
# req/s, p50 and p99 per target, the proxy's own CPU time per request (user
# and system, from /proc), the ratio gateway ÷ nginx and the latency each
# proxy adds over direct; writes every run as JSON lines to
# OUT/gateway-runs.jsonl and the summary to OUT/gateway-summary.md.
#
# Environment: THREADS (1: gateway runtime threads = nginx worker_processes),
#   UPSTREAM_THREADS (1), WRK_THREADS (1), CONNECTIONS ("1 64"),
#   DURATION (10s), WARMUP (2s), REPEATS (5), OUT (bench/out),
#   SKIP_BUILD (unset), NGINX (nginx), WRK (wrk).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
THREADS=${THREADS:-1}
UPSTREAM_THREADS=${UPSTREAM_THREADS:-1}
WRK_THREADS=${WRK_THREADS:-1}
CONNECTIONS=${CONNECTIONS:-1 64}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
REPEATS=${REPEATS:-5}
OUT=${OUT:-$ROOT/bench/out}
NGINX=${NGINX:-nginx}
WRK=${WRK:-wrk}
UP_PORT=9101 GW_PORT=9102 NGINX_PORT=9103
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

command -v "$WRK" >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
command -v "$NGINX" >/dev/null || { echo "nginx not found (apt-get install nginx)" >&2; exit 1; }
mkdir -p "$OUT"

if [[ -z ${SKIP_BUILD:-} ]]; then
  (cd "$ROOT" && cargo build --release -p neocloud --no-default-features \
     && cargo build --release -p neocloud-bench --bin echo-upstream)
fi
BIN=$TARGET_DIR/release

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/echo-upstream" --listen 127.0.0.1:$UP_PORT --threads "$UPSTREAM_THREADS" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
NEOCLOUD_LOG=warn "$BIN/neocloud" gateway --listen 127.0.0.1:$GW_PORT \
  --upstream echo=127.0.0.1:$UP_PORT --threads "$THREADS" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)

user_line=""
[[ $(id -u) == 0 ]] && user_line="user root;"
cat >"$WORK/nginx.conf" <<NGINX_CONF
$user_line
worker_processes $THREADS;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/client_body;
  proxy_temp_path $WORK/proxy;
  fastcgi_temp_path $WORK/fastcgi;
  uwsgi_temp_path $WORK/uwsgi;
  scgi_temp_path $WORK/scgi;
  upstream echo { server 127.0.0.1:$UP_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX_CONF
"$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
GW_PID=${PIDS[1]} NGINX_MASTER=${PIDS[2]}

declare -A URLS=(
  [direct]=http://127.0.0.1:$UP_PORT
  [gateway]=http://127.0.0.1:$GW_PORT
  [nginx]=http://127.0.0.1:$NGINX_PORT
)
TARGETS=(direct gateway nginx)

for target in "${TARGETS[@]}"; do
  for _ in $(seq 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
      -d '{"model":"echo","input":"hi"}' "${URLS[$target]}/v1/embeddings" || true)
    [[ $code == 200 ]] && break
    sleep 0.1
  done
  [[ $code == 200 ]] || { echo "$target at ${URLS[$target]} answers $code" >&2; exit 1; }
done

# CPU ticks (user, system) used so far by the proxy behind a target.
proxy_pids() {
  case $1 in
    gateway) echo "$GW_PID" ;;
    nginx) pgrep -P "$NGINX_MASTER" ;;
    *) ;;
  esac
}
cpu_ticks() {
  local u=0 s=0 pid
  for pid in $(proxy_pids "$1"); do
    read -r pu ps < <(awk '{print $14, $15}' "/proc/$pid/stat")
    u=$((u + pu)) s=$((s + ps))
  done
  echo "$u $s"
}
TICK=$(getconf CLK_TCK)

RUNS=$OUT/gateway-runs.jsonl
: >"$RUNS"
echo "threads: gateway $THREADS, nginx worker_processes $THREADS, upstream $UPSTREAM_THREADS, wrk $WRK_THREADS; $(nproc) cores"
for c in $CONNECTIONS; do
  for target in "${TARGETS[@]}"; do
    "$WRK" -t"$WRK_THREADS" -c"$c" -d"$WARMUP" -s "$HERE/gateway.lua" "${URLS[$target]}" >/dev/null
  done
  for pass in $(seq "$REPEATS"); do
    for i in 0 1 2; do
      target=${TARGETS[$(( (i + pass) % 3 ))]}
      read -r u0 s0 < <(cpu_ticks "$target")
      line=$("$WRK" -t"$WRK_THREADS" -c"$c" -d"$DURATION" --latency -s "$HERE/gateway.lua" \
        "${URLS[$target]}" | sed -n 's/^NEOCLOUD_RESULT //p')
      read -r u1 s1 < <(cpu_ticks "$target")
      cpu=$(awk -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v t="$TICK" \
        'BEGIN { printf "{\"user_s\":%.3f,\"sys_s\":%.3f}", u / t, s / t }')
      echo "{\"target\":\"$target\",\"connections\":$c,\"pass\":$pass,\"proxy_cpu\":$cpu,\"result\":$line}" | tee -a "$RUNS"
    done
  done
done

python3 - "$RUNS" "$THREADS" <<'PY' | tee "$OUT/gateway-summary.md"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
threads = sys.argv[2]
med = lambda xs: statistics.median(xs)
conns = sorted({r["connections"] for r in runs})
print(f"proxy threads: {threads} (gateway runtime threads = nginx worker_processes)\n")
print("| connections | target | req/s | p50 ms | p99 ms | proxy CPU µs/req (user + sys) | non-200 |")
print("|---|---|---|---|---|---|---|")
summary = {}
for c in conns:
    for t in ("direct", "gateway", "nginx"):
        full = [r for r in runs if r["connections"] == c and r["target"] == t]
        rs = [r["result"] for r in full]
        per_req = lambda key: med([1e6 * r["proxy_cpu"][key] / r["result"]["requests"] for r in full])
        s = dict(rps=med([r["rps"] for r in rs]), user=per_req("user_s"), sys=per_req("sys_s"),
                 p50=med([r["latency_ms"]["p50"] for r in rs]),
                 p99=med([r["latency_ms"]["p99"] for r in rs]),
                 bad=sum(r["non_200"] + sum(r["errors"].values()) for r in rs))
        summary[(c, t)] = s
        cpu = "-" if t == "direct" else f"{s['user']:.1f} + {s['sys']:.1f} = {s['user'] + s['sys']:.1f}"
        print(f"| {c} | {t} | {s['rps']:,.0f} | {s['p50']:.3f} | {s['p99']:.3f} | {cpu} | {s['bad']} |")
print()
print("| connections | gateway ÷ nginx req/s | gateway adds p50 / p99 (µs) | nginx adds p50 / p99 (µs) |")
print("|---|---|---|---|")
for c in conns:
    d, g, n = summary[(c, "direct")], summary[(c, "gateway")], summary[(c, "nginx")]
    print(f"| {c} | {g['rps'] / n['rps']:.2f}× | {1000 * (g['p50'] - d['p50']):.0f} / {1000 * (g['p99'] - d['p99']):.0f} "
          f"| {1000 * (n['p50'] - d['p50']):.0f} / {1000 * (n['p99'] - d['p99']):.0f} |")
PY
