# Shared by the benchmark scripts (sourced): the binaries and a scratch folder, process
# cleanup, free ports, a Redis, container records and tokens. The functions use STATE
# (the scratch folder, set by `prepare`).
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_redis: a throwaway redis-server on a free loopback port; sets REDIS_PORT.
start_redis() {
  REDIS_PORT="$(free_port)"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$STATE/redis.log" 2>&1 &
  pids+=($!)
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
}

# start_listening NAME CMD... : runs CMD in the background (stdout in $STATE/NAME.out),
# sets NAME_pid, and waits for its LISTENING line.
start_listening() {
  local name="$1"; shift
  "$@" >"$STATE/$name.out" 2>"$STATE/$name.err" &
  pids+=($!)
  eval "${name}_pid=$!"
  for _ in $(seq 200); do
    if grep -q '^LISTENING' "$STATE/$name.out" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$name did not start:"; cat "$STATE/$name.err"; exit 1
}
# listening_addr NAME: the address of NAME's `LISTENING ADDR` line.
listening_addr() { sed -n 's/^LISTENING \([^ ]*\).*/\1/p' "$STATE/$1.out" | head -1; }
# relay_public NAME, relay_admin NAME: the public and admin listeners of the relay
# started as NAME (see start_listening: its LISTENING line).
relay_public() { sed -n 's/^LISTENING public=\([^ ]*\).*/\1/p' "$STATE/$1.out"; }
relay_admin() { sed -n 's/.*admin=\([^ ]*\).*/\1/p' "$STATE/$1.out"; }
# relay_ready NAME: waits until the relay started as NAME answers /readyz.
relay_ready() { until curl -sf "http://$(relay_admin "$1")/readyz" >/dev/null; do sleep 0.05; done; }
# socketio_ready BASE_URL: waits until the relay's socket.io is up (it answers 503 until
# its Redis adapter is, then 400 to a request that isn't an upgrade); trusts $PKI's CA
# when make_pki made one.
socketio_ready() {
  until [[ "$(curl -s ${PKI:+--cacert "$PKI/ca.crt"} -o /dev/null -w '%{http_code}' \
    "$1/socket.io/?EIO=4&transport=websocket")" != 503 ]]; do
    sleep 0.05
  done
}

# peak_rss_kib PID: the process's peak resident set (VmHWM).
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo n/a; }

# record LABEL ARGS... : runs vnc-bench (from $BIN, behind CLIENT_PREFIX if set), appends
# {"label":..., "result":...} to $OUT; a failed run is recorded with its error instead of
# stopping the script.
record() {
  local label="$1"; shift
  local line
  # shellcheck disable=SC2086  # CLIENT_PREFIX is words (e.g. `taskset -c 1`) or empty.
  line="$(${CLIENT_PREFIX:-} "$BIN/vnc-bench" "$@" 2>"$STATE/last.err" | sed -n 's/^RESULT //p' | tail -1)" || true
  if [[ -z "$line" ]]; then
    line="{\"error\":$(python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()[-300:]))' <"$STATE/last.err")}"
  fi
  echo "{\"label\":\"$label\",\"result\":$line}" >>"$OUT"
  echo "  $label: $line" | cut -c1-220
}

# prepare NAME: builds the release binaries, makes the scratch folder STATE
# (/tmp/vnc-bench-NAME.XXXXXX) with a private copy of them in BIN (a rebuild during the
# run doesn't change what is measured), and sets OUT, the results file.
prepare() {
  cargo build --release -p vnc-benches -p vnc-relay -p vnc-control --bins --locked -q
  STATE="$(mktemp -d "/tmp/vnc-bench-$1.XXXXXX")"
  BIN="$STATE/bin"
  mkdir -p "$BIN"
  local release="${CARGO_TARGET_DIR:-target}/release"
  cp "$release/vnc-bench" "$release/vnc-relay" "$release/vnc-control" "$BIN/"
  OUT="$STATE/results.jsonl"
}

# make_pki: a throwaway CA and a P-256 server certificate for 127.0.0.1 and localhost
# in $STATE/pki (sets PKI): ca.crt for the client's --ca, server.crt/server.key for the
# relay's --tls-cert/--tls-key.
make_pki() {
  PKI="$STATE/pki"
  mkdir -p "$PKI"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=vnc-bench-ca -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /CN=localhost -keyout "$PKI/server.key" -out "$PKI/server.csr" 2>/dev/null
  printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=CA:FALSE' \
    'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >"$PKI/server.ext"
  openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 2 -extfile "$PKI/server.ext" -out "$PKI/server.crt" 2>/dev/null
}

# start_stand_ins: a token key pair in $STATE/keys (kid `bench`) and the `source` and
# `echo` stand-ins for a VNC server (see start_listening); sets SRC and ECHO.
start_stand_ins() {
  "$BIN/vnc-control" keys generate --out "$STATE/keys" --kid bench >/dev/null
  start_listening source "$BIN/vnc-bench" source --listen 127.0.0.1:0
  start_listening echo "$BIN/vnc-bench" echo --listen 127.0.0.1:0
  SRC="$(listening_addr source)"; ECHO="$(listening_addr echo)"
}

# register_src_echo: container records `src` and `echo` for the `source` and `echo`
# stand-ins (started as NAME source / echo, addresses in SRC and ECHO), a `token CID`
# function minting a control token with the key in $STATE/keys, and TOKEN_SRC and
# TOKEN_ECHO.
register_src_echo() {
  local c port
  for c in src echo; do
    port="${SRC##*:}"; [[ $c == echo ]] && port="${ECHO##*:}"
    redis-cli -p "$REDIS_PORT" hset "vnc:container:$c" state running tenant bench owner bench \
      host 127.0.0.1 port "$port" >/dev/null
  done
  TOKEN_SRC="$(token src)"; TOKEN_ECHO="$(token echo)"
}
token() { "$BIN/vnc-control" token mint --private-key "$STATE/keys/bench.key.pem" \
  --container "$1" --user bench --tenant bench --scope "${2:-control}" --ttl 2h "${@:3}"; }

CLK_TCK="$(getconf CLK_TCK)"
# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# child_ticks: user + system ticks of this shell's finished children (vnc-bench runs).
child_ticks() { awk '{print $16 + $17}' "/proc/$$/stat"; }
# busy_ticks: ticks all CPUs spent on anything but idle and I/O wait.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# record_cpu LABEL SERVER_PID ARGS... : `record`, then a `cpu:LABEL` line with the CPU
# seconds the server under test (a relay, or the Node relay), the client (and the few tools around it), the
# source (started as `source`) and the whole machine used during the run, and its wall
# time. Interrupt time (loopback softirq) and other users' processes count for the
# machine only.
record_cpu() {
  local label="$1" pid="$2"; shift 2
  local r0 c0 s0 m0 t0 r1 c1 s1 m1 t1
  r0="$(cpu_ticks "$pid")"; c0="$(child_ticks)"; s0="$(cpu_ticks "$source_pid")"
  m0="$(busy_ticks)"; t0="$(date +%s.%N)"
  record "$label" "$@"
  r1="$(cpu_ticks "$pid")"; c1="$(child_ticks)"; s1="$(cpu_ticks "$source_pid")"
  m1="$(busy_ticks)"; t1="$(date +%s.%N)"
  python3 - "$label" $((r1 - r0)) $((c1 - c0)) $((s1 - s0)) $((m1 - m0)) "$t0" "$t1" "$CLK_TCK" \
    >>"$OUT" <<'PY'
import json, sys
label, server, client, source, machine, t0, t1, tck = sys.argv[1:]
secs = lambda ticks: int(ticks) / int(tck)
print(json.dumps({"label": "cpu:" + label, "result": {
    "server_s": secs(server), "client_s": secs(client), "source_s": secs(source),
    "machine_s": secs(machine), "wall_s": round(float(t1) - float(t0), 3)}}))
PY
}

# chart_venv: matplotlib from PyPI in a venv of its own (target/chart-venv), for
# benches/chart.py; sets CHART_PYTHON to its interpreter.
chart_venv() {
  local venv="${CARGO_TARGET_DIR:-target}/chart-venv"
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "matplotlib==3.11.*"
  fi
  CHART_PYTHON="$venv/bin/python"
}

# websockify_venv: websockify 0.13 from PyPI in a venv of its own (target/bench-venv);
# sets WEBSOCKIFY to its command.
websockify_venv() {
  local venv="${CARGO_TARGET_DIR:-target}/bench-venv"
  if [[ ! -x "$venv/bin/websockify" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "websockify==0.13.0"
  fi
  WEBSOCKIFY="$venv/bin/websockify"
}

# node_relay_deps: socket.io 4 for benches/node-relay, from its lock file.
node_relay_deps() {
  if [[ ! -d benches/node-relay/node_modules/socket.io ]]; then
    (cd benches/node-relay && npm ci --no-audit --no-fund --silent)
  fi
}

# wait_port ADDR: until something accepts TCP connections on HOST:PORT.
wait_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on $1"; exit 1
}

# start_haproxy NAME UPSTREAM: HAProxy (Debian's `haproxy`) in TCP mode with
# `option splice-auto` (kernel splicing between the sockets when it judges it useful),
# on a free loopback port, forwarding to UPSTREAM (HOST:PORT); config in
# $STATE/NAME.cfg. Sets NAME_pid and NAME_addr.
start_haproxy() {
  local name="$1" upstream="$2" port
  port="$(free_port)"
  cat >"$STATE/$name.cfg" <<CFG
global
    # 2 fds a connection plus splice pipes, under the open-file limit (20,000 here).
    maxconn 6000
defaults
    mode tcp
    maxconn 6000
    option splice-auto
    timeout connect 10s
    timeout client 10m
    timeout server 10m
frontend in
    bind 127.0.0.1:$port
    default_backend up
backend up
    server up $upstream
CFG
  haproxy -db -f "$STATE/$name.cfg" >"$STATE/$name.log" 2>&1 &
  pids+=($!)
  eval "${name}_pid=$!"
  eval "${name}_addr=127.0.0.1:$port"
  wait_port "127.0.0.1:$port"
}

# start_cluster: a throwaway Redis Cluster of 6 nodes (3 primaries, 3 replicas) on free
# loopback ports, settled; sets CLUSTER_PORTS and CLUSTER_URL.
start_cluster() {
  CLUSTER_PORTS=()
  local port dir addrs=()
  for _ in 1 2 3 4 5 6; do
    port="$(free_port)"; dir="$STATE/cluster-$port"; mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$dir/nodes.conf" --cluster-port "$(free_port)" \
      --cluster-node-timeout 2000 --repl-diskless-sync-delay 0 --save '' --appendonly no \
      --dir "$dir" >"$dir/log" 2>&1 &
    pids+=($!)
    CLUSTER_PORTS+=("$port"); addrs+=("127.0.0.1:$port")
  done
  for port in "${CLUSTER_PORTS[@]}"; do
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$STATE/cluster.log"
  for port in "${CLUSTER_PORTS[@]}"; do
    until redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok'; do sleep 0.1; done
  done
  CLUSTER_URL="redis-cluster://127.0.0.1:${CLUSTER_PORTS[0]}?node=127.0.0.1:${CLUSTER_PORTS[1]}&node=127.0.0.1:${CLUSTER_PORTS[2]}"
}

# start_backend: the Redis of REDIS_BACKEND (`standalone`, the default, or `cluster`);
# sets REDIS_URL and REDIS_CLI (a redis-cli that follows a cluster's redirects).
start_backend() {
  case "${REDIS_BACKEND:-standalone}" in
    standalone)
      start_redis
      REDIS_URL="redis://127.0.0.1:$REDIS_PORT"; REDIS_CLI=(redis-cli -p "$REDIS_PORT") ;;
    cluster)
      start_cluster
      REDIS_URL="$CLUSTER_URL"; REDIS_CLI=(redis-cli -c -p "${CLUSTER_PORTS[0]}") ;;
    *) echo "REDIS_BACKEND must be standalone or cluster"; exit 2 ;;
  esac
}

# two_relays: Redis (start_backend), a token key pair (kid `bench`), the `echo` stand-in
# registered as container `echo` of user `bench` (tenant `bench`), and two relay nodes
# (`bench-a`, `bench-b`) on that Redis, ready; sets ECHO and the array `relays` (their
# public addresses).
two_relays() {
  start_backend
  "$BIN/vnc-control" keys generate --out "$STATE/keys" --kid bench >/dev/null
  start_listening echo "$BIN/vnc-bench" echo --listen 127.0.0.1:0
  ECHO="$(listening_addr echo)"
  "${REDIS_CLI[@]}" hset vnc:container:echo state running tenant bench owner bench \
    host 127.0.0.1 port "${ECHO##*:}" >/dev/null
  relays=()
  local node
  for node in a b; do
    start_listening "relay_$node" "$BIN/vnc-relay" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
      --redis-url "$REDIS_URL" --jwt-public-key "$STATE/keys/bench.pub.pem" \
      --node-id "bench-$node" --idle-timeout 10m
    relays+=("$(relay_public "relay_$node")")
    relay_ready "relay_$node"
  done
}
