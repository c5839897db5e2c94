"""The peer: the worker's normalize + lifecycle as a quix-streams application.

What a user would otherwise pick: quix-streams with its own consumer group, its RocksDB
state store and its changelog topics, over the same raw topics, doing per record what
the worker does per record (decode the envelope, ``normalize``, ``apply_job`` + ``evict``
on the job's state, the state written back). Run as its own process:

    python -m pipeline.bench.quix_peer --bootstrap H:P --count N --app-id ID

It prints one line ``quix-peer: N records in S s``, timed from its first record to the
``count``-th (the first record is not counted), then exits. Needs the ``bench`` extra
(``pip install 'jobstream[bench]'``); quix-streams is not a dependency of the worker.

What the comparison leaves out, in the peer's favour: no output records (jobs.events,
transitions, run snapshots), no dead letters, no partition clock or stale expiry, no
re-delivery check against applied offsets, no continuity check. Its state is committed
(changelog and store) at the worker's cadence, per ``batch_max`` records or
``batch_within_s``; it is one bytes value per job key (the lifecycle's own msgpack encoding).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import orjson

from pipeline import catalog, lifecycle, vendors
from pipeline.model import decode_envelope
from pipeline.settings import Settings
from pipeline.vendors import Context, Rejected


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--app-id", default="jobstream-bench-quix")
    args = parser.parse_args(argv)

    from quixstreams import Application
    from quixstreams.state.rocksdb import RocksDBOptions

    settings = Settings.from_env()
    stale_after = {v: settings.stale_after(v) for v in vendors.VENDOR_NAMES}
    retention = settings.run_retention
    app = Application(
        broker_address=args.bootstrap, consumer_group=args.app_id, auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(prefix="jobstream-quix-"), loglevel="WARNING",
        producer_extra_config={"enable.idempotence": False},
        # The worker's durability cadence: its state is sent to the changelog and stored
        # per batch (batch_max records or batch_within_s); quix's default, every 5 s,
        # would leave a short run's state writes out of the timing.
        commit_every=settings.batch_max, commit_interval=settings.batch_within_s,
        rocksdb_options=RocksDBOptions(dumps=_dumps, loads=_loads),
    )
    seen = 0
    first: float | None = None

    def step(value: bytes, state) -> None:  # noqa: ANN001 - quix's State
        nonlocal seen, first
        if first is None:
            first = time.monotonic()
        seen += 1
        try:
            envelope = decode_envelope(value)
            if not envelope.heartbeat:
                events = vendors.normalize(envelope.vendor, envelope.payload,
                                           Context(source=envelope.source, received_at=envelope.received_at))
                if events:
                    data = state.get("job")
                    job = None if data is None else lifecycle.decode_job(data)
                    for event in events:
                        job, _ = lifecycle.apply_job(job, event, stale_after=stale_after[event.vendor])
                        job = lifecycle.evict(job, event.occurred_at, retention=retention)
                    state.set("job", lifecycle.encode_job(job))
        except Rejected:
            pass
        if seen >= args.count:
            print(f"quix-peer: {seen - 1} records in {time.monotonic() - first:.3f} s", flush=True)
            os._exit(0)

    for name in catalog.raw_topics():
        topic = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
        app.dataframe(topic).update(step, stateful=True)
    app.run()


def _dumps(value: object) -> bytes:
    """Quix's state values: the job's own msgpack bytes as they are (marked by a NUL,
    which no JSON text starts with), anything quix stores itself as JSON."""
    if isinstance(value, bytes):
        return b"\x00" + value
    return orjson.dumps(value)


def _loads(data: bytes) -> object:
    if data[:1] == b"\x00":
        return data[1:]
    return orjson.loads(data)


if __name__ == "__main__":
    main()
