#!/usr/bin/env bash
# Runs the socket.io benchmarks of benches/README.md in one go on this machine: the
# relay's socket.io path (namespace /vnc) against its raw WebSocket path, and against a
# minimal Node socket.io relay (benches/node-relay/relay.mjs, socket.io 4, one
# net.connect per socket, the way a NestJS gateway does it), all read by the same
# vnc-bench client. Two references bound what any relay can do here: a plain TCP proxy
# in the relay's place (no WebSocket, no socket.io: the least a relay process must do),
# and, for latency, the client straight at the echo stand-in. Alternating targets each round: throughput (container->browser, one
# stream, with the CPU each process used) and 16-byte ping-pong latency; then one run of
# concurrent pinging sessions per target. Loopback only; everything it starts is stopped on exit.
#
#   benches/socketio.sh [ROUNDS]          (default 3)
# Env: DURATION (throughput seconds, default 8), COUNT (pings, default 20000),
#      SESSIONS (concurrent sessions, default 1000; 0 skips), CONNS_DURATION (default 20s)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
DURATION="${DURATION:-8}"
COUNT="${COUNT:-20000}"
SESSIONS="${SESSIONS:-1000}"
CONNS_DURATION="${CONNS_DURATION:-20s}"

# shellcheck source=benches/common.sh
source benches/common.sh
prepare sio

node_relay_deps

start_redis
start_stand_ins
start_listening proxy_src "$BIN/vnc-bench" proxy --listen 127.0.0.1:0 --upstream "$SRC"
start_listening proxy_echo "$BIN/vnc-bench" proxy --listen 127.0.0.1:0 --upstream "$ECHO"

start_listening relay "$BIN/vnc-relay" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" --jwt-public-key "$STATE/keys/bench.pub.pem" \
  --max-sessions 20000 --idle-timeout 10m
RELAY="$(relay_public relay)"
start_listening node node benches/node-relay/relay.mjs --listen 127.0.0.1:0 \
  --upstream "src=$SRC" --upstream "echo=$ECHO"
NODE="$(listening_addr node)"

register_src_echo
relay_ready relay
socketio_ready "http://$RELAY"

# Each target: name, source URL, echo URL, pid (for RSS).
declare -A url_src url_echo pid_of
url_src[relay-ws]="ws://$RELAY/websockify?token=$TOKEN_SRC"
url_echo[relay-ws]="ws://$RELAY/websockify?token=$TOKEN_ECHO"
pid_of[relay-ws]="$relay_pid"
url_src[relay-sio]="sio://$RELAY?containerId=src&token=$TOKEN_SRC"
url_echo[relay-sio]="sio://$RELAY?containerId=echo&token=$TOKEN_ECHO"
pid_of[relay-sio]="$relay_pid"
url_src[node-sio]="sio://$NODE?containerId=src&token=any"
url_echo[node-sio]="sio://$NODE?containerId=echo&token=any"
pid_of[node-sio]="$node_pid"
TARGETS=(relay-ws relay-sio node-sio)
url_src[proxy]="tcp://$(listening_addr proxy_src)"
url_echo[proxy]="tcp://$(listening_addr proxy_echo)"
pid_of[proxy]="$proxy_src_pid"
url_echo[direct]="tcp://$ECHO"

echo "== throughput and latency, $ROUNDS rounds, alternating targets (${TARGETS[*]}, proxy, direct)"
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  for t in "${TARGETS[@]}" proxy; do
    record_cpu "sio:throughput/$t" "${pid_of[$t]}" throughput --target "${url_src[$t]}" \
      --duration "${DURATION}s"
  done
  for t in "${TARGETS[@]}" proxy direct; do
    record "sio:latency/$t" latency --target "${url_echo[$t]}" --count "$COUNT"
  done
done
for t in relay-sio node-sio; do
  echo "  peak RSS so far of $t: $(peak_rss_kib "${pid_of[$t]}") KiB"
done

if (( SESSIONS > 0 )); then
  echo "== $SESSIONS concurrent sessions, 5 pings/s each, $CONNS_DURATION"
  # The relay allows one live session per token: one token per session and transport.
  for i in $(seq "$SESSIONS"); do
    t="$(token echo)"
    echo "ws://$RELAY/websockify?token=$t" >>"$STATE/conns-relay-ws.urls"
    t="$(token echo)"
    echo "sio://$RELAY?containerId=echo&token=$t" >>"$STATE/conns-relay-sio.urls"
    echo "${url_echo[node-sio]}" >>"$STATE/conns-node-sio.urls"
  done
  for t in "${TARGETS[@]}"; do
    record "sio:conns/$t" conns --url-file "$STATE/conns-$t.urls" --sessions "$SESSIONS" --rate 5 \
      --duration "$CONNS_DURATION" --warmup 2s --pid "${pid_of[$t]}"
  done
fi

python3 benches/summarize.py "$OUT"
echo "raw results: $OUT"
