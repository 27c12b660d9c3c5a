#!/usr/bin/env bash
# Compares this checkout's relay with another vnc-relay binary (a baseline: an earlier
# build, a release) on the data path, in one run: both relays serve the same Redis,
# the same container records and the same source and echo stand-ins, and every round
# measures, alternating, throughput (container->browser, one stream, with the CPU each
# relay used) and 16-byte ping-pong latency over the raw WebSocket and over socket.io,
# on the baseline and on this build. Prints the medians and this build's ratio to the
# baseline. Loopback only; everything it starts is stopped on exit.
#
#   benches/compare.sh BASELINE_RELAY [ROUNDS]          (default 5)
# Env: DURATION (throughput seconds, default 8), COUNT (pings, default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINE="$(realpath "${1:?usage: benches/compare.sh BASELINE_RELAY [ROUNDS]}")"
ROUNDS="${2:-5}"
DURATION="${DURATION:-8}"
COUNT="${COUNT:-20000}"

# shellcheck source=benches/common.sh
source benches/common.sh
prepare compare
cp "$BASELINE" "$BIN/vnc-relay-baseline"

start_redis
start_stand_ins

# One token serves every run of a target, so the one-live-session-per-token rule is off
# (it costs one Redis round trip at admission, nothing on the data path).
relay_args=(--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --redis-url "redis://127.0.0.1:$REDIS_PORT"
  --jwt-public-key "$STATE/keys/bench.pub.pem" --idle-timeout 10m --single-use-tokens false)
start_listening current "$BIN/vnc-relay" "${relay_args[@]}" --node-id current
start_listening baseline "$BIN/vnc-relay-baseline" "${relay_args[@]}" --node-id baseline
register_src_echo

declare -A addr_of pid_of
for r in current baseline; do
  addr_of[$r]="$(sed -n 's/^LISTENING public=\([^ ]*\).*/\1/p' "$STATE/$r.out")"
  admin="$(sed -n 's/.*admin=\([^ ]*\).*/\1/p' "$STATE/$r.out")"
  until curl -sf "http://$admin/readyz" >/dev/null; do sleep 0.05; done
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://${addr_of[$r]}/socket.io/?EIO=4&transport=websocket")" != 503 ]]; do
    sleep 0.05
  done
done
pid_of[current]="$current_pid"; pid_of[baseline]="$baseline_pid"

# url TRANSPORT RELAY CID TOKEN
url() {
  case "$1" in
    ws) echo "ws://${addr_of[$2]}/websockify?token=$4" ;;
    sio) echo "sio://${addr_of[$2]}?containerId=$3&token=$4" ;;
  esac
}

echo "== $ROUNDS rounds, alternating: ws and socket.io, this build and the baseline"
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  # Who goes first alternates too, so a warming machine favours neither.
  order=(current baseline); (( round % 2 == 0 )) && order=(baseline current)
  for t in ws sio; do
    for r in "${order[@]}"; do
      record_cpu "compare:throughput/$t/$r" "${pid_of[$r]}" throughput \
        --target "$(url "$t" "$r" src "$TOKEN_SRC")" --duration "${DURATION}s"
    done
    for r in "${order[@]}"; do
      record "compare:latency/$t/$r" latency --target "$(url "$t" "$r" echo "$TOKEN_ECHO")" \
        --count "$COUNT"
    done
  done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    rec = json.loads(line)
    if "error" in rec["result"]:
        print(f"FAILED {rec['label']}: {rec['result']['error']}")
        continue
    rows.setdefault(rec["label"], []).append(rec["result"])
med = lambda label, key: statistics.median(key(r) for r in rows[label]) if label in rows else float("nan")
print(f"{'':24}{'this build':>12}{'baseline':>12}{'ratio':>8}")
for t in ("ws", "sio"):
    measures = [
        ("throughput MB/s", "throughput", lambda r: r["total_mb_per_s"]),
        ("relay CPU s/GB", "cpu:compare:throughput", None),
        ("RTT p50 us", "latency", lambda r: r["rtt_us"]["p50"]),
        ("RTT p99 us", "latency", lambda r: r["rtt_us"]["p99"]),
    ]
    for name, kind, key in measures:
        if key is None:
            vals = {}
            for who in ("current", "baseline"):
                cpu = rows.get(f"cpu:compare:throughput/{t}/{who}", [])
                tput = rows.get(f"compare:throughput/{t}/{who}", [])
                vals[who] = statistics.median(
                    c["server_s"] / (r["total_mb_per_s"] * (r["warmup_s"] + r["duration_s"]) / 1000)
                    for c, r in zip(cpu, tput) if r["total_mb_per_s"] > 0) if cpu else float("nan")
            cur, base = vals["current"], vals["baseline"]
        else:
            cur = med(f"compare:{kind}/{t}/current", key)
            base = med(f"compare:{kind}/{t}/baseline", key)
        print(f"{t + ' ' + name:24}{cur:12.1f}{base:12.1f}{cur / base:8.3f}")
PY
echo "raw results: $OUT"
