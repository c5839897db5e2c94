"""Every vendor in the registry meets the same contract: a topic file, a states table, bundled
samples that normalize, a normalizer that survives fuzz, hostile documents it rejects, and
its CLI ``ingest`` / ``simulate`` commands. A new vendor package is checked by declaring it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline import catalog, vendors
from pipeline.cli import app
from pipeline.model import JobEvent, State
from pipeline.vendors import Rejected, registry

REGISTERED = registry.vendors()
IDS = [vendor.name for vendor in REGISTERED]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def test_the_registry_finds_every_vendor_package():
    packages = {p.name for p in Path(vendors.__file__).parent.iterdir() if (p / "__init__.py").is_file()}
    assert set(vendors.VENDOR_NAMES) == packages
    assert {v.kind for v in REGISTERED} <= {"push", "pull"}


@pytest.mark.parametrize("vendor", REGISTERED, ids=IDS)
def test_topic_file(vendor):
    assert vendor.topic in catalog.load(), f"no topics/ file declares {vendor.topic}"


@pytest.mark.parametrize("vendor", REGISTERED, ids=IDS)
def test_states_table_covers_native_states(vendor):
    module = vendor.normalizer()
    assert module.VENDOR == vendor.name
    assert module.STATES and all(isinstance(state, State) for state in module.STATES.values())


@pytest.mark.parametrize("vendor", REGISTERED, ids=IDS)
def test_samples_normalize(vendor):
    files = sorted(vendor.sample_folder().glob("*"))
    assert files, f"no samples in {vendor.sample_folder()}"
    events: list[JobEvent] = []
    for path in files:
        pieces = path.read_bytes().splitlines() if path.suffix == ".jsonl" else [path.read_bytes()]
        for piece in filter(None, pieces):
            try:
                events += vendors.normalize(vendor.name, piece)
            except Rejected:
                pass
    assert events, f"no sample of {vendor.name} gives an event"
    assert {event.state for event in events} <= set(State)


@pytest.mark.parametrize("vendor", REGISTERED, ids=IDS)
def test_hostile_documents_are_rejected(vendor):
    assert vendor.hostile, f"{vendor.name} declares no hostile documents"
    for doc in vendor.hostile:
        with pytest.raises(Rejected):
            vendors.normalize(vendor.name, doc)


@pytest.mark.parametrize("vendor", REGISTERED, ids=IDS)
def test_normalizer_survives_fuzz(vendor):
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(doc=json_values | st.binary(max_size=200))
    def check(doc):
        try:
            assert all(isinstance(event, JobEvent) for event in vendors.normalize(vendor.name, doc))
        except Rejected:
            pass

    check()


@pytest.mark.parametrize("group", ["ingest", "simulate"])
@pytest.mark.parametrize("vendor", REGISTERED, ids=IDS)
def test_cli_commands(vendor, group):
    result = CliRunner().invoke(app, [group, vendor.command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize("vendor", REGISTERED, ids=IDS)
def test_lazy_references_resolve(vendor):
    for reference in (vendor.ingest_command, vendor.simulate_command, vendor.settings, vendor.simulator,
                      vendor.run_command, vendor.bench):
        if reference is not None:
            assert callable(registry.load(reference)), reference
    if vendor.kind == "pull":
        assert vendor.settings and vendor.simulator and vendor.demo_faults
    else:
        assert vendor.run_command
