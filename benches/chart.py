#!/usr/bin/env python3
"""The chart of a benches/mixed.sh run: input round-trip p99 against the number of
sessions, one line per target (the median over rounds, the bar from the lowest to the
highest round), log-scaled on both axes, as a PNG.

    benches/chart.py RESULTS.jsonl OUT.png

Needs matplotlib (benches/common.sh's chart_venv installs it in a venv of its own)."""
import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: E402

NAMES = {"relay-ws": "vnc-relay ws://", "relay-sio": "vnc-relay socket.io",
         "relay-wss": "vnc-relay wss://", "relay-sios": "vnc-relay socket.io TLS",
         "relay-alt": "vnc-relay ws:// ALT_ARGS", "relay-alt-sio": "vnc-relay socket.io ALT_ARGS",
         "proxy": "plain TCP proxy", "ws-proxy": "least WebSocket relay",
         "wss-proxy": "least WebSocket relay wss://",
         "sio-proxy": "least socket.io relay",
         "haproxy": "HAProxy splice-auto",
         "websockify": "websockify 0.13", "node-sio": "Node socket.io relay"}

# p99 of every good round, by target and N.
p99s = defaultdict(lambda: defaultdict(list))
with open(sys.argv[1]) as f:
    for line in f:
        rec = json.loads(line)
        label, result = rec["label"], rec["result"]
        if not label.startswith("mixed:") or "error" in result or not result["rtt_us"]["count"]:
            continue
        n, target = label.removeprefix("mixed:").split("/")
        p99s[target][int(n)].append(result["rtt_us"]["p99"] / 1000)

fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
for target, name in NAMES.items():
    if target not in p99s:
        continue
    ns = sorted(p99s[target])
    mid = [statistics.median(p99s[target][n]) for n in ns]
    low = [m - min(p99s[target][n]) for n, m in zip(ns, mid)]
    high = [max(p99s[target][n]) - m for n, m in zip(ns, mid)]
    ax.errorbar(ns, mid, yerr=[low, high], marker="o", capsize=3, label=name)
ax.set_xscale("log")
ax.set_yscale("log")
# Plain numbers on both axes, a tick at every N measured.
ax.set_xticks(sorted({n for by_n in p99s.values() for n in by_n}))
ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
for axis in (ax.xaxis, ax.yaxis):
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())
ax.set_xlabel("concurrent sessions (each streaming updates and typing)")
ax.set_ylabel("input round trip p99 (ms)")
ax.set_title("Mixed load: input latency under streaming (median of rounds, bar: spread)")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2])
print(f"chart: {sys.argv[2]}")
