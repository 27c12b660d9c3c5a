#!/usr/bin/env bash
# Redis Cluster against one Redis server (benches/README.md, "Results: Redis Cluster"):
# rounds of benches/kick.sh alternating the backend (one redis-server, a 6-node Redis
# Cluster), each with a fresh Redis, two relay nodes and SESSIONS sessions. Per backend:
# the median over the rounds of the admission rate (sessions the relays admitted per
# second, CONCURRENCY opening at once) and of the kick latency's p50 and p99; then the
# cluster / standalone ratios. Loopback only.
#
#   benches/cluster.sh [ROUNDS]    ROUNDS default 3; env SESSIONS, KICKS, CONCURRENCY
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
results="$(mktemp /tmp/vnc-bench-cluster.XXXXXX)"
for round in $(seq "$ROUNDS"); do
  for backend in standalone cluster; do
    echo "== round $round of $ROUNDS: $backend"
    REDIS_BACKEND="$backend" benches/kick.sh | tee "$results.last"
    cat "$(sed -n 's/^raw results: //p' "$results.last")" >>"$results"
  done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    rec = json.loads(line)
    r = rec["result"]
    if "error" in r:
        print(f"{rec['label']}: {r['error']}")
        continue
    rows.setdefault(rec["label"].removeprefix("kick-"), []).append(r)
med = {}
print(f"{'backend':<11} {'rounds':>6} {'admissions/s':>13} {'kick p50 µs':>12} {'kick p99 µs':>12}  (spread: min-max)")
for backend in ("standalone", "cluster"):
    rs = rows.get(backend, [])
    if not rs:
        continue
    cols = {
        "adm": [r["admissions_per_s"] for r in rs],
        "p50": [r["latency_us"]["p50"] for r in rs],
        "p99": [r["latency_us"]["p99"] for r in rs],
    }
    med[backend] = {k: statistics.median(v) for k, v in cols.items()}
    spread = "  ".join(f"{k} {min(v):.0f}-{max(v):.0f}" for k, v in cols.items())
    m = med[backend]
    print(f"{backend:<11} {len(rs):>6} {m['adm']:>13.0f} {m['p50']:>12.0f} {m['p99']:>12.0f}  ({spread})")
if len(med) == 2:
    s, c = med["standalone"], med["cluster"]
    print(f"cluster/standalone: admissions {c['adm']/s['adm']:.2f}x, kick p50 {c['p50']/s['p50']:.2f}x, kick p99 {c['p99']/s['p99']:.2f}x")
print(f"raw results: {sys.argv[1]}")
PY
