#!/usr/bin/env bash
# Kick latency (benches/README.md): two relay nodes on one Redis hold SESSIONS sessions
# (half on each, one token per session) to the RFB echo stand-in; vnc-bench publishes
# KICKS kicks on vnc:control one after another and times each from the PUBLISH to the
# end of the kicked session's connection. Goal: p99 within 100 ms. Loopback only;
# everything it starts is stopped on exit.
#
#   benches/kick.sh            Env: SESSIONS (default 400), KICKS (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS="${SESSIONS:-400}"
KICKS="${KICKS:-200}"

# shellcheck source=benches/common.sh
source benches/common.sh
prepare kick

two_relays

# One token per session (a token holds one live session), sessions alternating nodes.
for i in $(seq "$SESSIONS"); do
  t="$("$BIN/vnc-control" token mint --private-key "$STATE/keys/bench.key.pem" \
    --container echo --user "bench-$i" --tenant bench --scope control --ttl 1h)"
  echo "ws://${relays[$((i % 2))]}/websockify?token=$t" >>"$STATE/sessions.urls"
done

echo "== $SESSIONS sessions on 2 nodes, $KICKS kicks one after another"
record kick kick --url-file "$STATE/sessions.urls" --sessions "$SESSIONS" --kicks "$KICKS" \
  --redis-url "redis://127.0.0.1:$REDIS_PORT"
echo "raw results: $OUT"
