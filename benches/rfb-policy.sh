#!/usr/bin/env bash
# The relay-core throughput benchmark with the RFB policies on (issue: within 5% of the
# plain path): one relay and three sessions kinds, alternating each round, all read by
# the same vnc-bench client (container->browser, one stream):
#   plain     control token, the source asks for no VNC password;
#   injected  control token, the source asks for VNC Authentication and the relay
#             answers it with the container record's vnc_password (the browser sees None);
#   view      view token: shared flag forced, input dropped (the client sends none
#             after the handshake, so this measures what the filter costs the stream);
#   noclip    control token whose clipboard claim lacks from_desktop: every byte of
#             the server's stream is framed to take ServerCutText out.
#
#   benches/rfb-policy.sh [ROUNDS]        (default 5)
# Env: DURATION (seconds per run, default 8)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
DURATION="${DURATION:-8}"

# shellcheck source=benches/common.sh
source benches/common.sh
prepare policy

PASSWORD="bench-pw"
start_redis
"$BIN/vnc-control" keys generate --out "$STATE/keys" --kid bench >/dev/null
start_listening source "$BIN/vnc-bench" source --listen 127.0.0.1:0
start_listening locked "$BIN/vnc-bench" source --listen 127.0.0.1:0 --password "$PASSWORD"
start_listening relay "$BIN/vnc-relay" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" --jwt-public-key "$STATE/keys/bench.pub.pem" \
  --idle-timeout 10m
RELAY="$(relay_public relay)"

SRC="$(listening_addr source)"; LOCKED="$(listening_addr locked)"
redis-cli -p "$REDIS_PORT" hset vnc:container:open state running tenant bench owner bench \
  host 127.0.0.1 port "${SRC##*:}" >/dev/null
redis-cli -p "$REDIS_PORT" hset vnc:container:locked state running tenant bench owner bench \
  host 127.0.0.1 port "${LOCKED##*:}" vnc_password "$PASSWORD" >/dev/null
declare -A url
url[plain]="ws://$RELAY/websockify?token=$(token open control)"
url[injected]="ws://$RELAY/websockify?token=$(token locked control)"
url[view]="ws://$RELAY/websockify?token=$(token open view)"
url[noclip]="ws://$RELAY/websockify?token=$(token open control --clipboard to_desktop)"
TARGETS=(plain injected view noclip)
relay_ready relay

echo "== throughput, $ROUNDS rounds, alternating (${TARGETS[*]})"
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  for t in "${TARGETS[@]}"; do
    record "policy:throughput/$t" throughput --target "${url[$t]}" --duration "${DURATION}s"
  done
done
python3 benches/summarize.py "$OUT"
echo "raw results: $OUT"
