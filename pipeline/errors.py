"""The one root of Jobstream's errors and the exit codes, named in one place.

Every error a user can fix derives from ``JobstreamError`` and carries the exit status
its command ends with; the CLI prints its message as one line per problem, never a
traceback. A wrong configuration of any kind (settings, an ingestor's section, ``pipeline
run``'s file, alert rules, the topic catalog, a fault spec) is a ``ConfigError``.
"""

from __future__ import annotations

EXIT_FAILED = 1
"""The command ran and something failed (a mismatch, a rejected document, a stop)."""
EXIT_CONFIG = 2
"""Configuration or usage is wrong: a supervisor never restarts a role that exits so."""
EXIT_DATA = 65
"""EX_DATAERR: the input no longer matches the stored state (e.g. a recreated topic)."""
EXIT_UNAVAILABLE = 69
"""EX_UNAVAILABLE: the broker went away; a supervisor restarts the role."""
EXIT_INTERNAL = 70
"""EX_SOFTWARE: an unexpected failure (e.g. Kafka never acknowledged a batch)."""
EXIT_SIGTERM = 128 + 15
"""Stopped by SIGTERM (143), as a shell reports it."""


class JobstreamError(Exception):
    """A failure the command reports as its message and ends with ``exit_code``."""

    exit_code: int = EXIT_FAILED


class ConfigError(JobstreamError, ValueError):
    """The configuration is wrong; ``lines`` holds one line per problem (all reported at once)."""

    exit_code = EXIT_CONFIG

    @property
    def lines(self) -> list[str]:
        return str(self).splitlines() or [""]
