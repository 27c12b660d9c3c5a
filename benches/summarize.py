#!/usr/bin/env python3
"""Summarizes benches/run.sh results (JSON lines) against the relay-core goals, and those
of benches/socketio.sh, benches/tls.sh, benches/rfb-policy.sh and benches/mixed.sh (told
apart by their labels)."""
import json
import math
import statistics
import sys
from collections import defaultdict

rows = defaultdict(list)
with open(sys.argv[1]) as f:
    for line in f:
        rec = json.loads(line)
        rows[rec["label"]].append(rec["result"])


def ok(label):
    """The records of `label` that did not fail."""
    return [r for r in rows.get(label, []) if "error" not in r]


def median(vals):
    return statistics.median(vals) if vals else float("nan")


def med(label, key):
    """The median of `key` over the records of `label` that did not fail."""
    return median([key(r) for r in ok(label)])


def report_failures():
    for label, recs in sorted(rows.items()):
        for r in recs:
            if "error" in r:
                print(f"FAILED {label}: {r['error']}")


def cpu_table(prefix, targets):
    """CPU during the throughput runs (`cpu:PREFIX:throughput/T` samples): cores busy on
    average over the run's wall time (the rest: interrupts, i.e. loopback TCP, and
    anything else running), and the server's and client's CPU per GB moved (bytes at the
    measured rate over warmup + run). Returns the server's CPU s per GB by target."""
    print("\n| target (throughput runs) | server cores | client cores | source cores | rest of the machine "
          "| server CPU s per GB | client CPU s per GB |")
    print("|---|---|---|---|---|---|---|")
    server_per_gb = {}
    for t, name in targets:
        cpu = rows.get(f"cpu:{prefix}:throughput/{t}", [])
        tput = rows.get(f"{prefix}:throughput/{t}", [])
        pairs = [(c, r) for c, r in zip(cpu, tput) if "error" not in r and c["wall_s"] > 0]
        cores = {k: median([c[k] / c["wall_s"] for c, _ in pairs])
                 for k in ("server_s", "client_s", "source_s")}
        cores["rest"] = median([(c.get("machine_s", float("nan")) - c["server_s"] - c["client_s"]
                              - c["source_s"]) / c["wall_s"] for c, _ in pairs])
        per_gb = {k: median([c[k] / (r["total_mb_per_s"] * (r["warmup_s"] + r["duration_s"]) / 1000)
                          for c, r in pairs if r["total_mb_per_s"] > 0])
                  for k in ("server_s", "client_s")}
        server_per_gb[t] = per_gb["server_s"]
        print(f"| {name} | {cores['server_s']:.2f} | {cores['client_s']:.2f} | "
              f"{cores['source_s']:.2f} | {cores['rest']:.2f} | "
              f"{per_gb['server_s']:.2f} | {per_gb['client_s']:.2f} |")
    return server_per_gb


def summarize_socketio():
    """benches/socketio.sh results (labels `sio:...`): a markdown table plus the goals
    against the Node socket.io relay, and the bounds the references set."""
    targets = [("relay-ws", "vnc-relay, raw WebSocket (/websockify)"),
               ("relay-sio", "vnc-relay, socket.io (/vnc)"),
               ("node-sio", "Node socket.io 4 relay (NestJS-gateway style)")]
    references = [("proxy", "reference: plain TCP proxy in the relay's place"),
                  ("direct", "reference: straight to the echo stand-in (latency only)")]

    report_failures()
    print("\n| target | throughput MB/s (median) | rounds | RTT p50 µs | RTT p99 µs | p99 per round |")
    print("|---|---|---|---|---|---|")
    m = {}
    for t, name in targets + references:
        tp = med(f"sio:throughput/{t}", lambda r: r["total_mb_per_s"])
        p50 = med(f"sio:latency/{t}", lambda r: r["rtt_us"]["p50"])
        p99 = med(f"sio:latency/{t}", lambda r: r["rtt_us"]["p99"])
        m[t] = (tp, p50, p99)
        tps = ", ".join(f"{r['total_mb_per_s']:.0f}" for r in ok(f"sio:throughput/{t}")) or "n/a"
        p99s = ", ".join(str(r["rtt_us"]["p99"]) for r in ok(f"sio:latency/{t}"))
        tp_cell = "n/a" if math.isnan(tp) else f"**{tp:.0f}**"
        print(f"| {name} | {tp_cell} | {tps} | {p50:.0f} | {p99:.0f} | {p99s} |")
    rs, nd, ws = m["relay-sio"], m["node-sio"], m["relay-ws"]
    print(f"\nrelay socket.io / Node throughput = {rs[0] / nd[0]:.2f}x (goal >= 3)")
    print(f"relay socket.io / Node p99 RTT = {rs[2] / nd[2]:.2f} (goal <= 0.33)")
    print(f"relay socket.io / relay raw ws: throughput {rs[0] / ws[0]:.2f}x, "
          f"p50 {rs[1] - ws[1]:+.0f} us, p99 {rs[2] - ws[2]:+.0f} us")
    if ok("sio:latency/proxy"):
        px, direct = m["proxy"], m["direct"]
        print(f"bounds on this machine: plain proxy / Node throughput = {px[0] / nd[0]:.2f}x, "
              f"plain proxy / Node p99 RTT = {px[2] / nd[2]:.2f}, "
              f"straight to the echo stand-in / Node p99 RTT = {direct[2] / nd[2]:.2f}")
    per_gb = cpu_table("sio", targets + references[:1])
    print(f"\nNode / relay socket.io server CPU per GB = {per_gb['node-sio'] / per_gb['relay-sio']:.2f}x")
    conns = [(t, name, ok(f"sio:conns/{t}")) for t, name in targets]
    if any(recs for _, _, recs in conns):
        print("\n| target | opened | failed / errored | pings | p50 µs | p99 µs | p99.9 µs | server RSS open, KiB per session |")
        print("|---|---|---|---|---|---|---|---|")
        for t, name, recs in conns:
            for r in recs:
                rtt = r["rtt_us"]
                rss = (r.get("rss") or {}).get("delta_per_session_kib")
                print(f"| {name} | {r['opened']} | {r['failed_connects']} / {r['errored']} | "
                      f"{r['pings']:,} | {rtt['p50']} | {rtt['p99']} | {rtt['p999']} | "
                      f"{'n/a' if rss is None else f'{rss:.1f}'} |")


def summarize_policy():
    """benches/rfb-policy.sh results (labels `policy:...`): throughput with credential
    injection, view-only filtering and the clipboard filter against the plain path
    (goal: within 5%)."""
    names = {"plain": "plain (control token, no VNC password)",
             "injected": "credential injection (VNC Authentication answered by the relay)",
             "view": "view-only filtering (view token)",
             "noclip": "clipboard filter (clipboard claim without from_desktop)"}
    report_failures()
    tp = {t: med(f"policy:throughput/{t}", lambda r: r["total_mb_per_s"]) for t in names}
    print("| session | MB/s (median) | rounds | vs plain |")
    print("|---|---|---|---|")
    for t, name in names.items():
        rounds = ", ".join(f"{r['total_mb_per_s']:.0f}" for r in rows.get(f"policy:throughput/{t}", [])
                           if "error" not in r)
        print(f"| {name} | {tp[t]:.0f} | {rounds} | {tp[t] / tp['plain']:.3f}x |")


def summarize_mixed():
    """benches/mixed.sh results (labels `mixed:N/TARGET`): per N, input RTT under
    streaming, bytes received, the server's CPU per GB and RSS, and the goals as ratios
    against the plain proxy, HAProxy, websockify and the Node relay."""
    names = {"relay-ws": "vnc-relay, raw WebSocket (ws://)",
             "relay-sio": "vnc-relay, socket.io (sio://)",
             "relay-wss": "vnc-relay, raw WebSocket over TLS (wss://)",
             "relay-sios": "vnc-relay, socket.io over TLS (sios://)",
             "relay-alt": "vnc-relay, raw WebSocket, ALT_ARGS (ws://)",
             "relay-alt-sio": "vnc-relay, socket.io, ALT_ARGS (sio://)",
             "proxy": "plain TCP proxy (tcp://)",
             "ws-proxy": "least WebSocket relay, tokio-tungstenite (ws://)",
             "sio-proxy": "least socket.io relay, socketioxide (sio://)",
             "wss-proxy": "least WebSocket relay over TLS, tokio-rustls (wss://)",
             "haproxy": "HAProxy, TCP mode, splice-auto (tcp://)",
             "websockify": "websockify 0.13 (ws://)",
             "node-sio": "Node socket.io 4 relay (sio://)"}
    report_failures()
    ns = sorted({int(label.split(":")[1].split("/")[0]) for label in rows if label.startswith("mixed:")})
    for n in ns:
        print(f"\n### {n} sessions\n")
        print("| target | rounds ok | failed / errored sessions | input RTT p50 µs | p99 µs | p99.9 µs "
              "| p99 per round | received MB/s | server CPU s | server CPU s per GB | server RSS MiB "
              "| stand-in CPU s per GB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        m = {}
        for t, name in names.items():
            label = f"mixed:{n}/{t}"
            if label not in rows:
                continue
            # A round whose every session ended early measured nothing: not a result.
            recs = [r for r in ok(label) if r["rtt_us"]["count"] > 0]
            if not recs:
                errs = "; ".join(f"{r.get('errored', 'n/a')} errored: {list(r.get('session_errors') or {})[:1]}"
                                 for r in rows[label])
                print(f"| {name} | 0 of {len(rows[label])} | {errs} | n/a | n/a | n/a | n/a | n/a | n/a | n/a "
                      f"| n/a | n/a |")
                continue
            srv = lambda r, k: ((r.get("servers") or {}).get("server") or {}).get(k)
            desk = lambda r, k: ((r.get("servers") or {}).get("desktop") or {}).get(k)
            p50, p99, p999 = (median([r["rtt_us"][k] for r in recs]) for k in ("p50", "p99", "p999"))
            mbs = median([r["received_mb_per_s"] for r in recs])
            cpu = median([srv(r, "cpu_s") for r in recs if srv(r, "cpu_s") is not None])
            per_gb = median([srv(r, "cpu_s_per_gb") for r in recs if srv(r, "cpu_s_per_gb") is not None])
            rss = median([srv(r, "rss_kib") / 1024 for r in recs if srv(r, "rss_kib") is not None])
            desk_gb = median([desk(r, "cpu_s_per_gb") for r in recs if desk(r, "cpu_s_per_gb") is not None])
            fails = "; ".join(f"{r['failed_connects']} / {r['errored']}" for r in ok(label))
            if len(set(fails.split("; "))) == 1:
                fails = fails.split("; ")[0]
            p99s = ", ".join(str(r["rtt_us"]["p99"]) for r in recs)
            m[t] = {"p99": p99, "per_gb": per_gb,
                    "rounds": [r["rtt_us"]["p99"] for r in recs]}
            print(f"| {name} | {len(recs)} of {len(rows.get(label, []))} | {fails or 'n/a'} | {p50:.0f} | "
                  f"**{p99:.0f}** | {p999:.0f} | {p99s} | {mbs:.0f} | {cpu:.2f} | {per_gb:.2f} | "
                  f"{rss:.1f} | {desk_gb:.2f} |")

        def ratio(a, b, key="p99"):
            if a not in m or b not in m or not m[b][key] or math.isnan(m[b][key]):
                return float("nan")
            return m[a][key] / m[b][key]

        def goal(text, value, limit):
            verdict = "n/a" if math.isnan(value) else ("reached" if value <= limit else "NOT reached")
            print(f"- {text} = **{value:.2f}×** (goal ≤ {limit}): {verdict}")

        print()
        goal("raw p99 / plain proxy p99", ratio("relay-ws", "proxy"), 1.15)
        goal("raw p99 / HAProxy p99", ratio("relay-ws", "haproxy"), 1.3)
        goal("socket.io p99 / raw p99", ratio("relay-sio", "relay-ws"), 1.2)
        for a in ("relay-ws", "relay-sio"):
            for b in ("websockify", "node-sio"):
                goal(f"{a} p99 / {b} p99", ratio(a, b), 0.5)
        goal("raw CPU s per GB / plain proxy's", ratio("relay-ws", "proxy", "per_gb"), 1.15)
        goal("wss p99 / ws p99", ratio("relay-wss", "relay-ws"), 1.2)
        goal("sios p99 / sio p99", ratio("relay-sios", "relay-sio"), 1.2)
        print(f"- (reference) ALT_ARGS relay p99 / raw p99 = {ratio('relay-alt', 'relay-ws'):.2f}×, "
              f"CPU s per GB = {ratio('relay-alt', 'relay-ws', 'per_gb'):.2f}×; socket.io: "
              f"{ratio('relay-alt-sio', 'relay-sio'):.2f}×, {ratio('relay-alt-sio', 'relay-sio', 'per_gb'):.2f}×")
        print(f"- (reference) raw p99 / least WebSocket relay's = {ratio('relay-ws', 'ws-proxy'):.2f}×, "
              f"least WebSocket relay's / plain proxy's = {ratio('ws-proxy', 'proxy'):.2f}×")
        print(f"- (reference) socket.io p99 / least socket.io relay's = {ratio('relay-sio', 'sio-proxy'):.2f}×, "
              f"least socket.io relay's / least WebSocket relay's = {ratio('sio-proxy', 'ws-proxy'):.2f}× p99, "
              f"{ratio('sio-proxy', 'ws-proxy', 'per_gb'):.2f}× CPU s per GB")
        print(f"- (reference) least WebSocket relay over TLS / plain = {ratio('wss-proxy', 'ws-proxy'):.2f}× "
              f"p99, {ratio('wss-proxy', 'ws-proxy', 'per_gb'):.2f}× CPU s per GB")
        print(f"- (reference) raw CPU s per GB / HAProxy's = {ratio('relay-ws', 'haproxy', 'per_gb'):.2f}×, "
              f"socket.io's / raw's = {ratio('relay-sio', 'relay-ws', 'per_gb'):.2f}×")


if any(label.startswith("mixed:") for label in rows):
    summarize_mixed()
    sys.exit(0)

if any(label.startswith("policy:") for label in rows):
    summarize_policy()
    sys.exit(0)


def summarize_tls():
    """benches/tls.sh results (labels `tls:...`, CPU samples `cpu:tls:...`): throughput,
    RTT and CPU per target, and what TLS costs against the same path in plain."""
    targets = [("ws", "raw WebSocket, ws://"),
               ("wss", "raw WebSocket, wss:// (TLS in the pumps)"),
               ("sio", "socket.io, sio://"),
               ("sios", "socket.io, sios:// (TLS in socketioxide)")]

    report_failures()
    print("\n| target | throughput MB/s (median) | rounds | RTT p50 µs | RTT p99 µs | p99 per round |")
    print("|---|---|---|---|---|---|")
    m = {}
    for t, name in targets:
        tput, lat = ok(f"tls:throughput/{t}"), ok(f"tls:latency/{t}")
        tp = median([r["total_mb_per_s"] for r in tput])
        p50 = median([r["rtt_us"]["p50"] for r in lat])
        p99 = median([r["rtt_us"]["p99"] for r in lat])
        m[t] = (tp, p50, p99)
        tps = ", ".join(f"{r['total_mb_per_s']:.0f}" for r in tput)
        p99s = ", ".join(str(r["rtt_us"]["p99"]) for r in lat)
        print(f"| {name} | **{tp:.0f}** | {tps} | {p50:.0f} | {p99:.0f} | {p99s} |")

    cpu_table("tls", targets)

    for plain, tls in (("ws", "wss"), ("sio", "sios")):
        a, b = m[plain], m[tls]
        print(f"\n{tls} / {plain}: throughput {b[0] / a[0]:.2f}x, "
              f"p50 {b[1] - a[1]:+.0f} us, p99 {b[2] - a[2]:+.0f} us")


if any(label.startswith("tls:") for label in rows):
    summarize_tls()
    sys.exit(0)

if any(label.startswith("sio:") for label in rows):
    summarize_socketio()
    sys.exit(0)

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

for t in ("relay", "direct", "proxy", "ws-proxy"):
    for r in rows.get(f"conns/{t}", []):
        print(f"\nconns/{t}: opened {r['opened']}/{r['sessions']}, failed connects {r['failed_connects']}, "
              f"errored {r['errored']}, pings {r['pings']}, rtt {r['rtt_us']}")
conns_p99 = {t: med(f"conns/{t}", lambda r: r["rtt_us"]["p99"])
             for t in ("relay", "direct", "proxy", "ws-proxy") if rows.get(f"conns/{t}")}
if {"relay", "proxy", "direct"} <= conns_p99.keys():
    print(f"  p99 median over rounds: relay {conns_p99['relay']:.0f} us, proxy {conns_p99['proxy']:.0f} us, "
          f"direct {conns_p99['direct']:.0f} us")
    print(f"  p99 relay/proxy = {conns_p99['relay'] / conns_p99['proxy']:.2f}x (goal <= 1.15), "
          f"relay/direct = {conns_p99['relay'] / conns_p99['direct']:.2f}x, "
          f"proxy/direct = {conns_p99['proxy'] / conns_p99['direct']:.2f}x")
if {"relay", "proxy", "ws-proxy"} <= conns_p99.keys():
    print(f"  (reference) least WebSocket relay p99 {conns_p99['ws-proxy']:.0f} us: relay/it = "
          f"{conns_p99['relay'] / conns_p99['ws-proxy']:.2f}x, it/proxy = "
          f"{conns_p99['ws-proxy'] / conns_p99['proxy']:.2f}x")
for r in rows.get("idle/relay", []):
    rss = r["rss"]
    print(f"\nidle: {r['opened']} sessions, RSS before {rss['before_kib']} KiB, open {rss['open_kib']} KiB, "
          f"{rss['delta_per_session_kib']} KiB per idle session (goal <= 12)")
