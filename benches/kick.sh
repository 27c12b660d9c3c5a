#!/usr/bin/env bash
# Kick latency (benches/README.md): two relay nodes on one Redis (or a 6-node Redis
# Cluster: REDIS_BACKEND=cluster, see benches/cluster.sh) hold SESSIONS sessions
# (half on each, one token per session) to the RFB echo stand-in; vnc-bench publishes
# KICKS kicks on vnc:control one after another and times each from the PUBLISH to the
# end of the kicked session's connection. Goal: p99 within 100 ms. Loopback only;
# everything it starts is stopped on exit.
#
#   benches/kick.sh            Env: SESSIONS (default 400), KICKS (default 200),
#                              REDIS_BACKEND (standalone, the default, or cluster: a
#                              6-node Redis Cluster), CONCURRENCY (sessions opening at
#                              once, default 32)
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS="${SESSIONS:-400}"
KICKS="${KICKS:-200}"
CONCURRENCY="${CONCURRENCY:-32}"

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

echo "== ${REDIS_BACKEND:-standalone}: $SESSIONS sessions on 2 nodes ($CONCURRENCY opening at once), $KICKS kicks one after another"
record "kick-${REDIS_BACKEND:-standalone}" kick --url-file "$STATE/sessions.urls" \
  --sessions "$SESSIONS" --kicks "$KICKS" --concurrency "$CONCURRENCY" --redis-url "$REDIS_URL"
echo "raw results: $OUT"
