#!/usr/bin/env bash
# Control-plane benchmarks (release build, loopback only): VNC tokens minted per
# second through the API, and the job queue's own overhead from enqueue to a job
# finished, with the static runtime (whose start answers at once) as the no-op, and the
# start rate limit lifted (its default, 10 a minute, would be all this measures).
#   benches/control.sh        Env: DURATION (default 10s), COUNT (default 500), CONCURRENCY (8)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"; COUNT="${COUNT:-500}"; CONCURRENCY="${CONCURRENCY:-8}"
cargo build --release --bins --locked -q
BIN=target/release
STATE="$(mktemp -d /tmp/vnc-control-bench.XXXXXX)"
# shellcheck source=benches/common.sh
source benches/common.sh

start_redis

"$BIN/vnc-control" keys generate --out "$STATE/keys" --kid vnc >/dev/null
"$BIN/vnc-control" keys generate --out "$STATE/keys" --kid idp >/dev/null
cat >"$STATE/control.toml" <<TOML
runtime = "static"
images = ["bench"]
[[static_containers]]
cid = "desk"
owner = "alice"
tenant = "t1"
host = "127.0.0.1"
port = 5900
TOML
"$BIN/vnc-control" --config "$STATE/control.toml" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" --jwt-private-key "$STATE/keys/vnc.key.pem" \
  --auth-public-key "$STATE/keys/idp.pub.pem" --auth-issuer idp --auth-audience vnc-control \
  --starts-per-minute 1000000 --log-level warn >"$STATE/control.out" 2>"$STATE/control.err" &
pids+=($!)
until grep -q '^LISTENING' "$STATE/control.out" 2>/dev/null; do sleep 0.05; done
API="$(sed -n 's/^LISTENING api=\([^ ]*\).*/\1/p' "$STATE/control.out")"
# A caller's identity token: any JWT the identity key signs with sub, tenant, iss, aud, exp.
BEARER="$("$BIN/vnc-control" token mint --private-key "$STATE/keys/idp.key.pem" --issuer idp \
  --audience vnc-control --container none --user alice --tenant t1 --ttl 1h)"

"$BIN/vnc-bench" control-tokens --api "$API" --bearer "$BEARER" --container desk \
  --concurrency "$CONCURRENCY" --duration "$DURATION"
"$BIN/vnc-bench" control-queue --api "$API" --bearer "$BEARER" --image bench --count "$COUNT"
