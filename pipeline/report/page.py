"""The report as one self-contained HTML page: Plotly charts, plotly.js embedded once.

Plotly because its Python package ships plotly.js inside the wheel (``get_plotlyjs``), so
the page opens offline and can be mailed with nothing beside it, from one dependency;
horizontal bars on a date axis with a ``base`` draw a run timeline directly. Altair needs
vega, vega-lite and vega-embed inlined, which takes ``vl-convert-python`` (a far larger
wheel) or files fetched from a CDN.

Every number shown is also in a table cell with its exact value in ``data-value``, and
every chart is a ``div.chart`` with ``data-section``: what the browser test reads.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import Any

from pipeline.report.data import MAX_BUCKETS, MAX_JOBS, MAX_TIMELINE_BARS, MAX_TIMELINE_JOBS, ReportData, Table

OUTCOME_COLOURS = {
    "SUCCEEDED": "#2e7d32", "FAILED": "#c62828", "RETRIED": "#ef6c00", "CANCELED": "#6d4c41",
    "SKIPPED": "#9e9e9e", "RUNNING": "#1565c0", "PENDING": "#7e57c2", "STALE": "#f9a825", "DRAINED": "#8d6e63",
}
STALE_COLOURS = {"reactivated": "#fdd835", "retried": "#ffb300", "drained": "#a1887f", "finished": "#ffe082", "still_stale": "#f57f17"}


def _label(vendor: str, name: str) -> str:
    text = f"{vendor} · {name}"
    return text if len(text) <= 60 else text[:57] + "..."


def _job_labels(vendors: list[str], job_keys: list[str], names: list[str]) -> dict[str, str]:
    """A readable label per job key: vendor and job name, plus the key where two jobs share a name."""
    labels = {key: _label(vendor, name) for vendor, key, name in zip(vendors, job_keys, names)}
    shared = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    return {key: (_label(key.split(":", 1)[0], key) if label in shared else label) for key, label in labels.items()}


def _ms(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds() * 1000, 1000.0)


def _figure_html(fig: Any, section: str) -> str:
    import plotly.io as pio

    div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"chart-{section}",
                      config={"displaylogo": False, "responsive": True})
    return f'<div class="chart" data-section="{section}">{div}</div>'


def _layout(fig: Any, title: str, height: int = 380, empty: bool = False) -> Any:
    fig.update_layout(title=title, height=height, margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      template="plotly_white", legend={"orientation": "h", "y": -0.15})
    fig.update_yaxes(automargin=True)
    if empty:
        fig.add_annotation(text="nothing in this period", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def timeline_figure(data: ReportData) -> Any:
    """Attempts as bars from start to end coloured by outcome (open ones run to now,
    hatched), stale episodes shaded behind them, coloured by how they ended."""
    import plotly.graph_objects as go

    t = data.timeline
    fig = go.Figure()
    now = data.generated_at
    s = data.stale
    labels = _job_labels(t.column("vendor") + s.column("vendor"), t.column("job_key") + s.column("job_key"),
                         t.column("job_name") + s.column("job_name"))
    by_outcome: dict[str, dict[str, list]] = {}
    for row in t.rows:
        r = dict(zip(t.columns, row))
        start, end = r["bar_start"], r["bar_end"]
        bars = by_outcome.setdefault(r["outcome"], {"y": [], "base": [], "x": [], "text": [], "hover": [], "open": []})
        bars["y"].append(labels[r["job_key"]])
        bars["base"].append(start.isoformat())
        bars["x"].append(_ms(start, end or now))
        bars["text"].append(f"a{r['attempt']}" if r["attempt"] > 1 else "")
        bars["open"].append("/" if end is None else "")
        hover = f"{html.escape(r['run_key'])}<br>attempt {r['attempt']}: {r['outcome']}"
        if end is None:
            hover += " (still open)"
        if r["duration_s"] is not None:
            hover += "<br>%.1f s" % r["duration_s"]
        if r["error_message"]:
            hover += "<br>" + html.escape(str(r["error_message"])[:120])
        bars["hover"].append(hover)
    stale: dict[str, dict[str, list]] = {}
    for row in s.rows:
        r = dict(zip(s.columns, row))
        bars = stale.setdefault(r["ended_by"], {"y": [], "base": [], "x": [], "hover": []})
        bars["y"].append(labels[r["job_key"]])
        bars["base"].append(r["stale_at"].isoformat())
        bars["x"].append(_ms(r["stale_at"], r["ended_at"] or now))
        bars["hover"].append(f"{html.escape(r['run_key'])}<br>stale, ended: {r['ended_by']}")
    for ended_by, bars in sorted(stale.items()):
        fig.add_bar(orientation="h", y=bars["y"], base=bars["base"], x=bars["x"], name=f"stale ({ended_by})",
                    marker={"color": STALE_COLOURS.get(ended_by, "#fff176"), "opacity": 0.45, "line": {"width": 0}},
                    width=0.9, hovertext=bars["hover"], hoverinfo="text")
    for outcome, bars in sorted(by_outcome.items()):
        fig.add_bar(orientation="h", y=bars["y"], base=bars["base"], x=bars["x"], name=outcome, text=bars["text"],
                    textposition="inside", marker={"color": OUTCOME_COLOURS.get(outcome, "#607d8b"),
                                                   "pattern": {"shape": bars["open"]}},
                    width=0.5, hovertext=bars["hover"], hoverinfo="text")
    rows = len(set(t.column("job_key")))
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(type="date")
    shown = len(t.rows)
    title = f"Runs and attempts per job ({shown} attempts" + (
        f"; the {MAX_TIMELINE_BARS} most recent of {data.timeline_total}" if shown == MAX_TIMELINE_BARS < data.timeline_total else "") + (
        f"; the {rows} jobs most recently run of {data.timeline_jobs})" if data.timeline_jobs > rows else ")")
    return _layout(fig, title, height=max(320, 26 * rows + 140), empty=not t.rows)


def durations_figure(data: ReportData) -> Any:
    import plotly.graph_objects as go

    d = data.durations
    named = _job_labels(d.column("vendor"), d.column("job_key"), d.column("job_name"))
    labels = [named[key] for key in d.column("job_key")]
    fig = go.Figure()
    fig.add_bar(y=labels, x=d.column("p50_s"), name="p50 (the usual)", orientation="h", marker={"color": "#90caf9"})
    fig.add_bar(y=labels, x=d.column("p95_s"), name="p95", orientation="h", marker={"color": "#1565c0"})
    fig.add_scatter(y=labels, x=d.column("last_s"), name="last run", mode="markers",
                    marker={"symbol": "diamond", "size": 10, "color": "#c62828"})
    fig.update_layout(barmode="group")
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="seconds (succeeded runs)")
    return _layout(fig, f"Durations: p50 / p95 and the last run (top {MAX_JOBS} jobs by runs)",
                   height=max(320, 34 * len(labels) + 140), empty=not d.rows)


def failure_figure(data: ReportData) -> Any:
    import plotly.graph_objects as go

    f = data.failure_rates
    fig = go.Figure()
    series: dict[str, tuple[list, list, list]] = {}
    for vendor, bucket, succeeded, failed, rate in zip(f.column("vendor"), f.column("bucket"), f.column("succeeded"),
                                                       f.column("failed"), f.column("failure_rate")):
        xs, ys, hover = series.setdefault(vendor, ([], [], []))
        xs.append(bucket.isoformat())
        ys.append(rate)
        hover.append(f"{vendor} {bucket:%Y-%m-%d %H:%M}: {failed} failed / {succeeded + failed}")
    for vendor, (xs, ys, hover) in sorted(series.items()):
        fig.add_scatter(x=xs, y=ys, name=vendor, mode="lines+markers", hovertext=hover, hoverinfo="text")
    fig.update_yaxes(title="failed / (succeeded + failed)", tickformat=".0%", rangemode="tozero")
    return _layout(fig, f"Failure rate per vendor, per {_width(data.bucket)} (runs by finish time)", empty=not f.rows)


def _bar_figure(table: Table, x: str, title: str, label: Any) -> Any:
    import plotly.graph_objects as go

    labels = [label(dict(zip(table.columns, row))) for row in table.rows]
    fig = go.Figure(go.Bar(y=labels, x=table.column(x), orientation="h", marker={"color": "#c62828"}))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=max(300, 30 * len(labels) + 120), empty=not table.rows)


def _width(bucket: timedelta) -> str:
    seconds = int(bucket.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}s" if count > 1 else unit
    return f"{seconds} s"


def _cell(column: str, value: Any) -> str:
    if value is None:
        shown, raw = "", ""
    elif isinstance(value, datetime):
        shown = raw = value.isoformat(timespec="seconds")
    elif isinstance(value, float):
        shown, raw = (f"{value:.1%}" if "rate" in column else f"{value:,.2f}"), repr(value)
    else:
        shown = raw = str(value)
    if len(shown) > 160:
        shown = shown[:157] + "..."
    return f'<td data-column="{html.escape(column)}" data-value="{html.escape(raw)}">{html.escape(shown)}</td>'


def table_html(table: Table, caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(_cell(c, v) for c, v in zip(table.columns, row)) + "</tr>" for row in table.rows)
    if not table.rows:
        body = f'<tr><td colspan="{len(table.columns)}" class="empty">none</td></tr>'
    return (f'<table data-table="{table.name}" data-rows="{len(table.rows)}"><caption>{html.escape(caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f'<details><summary>SQL</summary><pre>{html.escape(table.sql)}</pre></details>')


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:16px;color:#212121}
h1{margin-bottom:0} .meta{color:#616161;margin-top:4px} section{margin:28px 0}
table{border-collapse:collapse;font-size:13px;margin:8px 0} caption{text-align:left;color:#616161}
th,td{border-bottom:1px solid #e0e0e0;padding:3px 8px;text-align:left;vertical-align:top} th{background:#fafafa}
td.empty{color:#9e9e9e} details summary{color:#757575;font-size:12px;cursor:pointer} pre{white-space:pre-wrap;font-size:12px}
"""


def render(data: ReportData, *, refresh_s: int | None = None) -> str:
    """The whole page. ``refresh_s`` makes it reload itself (``--serve``)."""
    from plotly.offline import get_plotlyjs

    since = f"since {data.since.isoformat(timespec='seconds')}" if data.since else "all history"
    top = data.top_failing
    failing = _job_labels(top.column("vendor"), top.column("job_key"), top.column("job_name"))
    bound = (f"The timeline draws the {MAX_TIMELINE_JOBS} jobs most recently run, at most {MAX_TIMELINE_BARS} attempts "
             f"(the most recent, and their stale episodes); per-job charts the "
             f"top {MAX_JOBS} jobs; failure rates are bucketed to at most {MAX_BUCKETS} points per vendor.")
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Jobstream report</title>",
        f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else "",
        f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>",
        f"<h1>Jobstream report</h1><p class=\"meta\">Generated {data.generated_at.isoformat(timespec='seconds')} "
        f"from {html.escape(data.source)}, {since}. {bound}</p>",
        '<section id="summary"><h2>Runs per vendor</h2>', table_html(data.summary), "</section>",
        '<section id="timeline"><h2>Timeline</h2><p class="meta">Each bar is one attempt from its start to its end, '
        "coloured by outcome; a2, a3 mark retries; hatched bars are still open (drawn to now); shaded bars behind are "
        "stale episodes, coloured by how they ended.</p>",
        _figure_html(timeline_figure(data), "timeline"), "</section>",
        '<section id="durations"><h2>Durations</h2>', _figure_html(durations_figure(data), "durations"),
        table_html(data.durations), "</section>",
        '<section id="failure_rates"><h2>Failure rates</h2>', _figure_html(failure_figure(data), "failure_rates"),
        "<details><summary>the numbers</summary>", table_html(data.failure_rates), "</details></section>",
        '<section id="top_failing"><h2>Top failing jobs</h2>',
        _figure_html(_bar_figure(data.top_failing, "failed_attempts", "Failed attempts per job",
                                 lambda r: failing[r["job_key"]]), "top_failing"),
        table_html(data.top_failing, "with the last error of each"), "</section>",
        '<section id="dead_letters"><h2>Dead letters by reason</h2>',
        _figure_html(_bar_figure(data.dead_letters, "dead_letters", "Dead letters per reason code",
                                 lambda r: f"{r['stage']} · {r['reason_code']}"[:70]), "dead_letters"),
        table_html(data.dead_letters), "</section>",
        '<section id="alerts"><h2>Alerts</h2>',
        _figure_html(_bar_figure(data.alerts, "alerts", "Alerts per rule and status",
                                 lambda r: f"{r['rule']} · {r['status']}"), "alerts"),
        table_html(data.alerts), table_html(data.recent_alerts, "the 20 most recent"), "</section>",
        "</body></html>",
    ]
    return "".join(parts)
