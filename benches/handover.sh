#!/usr/bin/env bash
# Hand-over latency (benches/README.md): two relay nodes on one Redis; VIEWERS socket.io
# viewers of one desktop (the RFB echo stand-in), alternating nodes, each with its own
# token of the desktop's owner. vnc-bench makes the first the driver, then hands control
# round the viewers HANDOVERS times (the driver emits vnc:control:grant to the next) and
# times each from the emit to the moment every viewer, on both nodes, has read
# vnc:control naming the new driver. Goal: p99 within 20 ms. Loopback only; everything
# it starts is stopped on exit.
#
#   benches/handover.sh            Env: VIEWERS (default 8), HANDOVERS (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
VIEWERS="${VIEWERS:-8}"
HANDOVERS="${HANDOVERS:-1000}"

# shellcheck source=benches/common.sh
source benches/common.sh
prepare handover

two_relays

# One token per viewer (a token holds one live session), all of the owner's, viewers
# alternating nodes.
for i in $(seq "$VIEWERS"); do
  t="$("$BIN/vnc-control" token mint --private-key "$STATE/keys/bench.key.pem" \
    --container echo --user bench --tenant bench --scope control --ttl 1h)"
  echo "sio://${relays[$((i % 2))]}?containerId=echo&token=$t" >>"$STATE/viewers.urls"
done

echo "== $VIEWERS viewers on 2 nodes, $HANDOVERS hand-overs one after another"
record handover handover --url-file "$STATE/viewers.urls" --viewers "$VIEWERS" \
  --handovers "$HANDOVERS"
echo "raw results: $OUT"
