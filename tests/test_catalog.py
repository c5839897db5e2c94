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
