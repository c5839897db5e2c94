"""``pipeline report`` in a real browser (issue 38 cases 1 and 2): headless Chromium (Debian's
``chromium``, which .ci/run installs) opens the page made from a demo database, offline;
every chart rendered, and the numbers in the rendered page equal SQL on the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest

from pipeline.report import data

pytestmark = pytest.mark.integration

CHARTS = ("timeline", "durations", "failure_rates", "top_failing", "dead_letters", "alerts")


def pipeline(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=timeout)


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with scripts run to completion (virtual time), as root (no sandbox)."""
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is needed (apt-get install -y chromium; .ci/run installs it)"
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=20000",
         "--window-size=1400,4200", *args],
        capture_output=True, text=True, timeout=180,
    )


class RenderedPage(HTMLParser):
    """What rendered, per chart (SVG roots, traces, drawn points, axis labels) and per
    table cell (its column and exact value), from the DOM Chromium dumps after scripts ran."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str | None, str | None]] = []  # (tag, chart section, table)
        self.svgs: Counter[str] = Counter()
        self.traces: Counter[str] = Counter()
        self.points: Counter[str] = Counter()
        self.texts: dict[str, list[str]] = {}
        self.cells: dict[str, list[tuple[str, str]]] = {}
        self.row_counts: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        section = self.stack[-1][1] if self.stack else None
        table = self.stack[-1][2] if self.stack else None
        classes = (a.get("class") or "").split()
        if tag == "div" and "chart" in classes:
            section = a["data-section"]
        if tag == "table":
            table = a["data-table"]
            self.row_counts[table] = int(a["data-rows"])
        if section:
            if tag == "svg" and "main-svg" in classes:
                self.svgs[section] += 1
            if "trace" in classes:
                self.traces[section] += 1
            if "point" in classes:
                self.points[section] += 1
        if tag == "td" and table and "data-column" in a:
            self.cells.setdefault(table, []).append((a["data-column"], a["data-value"] or ""))
        if tag not in ("br", "meta", "img", "input", "link", "path", "rect", "line", "circle", "use", "image"):
            self.stack.append((tag, section, table))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return

    def handle_data(self, text: str) -> None:
        if self.stack and self.stack[-1][1] and text.strip():
            self.texts.setdefault(self.stack[-1][1], []).append(text.strip())

    def column(self, table: str, name: str) -> list[str]:
        return [value for column, value in self.cells.get(table, []) if column == name]


@pytest.fixture(scope="module")
def rendered(demo_db, tmp_path_factory) -> tuple[RenderedPage, Path, Path]:
    folder = tmp_path_factory.mktemp("page")
    page = folder / "report.html"
    made = pipeline("report", "--db", str(demo_db), "--since", "all", "--out", str(page))
    assert made.returncode == 0, made.stderr
    text = page.read_text()
    assert "<script src=" not in text and "cdn" not in text.lower().split("<script>")[0]
    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = RenderedPage()
    parsed.feed(dom.stdout)
    screenshot = folder / "report.png"
    shot = chromium(f"--screenshot={screenshot}", page.as_uri())
    assert shot.returncode == 0 and screenshot.stat().st_size > 50_000, shot.stderr[-2000:]
    if os.environ.get("JOBSTREAM_REPORT_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["JOBSTREAM_REPORT_SCREENSHOT"])
    return parsed, demo_db, screenshot


def sql(db: Path, query: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_every_chart_rendered_as_svg_with_its_data_drawn(rendered):
    page, db, screenshot = rendered
    for section in CHARTS:
        assert page.svgs[section] >= 1, f"{section}: no plotly SVG rendered"
        assert page.traces[section] >= 1, f"{section}: no trace drawn"
        assert "nothing in this period" not in page.texts.get(section, []), section
    [[failing_jobs]] = sql(db, "SELECT count(DISTINCT job_key) FROM job_attempts WHERE outcome = 'FAILED'")
    [[reasons]] = sql(db, "SELECT count(*) FROM (SELECT DISTINCT vendor, stage, reason_code FROM dead_letters)")
    [[rules]] = sql(db, "SELECT count(*) FROM (SELECT DISTINCT rule, status FROM alerts)")
    assert page.points["top_failing"] == min(failing_jobs, data.MAX_JOBS) > 0
    assert page.points["dead_letters"] == reasons > 0
    assert page.points["alerts"] == rules > 0
    # The timeline shows the MAX_TIMELINE_JOBS jobs run most recently (six vendors' demo jobs are more).
    shown = ("job_key IN (SELECT job_key FROM job_attempts WHERE coalesce(started_at, queued_at) IS NOT NULL GROUP BY job_key "
             f"ORDER BY max(coalesce(started_at, queued_at)) DESC, job_key LIMIT {data.MAX_TIMELINE_JOBS})")
    [[attempts]] = sql(db, f"SELECT count(*) FROM job_attempts WHERE coalesce(started_at, queued_at) IS NOT NULL AND {shown}")
    [[episodes]] = sql(db, f"SELECT count(*) FROM stale_episodes WHERE run_key IN (SELECT run_key FROM job_runs WHERE {shown})")
    assert attempts < data.MAX_TIMELINE_BARS
    assert page.points["timeline"] == attempts + episodes
    print(f"screenshot kept at {screenshot}")


def test_the_numbers_in_the_page_equal_sql_on_the_file(rendered):
    page, db, _ = rendered
    runs = dict(sql(db, "SELECT vendor, count(*) FROM job_runs GROUP BY vendor"))
    failed = dict(sql(db, "SELECT vendor, count(*) FILTER (state = 'FAILED') FROM job_runs GROUP BY vendor"))
    assert dict(zip(page.column("summary", "vendor"), map(int, page.column("summary", "runs")))) == runs
    assert dict(zip(page.column("summary", "vendor"), map(int, page.column("summary", "failed")))) == failed
    [[letters]] = sql(db, "SELECT count(*) FROM dead_letters")
    assert sum(map(int, page.column("dead_letters", "dead_letters"))) == letters > 0
    [[alerts]] = sql(db, "SELECT count(*) FROM alerts")
    assert sum(map(int, page.column("alerts", "alerts"))) == alerts > 0
    usual = {(v, j): p50 for v, j, p50 in sql(db, "SELECT vendor, job_key, p50_s FROM run_durations WHERE outcome = 'SUCCEEDED'")}
    shown = zip(page.column("durations", "vendor"), page.column("durations", "job_key"), page.column("durations", "p50_s"))
    pairs = [(usual[(v, j)], float(p)) for v, j, p in shown]
    assert pairs and all(abs(a - b) < 1e-6 for a, b in pairs)
    failing = dict(sql(db, "SELECT job_key, count(*) FROM job_attempts WHERE outcome = 'FAILED' GROUP BY job_key"))
    assert all(failing[j] == int(n) for j, n in zip(page.column("top_failing", "job_key"), page.column("top_failing", "failed_attempts")))
    finished = dict(sql(db, "SELECT vendor, count(*) FILTER (state IN ('SUCCEEDED', 'FAILED')) FROM job_runs GROUP BY vendor"))
    per_vendor: Counter[str] = Counter()
    for vendor, ok, bad in zip(page.column("failure_rates", "vendor"), page.column("failure_rates", "succeeded"), page.column("failure_rates", "failed")):
        per_vendor[vendor] += int(ok) + int(bad)
    assert {v: n for v, n in per_vendor.items()} == {v: n for v, n in finished.items() if n}


def test_serve_makes_the_page_again_from_the_database_on_every_request(demo_db, tmp_path):
    copy = tmp_path / "served.duckdb"
    shutil.copyfile(demo_db, copy)
    server = subprocess.Popen([sys.executable, "-m", "pipeline", "report", "--serve", "--db", str(copy), "--since", "all",
                               "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("serving the report on http://127.0.0.1:"), line + server.stderr.read()
        url = line.split()[4]
        first = RenderedPage()
        first.feed(urllib.request.urlopen(url, timeout=60).read().decode())
        before = sum(map(int, first.column("dead_letters", "dead_letters")))
        con = duckdb.connect(str(copy))
        con.execute("INSERT INTO dead_letters (dead_letter_id, \"at\", stage, error_type, reason, reason_code, vendor) "
                    "VALUES ('new-one', now(), 'decode', 'DecodeError', 'added while serving', 'decode_error.added', 'zuora')")
        con.close()
        second = RenderedPage()
        second.feed(urllib.request.urlopen(url, timeout=60).read().decode())
        assert sum(map(int, second.column("dead_letters", "dead_letters"))) == before + 1
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_a_bad_since_or_missing_database_is_one_clear_line(tmp_path):
    bad = pipeline("report", "--since", "soon", "--db", str(tmp_path / "x.duckdb"))
    assert bad.returncode == 2 and "--since must be like 7d" in bad.stderr and "Traceback" not in bad.stderr
    missing = pipeline("report", "--db", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "r.html"))
    assert missing.returncode == 1 and "no database at" in missing.stderr and "Traceback" not in missing.stderr


def test_an_unwritable_out_file_is_one_clear_line(demo_db, tmp_path):
    result = pipeline("report", "--db", str(demo_db), "--since", "all", "--out", str(tmp_path / "no" / "such" / "r.html"))
    assert result.returncode == 1 and result.stderr.startswith("error: cannot write") and "Traceback" not in result.stderr
