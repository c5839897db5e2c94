"""``pipeline sink --lake``: one of several sinks of a consumer group writing one lake
(the protocol is in ``lake.py``; the loop is the file sink's ``consumer.consume``)."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable

from pipeline.settings import Settings
from pipeline.sink.consumer import SinkStats, consume_until_signalled
from pipeline.sink import lake_pgwire, pgwire, quack
from pipeline.sink.lake import LakeTarget, LakeWriter
from pipeline.sink.lake_pgwire import LakeEndpoint
from pipeline.sink.writer import SinkError

DEFAULT_GROUP = "jobstream-lake-sink"


def run_lake_sink(
    settings: Settings, target: LakeTarget, *, group: str = DEFAULT_GROUP, echo: Callable[[str], None] = print,
) -> SinkStats:
    """Step 1, then the group loop until SIGINT/SIGTERM; errors surface as ``SinkError``."""
    writer = LakeWriter(target, settings.sink_threads).open()
    postgres = None
    try:
        if settings.pg_port:
            postgres = serve_postgres(settings, target)
            echo(f"sink: the lake over Postgres on {postgres.uri} (password: {settings.pg_password_file or quack.TOKEN_ENV})")
        echo(f"sink: writing the lake {target.catalog} ({target.data_path or 'its stored data path'}) "
             f"from {settings.bootstrap} in group {group}")
        stats = consume_until_signalled(settings, writer, group=group)
        echo(f"sink: stopped after {stats.records} records, {stats.rows} rows, {stats.dead_letters} dead letters"
             f" ({writer.conflicts} commits repeated after a conflict, {writer.turns_waited_out} without their turn)")
        return stats
    finally:
        if postgres is not None:
            postgres.stop()
        writer.close()


def serve_postgres(settings: Settings, target: LakeTarget) -> LakeEndpoint:
    """The Postgres endpoint on the lake; its password from pg_password_file or, as the
    file sink's, JOBSTREAM_QUACK_TOKEN (a lake has no file to keep a generated token beside)."""
    token = os.environ.get(quack.TOKEN_ENV, "")
    if settings.pg_password_file is None and not token:
        raise SinkError(f"serving the lake over Postgres needs a password: JOBSTREAM_PG_PASSWORD_FILE or {quack.TOKEN_ENV}")
    try:
        password = pgwire.read_password(settings.pg_password_file, token)
    except pgwire.PgWireError as exc:
        raise SinkError(str(exc)) from None
    return lake_pgwire.serve(target, pgwire.PgConfig(settings.pg_host, settings.pg_port, password, settings.live_query_timeout_s,
                                                     settings.pg_tls_cert, settings.pg_tls_key or None))


def lake_sink_from_cli(settings: Settings, catalog: str, data_path: str | None, group: str | None,
                       *, echo: Callable[[str], None] = print) -> SinkStats:
    """What ``pipeline sink --lake`` runs (the CLI only parses)."""
    if data_path is not None and "://" not in data_path:
        data_path = str(Path(data_path).expanduser().resolve()) + "/"
    return run_lake_sink(settings, LakeTarget(catalog, data_path), group=group or DEFAULT_GROUP, echo=echo)
