#!/usr/bin/env bash
# Compares this checkout's relay with another vnc-relay binary (a baseline: an earlier
# build, a release) on the data path, in one run: both relays serve the same Redis,
# the same container records and the same source and echo stand-ins, and every round
# measures, alternating, throughput (container->browser, one stream, with the CPU each
# relay used) and 16-byte ping-pong latency over the raw WebSocket and over socket.io,
# on the baseline and on this build. Prints the medians and the median of each round's
# ratio of this build to the baseline. Loopback only; everything it starts is stopped on exit.
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
  addr_of[$r]="$(relay_public "$r")"
  relay_ready "$r"
  socketio_ready "http://${addr_of[$r]}"
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
"""Medians over the rounds, and the median of each round's ratio (this build over the
baseline, measured back to back): the paired ratio moves less with the machine's load."""
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    rec = json.loads(line)
    if "error" in rec["result"]:
        print(f"FAILED {rec['label']}: {rec['result']['error']}")
        continue
    rows.setdefault(rec["label"], []).append(rec["result"])


def cpu_per_gb(t, who):
    """Relay CPU seconds per GB relayed, each throughput run."""
    pairs = zip(rows.get(f"cpu:compare:throughput/{t}/{who}", []),
                rows.get(f"compare:throughput/{t}/{who}", []))
    return [c["server_s"] / (r["total_mb_per_s"] * (r["warmup_s"] + r["duration_s"]) / 1000)
            for c, r in pairs if r["total_mb_per_s"] > 0]


def values(t, kind, key, who):
    if key is None:
        return cpu_per_gb(t, who)
    return [key(r) for r in rows.get(f"compare:{kind}/{t}/{who}", [])]


print(f"{'':24}{'this build':>12}{'baseline':>12}{'paired ratio':>14}")
for t in ("ws", "sio"):
    for name, kind, key in [
        ("throughput MB/s", "throughput", lambda r: r["total_mb_per_s"]),
        ("relay CPU s/GB", "throughput", None),
        ("RTT p50 us", "latency", lambda r: r["rtt_us"]["p50"]),
        ("RTT p99 us", "latency", lambda r: r["rtt_us"]["p99"]),
    ]:
        cur, base = values(t, kind, key, "current"), values(t, kind, key, "baseline")
        if not cur or not base:
            continue
        ratio = statistics.median(c / b for c, b in zip(cur, base) if b)
        print(f"{t + ' ' + name:24}{statistics.median(cur):12.2f}"
              f"{statistics.median(base):12.2f}{ratio:14.3f}")
PY
echo "raw results: $OUT"
