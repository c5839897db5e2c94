"""The push commands as a user runs them: usage errors and refusals are one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.vendors.truenas.simulator import MiddlewareSimulator

runner = CliRunner()


@pytest.mark.parametrize(("args", "env", "message"), [
    (["ingest", "truenas", "--url", "http://nas/api/current"], {"JOBSTREAM_TRUENAS_API_KEY": "k-12345"}, "must start with ws:// or wss://"),
    (["ingest", "truenas", "--url", "wss://nas/api/current"], {}, "no API key"),
    (["ingest", "truenas", "--url", "wss://nas/api/current", "--host", "a:b"], {"JOBSTREAM_TRUENAS_API_KEY": "k-12345"}, "without ':'"),
    (["ingest", "truenas", "--url", "wss://nas/api/current"], {"JOBSTREAM_TRUENAS_API_KEY_FILE": "/nonexistent/key"}, "cannot be read"),
    (["ingest", "truenas", "--url", "ws://nas/api/current"], {"JOBSTREAM_TRUENAS_API_KEY": "k-12345"},
     "TrueNAS revokes an API key sent over an unencrypted connection; use wss://, or pass --allow-plain-ws"),
    (["ingest", "qlik-cloud", "--listen", "nowhere"], {}, "is not HOST:PORT"),
    (["ingest", "qlik-cloud", "--listen", "127.0.0.1:0"], {"JOBSTREAM_QLIK_WEBHOOK_SECRET": "abcd-15-chars.."}, "shorter than 16"),
    (["ingest", "qlik-cloud", "--listen", "127.0.0.1:0"], {}, "no webhook secret: set JOBSTREAM_QLIK_WEBHOOK_SECRET"),
    (["ingest", "qlik-cloud", "--listen", "0.0.0.0:0", "--no-signature"], {}, "--no-signature is for local tests"),
    (["simulate", "truenas", "--listen", "127.0.0.1:0"], {}, "no API key to accept"),
    (["ingest", "qlik-cloud", "--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent/c.pem"], {"JOBSTREAM_QLIK_WEBHOOK_SECRET": "a-webhook-secret-of-24ch"}, "go together"),
    (["ingest", "qlik-cloud", "--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"], {"JOBSTREAM_QLIK_WEBHOOK_SECRET": "a-webhook-secret-of-24ch"},
     "cannot load the TLS certificate and key"),
])
def test_usage_errors_are_one_line_with_exit_2(args, env, message):
    result = runner.invoke(app, args, env={"JOBSTREAM_TRUENAS_API_KEY": "", "JOBSTREAM_QLIK_WEBHOOK_SECRET": "", **env})
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_help_explains_the_push_commands():
    for args, words in ((["ingest", "qlik-cloud", "--help"], "Qlik-Signature"), (["ingest", "truenas", "--help"], "core.get_jobs"),
                        (["simulate", "truenas", "--help"], "WAITING"), (["simulate", "qlik-cloud", "--help"], "is retried")):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and words in result.output


@pytest.mark.integration
async def test_a_refused_api_key_ends_the_command_with_one_line_that_never_shows_the_key(broker, tmp_path):
    sim = MiddlewareSimulator(api_key="the-right-key-123")
    await sim.start()
    key_file = tmp_path / "key"
    key_file.write_text("the-wrong-key-456\n")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "ingest", "truenas", "--url", sim.url, "-b", broker.bootstrap,
            "--api-key-file", str(key_file), "--host", "refused-nas",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await sim.stop()
    assert process.returncode == 1
    text = stderr.decode()
    assert "Traceback" not in text and "the-wrong-key-456" not in text + stdout.decode()
    assert text.strip().splitlines()[-1] == "error: TrueNAS refused the API key for user 'root' (auth.login_ex: AUTH_ERR)"


def test_secrets_come_from_the_environment_or_a_file_and_never_show_in_a_repr(tmp_path):
    from pipeline.settings import Settings

    key_file = tmp_path / "key"
    key_file.write_text("file-key-7890\n")
    settings = Settings.from_env({"JOBSTREAM_QLIK_WEBHOOK_SECRET": "env-secret-12345678",
                                  "JOBSTREAM_TRUENAS_API_KEY_FILE": str(key_file)})
    assert settings.qlik_secret() == "env-secret-12345678"
    assert settings.truenas_key() == "file-key-7890"
    assert "env-secret-12345678" not in repr(settings) and "file-key-7890" not in repr(settings)
    assert Settings.from_env({}).qlik_secret() is None
