"""The pieces sources.py gives every HTTP poller: paging, the modifiedDate watermark,
the call budget, the config loader, and how one HTTP call's failures are classified."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from pipeline.model import UTC
from pipeline.sources import (
    CallBudget, ConfigError, OffsetPaginator, Redactor, TerminalError, TransientError, Watermark, http_call, load_config,
)
from pipeline.vendors.informatica.ingest import InformaticaSettings


def test_offset_paginator_stops_at_a_short_page():
    paginator = OffsetPaginator(limit=2)
    params = paginator.first()
    assert params == {"firstResult": 0, "maxResults": 2}
    params = paginator.next(params, 2)
    assert params == {"firstResult": 2, "maxResults": 2}
    assert paginator.next(params, 1) is None


def test_watermark_admits_each_id_and_time_once_and_keeps_only_the_overlap():
    t = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    new, mark = Watermark().admit([("a", t), ("b", t + timedelta(seconds=10))], overlap_s=5)
    assert new == [0, 1] and mark.mark == t + timedelta(seconds=10)
    assert set(mark.seen) == {"b"}  # "a" is older than the overlap: never asked for again
    assert mark.query_from(5) == t + timedelta(seconds=5)
    new, again = mark.admit([("b", t + timedelta(seconds=10)), ("b", t + timedelta(seconds=12))], overlap_s=5)
    assert new == [1] and again.mark == t + timedelta(seconds=12)


def test_call_budget_spaces_calls_and_honours_a_block():
    now = [100.0]
    budget = CallBudget(2, 60.0, clock=lambda: now[0])
    assert budget.wait_s() == 0
    budget.spent()
    now[0] = 110.0
    budget.spent()
    assert budget.wait_s() == pytest.approx(50.0)  # the first call leaves the window at 160
    now[0] = 161.0
    assert budget.wait_s() == 0
    budget.block_for(7.5)
    assert budget.wait_s() == pytest.approx(7.5)


def test_load_config_refuses_secrets_in_the_file_and_reads_them_from_env_or_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[informatica]\nbase_url = "https://pod"\nuser = "u"\npassword = "inline-secret"\n')
    with pytest.raises(ConfigError, match="secrets are not read from the config file"):
        load_config(InformaticaSettings, config, "informatica", env={})
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    config.write_text(f'[informatica]\nbase_url = "https://pod"\nuser = "u"\npassword_file = "{secret}"\npage_size = 10\n')
    settings = load_config(InformaticaSettings, config, "informatica", env={"JOBSTREAM_INFORMATICA_PAGE_SIZE": "20"})
    assert settings.password.reveal() == "from-a-file" and settings.page_size == 20
    settings = load_config(InformaticaSettings, config, "informatica", env={"JOBSTREAM_INFORMATICA_PASSWORD": "env-secret"})
    assert settings.password.reveal() == "env-secret"
    with pytest.raises(ConfigError, match="password is missing"):
        load_config(InformaticaSettings, None, "informatica", env={"JOBSTREAM_INFORMATICA_BASE_URL": "https://pod", "JOBSTREAM_INFORMATICA_USER": "u"})
    with pytest.raises(ConfigError, match="not a valid"):
        load_config(InformaticaSettings, config, "informatica", env={"JOBSTREAM_INFORMATICA_PAGE_SIZE": "many"})
    config.write_text('[informatica]\nbase_ur = "typo"\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(InformaticaSettings, config, "informatica", env={})


async def test_http_call_classifies_statuses_and_redacts_secrets():
    async def answer(request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        headers = {"Retry-After": "7"} if status == 429 else {}
        return web.Response(status=status, text="token s3cr3t-value refused", headers=headers)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    app = web.Application()
    app.add_routes([web.get("/status/{status}", answer), web.get("/slow", slow)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = "http://%s:%d" % runner.addresses[0][:2]
    redact = Redactor(["s3cr3t-value"])
    try:
        async with aiohttp.ClientSession() as http:
            call = lambda path: http_call(http, "GET", base + path, what="test", timeout_s=0.5, redact=redact)  # noqa: E731
            with pytest.raises(TransientError) as caught:
                await call("/status/429")
            assert caught.value.retry_after == 7.0 and "s3cr3t" not in str(caught.value)
            with pytest.raises(TransientError):
                await call("/status/503")
            with pytest.raises(TerminalError, match="credentials refused"):
                await call("/status/401")
            with pytest.raises(TransientError, match="no answer within"):
                await call("/slow")
            assert (await call("/status/404")).status == 404
            passed = await http_call(http, "GET", base + "/status/401", what="t", timeout_s=1, redact=redact, passthrough=(401,))
            assert passed.status == 401
    finally:
        await runner.cleanup()
