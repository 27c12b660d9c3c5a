#!/usr/bin/env bash
# Mixed load of benches/README.md ("Mixed load (input under streaming)"): N sessions,
# each streaming FramebufferUpdates from the `desktop` stand-in (FPS a second of
# UPDATE_SIZE bytes) while sending key strokes (RATE a second) whose in-band echoes it
# times, through every target in alternation, round after round: the relay's raw
# WebSocket (ws://) and socket.io (sio://) paths, the plain TCP proxy, HAProxy in TCP
# mode with `option splice-auto`, websockify 0.13 and the Node socket.io relay of
# benches/node-relay. Each run reports input RTT percentiles, bytes received, and the
# CPU seconds and RSS of the server under test and of the stand-in. Loopback only;
# everything it starts is stopped on exit.
#
#   benches/mixed.sh [ROUNDS]          (default 3)
# Env: SESSIONS (list, default "100 500 2000"), DURATION (default 15s), WARMUP (3s),
#      RATE (key strokes/s, 20), FPS (30), UPDATE_SIZE (bytes, 40000),
#      TARGETS (default "relay-ws relay-sio proxy haproxy websockify node-sio"; also
#      ws-proxy, the least WebSocket relay, `vnc-bench ws-proxy`, and wss-proxy, the
#      same over TLS with a throwaway certificate; sio-proxy, the least socket.io
#      relay, `vnc-bench sio-proxy` (socketioxide); relay-wss and
#      relay-sios, the relay's two paths over TLS, served by a second relay with a
#      throwaway certificate; relay-alt, the raw path of a third relay, the binary
#      ALT_BIN (default: this checkout's) started with ALT_ARGS, to compare a build or
#      a setting in one run, e.g. ALT_ARGS="--read-buffer-size 262144"; relay-alt-sio,
#      that relay's socket.io path),
#      WEBSOCKIFY_MAX (largest N run through websockify, default 500: it forks a
#      Python process per connection)
#      CLIENT_CPUS, SERVER_CPUS (CPU lists for taskset, e.g. 1 and 0): when set, the
#      client runs on CLIENT_CPUS and everything the script starts (servers under
#      test, stand-in, Redis, each sizing its threads to them) on SERVER_CPUS, so the
#      client's WebSocket and TLS work doesn't share cores with the servers (as
#      browsers on other machines wouldn't)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
SESSIONS="${SESSIONS:-100 500 2000}"
DURATION="${DURATION:-15s}"
WARMUP="${WARMUP:-3s}"
RATE="${RATE:-20}"
FPS="${FPS:-30}"
UPDATE_SIZE="${UPDATE_SIZE:-40000}"
TARGETS="${TARGETS:-relay-ws relay-sio proxy haproxy websockify node-sio}"
WEBSOCKIFY_MAX="${WEBSOCKIFY_MAX:-500}"

# shellcheck source=benches/common.sh
source benches/common.sh
prepare mixed
websockify_venv
node_relay_deps
if [[ -n "${CLIENT_CPUS:-}" ]]; then
  # This shell first, so every server starts on SERVER_CPUS and sizes its runtime to
  # them (as in a container limited to those CPUs), not to the whole machine.
  taskset -p -c "${SERVER_CPUS:?SERVER_CPUS with CLIENT_CPUS}" $$ >/dev/null
  CLIENT_PREFIX="taskset -c $CLIENT_CPUS"
  echo "== client on CPUs $CLIENT_CPUS, servers on CPUs $SERVER_CPUS"
fi

# wants T...: whether TARGETS names any of the targets T.
wants() {
  local t
  for t in "$@"; do [[ " $TARGETS " == *" $t "* ]] && return 0; done
  return 1
}

max_n=0
for n in $SESSIONS; do (( n > max_n )) && max_n=$n; done

start_redis
"$BIN/vnc-control" keys generate --out "$STATE/keys" --kid bench >/dev/null
start_listening desktop "$BIN/vnc-bench" desktop --listen 127.0.0.1:0 --fps "$FPS" \
  --update-size "$UPDATE_SIZE"
DESK="$(listening_addr desktop)"
start_listening proxy "$BIN/vnc-bench" proxy --listen 127.0.0.1:0 --upstream "$DESK"
start_listening wsproxy "$BIN/vnc-bench" ws-proxy --listen 127.0.0.1:0 --upstream "$DESK"
if wants sio-proxy; then
  start_listening sioproxy "$BIN/vnc-bench" sio-proxy --listen 127.0.0.1:0 --upstream "$DESK"
fi
if wants wss-proxy relay-wss relay-sios; then make_pki; fi
if wants wss-proxy; then
  start_listening wssproxy "$BIN/vnc-bench" ws-proxy --listen 127.0.0.1:0 --upstream "$DESK" \
    --tls-cert "$PKI/server.crt" --tls-key "$PKI/server.key"
fi
start_haproxy haproxy "$DESK"
WSFY="127.0.0.1:$(free_port)"
"$WEBSOCKIFY" "$WSFY" "$DESK" >"$STATE/websockify.log" 2>&1 &
pids+=($!); websockify_pid=$!
wait_port "$WSFY"
# One container and token per session (as many desktops as viewers): no socket.io room
# has more than one viewer, so no session pays for others' join announcements. Every
# session comes from 127.0.0.1, so the per-address handshake bound is lifted to the
# client's connect concurrency (200). A relay is started only when a target needs it.
# start_relay NAME BINARY FLAGS...: a relay on this Redis with the bench's settings and
# FLAGS.
start_relay() {
  local name="$1" binary="$2"; shift 2
  start_listening "$name" "$binary" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --redis-url "redis://127.0.0.1:$REDIS_PORT" --jwt-public-key "$STATE/keys/bench.pub.pem" \
    --max-sessions 20000 --idle-timeout 10m --single-use-tokens false \
    --max-pending-per-address 1024 "$@"
}
start_relay relay "$BIN/vnc-relay"
RELAY="$(relay_public relay)"
relays=(relay)
if wants relay-wss relay-sios; then
  start_relay relaytls "$BIN/vnc-relay" --tls-cert "$PKI/server.crt" --tls-key "$PKI/server.key"
  RELAYTLS="$(relay_public relaytls)"
  relays+=(relaytls)
fi
if wants relay-alt relay-alt-sio; then
  cp "${ALT_BIN:-$BIN/vnc-relay}" "$BIN/vnc-relay-alt"
  # shellcheck disable=SC2086
  start_relay relayalt "$BIN/vnc-relay-alt" ${ALT_ARGS:-}
  RELAYALT="$(relay_public relayalt)"
  relays+=(relayalt)
fi
start_listening node node benches/node-relay/relay.mjs --listen 127.0.0.1:0 --upstream "$DESK"
NODE="$(listening_addr node)"

echo "== $max_n containers and tokens"
for i in $(seq 0 $((max_n - 1))); do
  echo "hset vnc:container:desk$i state running tenant bench owner bench host 127.0.0.1 port ${DESK##*:}"
done | redis-cli -p "$REDIS_PORT" >/dev/null
for i in $(seq 0 $((max_n - 1))); do
  t="$(token "desk$i")"
  echo "ws://$RELAY/websockify?token=$t" >>"$STATE/relay-ws.urls"
  echo "sio://$RELAY?containerId=desk$i&token=$t" >>"$STATE/relay-sio.urls"
  if [[ -n "${RELAYTLS:-}" ]]; then
    echo "wss://$RELAYTLS/websockify?token=$t" >>"$STATE/relay-wss.urls"
    echo "sios://$RELAYTLS?containerId=desk$i&token=$t" >>"$STATE/relay-sios.urls"
  fi
  if [[ -n "${RELAYALT:-}" ]]; then
    echo "ws://$RELAYALT/websockify?token=$t" >>"$STATE/relay-alt.urls"
    echo "sio://$RELAYALT?containerId=desk$i&token=$t" >>"$STATE/relay-alt-sio.urls"
  fi
done
for r in "${relays[@]}"; do relay_ready "$r"; done
socketio_ready "http://$RELAY"
if [[ -n "${RELAYTLS:-}" ]]; then socketio_ready "https://$RELAYTLS"; fi

# target_args T: the vnc-bench flags naming target T and its server process.
target_args() {
  case "$1" in
    relay-ws | relay-sio) echo "--url-file $STATE/$1.urls --pid server=$relay_pid" ;;
    relay-wss | relay-sios)
      echo "--url-file $STATE/$1.urls --ca $PKI/ca.crt --pid server=$relaytls_pid" ;;
    relay-alt | relay-alt-sio) echo "--url-file $STATE/$1.urls --pid server=$relayalt_pid" ;;
    proxy) echo "--target tcp://$(listening_addr proxy) --pid server=$proxy_pid" ;;
    ws-proxy) echo "--target ws://$(listening_addr wsproxy)/ --pid server=$wsproxy_pid" ;;
    sio-proxy)
      echo "--target sio://$(listening_addr sioproxy)?containerId=desk&token=any --pid server=$sioproxy_pid" ;;
    wss-proxy)
      echo "--target wss://$(listening_addr wssproxy)/ --ca $PKI/ca.crt --pid server=$wssproxy_pid" ;;
    haproxy) echo "--target tcp://$haproxy_addr --pid server=$haproxy_pid" ;;
    websockify) echo "--target ws://$WSFY/ --pid server=$websockify_pid" ;;
    node-sio) echo "--target sio://$NODE?containerId=desk&token=any --pid server=$node_pid" ;;
  esac
}

read -ra targets <<<"$TARGETS"
for n in $SESSIONS; do
  echo "== $n sessions, $ROUNDS rounds, ${FPS}/s updates of $UPDATE_SIZE B, $RATE key strokes/s"
  for r in $(seq "$ROUNDS"); do
    echo "round $r"
    # Rotate the order each round, so no target always runs first or after the same one.
    for k in "${!targets[@]}"; do
      t="${targets[$(((k + r - 1) % ${#targets[@]}))]}"
      if [[ $t == websockify ]] && (( n > WEBSOCKIFY_MAX )); then continue; fi
      # shellcheck disable=SC2046
      record "mixed:$n/$t" mixed $(target_args "$t") --pid "desktop=$desktop_pid" \
        --sessions "$n" --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP"
    done
  done
done

python3 benches/summarize.py "$OUT"
chart_venv
"$CHART_PYTHON" benches/chart.py "$OUT" "$STATE/mixed-p99.png"
echo "raw results: $OUT"
