"""One configuration system: the resolver (flags over environment over file, each value
knowing its origin, every problem at once), the ``Secret`` type and its redactor, and the
settings each role reads (``pipeline.config.roles``)."""

from pipeline.config.resolver import ENV_PREFIX, ConfigurationError, Layers, Origin, Resolved, Spec, resolve, specs_of
from pipeline.config.secret import REDACTED, Redactor, Secret, reveal

__all__ = ["ENV_PREFIX", "REDACTED", "ConfigurationError", "Layers", "Origin", "Redactor", "Resolved", "Secret", "Spec",
           "resolve", "reveal", "specs_of"]
