"""One resolver for every setting of every role: command-line flags over environment
variables over a config file's table over the declared default.

Every value keeps where it came from (``Origin``: the flag, the variable, the file and its
key, or the default), so a message names it as its source wrote it (``--quack-port 99999``,
``JOBSTREAM_STORE='bogus://'``, ``[pipeline] store = 's3://' in my.toml``). Every problem of
every layer is collected and raised at once, one line each, as one ``ConfigurationError``.

A field declared ``secret`` is a ``Secret``: read only from its variable or from the file its
``*_file`` setting names (a flag, a variable or the config file may name the file); a secret
written in the config file or given as a flag is refused, so config files and shell history
can be shared.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import errors
from pipeline.config.secret import MIN_REDACTABLE, Secret, given_secret

ENV_PREFIX = "JOBSTREAM_"
NOT_GIVEN: Any = None
"""A flag whose value is None was not given (typer's default)."""


class ConfigurationError(errors.ConfigError):
    """The configuration cannot be used: one line per problem, each naming where the value
    came from (the flag, the variable, or the config file's setting)."""

    @classmethod
    def of(cls, problems: Iterable[str]) -> "ConfigurationError":
        return cls("\n".join(problems))


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one value came from: ``kind`` is flag, env, file or default; ``name`` is the
    flag (``--quack-port``), the variable, the file's ``[section] key``, or the field."""

    kind: str
    name: str
    file: str | None = None

    def show(self, value: object) -> str:
        """The value as its source wrote it."""
        return self.template.replace("{value}", repr(value))

    @property
    def template(self) -> str:
        """The same with a ``{value}`` placeholder."""
        if self.kind == "flag":
            return f"{self.name} {{value}}"
        if self.kind == "env":
            return f"{self.name}={{value}}"
        if self.kind == "file":
            return f"{self.name} = {{value}}" + (f" in {self.file}" if self.file else "")
        return f"{self.name} = {{value}} (default)"


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting: its name, its kind (``str``, ``int``, ``float``, ``bool``, ``Path``, with
    ``| None`` when optional), the variable and the flag that give it, and whether it is a
    secret (then ``secret_file`` names the setting that holds the path of its file)."""

    name: str
    kind: str
    env: str
    flag: str | None = None
    secret: bool = False
    secret_file: str | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """The values given (defaults are left to the settings class) and where each came from."""

    values: Mapping[str, Any]
    origins: Mapping[str, Origin]
    problems: tuple[str, ...] = ()

    def where(self, name: str, value: object) -> str:
        origin = self.origins.get(name) or Origin("default", name)
        return origin.show(value)


@dataclass(frozen=True, slots=True)
class Layers:
    """What one process was given: flags (None: not given), the environment, and one table
    of a config file (``section`` names it in messages, ``file`` is its path)."""

    flags: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] | None = None
    table: Mapping[str, Any] = field(default_factory=dict)
    section: str = "[pipeline]"
    file: str | None = None

    def environment(self) -> Mapping[str, str]:
        return os.environ if self.env is None else self.env


def specs_of(cls: type, *, env_prefix: str = ENV_PREFIX, flags: Mapping[str, str] | None = None,
             secrets: Iterable[str] = (), skip: Iterable[str] = ()) -> tuple[Spec, ...]:
    """The specs of a frozen dataclass's fields: variable ``<env_prefix><NAME>``, flag
    ``--name-with-dashes`` unless ``flags`` names another, secrets as listed; a secret's file
    is the field ``<name>_file`` when the class has one (else only the variable ``..._FILE``
    and the table's ``<name>_file`` give it)."""
    flags = flags or {}
    secrets, skip = set(secrets), set(skip)
    return tuple(
        Spec(
            name=f.name, kind=str(f.type), env=env_prefix + f.name.upper(),
            flag=flags.get(f.name, "--" + f.name.replace("_", "-")),
            secret=f.name in secrets,
            secret_file=(f.name + "_file") if f.name in secrets else None,
        )
        for f in dataclasses.fields(cls) if f.name not in skip
    )


def resolve(specs: Iterable[Spec], layers: Layers, *, known_list: bool = False, read_secret_files: bool = True,
            strict: bool = True) -> Resolved:
    """Each setting from the first layer that gives it: flag, variable (an empty one counts
    as unset), the config file's table. Raises one ``ConfigurationError`` with every problem;
    with ``strict`` False the problems come back in ``Resolved.problems`` beside the values
    that were good (so the caller's own checks of those can be reported at once too).
    Without ``read_secret_files`` a secret's ``*_file`` stays a path the role reads when it
    needs the secret (a role that needs none never fails on another role's file)."""
    specs = tuple(specs)
    by_name = {spec.name: spec for spec in specs}
    env = layers.environment()
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    problems: list[str] = []
    in_file = f" in {layers.file}" if layers.file else ""
    secret_files = {spec.secret_file: spec for spec in specs if spec.secret and spec.secret_file}

    for key, raw in layers.table.items():
        spec = by_name.get(key)
        if spec is not None and spec.secret:
            problems.append(f"{layers.section} {key}: secrets are not read from the config file; set "
                            f"{spec.env} or {spec.secret_file}")
        elif spec is None and key not in secret_files:
            known = f" (known: {', '.join(sorted(by_name))})" if known_list else ""
            problems.append(f"{layers.section} {key}: unknown setting{known}")

    for spec in specs:
        if spec.secret:
            flag_value = layers.flags.get(spec.name)
            if flag_value is not None:
                problems.append(f"{spec.flag}: secrets are not read from a command-line flag; set "
                                f"{spec.env} or {spec.secret_file}")
            continue
        try:
            found = _given(spec, layers, env, in_file)
        except _Bad as bad:
            problems.append(str(bad))
            continue
        if found is not None:
            values[spec.name], origins[spec.name] = found

    for spec in specs:  # secrets: the variable, else the file a *_file setting names
        if not spec.secret:
            continue
        raw = env.get(spec.env)
        if raw:
            values[spec.name], origins[spec.name] = given_secret(raw), Origin("env", spec.env)
            continue
        if not read_secret_files:
            continue
        path, path_origin = _secret_path(spec, layers, env, values, origins, in_file)
        if path is None:
            continue
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            problems.append(f"{path_origin.show(str(path))}: cannot be read ({reason})")
            continue
        if text:
            values[spec.name], origins[spec.name] = given_secret(text), path_origin
    if problems and strict:
        raise ConfigurationError.of(problems)
    return Resolved(values=values, origins=origins, problems=tuple(problems))


def secret_problems(spec: Spec, value: Secret | None, *, minimum: int = MIN_REDACTABLE, what: str | None = None,
                    section: str = "") -> list[str]:
    """The one rule for a secret: given, and at least ``minimum`` characters (shorter ones
    cannot be redacted from logs); the message says which of the two it broke."""
    where = f"set {spec.env} or {spec.secret_file}"
    label = f"{section} " if section else ""
    what = what or spec.name
    if not value:
        return [f"{label}the {what} is missing: {where}"]
    if len(value) < minimum:
        return [f"{label}the {what} is shorter than {minimum} characters ({where})"]
    return []


class _Bad(Exception):
    pass


def _given(spec: Spec, layers: Layers, env: Mapping[str, str], in_file: str) -> tuple[Any, Origin] | None:
    flag_value = layers.flags.get(spec.name)
    if flag_value is not None and spec.flag:
        return flag_value, Origin("flag", spec.flag)
    raw = env.get(spec.env)
    if raw:
        try:
            return convert(spec.kind, raw), Origin("env", spec.env)
        except ValueError:
            raise _Bad(f"{spec.env}={raw!r} is not a valid {spec.kind}") from None
    if spec.name in layers.table:
        raw = layers.table[spec.name]
        origin = Origin("file", f"{layers.section} {spec.name}", layers.file)
        if isinstance(raw, (dict, list)):
            raise _Bad(f"{layers.section} {spec.name}: must be a single value")
        try:
            return convert(spec.kind, raw), origin
        except ValueError:
            raise _Bad(f"{origin.show(raw)}: not a valid {spec.kind.replace(' | None', '')}") from None
    return None


def _secret_path(spec: Spec, layers: Layers, env: Mapping[str, str], values: Mapping[str, Any],
                 origins: Mapping[str, Origin], in_file: str) -> tuple[Any, Origin]:
    """Where the secret's file is: its ``*_file`` setting when the specs declare one, else
    the variable ``<VAR>_FILE`` or the table's ``<name>_file``."""
    name = spec.secret_file or spec.name + "_file"
    if name in values:
        return values[name], origins[name]
    if env.get(spec.env + "_FILE"):
        return env[spec.env + "_FILE"], Origin("env", spec.env + "_FILE")
    if layers.table.get(name):
        return layers.table[name], Origin("file", f"{layers.section} {name}", layers.file)
    return None, Origin("default", name)


def convert(kind: str, raw: Any) -> Any:
    """A raw value (a variable's text, a TOML value) as ``kind``; ValueError if it is not one."""
    if "bool" in kind:
        if isinstance(raw, bool):
            return raw
        text = str(raw).lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(raw)
    if isinstance(raw, bool):
        raise ValueError(raw)
    if "Path" in kind:
        if not isinstance(raw, (str, Path)):
            raise ValueError(raw)
        return Path(raw)
    if kind.startswith("int"):
        if isinstance(raw, float):
            raise ValueError(raw)
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    if isinstance(raw, (int, float)):
        return str(raw)
    if not isinstance(raw, str):
        raise ValueError(raw)
    return raw


def named(settings: Any, name: str, section: str) -> str:
    """How a check names a setting: as its source wrote it when a flag or a variable gave it
    (``JOBSTREAM_AIRFLOW_PAGE_SIZE=5000``), else ``[section] name`` (the file, or the default)."""
    origin = getattr(settings, "origins", {}).get(name)
    if origin is None or origin.kind in ("file", "default"):
        return f"{section} {name}"
    return origin.show(getattr(settings, name))


def read_toml(path: str | Path) -> dict[str, Any]:
    """A whole TOML config file; one ``ConfigurationError`` line when it cannot be read."""
    import tomllib

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None


def section_of(document: Mapping[str, Any], section: str, path: str | Path) -> Mapping[str, Any]:
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ConfigurationError(f"config file {path}: [{section}] must be a table")
    return table


def build(cls: type, specs: Iterable[Spec], layers: Layers, *, known_list: bool = False) -> Any:
    """An instance of the frozen dataclass ``cls`` from the resolved values (its defaults for
    the rest), then its own ``check()`` when it has one."""
    resolved = resolve(specs, layers, known_list=known_list)
    kept = {"origins": dict(resolved.origins)} if "origins" in {f.name for f in dataclasses.fields(cls)} else {}
    try:
        settings = cls(**resolved.values, **kept)
    except TypeError as exc:
        missing = str(exc).split(":")[-1].strip()
        raise ConfigurationError(f"{layers.section} missing required setting(s): {missing}") from None
    check = getattr(settings, "check", None)
    if check is not None:
        check()
    return settings
