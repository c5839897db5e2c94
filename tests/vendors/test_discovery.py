"""A new vendor is one package: the registry discovers it without any list edited."""

from __future__ import annotations

import sys

import pytest

import pipeline.vendors as package
from pipeline.vendors import registry


@pytest.fixture
def sixth_vendor(tmp_path, monkeypatch):
    folder = tmp_path / "acme_batch"
    folder.mkdir()
    added = max(vendor.added for vendor in registry.vendors()) + 1  # the newest, whatever came before
    (folder / "__init__.py").write_text(
        "from pipeline.vendors.registry import Vendor\n"
        f"VENDOR = Vendor('acme_batch', added={added}, kind='pull', ingest_help='Poll ACME.',\n"
        "                settings='pipeline.vendors.acme_batch.ingest:AcmeSettings')\n"
    )
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    registry.vendors.cache_clear()
    yield
    sys.modules.pop("pipeline.vendors.acme_batch", None)
    registry.vendors.cache_clear()


def test_a_sixth_vendor_package_is_discovered(sixth_vendor):
    found = registry.vendors()
    assert [v.name for v in found][-1] == "acme_batch"
    assert registry.by_command("acme-batch").ingestor_role == "acme-batch-ingestor"
    assert [v.name for v in registry.of_kind("pull")][-1] == "acme_batch"


def test_a_vendor_packages_own_samples_are_bundled_without_a_shared_folder(sixth_vendor, tmp_path):
    samples = tmp_path / "acme_batch" / "samples"
    samples.mkdir()
    (samples / "one-run.json").write_text("{}")
    assert registry.by_name("acme_batch").sample_folder() == samples
    assert registry.by_name("zuora").sample_folder().parts[-2:] == ("samples", "zuora")  # the first vendors' place


def test_a_package_without_a_declaration_is_refused(tmp_path, monkeypatch):
    (tmp_path / "nameless").mkdir()
    (tmp_path / "nameless" / "__init__.py").write_text("")
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    registry.vendors.cache_clear()
    try:
        with pytest.raises(TypeError, match="must declare VENDOR"):
            registry.vendors()
    finally:
        sys.modules.pop("pipeline.vendors.nameless", None)
        registry.vendors.cache_clear()


def test_the_order_is_the_order_vendors_were_added():
    assert registry.names()[:5] == ("qlik_cloud", "qlik_qrs", "zuora", "truenas", "informatica")
    assert [v.added for v in registry.vendors()] == sorted(v.added for v in registry.vendors())
