#!/usr/bin/env python3
"""Summarizes benches/run.sh results (JSON lines) against the relay-core goals."""
import json
import statistics
import sys
from collections import defaultdict

rows = defaultdict(list)
with open(sys.argv[1]) as f:
    for line in f:
        rec = json.loads(line)
        rows[rec["label"]].append(rec["result"])


def med(label, key):
    vals = [key(r) for r in rows.get(label, [])]
    return statistics.median(vals) if vals else float("nan")


tp = {t: med(f"throughput/{t}", lambda r: r["total_mb_per_s"])
      for t in ("relay", "relay256", "proxy", "websockify")}
print("\nthroughput container->browser, median MB/s over rounds:")
for t, v in tp.items():
    print(f"  {t:11s} {v:9.1f}   all: {[r['total_mb_per_s'] for r in rows[f'throughput/{t}']]}")
for r in ("relay", "relay256"):
    print(f"  {r}/proxy      = {tp[r] / tp['proxy']:.2f}x  (goal >= 0.9)")
    print(f"  {r}/websockify = {tp[r] / tp['websockify']:.2f}x  (goal >= 1.5)")

print("\n16-byte ping-pong RTT, median over rounds (us):")
lat = {}
for t in ("relay", "proxy", "websockify", "direct"):
    p50 = med(f"latency/{t}", lambda r: r["rtt_us"]["p50"])
    p99 = med(f"latency/{t}", lambda r: r["rtt_us"]["p99"])
    lat[t] = (p50, p99)
    print(f"  {t:11s} p50 {p50:7.1f}  p99 {p99:7.1f}")
print(f"  relay - proxy: p50 {lat['relay'][0] - lat['proxy'][0]:+.1f} us (goal <= +5), "
      f"p99 {lat['relay'][1] - lat['proxy'][1]:+.1f} us (goal <= +20)")

for t in ("relay", "direct", "proxy"):
    for r in rows.get(f"conns/{t}", []):
        print(f"\nconns/{t}: opened {r['opened']}/{r['sessions']}, failed connects {r['failed_connects']}, "
              f"errored {r['errored']}, pings {r['pings']}, rtt {r['rtt_us']}")
if rows.get("conns/relay") and rows.get("conns/direct"):
    rp99 = rows["conns/relay"][0]["rtt_us"]["p99"]
    dp99 = rows["conns/direct"][0]["rtt_us"]["p99"]
    print(f"  p99 relay/direct = {rp99 / dp99:.2f}x (goal <= 1.5)")
if rows.get("conns/proxy") and rows.get("conns/direct"):
    pp99 = rows["conns/proxy"][0]["rtt_us"]["p99"]
    print(f"  p99 proxy/direct = {pp99 / dp99:.2f}x (the plain TCP proxy under the same load)")
for r in rows.get("idle/relay", []):
    rss = r["rss"]
    print(f"\nidle: {r['opened']} sessions, RSS before {rss['before_kib']} KiB, open {rss['open_kib']} KiB, "
          f"{rss['delta_per_session_kib']} KiB per idle session (goal <= 16)")
