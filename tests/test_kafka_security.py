"""Kafka security (issue 35 case 1): every client comes from pipeline/kafka/clients.py, the
SASL password never shows, bad security settings are one line, and the roles reach a
broker over TLS with a client certificate and over SASL (PLAIN, SCRAM-SHA-256/512), while
a wrong CA or password is one line and exit 1. Tansu 0.6.0 can serve neither (see
tests/support/tls.py and sasl.py), so a front before it does the TLS or the SASL part."""

from __future__ import annotations

import ast
import asyncio
import shutil
from pathlib import Path

import pytest

import pipeline
from pipeline.kafka import clients
from pipeline.kafka.security import KafkaSecurity, KafkaSecurityError, Secret
from pipeline.settings import Settings, SettingsError
from pipeline.sink.writer import DuckDBWriter
from pipeline.vendors._simulator import Faults, SimClock
from pipeline.vendors.qlik_qrs.simulator import demo_simulator
from tests.support.processes import IngestProcess, RoleProcess, SinkProcess, WorkerProcess, pipeline as run_pipeline
from tests.support.sasl import SaslFrontedBroker
from tests.support.tls import TlsFrontedBroker

CLIENT_CLASSES = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
SAMPLES = Path(pipeline.__file__).parent / "samples"


def test_no_module_outside_pipeline_kafka_builds_a_kafka_client():
    """A client built elsewhere would connect without the security settings."""
    root = Path(pipeline.__file__).parent
    builders = []
    for path in root.rglob("*.py"):
        if path.is_relative_to(root / "kafka"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in CLIENT_CLASSES:
                    builders.append(f"{path.relative_to(root.parent)}:{node.lineno} {name}")
    assert builders == []


def test_the_sasl_password_is_read_from_the_environment_and_never_shown():
    env = {"JOBSTREAM_SECURITY_PROTOCOL": "SASL_SSL", "JOBSTREAM_SASL_MECHANISM": "SCRAM-SHA-512",
           "JOBSTREAM_SASL_USERNAME": "jobstream", "JOBSTREAM_SASL_PASSWORD": "s3cret-pass"}
    settings = Settings.from_env(env)
    security = settings.kafka_security()
    for text in (repr(settings), repr(security), str(security.password), security.describe()):
        assert "s3cret-pass" not in text
    assert security.client_options()["sasl_plain_password"] == "s3cret-pass"
    assert security.client_options()["sasl_mechanism"] == "SCRAM-SHA-512"
    credentials = security.faust_options()["broker_credentials"]
    assert (credentials.username, credentials.password, credentials.mechanism.value) == ("jobstream", "s3cret-pass", "SCRAM-SHA-512")
    assert "s3cret-pass" not in repr(credentials)


def test_the_sasl_password_comes_from_a_file_and_never_from_the_config_file(tmp_path):
    secret = tmp_path / "kafka-password"
    secret.write_text("from-a-file\n")
    settings = Settings.from_env({"JOBSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "JOBSTREAM_SASL_USERNAME": "u",
                                  "JOBSTREAM_SASL_PASSWORD_FILE": str(secret)})
    assert settings.kafka_security().password == Secret("from-a-file")
    with pytest.raises(SettingsError, match="sasl_password: secrets are not read from the config file"):
        Settings.from_file_and_env({"sasl_password": "in-the-file"}, env={})


def test_inconsistent_security_settings_are_one_line_each():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"JOBSTREAM_SECURITY_PROTOCOL": "SASL_SSL"}).kafka_security()
    assert caught.value.lines == [
        "security_protocol SASL_SSL needs sasl_username",
        "security_protocol SASL_SSL needs a password: JOBSTREAM_SASL_PASSWORD or sasl_password_file",
    ]
    with pytest.raises(SettingsError, match="JOBSTREAM_SASL_MECHANISM='GSSAPI': use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"):
        Settings.from_env({"JOBSTREAM_SASL_MECHANISM": "GSSAPI"})
    with pytest.raises(KafkaSecurityError, match="ssl_ca_file '/nowhere/ca.pem' cannot be used as a CA file"):
        KafkaSecurity(protocol="SSL", ca_file=Path("/nowhere/ca.pem")).ssl_context()


def test_a_command_with_unusable_security_settings_says_so_in_one_line_and_exits_2(tmp_path):
    result = run_pipeline("topics", "apply", "-b", "127.0.0.1:9", env={
        "JOBSTREAM_SECURITY_PROTOCOL": "SASL_SSL", "JOBSTREAM_SASL_USERNAME": "u",
        "JOBSTREAM_SASL_PASSWORD_FILE": str(tmp_path / "missing"),
    })
    assert result.returncode == 2, result.stderr
    assert "JOBSTREAM_SASL_PASSWORD_FILE=" in result.stderr and "cannot be read" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory):
    with TlsFrontedBroker(tmp_path_factory.mktemp("tls"), mutual=True) as fronted:
        yield fronted


def test_topics_apply_reaches_a_tls_broker_with_a_client_certificate_and_refuses_a_wrong_ca(tls_broker, tmp_path):
    plain = run_pipeline("topics", "apply", "-b", tls_broker.bootstrap, "--timeout", "3")
    assert plain.returncode == 1  # PLAINTEXT to a TLS listener reaches nothing
    applied = run_pipeline("topics", "apply", "-b", tls_broker.bootstrap, env=tls_broker.env())
    assert applied.returncode == 0, applied.stderr
    assert "jobs.events" in applied.stdout
    other = TlsFrontedBroker(tmp_path)  # another CA: the broker's certificate is not signed by it
    wrong = run_pipeline("topics", "apply", "-b", tls_broker.bootstrap, "--timeout", "3",
                         env=tls_broker.env() | {"JOBSTREAM_SSL_CA_FILE": str(other.files.ca)})
    assert wrong.returncode == 1
    lines = [line for line in wrong.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "certificate verify failed" in lines[0], wrong.stderr
    no_client_cert = run_pipeline("topics", "apply", "-b", tls_broker.bootstrap, "--timeout", "3",
                                  env={"JOBSTREAM_SECURITY_PROTOCOL": "SSL", "JOBSTREAM_SSL_CA_FILE": str(tls_broker.files.ca)})
    assert no_client_cert.returncode == 1
    assert "client certificate" in no_client_cert.stderr and len(no_client_cert.stderr.strip().splitlines()) == 1


async def test_backfill_worker_and_sink_run_over_tls(tls_broker, tmp_path):
    """The roles that write and read every topic, end to end through the TLS front."""
    env = tls_broker.env()
    assert run_pipeline("topics", "apply", "-b", tls_broker.bootstrap, env=env).returncode == 0
    worker = WorkerProcess(tls_broker.bootstrap, "jobstream-tls", tmp_path / "worker", tmp_path / "worker.log", **env)
    sink = SinkProcess(tls_broker.bootstrap, tmp_path / "tls.duckdb", env=env)
    documents = tmp_path / "zuora"
    documents.mkdir()
    shutil.copy(SAMPLES / "zuora" / "status-polls.jsonl", documents / "status-polls.jsonl")
    worker.start()
    sink.start()
    try:
        sent = await asyncio.to_thread(run_pipeline, "ingest", "file", str(documents), "-b", tls_broker.bootstrap, env=env)
        assert sent.returncode == 0, sent.stderr
        await asyncio.to_thread(sink.wait_for, "SELECT count(*) FROM jobs.job_events WHERE vendor = 'zuora'",
                                lambda n: n > 0, 120)
    finally:
        await worker.stop_async()
        await sink.stop_async()
    assert "certificate" not in worker.text() and "certificate" not in sink.text()


async def test_clients_from_a_connection_carry_its_tls(tls_broker):
    # The topics are created here, not left to the test above: under pytest-xdist the two
    # may run in different processes, each with its own TLS broker.
    applied = run_pipeline("topics", "apply", "-b", tls_broker.bootstrap, env=tls_broker.env())
    assert applied.returncode == 0, applied.stderr
    security = Settings.from_env(tls_broker.env()).kafka_security()
    consumer = clients.consumer(clients.Connection(tls_broker.bootstrap, security))
    await consumer.start()
    try:
        assert "jobs.events" in await consumer.topics()
    finally:
        await consumer.stop()


SASL_USER, SASL_PASSWORD = "jobstream", "scram-secret-1"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory):
    """tests/support/sasl.py: Tansu 0.6.0 cannot hold a user while it requires authentication."""
    with SaslFrontedBroker(tmp_path_factory.mktemp("sasl"), {SASL_USER: SASL_PASSWORD}) as fronted:
        yield fronted


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_topics_apply_authenticates_with_each_mechanism(sasl_broker, mechanism):
    unauthenticated = run_pipeline("topics", "apply", "-b", sasl_broker.bootstrap, "--timeout", "3")
    assert unauthenticated.returncode == 1
    applied = run_pipeline("topics", "apply", "-b", sasl_broker.bootstrap,
                           env=sasl_broker.env(SASL_USER, SASL_PASSWORD, mechanism))
    assert applied.returncode == 0, applied.stderr


def test_a_wrong_sasl_password_is_one_line_and_exit_1(sasl_broker, tmp_path):
    password_file = tmp_path / "kafka-password"
    password_file.write_text("not-the-password\n")
    env = sasl_broker.env(SASL_USER, "") | {"JOBSTREAM_SASL_PASSWORD_FILE": str(password_file)}
    env.pop("JOBSTREAM_SASL_PASSWORD")
    wrong = run_pipeline("topics", "apply", "-b", sasl_broker.bootstrap, "--timeout", "3", env=env)
    assert wrong.returncode == 1
    lines = [line for line in wrong.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, wrong.stderr
    assert f"SASL authentication as {SASL_USER} refused" in lines[0] and "not-the-password" not in lines[0]


async def test_every_role_runs_over_sasl_scram(sasl_broker, tmp_path):
    """Backfill, a pull ingestor (QRS, against its simulator), the worker, the sink and
    the alerter, all authenticated with SCRAM-SHA-512, end to end into DuckDB."""
    env = sasl_broker.env(SASL_USER, SASL_PASSWORD)
    assert run_pipeline("topics", "apply", "-b", sasl_broker.bootstrap, env=env).returncode == 0
    refused_before = len(sasl_broker.refused)
    simulator = demo_simulator(clock=SimClock(factor=30), faults=Faults.parse(""), groups=1)
    url = await simulator.start()
    config = tmp_path / "qrs.toml"
    config.write_text(f'[qlik_qrs]\nbase_url = "{url}"\nsource = "sasl-test"\npoll_interval_s = 0.5\n')
    worker = WorkerProcess(sasl_broker.bootstrap, "jobstream-sasl", tmp_path / "worker", tmp_path / "worker.log", **env)
    sink = SinkProcess(sasl_broker.bootstrap, tmp_path / "sasl.duckdb", env=env)
    ingestor = IngestProcess(["qlik-qrs"], config, sasl_broker.bootstrap, tmp_path / "qrs.log", env)
    alerter = RoleProcess(["alert", "--bootstrap", sasl_broker.bootstrap], tmp_path / "alert.log",
                          env | {"JOBSTREAM_ALERT_URLS": "json://127.0.0.1:9/hook"})
    documents = tmp_path / "zuora"
    documents.mkdir()
    shutil.copy(SAMPLES / "zuora" / "status-polls.jsonl", documents / "status-polls.jsonl")
    roles = [worker.start(), sink.start(), ingestor.start(), alerter.start()]
    try:
        sent = await asyncio.to_thread(run_pipeline, "ingest", "file", str(documents), "-b", sasl_broker.bootstrap, env=env)
        assert sent.returncode == 0, sent.stderr
        for vendor in ("zuora", "qlik_qrs"):
            await asyncio.to_thread(sink.wait_for, f"SELECT count(*) FROM jobs.job_events WHERE vendor = '{vendor}'",
                                    lambda n: n > 0, 120)
        await alerter.logged("alerter ready")  # it may join its group after the rows are in
        assert alerter.alive(), alerter.tail()
    finally:
        for role in roles:
            await role.stop_async()
        await simulator.stop()
    assert len(sasl_broker.refused) == refused_before


@pytest.mark.parametrize("role", ["worker", "sink", "alert", "ingest file"])
def test_every_role_with_a_wrong_password_says_so_in_one_line(sasl_broker, role, tmp_path):
    documents = tmp_path / "zuora"
    documents.mkdir()
    shutil.copy(SAMPLES / "zuora" / "status-polls.jsonl", documents / "status-polls.jsonl")
    extra = {
        "worker": ["--store", "memory://", "--datadir", str(tmp_path / "w"), "--tansu"],
        "sink": ["--db", str(tmp_path / "j.duckdb"), "--quack-port", "0"],
        "alert": [],
        "ingest file": [str(documents)],
    }[role]
    env = sasl_broker.env(SASL_USER, "wrong-password-1") | {"JOBSTREAM_ALERT_URLS": "json://127.0.0.1:9/hook"}
    result = run_pipeline(*role.split(), "--bootstrap", sasl_broker.bootstrap, *extra, env=env, timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"SASL authentication as {SASL_USER} refused" in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "wrong-password-1" not in result.stderr + result.stdout


def test_status_with_a_config_file_reaches_the_broker_with_that_files_sasl_settings(sasl_broker, tmp_path):
    """`pipeline status --config` read the file's Kafka address but connected without its
    security: a SASL cluster was 'cannot read the consumer groups'."""
    assert run_pipeline("topics", "apply", "-b", sasl_broker.bootstrap, env=sasl_broker.env(SASL_USER, SASL_PASSWORD)).returncode == 0
    password_file = tmp_path / "kafka-password"
    password_file.write_text(SASL_PASSWORD + "\n")
    writer = DuckDBWriter(tmp_path / "sink.duckdb").open()  # a sink's file that read jobs.events:0 up to 0
    writer.connection.execute("INSERT INTO kafka_offsets VALUES ('jobs.events', 0, 0, now())")
    writer.close()
    config = tmp_path / "run.toml"
    config.write_text(
        "[pipeline]\n"
        f'bootstrap = "{sasl_broker.bootstrap}"\n'
        'security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "SCRAM-SHA-256"\n'
        f'sasl_username = "{SASL_USER}"\nsasl_password_file = "{password_file}"\n'
        f'run_state_file = "{tmp_path / "state.json"}"\ndb_path = "{tmp_path / "sink.duckdb"}"\n'
    )
    result = run_pipeline("status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("sink") and "jobs.events:0" in line for line in result.stdout.splitlines()), result.stdout
