#!/usr/bin/env bash
# File transfer through control against `docker cp` of the same file, in the same run
# (release build, loopback, one Docker engine): upload (PUT /v1/containers/{id}/files/…
# with curl -T, raw body) against `docker cp FILE ctr:…`, and download (GET …/files/…
# to /dev/null) against `docker cp ctr:… -` (the engine's tar, to /dev/null), each pair
# in alternating order round after round. Prints each round and the medians (MB/s) and
# the ratio control / docker cp. The desktop is the RFB fixture with the image
# contract's folders (as the tests make it), started by control's Docker runtime.
#   benches/files.sh [ROUNDS]        Env: SIZE_MB (default 512)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"; SIZE_MB="${SIZE_MB:-512}"
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release -p vnc-control --bins --locked -q
RUSTFLAGS='-C target-feature=+crt-static' cargo build -p vnc-tests --bin rfb-fixture --release \
  --target x86_64-unknown-linux-gnu --locked -q
STATE="$(mktemp -d /tmp/vnc-bench-files.XXXXXX)"
BIN="$STATE/bin"; mkdir -p "$BIN"; cp "$TARGET/release/vnc-control" "$BIN/"
# shellcheck source=benches/common.sh
source benches/common.sh
docker info >/dev/null 2>&1 || { echo "no Docker engine answers (docker info)"; exit 1; }

# The desktop image: the static RFB fixture, HOME=/home/desktop and its two folders
# owned by 1000:1000 (what tests/src/docker.rs builds as vnc-rfb-fixture:files).
IMAGE=vnc-rfb-fixture:files-bench
root="$STATE/rootfs"; mkdir -p "$root/home/desktop/Uploads" "$root/home/desktop/Downloads"
cp "$TARGET/x86_64-unknown-linux-gnu/release/rfb-fixture" "$root/"
tar -C "$root" --owner=0 --group=0 -cf "$STATE/rootfs.tar" rfb-fixture
tar -C "$root" --owner=1000 --group=1000 -rf "$STATE/rootfs.tar" home
docker import --change 'ENTRYPOINT ["/rfb-fixture"]' --change 'ENV VNC_PORT=5900' \
  --change 'ENV HOME=/home/desktop' --change 'EXPOSE 5900/tcp' "$STATE/rootfs.tar" "$IMAGE" >/dev/null

start_redis
"$BIN/vnc-control" keys generate --out "$STATE/keys" --kid vnc >/dev/null
"$BIN/vnc-control" keys generate --out "$STATE/keys" --kid idp >/dev/null
PLANE="bench-files-$$"
"$BIN/vnc-control" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" --jwt-private-key "$STATE/keys/vnc.key.pem" \
  --auth-public-key "$STATE/keys/idp.pub.pem" --auth-issuer idp --auth-audience vnc-control \
  --vnc-password-secret-file "$STATE/vnc-password.secret" --plane "$PLANE" \
  --image "$IMAGE" --network published --publish-ip 127.0.0.1 \
  --files-max-bytes $((8 << 30)) --log-level warn >"$STATE/control.out" 2>"$STATE/control.err" &
pids+=($!)
until grep -q '^LISTENING' "$STATE/control.out" 2>/dev/null; do sleep 0.05; done
API="$(sed -n 's/^LISTENING api=\([^ ]*\).*/\1/p' "$STATE/control.out")"
BEARER="$("$BIN/vnc-control" token mint --private-key "$STATE/keys/idp.key.pem" --issuer idp \
  --audience vnc-control --container none --user alice --tenant t1 --ttl 1h)"
AUTH="Authorization: Bearer $BEARER"

created="$(curl -sS -H "$AUTH" -H 'Content-Type: application/json' \
  -d "{\"image\":\"$IMAGE\",\"resources\":{\"cpus\":1,\"memory_mb\":256}}" "http://$API/v1/containers")"
CID="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["container_id"])' <<<"$created")"
JOB="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])' <<<"$created")"
CTR="vnc-$CID"
cleanup_all() { docker rm -f "$CTR" >/dev/null 2>&1 || true; cleanup; }
trap cleanup_all EXIT
for _ in $(seq 600); do
  state="$(curl -sS -H "$AUTH" "http://$API/v1/jobs/$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')"
  [[ $state == completed ]] && break
  [[ $state == failed ]] && { echo "the desktop did not start"; exit 1; }
  sleep 0.1
done

FILE="$STATE/bench.bin"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$FILE"
docker cp "$FILE" "$CTR:/home/desktop/Downloads/bench.bin"
BYTES="$(stat -c %s "$FILE")"

now() { date +%s.%N; }
# mbps START END: MB/s (10^6 bytes) for BYTES over the interval.
mbps() { python3 -c "print(round($BYTES / 1e6 / ($2 - $1), 1))"; }
up_control() {
  local code
  code="$(curl -sS -o /dev/null -w '%{http_code}' -T "$FILE" -H "$AUTH" \
    "http://$API/v1/containers/$CID/files/up.bin")"
  [[ $code == 201 ]] || { echo "upload answered $code"; exit 1; }
}
up_docker() { docker cp "$FILE" "$CTR:/home/desktop/Uploads/up-cp.bin"; }
down_control() {
  local code
  code="$(curl -sS -o /dev/null -w '%{http_code}' -H "$AUTH" \
    "http://$API/v1/containers/$CID/files/bench.bin")"
  [[ $code == 200 ]] || { echo "download answered $code"; exit 1; }
}
down_docker() { docker cp "$CTR:/home/desktop/Downloads/bench.bin" - >/dev/null; }
timed() { local t0 t1; t0="$(now)"; "$1"; t1="$(now)"; mbps "$t0" "$t1"; }

echo "file: $SIZE_MB MiB; rounds: $ROUNDS; MB/s (10^6 bytes/s)"
printf '%-6s %14s %14s %16s %16s\n' round up_control up_docker_cp down_control down_docker_cp
: >"$STATE/results.txt"
for round in $(seq "$ROUNDS"); do
  if ((round % 2)); then
    uc="$(timed up_control)"; ud="$(timed up_docker)"
    dc="$(timed down_control)"; dd="$(timed down_docker)"
  else
    ud="$(timed up_docker)"; uc="$(timed up_control)"
    dd="$(timed down_docker)"; dc="$(timed down_control)"
  fi
  printf '%-6s %14s %14s %16s %16s\n' "$round" "$uc" "$ud" "$dc" "$dd"
  echo "$uc $ud $dc $dd" >>"$STATE/results.txt"
done
python3 - "$STATE/results.txt" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
med = [statistics.median(c) for c in zip(*rows)]
ratio_up = statistics.median(r[0] / r[1] for r in rows)
ratio_down = statistics.median(r[2] / r[3] for r in rows)
print(f"median  upload: control {med[0]} MB/s, docker cp {med[1]} MB/s, ratio {ratio_up:.2f} (median of each round's)")
print(f"median  download: control {med[2]} MB/s, docker cp {med[3]} MB/s, ratio {ratio_down:.2f}")
PY
echo "control peak RSS: $(awk '/^VmHWM:/ {print $2, $3}' "/proc/${pids[1]}/status" 2>/dev/null || echo n/a)"
