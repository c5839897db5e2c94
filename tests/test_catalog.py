import pytest

from pipeline import catalog
from pipeline.vendors import VENDOR_NAMES


def test_catalog_has_every_topic_of_the_design():
    names = set(catalog.load())
    assert names == {f"raw.{v}" for v in VENDOR_NAMES} | {
        "jobs.events", "jobs.transitions", "jobs.runs", "jobs.deadletter"
    }
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
