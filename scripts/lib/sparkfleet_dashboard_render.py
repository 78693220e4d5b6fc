"""Draw a Grafana dashboard's time-series panels without Grafana: each panel's
PromQL through Prometheus' query_range API, one PNG with every panel, in the
dashboard's own grid order. Used by scripts/monitoring-graphs and the lab test."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request

LEGEND_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")
UNIT_LABELS = {"s": "seconds", "percentunit": "share", "reqps": "requests/s", "short": ""}


def panel_queries(dashboard, rate_interval="1m", variables=None):
    """[(title, unit, [(expr, legendFormat)])] with Grafana's variables filled in."""
    values = {"$__rate_interval": rate_interval}
    for var in dashboard.get("templating", {}).get("list", []):
        values["$" + var["name"]] = (variables or {}).get(var["name"], var.get("allValue") or ".*")
    out = []
    panels = sorted(dashboard.get("panels", []), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    for panel in panels:
        if panel.get("type") != "timeseries":
            continue
        targets = []
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in sorted(values, key=len, reverse=True):
                expr = expr.replace(name, values[name])
            targets.append((expr, target.get("legendFormat", "")))
        out.append((panel["title"], panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""), targets))
    return out


def query_range(base_url, expr, start, end, step):
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen("%s/api/v1/query_range?%s" % (base_url.rstrip("/"), query), timeout=30) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError("%s: %s" % (expr, body.get("error")))
    return body["data"]["result"]


def legend(fmt, labels):
    return LEGEND_RE.sub(lambda m: str(labels.get(m.group(1), "")), fmt) or json.dumps(labels)


def render(dashboard, base_url, out_png, minutes=30, step=15, now=None):
    """Query every panel over the last `minutes` and draw them; returns {title: series count}."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    end = now or time.time()
    start = end - minutes * 60
    panels = panel_queries(dashboard)
    cols = 3
    rows = int(math.ceil(len(panels) / float(cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    counts = {}
    for index, (title, unit, targets) in enumerate(panels):
        ax = axes[index // cols][index % cols]
        count = 0
        for expr, fmt in targets:
            for series in query_range(base_url, expr, start, end, step):
                points = [(float(t) - end, float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if not points:
                    continue
                ax.plot([p[0] / 60.0 for p in points], [p[1] for p in points], label=legend(fmt, series["metric"]))
                count += 1
        counts[title] = count
        if count and ax.get_ylim()[0] < 0 <= min(min(line.get_ydata()) for line in ax.get_lines()):
            ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("minutes before %s UTC" % time.strftime("%H:%M", time.gmtime(end)), fontsize=8)
        ax.set_ylabel(UNIT_LABELS.get(unit, unit), fontsize=8)
        ax.set_xlim(-minutes, 0)
        ax.grid(alpha=0.3)
        if count:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
    for index in range(len(panels), rows * cols):
        axes[index // cols][index % cols].axis("off")
    fig.suptitle(dashboard.get("title", "dashboard"), fontsize=12)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return counts
