#!/usr/bin/env python3
"""Plots the panels of deploy/grafana/dashboards/vnc-relay.json into one PNG, from a
Prometheus's query_range API: the same queries, variables set to "All", laid out on the
dashboard's own grid. A stand-in for a Grafana screenshot where no Grafana runs
(docs/images/dashboard.png comes from deploy/grafana/demo.sh, which calls this).

    render.py --prometheus http://127.0.0.1:9090 --start UNIX --end UNIX --out FILE.png

Needs matplotlib (`python3 -m venv v && v/bin/pip install matplotlib`). Series that
stay 0 over the whole range are left out of a panel, as they would add only legend
lines; a panel with nothing left says "no data".
"""

import argparse
import json
import math
import re
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

DASHBOARD = Path(__file__).parent / "dashboards" / "vnc-relay.json"
GRID_COLUMNS = 24


def query_range(base, expr, start, end, step):
    params = urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step}
    )
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return answer["data"]["result"]


def expand(expr, rate_interval):
    """Grafana's variables as the dashboard's "All" sets them."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$node", ".*")
        .replace("$control", ".*")
    )


def legend(fmt, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def formatter(unit):
    def si(v, suffix):
        for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(v) >= scale:
                return f"{v / scale:.3g} {prefix}{suffix}"
        return f"{v:.3g} {suffix}".strip()

    def seconds(v):
        if v == 0:
            return "0"
        if abs(v) < 1e-3:
            return f"{v * 1e6:.3g} µs"
        if abs(v) < 1:
            return f"{v * 1e3:.3g} ms"
        return f"{v:.3g} s"

    return {
        "Bps": lambda v, _: si(v, "B/s"),
        "ops": lambda v, _: si(v, "/s"),
        "reqps": lambda v, _: si(v, "req/s"),
        "s": lambda v, _: seconds(v),
    }.get(unit, lambda v, _: si(v, ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--start", type=float, required=True, help="Unix seconds")
    ap.add_argument("--end", type=float, required=True, help="Unix seconds")
    ap.add_argument("--step", default="5s")
    ap.add_argument("--rate-interval", default="30s", help="what $__rate_interval becomes")
    ap.add_argument("--dashboard", type=Path, default=DASHBOARD)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    dashboard = json.loads(args.dashboard.read_text())
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    # The dashboard's grid: 24 columns across, rows of UNIT inches; each panel keeps room
    # for its title above and its time axis below.
    width, unit, top = 20.0, 0.42, 0.6
    height = top + rows * unit
    fig = plt.figure(figsize=(width, height), dpi=100)
    fig.text(0.01, 1 - 0.25 / height, dashboard["title"], fontsize=16, va="center")
    start = datetime.fromtimestamp(args.start, timezone.utc)
    end = datetime.fromtimestamp(args.end, timezone.utc)

    def rect(g, title_in, ticks_in):
        left = g["x"] / GRID_COLUMNS + 0.035
        right = (g["x"] + g["w"]) / GRID_COLUMNS - 0.01
        upper = top + g["y"] * unit + title_in
        lower = top + (g["y"] + g["h"]) * unit - ticks_in
        return [left, 1 - lower / height, right - left, (lower - upper) / height]

    for panel in panels:
        g = panel["gridPos"]
        if panel["type"] == "row":
            fig.text(0.01, 1 - (top + (g["y"] + 0.6) * unit) / height, panel["title"],
                     fontsize=13, fontweight="bold")
            continue
        ax = fig.add_axes(rect(g, 0.35, 0.35))
        ax.set_title(panel["title"], fontsize=10, loc="left")
        unit_name = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        drawn = 0
        for target in panel["targets"]:
            expr = expand(target["expr"], args.rate_interval)
            for series in query_range(args.prometheus, expr, args.start, args.end, args.step):
                points = [(float(t), float(v)) for t, v in series["values"]]
                values = [v for _, v in points if not math.isnan(v)]
                if not values or all(v == 0 for v in values):
                    continue
                times = [datetime.fromtimestamp(t, timezone.utc) for t, _ in points]
                label = legend(target.get("legendFormat", ""), series["metric"]) or expr
                ax.plot(times, [v for _, v in points], linewidth=1.2, label=label)
                drawn += 1
        if drawn:
            ax.legend(fontsize=7, loc="upper left", ncol=2 if drawn > 4 else 1)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
        ax.set_xlim(start, end)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(formatter(unit_name)))
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=6))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
