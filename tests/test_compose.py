"""docker-compose.yml and the Dockerfile stay consistent with the CLI (no container engine
runs here): every pipeline service's command names a real command, every option it passes
is one that command takes, and every JOBSTREAM_* variable is one the settings read."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.settings import Settings
from pipeline.vendors import registry

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PIPELINE_SERVICES = {
    name: service for name, service in COMPOSE["services"].items() if service.get("image", "").startswith("jobstream")
}

# Variables read outside Settings' own fields (per vendor, per ingestor section, secrets):
# each pull vendor's secrets are found through the registry, as its settings read them.
EXTRA_VARIABLES = {
    "JOBSTREAM_QUACK_TOKEN", "JOBSTREAM_QLIK_WEBHOOK_SECRET", "JOBSTREAM_TRUENAS_API_KEY",
    *(f"JOBSTREAM_{vendor.name.upper()}_{secret.upper()}" for vendor in registry.of_kind("pull") if vendor.settings
      for secret in registry.load(vendor.settings).SECRETS),
    *(f"JOBSTREAM_{vendor.name.upper()}_{secret.upper()}_FILE" for vendor in registry.of_kind("pull") if vendor.settings
      for secret in registry.load(vendor.settings).SECRETS),
}


def _command_path(command: list[str]) -> str:
    path = []
    for token in command:
        if token.startswith("-"):
            break
        path.append(token)
    return " ".join(path)


def test_every_role_of_the_pipeline_is_a_service():
    commands = {_command_path(service["command"]) for service in PIPELINE_SERVICES.values()}
    assert {"topics apply", "worker", "sink", "alert", *(f"ingest {v.command}" for v in registry.vendors())} <= commands


@pytest.mark.parametrize("name", sorted(PIPELINE_SERVICES))
def test_each_service_command_and_option_exists(name):
    command = PIPELINE_SERVICES[name]["command"]
    path = _command_path(command).split()
    options = [token for token in command if token.startswith("--")]
    result = subprocess.run([sys.executable, "-m", "pipeline", *path, "--help"], capture_output=True, text=True,
                            timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage: " in result.stdout and " ".join(path) in result.stdout
    for option in options:
        assert re.search(rf"{re.escape(option)}\b", result.stdout), f"{name}: {' '.join(path)} has no {option}"


def test_every_jobstream_variable_is_one_the_settings_read():
    fields = {f"JOBSTREAM_{name.upper()}" for name in Settings.__dataclass_fields__}
    for name, service in PIPELINE_SERVICES.items():
        for variable in (service.get("environment") or {}):
            if variable.startswith("JOBSTREAM_"):
                assert variable in fields | EXTRA_VARIABLES, f"{name}: {variable} is read by nothing"


def test_the_image_installs_the_package_and_runs_pipeline():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir /src" in dockerfile
    assert 'ENTRYPOINT ["pipeline"]' in dockerfile
    for copied in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (ROOT / copied).exists(), copied


def test_the_demo_profile_runs_every_vendors_simulator_and_ingestors_pointed_at_them(monkeypatch):
    demo = {name: s for name, s in PIPELINE_SERVICES.items() if "demo" in s.get("profiles", [])}
    simulated = {" ".join(s["command"][:2]) for s in demo.values() if s["command"][0] == "simulate"}
    assert simulated == {f"simulate {v.command}" for v in registry.vendors()}
    listening = {}
    for name, service in demo.items():
        command = service["command"]
        if command[0] == "simulate" and "--port" in command:
            assert command[command.index("--host") + 1] == "0.0.0.0", name  # reachable from other containers
            listening[name] = command[command.index("--port") + 1]
    ingestors = {" ".join(s["command"][:2]) for s in demo.values() if s["command"][0] == "ingest"}
    # Qlik Cloud's receiver is the production one (ingest-qlik-cloud): webhooks need no demo twin.
    assert ingestors == {f"ingest {v.command}" for v in registry.vendors() if v.name != "qlik_cloud"}
    assert "ws://simulate-truenas:8781/" in " ".join(demo["demo-ingest-truenas"]["command"])
    # The pull ingestors' config (mounted from ./config) loads and points at the simulators.
    from pipeline.ingest_cli import settings_for

    secrets = {name: value for v in registry.of_kind("pull") for name, value in v.demo_secrets}
    for command in (v.command for v in registry.of_kind("pull")):
        service = demo[f"demo-ingest-{command}"]
        mounted = service["command"][service["command"].index("--config") + 1]
        host_dir, container_dir = service["volumes"][0].split(":")[:2]
        path = ROOT / host_dir / Path(mounted).relative_to(container_dir)
        for variable, value in secrets.items():
            assert service.get("environment", {}).get(variable, value) == value
            monkeypatch.setenv(variable, value)
        settings = settings_for(command, path)
        assert settings.base_url == f"http://simulate-{command}:{listening[f'simulate-{command}']}"


def _option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_live_sql_is_published_only_over_tls():
    """Quack (plain HTTP) stays on the container's localhost; the one published live
    endpoint is Postgres, with a certificate (pgwire refuses a plain network bind)."""
    sink = COMPOSE["services"]["sink"]
    command = sink["command"]
    assert _option(command, "--quack-host") in ("localhost", "127.0.0.1")
    published = {str(p).rsplit(":", 1)[-1] for p in sink.get("ports", [])}
    assert published == {_option(command, "--pg-port")}
    assert sink["environment"]["JOBSTREAM_PG_TLS_CERT"] and sink["environment"]["JOBSTREAM_PG_TLS_KEY"]
    assert any(volume.endswith(":/certs:ro") for volume in sink["volumes"])


def test_an_operator_can_bring_it_down_and_nothing_listens_on_all_interfaces():
    """Issue 35 case 12: no `${VAR:?}` (it failed every command, `down` included), Kafka and the
    webhook receiver published on 127.0.0.1 only, Kafka's data in a volume (case 8), every
    long-running role with a healthcheck, restarts bounded, secrets as files (`secrets:`)."""
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"\$\{\w+:\?", text)
    services = COMPOSE["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:") or name == "sink", f"{name} publishes {port} on all interfaces"
    assert any(volume.startswith("kafka-data:") for volume in services["kafka"]["volumes"])
    assert services["kafka"]["environment"]["KAFKA_LOG_DIRS"] == services["kafka"]["volumes"][0].split(":")[1]
    for name, service in PIPELINE_SERVICES.items():
        assert service["restart"] in ("no", "on-failure:5"), name
        if service["restart"] != "no" and not name.startswith("simulate-"):
            assert "9100/healthz" in " ".join(service["healthcheck"]["test"]), name
        demo = "demo" in service.get("profiles", [])  # the simulators' own demo credentials
        for variable, value in (service.get("environment") or {}).items():
            if not demo and any(word in variable for word in ("SECRET", "PASSWORD", "API_KEY")):
                assert variable.endswith("_FILE") and str(value).startswith("/run/secrets/"), f"{name}: {variable}"
                assert str(value).rsplit("/", 1)[1] in service["secrets"], name
    pull_secrets = {f"{vendor.name}_{secret}" for vendor in registry.of_kind("pull") if vendor.settings
                    for secret in registry.load(vendor.settings).SECRETS}
    assert set(COMPOSE["secrets"]) == {"alert_urls", "webhook_secret", "truenas_api_key"} | pull_secrets
    assert services["alerter"]["environment"]["JOBSTREAM_ALERT_URLS_FILE"] == "/run/secrets/alert_urls"


def test_the_vendors_profile_has_the_config_it_mounts(monkeypatch):
    """`--profile vendors` mounts ./config/ingest.toml: the repository ships it (an example
    to edit), and every pull ingestor's table in it loads."""
    from pipeline.ingest_cli import settings_for

    path = ROOT / "config" / "ingest.toml"
    assert path.is_file()
    for vendor in registry.of_kind("pull"):
        for variable, value in vendor.demo_secrets:
            monkeypatch.setenv(variable, value)
        assert settings_for(vendor.command, path).base_url.startswith("https://")
