"""File backfill: records/s and peak memory of `pipeline ingest file` on a generated file.

    python scripts/bench_backfill.py [--mb 300] [--file /tmp/backfill.jsonl] [--keep]

Writes a JSON lines file of TrueNAS job updates (about ``--mb`` MB; distinct jobs, each
WAITING -> RUNNING -> SUCCESS), starts the embedded broker with the catalog's topics,
runs `pipeline ingest file` on it in a child process and reports the child's peak
resident memory (VmHWM) next to the file size, and its records/s. The broker keeps the
data in its own memory; only the ingest process is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from pipeline import catalog
from pipeline.broker import EmbeddedBroker


def generate(path: Path, megabytes: int) -> int:
    """Write the file; return the number of lines."""
    target = megabytes * 1_000_000
    lines = 0
    job = 0
    with open(path, "wb") as out:
        while out.tell() < target:
            job += 1
            started = 1_795_165_200_000 + job * 1000
            for state, percent in (("WAITING", None), ("RUNNING", 50), ("SUCCESS", 100)):
                fields = {
                    "id": job, "method": f"pool.scrub.scrub{job % 50}", "arguments": ["tank"], "transient": False,
                    "description": "Scrubbing", "abortable": True, "logs_path": None, "logs_excerpt": None,
                    "progress": {"percent": percent, "description": "Scrubbing", "extra": None},
                    "result": None, "error": None, "exception": None, "exc_info": None, "state": state,
                    "time_started": {"$date": started},
                    "time_finished": {"$date": started + 60_000} if state == "SUCCESS" else None,
                }
                message = {"jsonrpc": "2.0", "method": "collection_update",
                           "params": {"msg": "changed", "collection": "core.get_jobs", "id": job, "fields": fields}}
                out.write(orjson.dumps(message) + b"\n")
                lines += 1
    return lines


def peak_rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="size of the generated file in MB")
    parser.add_argument("--file", type=Path, default=Path("/tmp/jobstream-backfill-bench.jsonl"))
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    args = parser.parse_args()

    if not args.file.exists() or args.file.stat().st_size < args.mb * 1_000_000:
        started = time.monotonic()
        lines = generate(args.file, args.mb)
        print(f"generated {args.file}: {args.file.stat().st_size / 1e6:.0f} MB, {lines} lines in {time.monotonic() - started:.0f} s")
    size_mb = args.file.stat().st_size / 1e6
    with EmbeddedBroker() as broker:
        asyncio.run(catalog.apply(broker.bootstrap))
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
        command = [sys.executable, "-m", "pipeline", "ingest", "file", "--vendor", "truenas", str(args.file),
                   "-b", broker.bootstrap, "--source", "bench"]
        started = time.monotonic()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        peak = 0.0
        samples: list[float] = []

        def sample() -> None:
            nonlocal peak
            while child.poll() is None:
                peak = max(peak, peak_rss_mb(child.pid))
                samples.append(peak)
                time.sleep(0.5)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        stdout, stderr = child.communicate()
        watcher.join()
        seconds = time.monotonic() - started
    if args.file.exists() and not args.keep:
        args.file.unlink()
    print(stdout.strip())
    if child.returncode != 0:
        print(stderr.strip()[-2000:], file=sys.stderr)
        raise SystemExit(child.returncode)
    print(f"input {size_mb:.0f} MB; peak RSS of the ingest process {peak:.0f} MB "
          f"(last sample before exit); wall time {seconds:.0f} s including start-up")


if __name__ == "__main__":
    main()
