"""What every long-running role shares: metrics and health (``health``), the runtime beside
its loop (``runtime``), stopping (``stopping``) and logging (``logs``). Imports nothing
from ``pipeline/run/`` (the supervisor's folder)."""
