import pytest
import subprocess
import sys
import time

from typer.testing import CliRunner

from pipeline import catalog
from pipeline.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("topics", "normalize", "worker", "broker"):
        assert command in result.output


def test_topics_apply_against_an_unreachable_broker_is_one_line_and_bounded(refused_port):
    port = refused_port()  # nothing listens there
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "topics", "apply", "--bootstrap", f"127.0.0.1:{port}", "--timeout", "2"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 20
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Kafka at 127.0.0.1:")


def test_bad_environment_is_a_usage_error():
    result = runner.invoke(app, ["topics", "apply"], env={"JOBSTREAM_PARTITIONS": "x"})
    assert result.exit_code == 2
    assert "JOBSTREAM_PARTITIONS" in result.output


def test_worker_against_an_unreachable_broker_is_one_line(refused_port):
    port = refused_port()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "worker", "--bootstrap", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: cannot reach Kafka at 127.0.0.1:{port} (no broker answered within 5 s)"


def test_a_bad_time_zone_flag_or_setting_is_a_usage_error_not_a_traceback():
    for env, args in (({"JOBSTREAM_BATCH_MAX": "x"}, ["--tz", "UTC"]), ({}, ["--tz", "Etc"])):
        result = runner.invoke(app, ["normalize", "--vendor", "zuora", *args, "/dev/null"], env=env)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output


def _pipeline(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_worker_refuses_raw_topics_with_another_partition_count(broker):
    """Issue 27.8: the worker started, then died at the first message of a partition its
    table lacked, saying "restart it". Now one line before it starts."""
    result = _pipeline("worker", "--bootstrap", broker.bootstrap, "--partitions", "2", "--app-id", "jobstream-test-27-8", "--store", "memory://")
    assert result.returncode == 1
    raw_topics = sorted(name for name in catalog.load() if name.startswith("raw."))  # one per vendor
    assert result.stderr.strip() == (
        f"error: {raw_topics[0]}: 4 partitions on the broker, 2 expected (the worker's table needs that "
        "count on every raw topic: set --partitions / JOBSTREAM_PARTITIONS to match, or fix the topic); "
        f"{len(raw_topics) - 1} more raw topics alike"
    )


@pytest.mark.parametrize(
    "env, args, message",
    [
        ({"JOBSTREAM_BATCH_WITHIN_S": "nan"}, [], "error: JOBSTREAM_BATCH_WITHIN_S=nan: must be a finite number"),
        ({"JOBSTREAM_STALE_AFTER_S": "nan"}, [], "error: JOBSTREAM_STALE_AFTER_S=nan: must be a finite number"),
        ({"JOBSTREAM_RUN_RETENTION_S": "1e300"}, [], "error: JOBSTREAM_RUN_RETENTION_S=1e+300: must be at most 3.1536e+09"),
        ({"JOBSTREAM_SESSION_TIMEOUT_S": "inf"}, [], "error: JOBSTREAM_SESSION_TIMEOUT_S=inf: must be a finite number"),
        ({"JOBSTREAM_SESSION_TIMEOUT_S": "0"}, [], "error: JOBSTREAM_SESSION_TIMEOUT_S=0.0: must be at least 1"),
        ({"JOBSTREAM_STALE_AFTER_S": "0"}, [], "error: JOBSTREAM_STALE_AFTER_S=0.0: must be greater than 0"),
        ({}, ["--stale-after", "0"], "error: --stale-after 0.0: must be greater than 0"),
        ({}, ["--store", "bogus://"], "error: --store 'bogus://': unknown table store; use one of rocksdb://, memory://"),
    ],
)
def test_worker_refuses_bad_settings_in_one_line_before_it_starts(refused_port, env, args, message):
    """Issue 27.6: a NaN batch window made a live worker that consumed nothing; the
    others were tracebacks or an endless loop. Env and flags follow one rule."""
    port = refused_port()  # never reached: settings are checked first
    result = _pipeline("worker", "--bootstrap", f"127.0.0.1:{port}", *args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == message


def test_bootstrap_localhost_means_port_9092():
    """Issue 27.10: `-b localhost` was refused."""
    result = _pipeline("topics", "apply", "-b", "localhost", "--timeout", "1", env={"JOBSTREAM_BOOTSTRAP": ""})
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach Kafka at localhost:9092 within 1 s"), result.stderr


@pytest.mark.parametrize("vendor, table, env, expected", [
    ("qlik-qrs", '[qlik_qrs]\nbase_url = "https://qrs:4242"\nsource = "qrs"\ncert_file = "/nonexistent/c.pem"\nkey_file = "/nonexistent/c.key"\n',
     {}, "error: [qlik_qrs] cannot load the client certificate"),
    ("zuora", '[zuora]\nbase_url = "https://z.example.com"\nuser = "u"\nrole = "r"\nclientname = "c"\n', {},
     "error: [zuora] the RevPro password is missing"),
    ("informatica", '[informatica]\nbase_url = "https://pod.example.com"\nuser = "u"\n', {}, "error: [informatica] the IICS password is missing"),
    ("qlik-cloud", "", {"JOBSTREAM_QLIK_WEBHOOK_SECRET_FILE": "/nonexistent/secret"}, "error: JOBSTREAM_QLIK_WEBHOOK_SECRET_FILE="),
    ("truenas", "", {"JOBSTREAM_TRUENAS_API_KEY_FILE": "/nonexistent/key"}, "error: JOBSTREAM_TRUENAS_API_KEY_FILE="),
])
def test_every_ingestors_config_error_is_one_error_line_and_exit_2(refused_port, tmp_path, vendor, table, env, expected):
    import os

    config = tmp_path / "my.toml"
    config.write_text(table)
    args = {"qlik-cloud": ["--listen", "127.0.0.1:0"], "truenas": ["--url", "wss://nas/api/current"]}.get(vendor, ["--config", str(config)])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    result = subprocess.run([sys.executable, "-m", "pipeline", "ingest", vendor, *args], capture_output=True, text=True,
                            timeout=60, env={**clean, **env, "JOBSTREAM_BOOTSTRAP": f"127.0.0.1:{refused_port()}"})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_an_ingestor_config_reports_every_problem_of_its_table_one_line_each(tmp_path):
    import os

    config = tmp_path / "my.toml"
    config.write_text('[zuora]\nbase_url = "https://z.example.com"\npassword = "sekrit-pw"\ncolour = 1\npoll_interval_s = "fast"\n')
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    result = subprocess.run([sys.executable, "-m", "pipeline", "ingest", "zuora", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env=clean)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: [zuora] ") for line in lines), lines
    assert "sekrit" not in result.stderr


@pytest.mark.parametrize("vendor, table", [
    ("zuora", 'base_url = "https://z.example.com"\nuser = "u"\nrole = "r"\nclientname = "c"\nsource = "s"\n'),
    ("informatica", 'base_url = "https://pod.example.com"\nuser = "u"\n'),
])
def test_a_short_password_is_called_short_not_missing(tmp_path, vendor, table):
    import os

    config = tmp_path / "my.toml"
    config.write_text(f"[{vendor}]\n{table}")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    result = subprocess.run([sys.executable, "-m", "pipeline", "ingest", vendor, "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env={**clean, f"JOBSTREAM_{vendor.upper()}_PASSWORD": "x"})
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"password is shorter than 4 characters (set JOBSTREAM_{vendor.upper()}_PASSWORD or password_file)"), result.stderr


def test_sql_shows_a_result_too_wide_for_the_terminal_one_block_per_row(refused_port, tmp_path):
    import duckdb

    db = tmp_path / "wide.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE wide AS SELECT " + ", ".join(f"'value-{n}' AS column_{n}" for n in range(28)))
    con.execute("CREATE TABLE narrow AS SELECT 'zuora' AS vendor, 3 AS runs")
    con.close()
    env = {"COLUMNS": "80", "JOBSTREAM_QUACK_PORT": str(refused_port())}
    wide = _pipeline("sql", "--db", str(db), "FROM wide", env=env)
    assert wide.returncode == 0, wide.stderr
    lines = wide.stdout.splitlines()
    assert lines[0] == "-- row 1 --" and "column_27  value-27" in lines and all(len(line) <= 80 for line in lines[:-1])
    narrow = _pipeline("sql", "--db", str(db), "FROM narrow", env=env)
    assert "-- row" not in narrow.stdout and "vendor" in narrow.stdout and "zuora" in narrow.stdout


def test_the_alerter_stops_cleanly_on_sigterm_with_status_0(broker):
    import os
    import signal
    import uuid

    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")} | {"JOBSTREAM_SESSION_TIMEOUT_S": "6"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "alert", "--url", "json://127.0.0.1:9/hook", "--bootstrap", broker.bootstrap,
         "--group", f"alerts-{uuid.uuid4().hex[:8]}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    seen = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "alerter ready" in line:
                break
        assert any("alerter ready" in line for line in seen), "".join(seen)
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, "".join(seen) + rest
    assert "stopped: " in rest and "Traceback" not in rest


def test_sql_says_a_syntax_error_is_one_and_only_real_writes_are_refused_as_writes(refused_port, tmp_path):
    import duckdb

    db = tmp_path / "f.duckdb"
    duckdb.connect(str(db)).close()
    env = {"JOBSTREAM_QUACK_PORT": str(refused_port())}
    typo = _pipeline("sql", "--db", str(db), "SELEC 1", env=env)
    assert typo.returncode == 1
    assert typo.stderr.strip().splitlines() == ['error: Parser Error: syntax error at or near "SELEC" LINE 1: SELEC 1 ^']
    write = _pipeline("sql", "--db", str(db), "CREATE TABLE t (x INT)", env=env)
    assert write.returncode == 1 and "read-only" in write.stderr


def test_sql_attach_without_a_live_sink_gives_the_read_only_file_line(refused_port, tmp_path):
    import duckdb

    db = tmp_path / "finished.duckdb"
    duckdb.connect(str(db)).close()
    port = refused_port()
    done = _pipeline("sql", "--attach", "--db", str(db), env={"JOBSTREAM_QUACK_PORT": str(port)})
    assert done.returncode == 0, done.stderr
    assert f"no live sink answers at quack:localhost:{port}" in done.stderr
    assert done.stdout.strip().endswith(f"duckdb -readonly {db}") and "ATTACH" not in done.stdout
    missing = _pipeline("sql", "--attach", "--db", str(tmp_path / "none.duckdb"), env={"JOBSTREAM_QUACK_PORT": str(port)})
    assert missing.returncode == 1 and "no live sink answers" in missing.stderr and "no database at" in missing.stderr


def test_help_reads_as_sentences_flags_take_no_value_and_there_is_a_version():
    """Descriptions broke mid-sentence (the docstrings' own line breaks kept, then wrapped
    again); every flag showed <bool>, --help too; --version was missing."""
    for command in ("run", "demo", "status"):
        text = _pipeline(command, "--help", env={"COLUMNS": "80"}).stdout
        assert "<bool>" not in text and "--help " in text, text
        description = text.split("\n\n", 1)[1].split("Options:")[0].split("Arguments:")[0]
        for paragraph in description.strip().split("\n\n"):
            lines = [line.strip() for line in paragraph.splitlines()]
            for line, following in zip(lines, lines[1:]):
                assert len(line) + 1 + len(following.split()[0]) > 70, f"{command}: a line ends early: {line!r}"
    version = _pipeline("--version")
    assert version.returncode == 0 and version.stdout.startswith("pipeline (jobstream) ")
    assert version.stdout.splitlines()[1].startswith("hot modules pure Python: 0 of")  # the editable install
