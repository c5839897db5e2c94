"""The vendor registry: lookup, the normalize guard, keyed documents, and the module contract."""

from __future__ import annotations

import inspect
import pathlib

import pytest

from pipeline import vendors
from pipeline.model import State
from pipeline.vendors.informatica import normalize as informatica
from pipeline.vendors._common import DEFAULT_CONTEXT, Context, Rejected

SEED = pathlib.Path(__file__).parent / "fixtures" / "informatica" / "seed_publication_with_child.json"


def test_unknown_vendor_names_the_known_ones():
    with pytest.raises(vendors.UnknownVendor) as caught:
        vendors.get("sap")
    assert isinstance(caught.value, KeyError)
    assert str(caught.value) == f"unknown vendor 'sap'; known: {', '.join(vendors.VENDOR_NAMES)}"
    assert vendors.VENDOR_NAMES[:5] == ("qlik_cloud", "qlik_qrs", "zuora", "truenas", "informatica")


def test_unknown_vendor_in_normalize_and_keyed_documents():
    with pytest.raises(vendors.UnknownVendor):
        vendors.normalize("sap", {})
    with pytest.raises(vendors.UnknownVendor):
        vendors.keyed_documents("sap", {})


def test_get_returns_the_vendor_module():
    assert vendors.get("informatica") is informatica


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ZeroDivisionError("division by zero"), "unexpected ZeroDivisionError: division by zero"),
        (KeyError("eventId"), "unexpected KeyError: 'eventId'"),
        (RecursionError("maximum recursion depth exceeded"), "document nested too deeply"),
        (TypeError("x" * 500), "unexpected TypeError: " + "x" * 200),
    ],
)
def test_guard_turns_unexpected_exceptions_into_rejected(monkeypatch, error, reason):
    def explode(doc, ctx=DEFAULT_CONTEXT):
        raise error

    monkeypatch.setattr(informatica, "normalize", explode)
    with pytest.raises(Rejected) as caught:
        vendors.normalize("informatica", b"{}")
    assert caught.value.reason == reason
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_guard_passes_rejected_through_unchanged(monkeypatch):
    original = Rejected("bad document")

    def reject(doc, ctx=DEFAULT_CONTEXT):
        raise original

    monkeypatch.setattr(informatica, "normalize", reject)
    with pytest.raises(Rejected) as caught:
        vendors.normalize("informatica", b"{}")
    assert caught.value is original


def test_guard_passes_the_context_and_returns_the_events():
    ctx = Context(source="org-1")
    events = vendors.normalize("informatica", SEED.read_bytes(), ctx)
    assert events == informatica.normalize(SEED.read_bytes(), ctx)
    assert {event.source for event in events} == {"org-1"}


def test_keyed_documents_one_key_per_piece():
    keyed = vendors.keyed_documents("informatica", SEED.read_bytes(), Context(source="org-1"))
    assert [key for key, _ in keyed] == ["informatica:org-1:DI_App/DSS_Pub", "informatica:org-1:DI_App/DSS_Sub"]
    assert [piece["eventId"] for _, piece in keyed] == [32010, 32011]


def test_keyed_documents_rejects_a_piece_with_several_jobs(monkeypatch):
    monkeypatch.setattr(informatica, "split", lambda doc: [doc])
    with pytest.raises(Rejected, match="concerns 2 jobs, expected exactly one"):
        vendors.keyed_documents("informatica", SEED.read_bytes())


def test_keyed_documents_rejects_a_piece_without_jobs(monkeypatch):
    monkeypatch.setattr(informatica, "split", lambda doc: [[]])
    with pytest.raises(Rejected, match="concerns 0 jobs"):
        vendors.keyed_documents("informatica", b"[]")


def test_keyed_documents_guards_normalize_of_each_piece(monkeypatch):
    monkeypatch.setattr(informatica, "split", lambda doc: [{"eventId": 1}])
    with pytest.raises(Rejected, match="no applicationName"):
        vendors.keyed_documents("informatica", b"{}")


@pytest.mark.parametrize("name", vendors.VENDOR_NAMES)
def test_vendor_module_contract(name):
    module = vendors.get(name)
    assert module.VENDOR == name
    assert isinstance(module.STATES, dict) and module.STATES
    for native, state in module.STATES.items():
        assert isinstance(native, str) and native, f"{name}: state key {native!r}"
        assert isinstance(state, State), f"{name}: STATES[{native!r}] = {state!r} is not a State"
    assert callable(module.normalize) and callable(module.split)
    parameters = list(inspect.signature(module.normalize).parameters.values())
    assert len(parameters) >= 2 and parameters[1].default is not inspect.Parameter.empty
    assert len(inspect.signature(module.split).parameters) >= 1


@pytest.mark.parametrize("name", vendors.VENDOR_NAMES)
def test_every_vendor_gives_a_default_stale_after_and_says_why(name):
    """Case 5 of issue 26: the settings read each vendor's default through the registry."""
    from datetime import timedelta

    module = vendors.get(name)
    assert isinstance(module.STALE_AFTER, timedelta) and module.STALE_AFTER >= timedelta(seconds=60)
    source = inspect.getsource(module)
    comment = source[: source.index("STALE_AFTER = ")].rsplit("\n\n", 1)[-1]
    assert comment.lstrip().startswith("#") and "STALE" in comment



@pytest.mark.parametrize(("vendor", "fixture", "name"), [
    ("qlik_qrs", "executionsession_full_list.json", None),
    ("qlik_qrs", "reloadtask_full_list.json", None),
    ("qlik_cloud", "app_reload_finished_legacy.json", None),
    ("truenas", "job_success_all_fields.json", "pool.scrub.scrub [tank]"),
    ("zuora", None, "RPRO_BI3_RC_SCHD_V"),
    ("informatica", "events_list_mixed_shapes.json", None),
])
def test_every_vendor_names_its_job_in_attrs_job_name(vendor, fixture, name):
    """issue 33 case 11: the ``jobs`` view reads ``attrs->>'job_name'``: each vendor puts
    its job's human name there (QRS task, Qlik Cloud app, TrueNAS method [task], Zuora
    view, Informatica publication/subscription)."""
    import pathlib
    from datetime import datetime, timezone

    folder = pathlib.Path(__file__).parent / "fixtures" / vendor
    text = (folder / fixture).read_bytes() if fixture else (pathlib.Path(__file__).parents[2] / "pipeline" / "samples" / "zuora" / "seed-status.txt").read_bytes()
    events = vendors.normalize(vendor, text, vendors.Context(source="s", received_at=datetime(2026, 1, 1, tzinfo=timezone.utc)))
    named = [event.attrs.get("job_name") for event in events]
    assert events and all(isinstance(found, str) and found.strip() for found in named), named
    if name is not None:
        assert set(named) == {name}
