#!/usr/bin/env bash
# Runs the relay-core benchmarks of benches/README.md in one go on this machine:
# throughput and 16-byte ping-pong latency through vnc-relay (default 64 KiB read
# buffer, and 256 KiB like the proxy's), a plain tokio TCP proxy
# (copy_bidirectional, 256 KiB buffers) and websockify 0.13, alternating targets each
# round; then 5,000 concurrent pinging sessions through the relay, the plain proxy, the
# least WebSocket relay (`vnc-bench ws-proxy`) and straight to the echo upstream,
# alternating round after round; then relay RSS per idle session. Loopback only;
# everything it starts is stopped on exit.
#
#   benches/run.sh [ROUNDS]          (default 3)
# Env: DURATION (throughput seconds, default 8), COUNT (pings, default 20000),
#      SESSIONS (default 5000), CONNS_DURATION (default 20s)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
DURATION="${DURATION:-8}"
COUNT="${COUNT:-20000}"
SESSIONS="${SESSIONS:-5000}"
CONNS_DURATION="${CONNS_DURATION:-20s}"

cargo build --release --bins --locked -q
BIN=target/release
STATE="$(mktemp -d /tmp/vnc-bench.XXXXXX)"
OUT="$STATE/results.jsonl"
# shellcheck source=benches/common.sh
source benches/common.sh
websockify_venv


start_redis

start_stand_ins
start_listening proxy_src "$BIN/vnc-bench" proxy --listen 127.0.0.1:0 --upstream "$SRC"
start_listening proxy_echo "$BIN/vnc-bench" proxy --listen 127.0.0.1:0 --upstream "$ECHO"
start_listening wsproxy_echo "$BIN/vnc-bench" ws-proxy --listen 127.0.0.1:0 --upstream "$ECHO"
WS_SRC_PORT="$(free_port)"; WS_ECHO_PORT="$(free_port)"
"$WEBSOCKIFY" "127.0.0.1:$WS_SRC_PORT" "$SRC" >"$STATE/wsfy_src.log" 2>&1 & pids+=($!)
"$WEBSOCKIFY" "127.0.0.1:$WS_ECHO_PORT" "$ECHO" >"$STATE/wsfy_echo.log" 2>&1 & pids+=($!)

# One token serves every session here (the conns runs open thousands at once), so the
# one-live-session-per-token rule is off; it costs one Redis round trip at admission
# and nothing on the data path this script measures. Those sessions are viewers of one
# desktop, every one typing: input is shared (with the driver lease only one could),
# and they all come from 127.0.0.1, so the per-address handshake bound is lifted to
# the client's connect concurrency.
relay_args=(--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --redis-url "redis://127.0.0.1:$REDIS_PORT"
  --jwt-public-key "$STATE/keys/bench.pub.pem" --max-sessions 20000 --idle-timeout 10m
  --single-use-tokens false --input shared --max-pending-per-address 1024)
start_listening relay "$BIN/vnc-relay" "${relay_args[@]}"
RELAY="$(relay_public relay)"
start_listening relay256 "$BIN/vnc-relay" "${relay_args[@]}" --read-buffer-size 262144
RELAY256="$(relay_public relay256)"

register_src_echo
relay_ready relay

# bench LABEL ARGS... : runs vnc-bench, appends {"label":..., "result":...} to $OUT.
bench() {
  local label="$1"; shift
  local line
  line="$("$BIN/vnc-bench" "$@" | sed -n 's/^RESULT //p' | tail -1)"
  echo "{\"label\":\"$label\",\"result\":$line}" >>"$OUT"
  echo "  $label: $line" | cut -c1-220
}

echo "== throughput and latency, $ROUNDS rounds, alternating targets"
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  bench throughput/relay throughput --target "ws://$RELAY/websockify?token=$TOKEN_SRC" --duration "${DURATION}s"
  bench throughput/relay256 throughput --target "ws://$RELAY256/websockify?token=$TOKEN_SRC" --duration "${DURATION}s"
  bench throughput/proxy throughput --target "tcp://$(listening_addr proxy_src)" --duration "${DURATION}s"
  bench throughput/websockify throughput --target "ws://127.0.0.1:$WS_SRC_PORT/" --duration "${DURATION}s"
  bench latency/relay latency --target "ws://$RELAY/websockify?token=$TOKEN_ECHO" --count "$COUNT"
  bench latency/proxy latency --target "tcp://$(listening_addr proxy_echo)" --count "$COUNT"
  bench latency/websockify latency --target "ws://127.0.0.1:$WS_ECHO_PORT/" --count "$COUNT"
  bench latency/direct latency --target "tcp://$ECHO" --count "$COUNT"
done

echo "== $SESSIONS concurrent sessions, 5 pings/s each, $ROUNDS rounds, alternating (relay, plain proxy, least WebSocket relay, straight to the echo upstream)"
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  bench conns/relay conns --target "ws://$RELAY/websockify?token=$TOKEN_ECHO" --sessions "$SESSIONS" \
    --rate 5 --duration "$CONNS_DURATION" --warmup 2s --pid "$relay_pid"
  bench conns/proxy conns --target "tcp://$(listening_addr proxy_echo)" --sessions "$SESSIONS" \
    --rate 5 --duration "$CONNS_DURATION" --warmup 2s --pid "$proxy_echo_pid"
  bench conns/ws-proxy conns --target "ws://$(listening_addr wsproxy_echo)/" --sessions "$SESSIONS" \
    --rate 5 --duration "$CONNS_DURATION" --warmup 2s --pid "$wsproxy_echo_pid"
  bench conns/direct conns --target "tcp://$ECHO" --sessions "$SESSIONS" --rate 5 --duration "$CONNS_DURATION" --warmup 2s
done

echo "== relay RSS per idle session (fresh relay)"
kill "$relay_pid" "$relay256_pid"; wait "$relay_pid" "$relay256_pid" 2>/dev/null || true
start_listening relay "$BIN/vnc-relay" "${relay_args[@]}"
RELAY="$(relay_public relay)"
relay_ready relay
bench idle/relay conns --target "ws://$RELAY/websockify?token=$TOKEN_ECHO" --sessions "$SESSIONS" \
  --rate 0 --duration 5s --pid "$relay_pid"

python3 benches/summarize.py "$OUT"
echo "raw results: $OUT"
