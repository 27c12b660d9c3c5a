#!/usr/bin/env bash
# Renders docs/images/dashboard.png from a live run: two relay nodes (the second
# recording sessions) and a control with the static runtime on one Redis, the `source`
# and `echo` stand-ins of benches/ as the desktops, a second control plane with the
# Docker runtime on its own key prefix running real containers of the RFB fixture image
# (the tests' `vnc-rfb-fixture`, imported here as `vnc-rfb-fixture:demo`), and a
# Prometheus (Debian's `prometheus`) with deploy/prometheus/'s rules scraping them every
# 2 s. It drives real sessions through the relays (throughput and pinging sessions),
# refused tokens, kicks through control's API and container starts and stops, then
# plots the dashboard's panels from Prometheus with deploy/grafana/render.py. Loopback
# and the local Docker engine only; everything it starts is stopped and removed on exit.
# Takes about three minutes after the builds.
#
#   deploy/grafana/demo.sh [OUT.png]     Env: PYTHON (with matplotlib; default: a venv
#                                        in the scratch folder, filled from PyPI)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_PNG="${1:-docs/images/dashboard.png}"

cargo build -p vnc-benches -p vnc-relay -p vnc-control --bins --locked -q
RUSTFLAGS='-C target-feature=+crt-static' cargo build -p vnc-tests --bin rfb-fixture --release \
  --target x86_64-unknown-linux-gnu --locked -q
BIN="${CARGO_TARGET_DIR:-target}/debug"
FIXTURE="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/rfb-fixture"
IMAGE=vnc-rfb-fixture:demo
STATE="$(mktemp -d /tmp/vnc-dashboard.XXXXXX)"
# shellcheck source=benches/common.sh
source benches/common.sh
# Besides the processes: the demo image's containers (a container left by a crash of
# this script included), and the image.
remove_containers() {
  local ids
  ids="$(docker ps -aq --filter "ancestor=$IMAGE")"
  [[ -z $ids ]] || docker rm -f $ids >/dev/null 2>&1 || true
}
trap 'cleanup; remove_containers; docker image rm "$IMAGE" >/dev/null 2>&1 || true' EXIT

mkdir "$STATE/root"
cp "$FIXTURE" "$STATE/root/rfb-fixture"
tar -C "$STATE/root" --owner=0 --group=0 --mode=0755 -cf "$STATE/rootfs.tar" rfb-fixture
docker import --change 'ENTRYPOINT ["/rfb-fixture"]' --change 'ENV VNC_PORT=5900' \
  --change 'EXPOSE 5900/tcp' "$STATE/rootfs.tar" "$IMAGE" >/dev/null

if [[ -z "${PYTHON:-}" ]]; then
  python3 -m venv "$STATE/venv"
  "$STATE/venv/bin/pip" install -q matplotlib
  PYTHON="$STATE/venv/bin/python"
fi

start_redis
"$BIN/vnc-control" keys generate --out "$STATE/keys" --kid vnc >/dev/null
"$BIN/vnc-control" keys generate --out "$STATE/keys" --kid idp >/dev/null
start_listening source "$BIN/vnc-bench" source --listen 127.0.0.1:0
start_listening echo "$BIN/vnc-bench" echo --listen 127.0.0.1:0
SRC="$(listening_addr source)"; ECHO="$(listening_addr echo)"

# static_container CID ADDR: the control.toml entry of alice's desktop CID, answering
# at ADDR (127.0.0.1:PORT).
static_container() {
  cat <<TOML
[[static_containers]]
cid = "$1"
owner = "alice"
tenant = "t1"
host = "127.0.0.1"
port = ${2##*:}
TOML
}
# Control with the static runtime: the two stand-ins as alice's desktops, and an image
# whose starts answer at once (the job panels' traffic).
{
  printf 'runtime = "static"\nimages = ["demo"]\n'
  static_container src "$SRC"
  static_container echo "$ECHO"
} >"$STATE/control.toml"
start_listening control "$BIN/vnc-control" --config "$STATE/control.toml" \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --redis-url "redis://127.0.0.1:$REDIS_PORT" \
  --jwt-private-key "$STATE/keys/vnc.key.pem" --auth-public-key "$STATE/keys/idp.pub.pem" \
  --auth-issuer idp --auth-audience vnc-control --starts-per-minute 600 --api-rate-limit 0 \
  --log-level warn
API="$(sed -n 's/^LISTENING api=\([^ ]*\).*/\1/p' "$STATE/control.out")"
CONTROL_ADMIN="$(sed -n 's/.*admin=\([^ ]*\).*/\1/p' "$STATE/control.out")"
# The Docker plane: its own key prefix, so its reconcile leaves the stand-ins' records
# (which no runtime manages) alone; the relays don't serve its containers here.
start_listening jobs "$BIN/vnc-control" --runtime docker --image "$IMAGE" --network published \
  --publish-ip 127.0.0.1 --start-timeout 30s --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" --redis-prefix demojobs: \
  --jwt-private-key "$STATE/keys/vnc.key.pem" --auth-public-key "$STATE/keys/idp.pub.pem" \
  --auth-issuer idp --auth-audience vnc-control --starts-per-minute 600 --api-rate-limit 0 \
  --worker-concurrency 2 --max-containers-per-tenant 50 --log-level warn
JOBS_API="$(sed -n 's/^LISTENING api=\([^ ]*\).*/\1/p' "$STATE/jobs.out")"
JOBS_ADMIN="$(sed -n 's/.*admin=\([^ ]*\).*/\1/p' "$STATE/jobs.out")"
BEARER="$("$BIN/vnc-control" token mint --private-key "$STATE/keys/idp.key.pem" --issuer idp \
  --audience vnc-control --container none --user alice --tenant t1 --ttl 1h)"

# The relays let one token hold many sessions (vnc-bench conns opens them all with
# one), and are bound at 100 sessions so the max_sessions line is in sight.
# Node b records every session (files of at most 20 MB, 200 MB in all).
relays=(); admins=()
for node in a b; do
  recording=()
  [[ $node == b ]] && recording=(--record-dir "$STATE/recordings" --record-scope control
    --record-max-bytes 20000000 --record-total-bytes 200000000)
  start_listening "relay_$node" "$BIN/vnc-relay" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --redis-url "redis://127.0.0.1:$REDIS_PORT" --jwt-public-key "$STATE/keys/vnc.pub.pem" \
    --node-id "relay-$node" --single-use-tokens false --max-sessions 100 --log-level warn \
    "${recording[@]}"
  relays+=("$(sed -n 's/^LISTENING public=\([^ ]*\).*/\1/p' "$STATE/relay_$node.out")")
  admins+=("$(sed -n 's/.*admin=\([^ ]*\).*/\1/p' "$STATE/relay_$node.out")")
  until curl -sf "http://${admins[-1]}/readyz" >/dev/null; do sleep 0.05; done
done

PROM_PORT="$(free_port)"
cat >"$STATE/prometheus.yml" <<YAML
global: { scrape_interval: 2s, evaluation_interval: 2s }
rule_files: ["$PWD/deploy/prometheus/rules/*.yml"]
scrape_configs:
  - job_name: vnc-relay
    static_configs: [{ targets: ["${admins[0]}", "${admins[1]}"] }]
  - job_name: vnc-control
    static_configs: [{ targets: ["$CONTROL_ADMIN", "$JOBS_ADMIN"] }]
YAML
prometheus --config.file="$STATE/prometheus.yml" --storage.tsdb.path="$STATE/prometheus" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$STATE/prometheus.log" 2>&1 &
pids+=($!)
until curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null; do sleep 0.2; done

# A VNC token for alice's container $1 from control's API (300 s, the longest it gives:
# enough to open the sessions, which outlive it).
vnc_token() {
  curl -sf -X POST -H "Authorization: Bearer $BEARER" -H 'Content-Type: application/json' \
    -d '{"scope":"control","ttl_seconds":300}' "http://$API/v1/containers/$1/vnc-tokens" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
# A WebSocket upgrade to relay $1 with query $2, for refusals (the answer is ignored).
upgrade() {
  curl -s -o /dev/null --max-time 2 -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
    -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \
    "http://$1/websockify$2" || true
}
# SID of one live session of container $1, through control's API.
a_session() {
  curl -sf -H "Authorization: Bearer $BEARER" "http://$API/v1/containers/$1/sessions" |
    python3 -c 'import json,sys; s=json.load(sys.stdin)["sessions"]; print(s[0]["session_id"] if s else "")'
}

START="$(date +%s)"
echo "== quiet start"; sleep 20

echo "== throughput sessions on both nodes, pinging sessions, refused tokens"
src_token="$(vnc_token src)"; echo_token="$(vnc_token echo)"
for i in 0 1; do
  "$BIN/vnc-bench" --threads 1 throughput --target "ws://${relays[$i]}/websockify?token=$src_token" \
    --duration 40s >"$STATE/throughput_$i.out" 2>&1 &
done
"$BIN/vnc-bench" --threads 1 conns --target "ws://${relays[0]}/websockify?token=$echo_token" \
  --sessions 60 --rate 2 --duration 100s >"$STATE/conns_a.out" 2>&1 &
conns_a=$!
"$BIN/vnc-bench" --threads 1 conns --target "ws://${relays[1]}/websockify?token=$echo_token" \
  --sessions 30 --rate 2 --duration 70s >"$STATE/conns_b.out" 2>&1 &
conns_b=$!
forged="$("$BIN/vnc-control" token mint --private-key "$STATE/keys/idp.key.pem" --kid vnc \
  --container echo --user mallory --tenant t1 --ttl 1h)"
for _ in $(seq 60); do
  upgrade "${relays[0]}" ""                       # missing
  upgrade "${relays[1]}" "?token=not.a.token"     # malformed
  upgrade "${relays[0]}" "?token=$forged"         # signature
  sleep 0.5
done

echo "== kicks through control's API"
for _ in $(seq 20); do
  sid="$(a_session echo)"
  [[ -n $sid ]] && curl -sf -o /dev/null -X DELETE -H "Authorization: Bearer $BEARER" \
    "http://$API/v1/sessions/$sid" || true
  sleep 1
done

echo "== container jobs: 16 starts at once, then their stops"
created=()
for _ in $(seq 16); do
  created+=("$(curl -sf -X POST -H "Authorization: Bearer $BEARER" \
    -H 'Content-Type: application/json' -d "{\"image\":\"$IMAGE\",\"resources\":{\"cpus\":0.25,\"memory_mb\":64}}" \
    "http://$JOBS_API/v1/containers" | python3 -c 'import json,sys; print(json.load(sys.stdin)["container_id"])')")
done
# Until every container runs (or failed), then stop them all.
for _ in $(seq 120); do
  states="$(for id in "${created[@]}"; do
    curl -s -H "Authorization: Bearer $BEARER" "http://$JOBS_API/v1/containers/$id" |
      python3 -c 'import json,sys; print(json.load(sys.stdin).get("state", "unknown"))' || echo unknown
  done | sort | uniq -c | tr '\n' ' ')"
  [[ $states == *creating* ]] || break
  sleep 1
done
echo "   states: $states"
sleep 10
for id in "${created[@]}"; do
  curl -sf -o /dev/null -X DELETE -H "Authorization: Bearer $BEARER" "http://$JOBS_API/v1/containers/$id"
done
wait "$conns_a" "$conns_b" 2>/dev/null || true
echo "== quiet end"; sleep 20
END="$(date +%s)"
echo "== targets at the end (up):"
curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/query?query=up" | python3 -c '
import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    print("  ", r["metric"]["job"], r["metric"]["instance"], r["value"][1])'

"$PYTHON" deploy/grafana/render.py --prometheus "http://127.0.0.1:$PROM_PORT" \
  --start "$START" --end "$END" --step 2s --rate-interval 10s --out "$OUT_PNG"
