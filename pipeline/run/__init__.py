"""The supervisor behind `pipeline demo` and `pipeline run`: roles as child processes, metrics and health."""
