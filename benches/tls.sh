#!/usr/bin/env bash
# Runs the TLS benchmarks of benches/README.md in one go on this machine: the relay's
# raw WebSocket path plain (ws://) and over TLS (wss://, rustls driven by the session's
# own pumps on the TCP socket), and its socket.io path plain (sio://) and over TLS (sios://, straight
# through socketioxide), all read by the same vnc-bench client. Two relays with the
# same flags, one of them with --tls-cert/--tls-key (a throwaway CA and server
# certificate made with the openssl CLI). Alternating targets each round: throughput
# (container->browser, one stream), with the CPU time the relay, the client and the
# source stand-in used during it, then 16-byte ping-pong latency. Loopback only;
# everything it starts is stopped on exit.
#
#   benches/tls.sh [ROUNDS]          (default 3)
# Env: DURATION (throughput seconds, default 8), COUNT (pings, default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
DURATION="${DURATION:-8}"
COUNT="${COUNT:-20000}"

# shellcheck source=benches/common.sh
source benches/common.sh
prepare tls

make_pki
start_redis
start_stand_ins

# Tokens are reused from run to run, so the one-live-session-per-token rule is off (as
# in run.sh); it costs one Redis round trip at admission and nothing on the data path.
relay_args=(--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --redis-url "redis://127.0.0.1:$REDIS_PORT"
  --jwt-public-key "$STATE/keys/bench.pub.pem" --max-sessions 20000 --idle-timeout 10m
  --single-use-tokens false)
start_listening relay "$BIN/vnc-relay" "${relay_args[@]}"
start_listening relaytls "$BIN/vnc-relay" "${relay_args[@]}" \
  --tls-cert "$PKI/server.crt" --tls-key "$PKI/server.key"
RELAY="$(relay_public relay)"; RELAYTLS="$(relay_public relaytls)"

register_src_echo
for r in relay relaytls; do relay_ready "$r"; done
socketio_ready "http://$RELAY"
socketio_ready "https://$RELAYTLS"
# What a TLS 1.3 client offering rustls' suite order gets from the relay (for the record).
echo "TLS: $(openssl s_client -connect "$RELAYTLS" -CAfile "$PKI/ca.crt" -alpn http/1.1 -brief \
  -ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256 \
  </dev/null 2>&1 | grep -E '^(Protocol version|Ciphersuite|Verification):' | tr '\n' ' ')"

# Each target: source URL, echo URL, relay pid.
declare -A url_src url_echo pid_of
url_src[ws]="ws://$RELAY/websockify?token=$TOKEN_SRC"
url_echo[ws]="ws://$RELAY/websockify?token=$TOKEN_ECHO"
url_src[wss]="wss://$RELAYTLS/websockify?token=$TOKEN_SRC"
url_echo[wss]="wss://$RELAYTLS/websockify?token=$TOKEN_ECHO"
url_src[sio]="sio://$RELAY?containerId=src&token=$TOKEN_SRC"
url_echo[sio]="sio://$RELAY?containerId=echo&token=$TOKEN_ECHO"
url_src[sios]="sios://$RELAYTLS?containerId=src&token=$TOKEN_SRC"
url_echo[sios]="sios://$RELAYTLS?containerId=echo&token=$TOKEN_ECHO"
pid_of[ws]="$relay_pid"; pid_of[sio]="$relay_pid"
pid_of[wss]="$relaytls_pid"; pid_of[sios]="$relaytls_pid"
TARGETS=(ws wss sio sios)

echo "== throughput and latency, $ROUNDS rounds, alternating targets (${TARGETS[*]})"
for r in $(seq "$ROUNDS"); do
  echo "round $r (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  for t in "${TARGETS[@]}"; do
    record_cpu "tls:throughput/$t" "${pid_of[$t]}" throughput --target "${url_src[$t]}" \
      --ca "$PKI/ca.crt" --duration "${DURATION}s"
  done
  for t in "${TARGETS[@]}"; do
    record "tls:latency/$t" latency --target "${url_echo[$t]}" --ca "$PKI/ca.crt" --count "$COUNT"
  done
done
echo "  peak RSS: plain relay $(peak_rss_kib "$relay_pid") KiB, TLS relay $(peak_rss_kib "$relaytls_pid") KiB"

python3 benches/summarize.py "$OUT"
echo "raw results: $OUT"
