"""Package discovery, the one thing pyproject.toml cannot say: every ``pipeline*`` package
found (a new vendor package included without an edit) plus ``pipeline.topics``, which lives
in ``topics/`` (pyproject.toml's package-dir maps it). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["pipeline", "pipeline.*"]), "pipeline.topics"])
