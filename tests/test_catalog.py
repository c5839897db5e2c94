import pytest

from pipeline import catalog
from pipeline.vendors import VENDOR_NAMES


def test_catalog_has_every_topic_of_the_design():
    names = set(catalog.load())
    assert names == {f"raw.{v}" for v in VENDOR_NAMES} | {
        "jobs.events", "jobs.transitions", "jobs.runs", "jobs.deadletter", "jobs.alerts",
        "ingest.cursors",
    }
    assert catalog.topic(catalog.CURSORS).cleanup_policy == "compact"
    assert catalog.topic(catalog.RUNS).cleanup_policy == "compact"
    assert catalog.topic(catalog.RUNS).config == {"cleanup.policy": "compact"}
    assert catalog.topic(catalog.EVENTS).config["retention.ms"] == "604800000"
    assert catalog.raw_topics() == sorted(f"raw.{v}" for v in VENDOR_NAMES)


def test_unknown_topic_names_its_file():
    with pytest.raises(catalog.CatalogError, match=r"topics/raw.nope.toml"):
        catalog.raw_topic("nope")


@pytest.mark.parametrize(
    "filename, text, reason",
    [
        ("a.toml", "name = 'a'\npartitions = 0", "positive integer"),
        ("a.toml", "name = 'b'\npartitions = 1", "file name must be 'b.toml'"),
        ("a.toml", "partitions = 1", "non-empty string"),
        ("a.toml", "name = 'a'\npartitions = 1\ncleanup_policy = 'x'", "unknown cleanup_policy"),
        ("a.toml", "name = 'a'\npartitions = 1\ncolour = 'red'", "unknown keys"),
        ("a.toml", "name = ", "a.toml"),
    ],
)
def test_malformed_topic_files_are_refused_with_a_reason(filename, text, reason):
    with pytest.raises(catalog.CatalogError, match=reason):
        catalog._parse(filename, text)


def test_the_catalog_is_found_from_a_source_checkout_too(tmp_path):
    """Without an install, pipeline/ and topics/ are separate folders of the checkout."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    shutil.copytree(root / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "topics", tmp_path / "topics", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "topics" / "__init__.py").unlink()  # as if pipeline.topics could not be imported
    script = "from pipeline import catalog; print(len(catalog.load()))"
    # -S: no site-packages, so no installed or editable pipeline.topics to find instead
    result = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(catalog.load()))


def test_config_mismatches_name_each_stated_setting():
    runs = catalog.topic(catalog.RUNS)
    assert catalog.config_mismatches(runs, {"cleanup.policy": "compact", "retention.ms": "60000"}) == []
    assert catalog.config_mismatches(runs, {"cleanup.policy": "delete"}) == [
        "jobs.runs: cleanup.policy is delete on the broker, compact in the catalog"
    ]
    events = catalog.topic(catalog.EVENTS)
    assert catalog.config_mismatches(events, {"cleanup.policy": "delete"}) == [
        "jobs.events: retention.ms is not set on the broker (its default applies), 604800000 in the catalog"
    ]


@pytest.fixture
def bare_broker():
    """A broker of its own, without the catalog's topics: the test creates one topic
    wrongly, which the session broker must never see."""
    from pipeline.broker import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        yield embedded


def test_topics_apply_reports_a_topic_created_with_other_settings(bare_broker):
    """Issue 27.7: jobs.runs made with delete + one minute retention was 'present', exit 0."""
    import asyncio
    import subprocess
    import sys

    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create_wrong_runs_topic() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bare_broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(
                catalog.RUNS, 4, 1, topic_configs={"cleanup.policy": "delete", "retention.ms": "60000"},
            )])
        finally:
            await admin.close()

    asyncio.run(create_wrong_runs_topic())
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "topics", "apply", "--bootstrap", bare_broker.bootstrap],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "present  jobs.runs" in result.stdout
    assert [line for line in result.stderr.splitlines() if line.startswith("mismatch")] == [
        "mismatch jobs.runs: cleanup.policy is delete on the broker, compact in the catalog",
    ]
    again = subprocess.run(
        [sys.executable, "-m", "pipeline", "topics", "apply", "--bootstrap", bare_broker.bootstrap],
        capture_output=True, text=True, timeout=60,
    )
    assert again.returncode == 1 and "created" not in again.stdout


def test_every_topic_states_its_replication_and_a_deployment_overrides_it():
    """Issue 35 case 2: replication factor 1 was hard-wired; min.insync.replicas absent."""
    for spec in catalog.load().values():
        assert spec.replication_factor == 1 and spec.min_insync_replicas is None
    replicated = catalog.topic(catalog.EVENTS).replicated(3, 2)
    assert replicated.replication_factor == 3 and replicated.config["min.insync.replicas"] == "2"
    assert catalog.changelog_replication(None) == 1 and catalog.changelog_replication(3) == 3
    assert catalog.changelog_config(2) == {"min.insync.replicas": "2"} and catalog.changelog_config(None) == {}


def test_topics_apply_creates_with_the_deployments_replication_and_compares_it(bare_broker):
    import asyncio

    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from pipeline.kafka import clients
    from tests.support.processes import pipeline as run_pipeline

    replicated = {"JOBSTREAM_REPLICATION_FACTOR": "3", "JOBSTREAM_MIN_INSYNC_REPLICAS": "2"}
    created = run_pipeline("topics", "apply", "-b", bare_broker.bootstrap, env=replicated)
    assert created.returncode == 0, created.stderr

    async def described() -> tuple[int, str]:
        admin = clients.admin(bare_broker.bootstrap)
        await admin.start()
        try:
            [topic] = await admin.describe_topics([catalog.EVENTS])
            [configs] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, catalog.EVENTS)])
        finally:
            await admin.close()
        entries = {entry[0]: entry[1] for entry in configs.resources[0][4]}
        return len(topic["partitions"][0]["replicas"]), entries["min.insync.replicas"]

    assert asyncio.run(described()) == (3, "2")
    assert run_pipeline("topics", "apply", "-b", bare_broker.bootstrap, env=replicated).returncode == 0
    compared = run_pipeline("topics", "apply", "-b", bare_broker.bootstrap)
    assert compared.returncode == 1
    assert "mismatch jobs.events: replication factor 3 on the broker, 1 in the catalog" in compared.stderr


def test_the_workers_changelog_gets_the_deployments_replication(tmp_path):
    from pipeline.settings import Settings
    from pipeline.stream.app import TABLE_NAME, create_app

    settings = Settings(bootstrap="127.0.0.1:9", store="memory://", datadir=tmp_path / "w",
                        replication_factor=3, min_insync_replicas=2)
    app = create_app(settings)
    table = app.tables[TABLE_NAME]
    assert app.conf.topic_replication_factor == 3
    # Faust declares the changelog with conf.topic_replication_factor when its own replicas is unset
    assert table.changelog_topic.replicas is None and table.changelog_topic.config == {"min.insync.replicas": "2"}
