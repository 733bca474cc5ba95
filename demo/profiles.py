"""Behaviour profiles: how each version of the demo service misbehaves, loaded from a TOML file.

A file holds a `[defaults]` table that applies to every version and `[versions.<version>]` tables that
override it. A version with no table of its own behaves as the defaults. The loader is strict: anything it
does not understand is a `ProfileError` whose one-line message names the file, the key, what is wrong and
the fix, because a typo in a fault-injection file otherwise silently turns a failing scenario into a
passing one.

The demo is the image of "the platform team's app": it does not import releasegate, so the version check
below mirrors `core/versions.py` instead of importing it.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

SHIPPED_PROFILES: Final = Path(__file__).with_name("profiles.toml")
PROFILES_ENV_VAR: Final = "RELEASEGATE_PROFILES"

# Faults are injected into the business endpoints only: health probes and /metrics stay truthful and
# fast, as they would in a real app whose backend is failing.
API_ENDPOINTS: Final = ("/api/checkout", "/api/items")

# Kubernetes label value: at most 63 characters, alphanumerics at both ends, `-_.` inside.
_LABEL_VALUE: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_BARE_TOML_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END: Final = "(at end of document)"


class ConfigError(Exception):
    """Bad input to the demo service; the CLI prints the message and exits with code 4."""


class ProfileError(ConfigError):
    """The profile file is missing, is not TOML, or holds a key, type or value the demo rejects."""


class VersionError(ConfigError):
    """The version string cannot be a Kubernetes label value."""


@dataclass(frozen=True)
class EndpointProfile:
    """Per-endpoint overrides as written in the file; None means "inherit from the version level"."""

    error_rate: float | None = None
    error_rate_after: float | None = None
    latency_ms: float | None = None
    latency_spread_ms: float | None = None


@dataclass(frozen=True)
class EndpointBehaviour:
    """What one endpoint does under a profile, every value resolved."""

    error_rate: float
    error_rate_after: float
    latency_ms: float
    latency_spread_ms: float


@dataclass(frozen=True)
class Profile:
    """The resolved behaviour of one version.

    Latency of an /api request is `latency_ms + |gauss(0, latency_spread_ms)|` milliseconds: never below
    the base, a half-normal tail above it (median base + 0.67 * spread, p95 base + 1.96 * spread).
    After `errors_after_s` seconds (if set) the error rate becomes `error_rate_after` instead of
    `error_rate`.
    """

    name: str = "defaults"
    description: str = ""
    error_rate: float = 0.0
    latency_ms: float = 0.0
    latency_spread_ms: float = 0.0
    startup_delay_s: float = 0.0
    never_ready: bool = False
    crash_after_s: float | None = None
    errors_after_s: float | None = None
    error_rate_after: float = 1.0
    endpoints: Mapping[str, EndpointProfile] = field(default_factory=dict)

    def endpoint(self, path: str) -> EndpointBehaviour:
        """The behaviour of one endpoint: its overrides where set, the version-level values otherwise."""
        override = self.endpoints.get(path, EndpointProfile())
        return EndpointBehaviour(
            error_rate=_first(override.error_rate, self.error_rate),
            error_rate_after=_first(override.error_rate_after, self.error_rate_after),
            latency_ms=_first(override.latency_ms, self.latency_ms),
            latency_spread_ms=_first(override.latency_spread_ms, self.latency_spread_ms),
        )


@dataclass(frozen=True)
class ProfileSet:
    """Every profile of one file."""

    path: Path
    defaults: Profile
    versions: Mapping[str, Profile]

    def for_version(self, version: str) -> Profile:
        """The profile of `version`; a version the file does not list behaves as the defaults."""
        return self.versions.get(version, self.defaults)


def _first(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


# --- the schema -------------------------------------------------------------------------------------------

Kind = Literal["rate", "ms", "seconds", "bool", "text"]

_VERSION_KEYS: Final[Mapping[str, Kind]] = {
    "description": "text",
    "error_rate": "rate",
    "error_rate_after": "rate",
    "errors_after_s": "seconds",
    "latency_ms": "ms",
    "latency_spread_ms": "ms",
    "startup_delay_s": "seconds",
    "never_ready": "bool",
    "crash_after_s": "seconds",
}
_ENDPOINT_KEYS: Final[Mapping[str, Kind]] = {
    "error_rate": "rate",
    "error_rate_after": "rate",
    "latency_ms": "ms",
    "latency_spread_ms": "ms",
}
_TABLE_KEYS: Final = ("endpoints",)
_TOP_LEVEL_KEYS: Final = ("defaults", "versions")

_FIX: Final[Mapping[Kind, str]] = {
    "rate": "set a fraction such as 0.05",
    "ms": "set a number of milliseconds, 0 or more, such as 20",
    "seconds": "set a number of seconds, 0 or more, such as 2.5",
    "bool": "set true or false",
    "text": 'set a quoted string such as "what this version does"',
}
_EXPECTED: Final[Mapping[Kind, str]] = {
    "rate": "a number",
    "ms": "a number",
    "seconds": "a number",
    "bool": "true or false",
    "text": "a string",
}

# A parsed-but-unvalidated table of scalar keys (the `endpoints` sub-table is split off separately).
RawTable = dict[str, Any]


# --- public entry points -----------------------------------------------------------------------------------


def resolve_profiles_path(cli_path: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """The profile file to use: `--profiles`, else $RELEASEGATE_PROFILES, else the shipped file."""
    env = os.environ if environ is None else environ
    if cli_path:
        return Path(cli_path)
    if env.get(PROFILES_ENV_VAR):
        return Path(env[PROFILES_ENV_VAR])
    return SHIPPED_PROFILES


def load_profiles(path: str | os.PathLike[str]) -> ProfileSet:
    """Read and validate a profile file; raise ProfileError with a one-line message on any problem."""
    file = Path(path)
    shown = _display(file)
    try:
        text = file.read_bytes().decode("utf-8")
        document = tomllib.loads(text)
    except FileNotFoundError:
        raise ProfileError(
            f"{shown}: profile file not found; pass --profiles PATH or set {PROFILES_ENV_VAR} "
            "to an existing file"
        ) from None
    except IsADirectoryError:
        raise ProfileError(f"{shown}: is a directory, not a profile file; point to a .toml file") from None
    except PermissionError:
        raise ProfileError(f"{shown}: permission denied; make the profile file readable") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(
            f"{shown}: not UTF-8 text (byte {exc.start}); save the profile file as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(_syntax_message(shown, str(exc), text)) from None
    return _build(file, shown, document)


def validate_version(version: str, *, source: str = "--version") -> str:
    """Return `version` unchanged, or raise VersionError saying why it cannot be a label value.

    The version ends up in labels, headers and PromQL matchers, so it must be a Kubernetes label value.
    """
    if not version:
        raise VersionError(f"{source}: the version is empty; give one such as v2 or 1.4.0")
    if len(version) > 63:
        raise VersionError(
            f"{source}: version {version!r} is {len(version)} characters long; "
            "a Kubernetes label value holds at most 63"
        )
    if not _LABEL_VALUE.fullmatch(version):
        raise VersionError(
            f"{source}: version {version!r} is not a valid Kubernetes label value; use letters, digits "
            "and '-', '_' or '.' inside, starting and ending with a letter or digit (e.g. v2, 1.4.0-rc1)"
        )
    return version


# --- building and validating --------------------------------------------------------------------------------


def _build(file: Path, shown: str, document: dict[str, Any]) -> ProfileSet:
    for key in document:
        if key not in _TOP_LEVEL_KEYS:
            raise ProfileError(
                f"{shown}: {_key(key)} is an unknown top-level key{_did_you_mean(key, _TOP_LEVEL_KEYS)}; "
                "the file holds a [defaults] table and [versions.<version>] tables only"
            )

    defaults_raw = _table(shown, "defaults", document.get("defaults", {}), "[defaults]")
    defaults_scalars, defaults_endpoints = _split_table(shown, "defaults", defaults_raw)
    defaults = _resolve(shown, "defaults", "defaults", defaults_scalars, defaults_endpoints, {}, {})

    versions_raw = _table(shown, "versions", document.get("versions", {}), "[versions.v2]")
    versions: dict[str, Profile] = {}
    for name, raw in versions_raw.items():
        where = f"versions.{_key(name)}"
        if not _LABEL_VALUE.fullmatch(name):
            raise ProfileError(
                f"{shown}: {where} is not a valid version name: a Kubernetes label value has letters, "
                "digits and '-', '_' or '.' inside, starts and ends with a letter or digit and is at "
                "most 63 characters; rename the table (e.g. [versions.v2])"
            )
        table = _table(shown, where, raw, f"[{where}]")
        scalars, endpoints = _split_table(shown, where, table)
        versions[name] = _resolve(
            shown, name, where, scalars, endpoints, defaults_scalars, defaults_endpoints
        )
    return ProfileSet(path=file, defaults=defaults, versions=versions)


def _split_table(shown: str, where: str, table: RawTable) -> tuple[RawTable, dict[str, RawTable]]:
    """Validate one version-level table; return its scalar keys and its endpoint tables."""
    scalars: RawTable = {}
    endpoints: dict[str, RawTable] = {}
    for key, value in table.items():
        if key == "endpoints":
            endpoints = _endpoints(shown, where, value)
        elif key in _VERSION_KEYS:
            scalars[key] = _check_value(shown, f"{where}.{key}", value, _VERSION_KEYS[key])
        else:
            raise ProfileError(_unknown_key(shown, where, key, [*_VERSION_KEYS, *_TABLE_KEYS]))
    return scalars, endpoints


def _endpoints(shown: str, where: str, value: Any) -> dict[str, RawTable]:
    tables = _table(shown, f"{where}.endpoints", value, f'[{where}.endpoints."/api/checkout"]')
    result: dict[str, RawTable] = {}
    for path, raw in tables.items():
        ep_where = f"{where}.endpoints.{_key(path)}"
        if path not in API_ENDPOINTS:
            choices = " or ".join(json.dumps(p) for p in API_ENDPOINTS)
            raise ProfileError(
                f"{shown}: {ep_where} is not an endpoint the demo injects faults into"
                f"{_did_you_mean(path, API_ENDPOINTS, quote=True)}; use {choices}"
            )
        table = _table(shown, ep_where, raw, f"[{ep_where}]")
        checked: RawTable = {}
        for key, item in table.items():
            if key not in _ENDPOINT_KEYS:
                raise ProfileError(_unknown_key(shown, ep_where, key, list(_ENDPOINT_KEYS)))
            checked[key] = _check_value(shown, f"{ep_where}.{key}", item, _ENDPOINT_KEYS[key])
        result[path] = checked
    return result


def _resolve(
    shown: str,
    name: str,
    where: str,
    scalars: RawTable,
    endpoints: dict[str, RawTable],
    default_scalars: RawTable,
    default_endpoints: dict[str, RawTable],
) -> Profile:
    merged = {**default_scalars, **scalars}

    # Precedence for one endpoint key, most specific table first: the version's endpoint override, the
    # version's own value (so `latency_ms = 400` in a version beats a defaults endpoint override), the
    # defaults' endpoint override, the defaults' value.
    resolved_endpoints: dict[str, EndpointProfile] = {}
    for path in API_ENDPOINTS:
        values: dict[str, float] = {}
        for key in _ENDPOINT_KEYS:
            if key in endpoints.get(path, {}):
                values[key] = float(endpoints[path][key])
            elif key not in scalars and key in default_endpoints.get(path, {}):
                values[key] = float(default_endpoints[path][key])
        if values:
            resolved_endpoints[path] = EndpointProfile(**values)

    sets_rate_after = "error_rate_after" in scalars or any(
        "error_rate_after" in table for table in endpoints.values()
    )
    if sets_rate_after and "errors_after_s" not in merged:
        raise ProfileError(
            f"{shown}: {where}.error_rate_after has no effect without errors_after_s; "
            f"add errors_after_s = <seconds> to [{where}] or remove error_rate_after"
        )

    def number(key: str, fallback: float) -> float:
        return float(merged[key]) if key in merged else fallback

    def optional(key: str) -> float | None:
        return float(merged[key]) if key in merged else None

    return Profile(
        name=name,
        description=str(merged.get("description", "")),
        error_rate=number("error_rate", 0.0),
        latency_ms=number("latency_ms", 0.0),
        latency_spread_ms=number("latency_spread_ms", 0.0),
        startup_delay_s=number("startup_delay_s", 0.0),
        never_ready=bool(merged.get("never_ready", False)),
        crash_after_s=optional("crash_after_s"),
        errors_after_s=optional("errors_after_s"),
        error_rate_after=number("error_rate_after", 1.0),
        endpoints=resolved_endpoints,
    )


def _check_value(shown: str, where: str, value: Any, kind: Kind) -> Any:
    fix = _FIX[kind]
    prefix = f"{shown}: {where} = {_toml_repr(value)}"
    if kind == "bool":
        if not isinstance(value, bool):
            raise ProfileError(f"{prefix} is {_type_name(value)}, expected true or false; {fix}")
        return value
    if kind == "text":
        if not isinstance(value, str):
            raise ProfileError(f"{prefix} is {_type_name(value)}, expected a string; {fix}")
        return value
    # bool is a subclass of int in Python; `latency_ms = true` is a mistake, not 1 millisecond.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{prefix} is {_type_name(value)}, expected {_EXPECTED[kind]}; {fix}")
    if not math.isfinite(value):
        raise ProfileError(f"{prefix} is not a finite number; {fix}")
    if kind == "rate" and not 0.0 <= value <= 1.0:
        raise ProfileError(f"{prefix} is outside 0..1; {fix}")
    if value < 0:
        raise ProfileError(f"{prefix} is negative; {fix}")
    return value


def _table(shown: str, where: str, value: Any, example: str) -> RawTable:
    if not isinstance(value, dict):
        raise ProfileError(
            f"{shown}: {where} = {_toml_repr(value)} is {_type_name(value)}, expected a table; "
            f"write it as {example} with its keys on the lines below"
        )
    return value


# --- message helpers ---------------------------------------------------------------------------------------


def _unknown_key(shown: str, where: str, key: str, known: list[str]) -> str:
    return (
        f"{shown}: {where}.{_key(key)} is an unknown key{_did_you_mean(key, known)}; "
        f"known keys are {', '.join(sorted(known))}"
    )


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str], *, quote: bool = False) -> str:
    matches = difflib.get_close_matches(word, choices, n=1)
    if not matches:
        return ""
    return f" (did you mean {json.dumps(matches[0]) if quote else matches[0]}?)"


def _syntax_message(shown: str, message: str, text: str) -> str:
    """`file:line: ...` so editors and CI logs link to the spot tomllib complains about."""
    position = _TOML_POSITION.search(message)
    if position is not None:
        line, column = position.groups()
        where = f"line {line}, column {column}"
        reason = message[: position.start()]
    elif message.endswith(_TOML_AT_END):
        line = str(max(1, len(text.splitlines())))
        where = f"the end of the file (line {line})"
        reason = message[: -len(_TOML_AT_END)].rstrip()
    else:
        return f"{shown}: invalid TOML: {message}; fix the syntax"
    return f"{shown}:{line}: invalid TOML at {where}: {reason}; fix the syntax there"


def _key(key: str) -> str:
    """A key as it would be written in TOML: bare when possible, quoted otherwise."""
    return key if _BARE_TOML_KEY.fullmatch(key) else json.dumps(key)


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return "{...}"
    return repr(value) if isinstance(value, int | float) else str(value)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # dates and times


def _display(file: Path) -> str:
    """The path as the user will recognise it: relative to the working directory when inside it."""
    if not file.is_absolute():
        return str(file)
    try:
        return str(file.relative_to(Path.cwd()))
    except ValueError:
        return str(file)
