"""Behaviour profiles: how each version of the demo service misbehaves, loaded from a TOML file.

A file holds a `[defaults]` table that applies to every version and `[versions.<version>]` tables that
override it. A version with no table of its own behaves as the defaults. The loader is strict: anything it
does not understand is a `ProfileError` whose one-line message names the file, the key, what is wrong and
the fix, because a typo in a fault-injection file otherwise silently turns a failing scenario into a
passing one. Pydantic models mirror the file and check it (as `core/config.py` does for the release
config); `_describe` turns pydantic's first error into that one line. The resolved profiles stay plain
frozen dataclasses, which the app and the tests build and `dataclasses.replace` directly.

The demo is the image of "the platform team's app": it does not import releasegate, so the version check
below mirrors `core/versions.py` instead of importing it.
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
import os
import re
import reprlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError
from pydantic_core import ErrorDetails

SHIPPED_PROFILES: Final = Path(__file__).with_name("profiles.toml")
PROFILES_ENV_VAR: Final = "RELEASEGATE_PROFILES"

# Faults are injected into the business endpoints only: health probes and /metrics stay truthful and
# fast, as they would in a real app whose backend is failing.
EndpointPath = Literal["/api/checkout", "/api/items"]
API_ENDPOINTS: Final[tuple[str, ...]] = get_args(EndpointPath)

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
    tail_fraction: float | None = None
    tail_latency_ms: float | None = None


@dataclass(frozen=True)
class EndpointBehaviour:
    """What one endpoint does under a profile, every value resolved."""

    error_rate: float
    error_rate_after: float
    latency_ms: float
    latency_spread_ms: float
    tail_fraction: float
    tail_latency_ms: float


@dataclass(frozen=True)
class Profile:
    """The resolved behaviour of one version.

    Latency of an /api request is `latency_ms + |gauss(0, latency_spread_ms)|` milliseconds: never below
    the base, a half-normal tail above it (median base + 0.67 * spread, p95 base + 1.96 * spread). A
    `tail_fraction` of the requests, drawn independently, take `tail_latency_ms` more: a slowdown of the tail
    only (2% of requests 40 ms slower lift the defaults' p99 from 36 to 57 ms and leave the median at 17 ms).
    After `errors_after_s` seconds (if set) the error rate becomes `error_rate_after` instead of
    `error_rate`.
    """

    name: str = "defaults"
    description: str = ""
    error_rate: float = 0.0
    latency_ms: float = 0.0
    latency_spread_ms: float = 0.0
    tail_fraction: float = 0.0
    tail_latency_ms: float = 0.0
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
            tail_fraction=_first(override.tail_fraction, self.tail_fraction),
            tail_latency_ms=_first(override.tail_latency_ms, self.tail_latency_ms),
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


# --- the file, as pydantic models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    """What a key holds, for its error message: the type expected, the fix, and what "out of range" means."""

    expected: str
    fix: str
    out_of_range: str = "is out of range"


_RATE: Final = _Unit("a number", "set a fraction such as 0.05", "is outside 0..1")
_MS: Final = _Unit("a number", "set a number of milliseconds, 0 or more, such as 20", "is negative")
_SECONDS: Final = _Unit("a number", "set a number of seconds, 0 or more, such as 2.5", "is negative")
_FLAG: Final = _Unit("true or false", "set true or false")
_TEXT: Final = _Unit("a string", 'set a quoted string such as "what this version does"')
_ANY: Final = _Unit("another value", "see the keys in demo/profiles.toml")

# Strict: TOML values carry their type, so `latency_ms = "20"` is a mistake to report, not a string to
# coerce, and `latency_ms = true` is not 1 millisecond (bool is an int in Python). An int is a fine float.
Rate = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False), _RATE]
Milliseconds = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False), _MS]
Seconds = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False), _SECONDS]
Flag = Annotated[bool, Strict(), _FLAG]
Text = Annotated[str, Strict(), _TEXT]


def _label_value(name: str) -> str:
    if not _LABEL_VALUE.fullmatch(name):
        raise ValueError("not a Kubernetes label value")  # `_describe` words the message
    return name


VersionName = Annotated[str, AfterValidator(_label_value)]


class _Table(BaseModel):
    # A key the demo does not know is an error, never ignored (see the module docstring).
    model_config = ConfigDict(extra="forbid", frozen=True)

    def values_set(self) -> dict[str, Any]:
        """The keys the file sets, endpoint tables aside. A key left out (None) inherits."""
        return self.model_dump(exclude_unset=True, exclude={"endpoints"})


class _EndpointTable(_Table):
    """`[<version table>.endpoints."/api/checkout"]`: overrides for one endpoint."""

    error_rate: Rate | None = None
    error_rate_after: Rate | None = None
    latency_ms: Milliseconds | None = None
    latency_spread_ms: Milliseconds | None = None
    tail_fraction: Rate | None = None
    tail_latency_ms: Milliseconds | None = None


class _VersionTable(_EndpointTable):
    """`[defaults]` or `[versions.<version>]`: every endpoint key, the version-wide keys and endpoint tables."""

    description: Text | None = None
    errors_after_s: Seconds | None = None
    startup_delay_s: Seconds | None = None
    never_ready: Flag | None = None
    crash_after_s: Seconds | None = None
    endpoints: dict[EndpointPath, _EndpointTable] = Field(default_factory=dict)


class _ProfileFile(_Table):
    defaults: _VersionTable = Field(default_factory=_VersionTable)
    versions: dict[VersionName, _VersionTable] = Field(default_factory=dict)


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
            f"{source}: version {_SHORT.repr(version)} is {len(version)} characters long; "
            "a Kubernetes label value holds at most 63"
        )
    if not _LABEL_VALUE.fullmatch(version):
        raise VersionError(
            f"{source}: version {_SHORT.repr(version)} is not a valid Kubernetes label value; use letters, digits "
            "and '-', '_' or '.' inside, starting and ending with a letter or digit (e.g. v2, 1.4.0-rc1)"
        )
    return version


# --- building --------------------------------------------------------------------------------------------------


def _build(file: Path, shown: str, document: dict[str, Any]) -> ProfileSet:
    try:
        parsed = _ProfileFile.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ProfileError(_describe(shown, errors[0]) + more) from None
    defaults = _resolve(shown, "defaults", "defaults", parsed.defaults, None)
    versions = {
        name: _resolve(shown, name, f"versions.{_key(name)}", table, parsed.defaults)
        for name, table in parsed.versions.items()
    }
    return ProfileSet(path=file, defaults=defaults, versions=versions)


def _resolve(shown: str, name: str, where: str, table: _VersionTable, defaults: _VersionTable | None) -> Profile:
    own = table.values_set()
    merged = {**(defaults.values_set() if defaults else {}), **own}

    # Precedence for one endpoint key, most specific table first: the version's endpoint override, the
    # version's own value (so `latency_ms = 400` in a version beats a defaults endpoint override), the
    # defaults' endpoint override, the defaults' value.
    endpoints: dict[str, EndpointProfile] = {}
    for path in API_ENDPOINTS:
        inherited = defaults.endpoints[path].values_set() if defaults and path in defaults.endpoints else {}
        overrides = table.endpoints[path].values_set() if path in table.endpoints else {}
        values = {**{key: value for key, value in inherited.items() if key not in own}, **overrides}
        if values:
            endpoints[path] = EndpointProfile(**values)

    if _sets(table, "error_rate_after") and "errors_after_s" not in merged:
        raise ProfileError(
            f"{shown}: {where}.error_rate_after has no effect without errors_after_s; "
            f"add errors_after_s = <seconds> to [{where}] or remove error_rate_after"
        )
    # A tail needs both its share and its extra latency: either alone is a scenario that silently does
    # nothing. [defaults] may hold one half for the versions to complete (defaults is None while resolving it).
    for key, needs, example in _TAIL_PAIRS:
        if defaults is not None and _sets(table, key) and not (_sets(table, needs) or _sets(defaults, needs)):
            raise ProfileError(
                f"{shown}: {where}.{key} has no effect without {needs}; "
                f"add {needs} = {example} to [{where}] (or one of its endpoint tables) or remove {key}"
            )
    return Profile(name=name, endpoints=endpoints, **merged)


_TAIL_PAIRS: Final = (("tail_fraction", "tail_latency_ms", "<milliseconds>"),
                      ("tail_latency_ms", "tail_fraction", "<fraction such as 0.02>"))


def _sets(table: _VersionTable, key: str) -> bool:
    """Whether the table sets `key` itself or in one of its endpoint tables."""
    return key in table.model_fields_set or any(key in override.model_fields_set
                                                for override in table.endpoints.values())


# --- pydantic's error as one line ------------------------------------------------------------------------------


def _describe(shown: str, error: ErrorDetails) -> str:
    """One line naming the file, the key as written in TOML, the value, what is wrong and the fix."""
    loc = tuple(str(part) for part in error["loc"])
    kind, value = error["type"], error["input"]
    if loc[-1] == "[key]":  # the name of a table is wrong: a version or an endpoint path
        return _bad_table_name(shown, loc[:-1])
    where, parent = _where(loc), _table_model(loc[:-1])
    if kind == "extra_forbidden":
        if parent is _ProfileFile:
            return (
                f"{shown}: {_key(loc[-1])} is an unknown top-level key{_did_you_mean(loc[-1], _TOP_LEVEL_KEYS)}; "
                "the file holds a [defaults] table and [versions.<version>] tables only"
            )
        known = sorted(parent.model_fields) if parent else []
        return (
            f"{shown}: {where} is an unknown key{_did_you_mean(loc[-1], known)}; "
            f"known keys are {', '.join(known)}"
        )
    if kind in ("model_type", "dict_type"):
        return (
            f"{shown}: {where} = {_toml_repr(value)} is {_type_name(value)}, expected a table; "
            f"write it as {_table_example(loc)} with its keys on the lines below"
        )
    unit = _unit_of(parent, loc[-1])
    if kind == "finite_number":
        problem = "is not a finite number"
    elif kind in ("greater_than_equal", "less_than_equal"):
        problem = unit.out_of_range
    elif kind.endswith("_type"):
        problem = f"is {_type_name(value)}, expected {unit.expected}"
    else:
        problem = f"is invalid ({error['msg']})"
    return f"{shown}: {where} = {_toml_repr(value)} {problem}; {unit.fix}"


_TOP_LEVEL_KEYS: Final = tuple(_ProfileFile.model_fields)


def _bad_table_name(shown: str, loc: tuple[str, ...]) -> str:
    where = _where(loc)
    if len(loc) == 2 and loc[0] == "versions":
        return (
            f"{shown}: {where} is not a valid version name: a Kubernetes label value has letters, "
            "digits and '-', '_' or '.' inside, starts and ends with a letter or digit and is at "
            "most 63 characters; rename the table (e.g. [versions.v2])"
        )
    choices = " or ".join(json.dumps(path) for path in API_ENDPOINTS)
    return (
        f"{shown}: {where} is not an endpoint the demo injects faults into"
        f"{_did_you_mean(loc[-1], API_ENDPOINTS, quote=True)}; use {choices}"
    )


def _table_model(loc: tuple[str, ...]) -> type[_Table] | None:
    """The model of the table at `loc`; None for a table of named tables (`versions`, `endpoints`)."""
    if not loc:
        return _ProfileFile
    below_version = len(loc) - (1 if loc[0] == "defaults" else 2)  # 0: [defaults] or [versions.<version>]
    return {0: _VersionTable, 2: _EndpointTable}.get(below_version)


def _table_example(loc: tuple[str, ...]) -> str:
    if loc == ("versions",):
        return "[versions.v2]"
    if _table_model(loc) is None:  # a version's `endpoints`
        return f'[{_where(loc)}."/api/checkout"]'
    return f"[{_where(loc)}]"


def _unit_of(model: type[_Table] | None, key: str) -> _Unit:
    """The `_Unit` in a field's `Annotated[...] | None` annotation."""
    field_info = model.model_fields.get(key) if model else None
    options = get_args(field_info.annotation) if field_info else ()
    return next((meta for option in options for meta in get_args(option) if isinstance(meta, _Unit)), _ANY)


# --- message helpers ---------------------------------------------------------------------------------------


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


def _where(loc: tuple[str, ...]) -> str:
    """A key path as written in TOML: `versions.v2.endpoints."/api/checkout".error_rate`."""
    return ".".join(_key(part) for part in loc)


def _key(key: str) -> str:
    """A key as it would be written in TOML: bare when possible, quoted otherwise; cut when long."""
    return _cut(key if _BARE_TOML_KEY.fullmatch(key) else _toml_string(key))


def _toml_string(text: str) -> str:
    """`text` as a TOML basic string: printable characters as they are, the others escaped (json.dumps would
    write a character beyond U+FFFF as two surrogate escapes, which TOML rejects)."""
    quoted = json.dumps(text, ensure_ascii=False)
    return "".join(char if char.isprintable() else
                   f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}" for char in quoted)


# Bad input is echoed in its message, but a 10,000-character value must still give one readable line.
_MAX_SHOWN: Final = 80
_SHORT: Final = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _MAX_SHOWN


def _cut(text: str) -> str:
    """`text` with its middle replaced by `...` when longer than _MAX_SHOWN."""
    if len(text) <= _MAX_SHOWN:
        return text
    half = (_MAX_SHOWN - 3) // 2
    return f"{text[:half]}...{text[-half:]}"


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _cut(_toml_string(value))
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, list):
        shown = [_toml_repr(item) for item in value[:_SHORT.maxlist]]
        return _cut("[" + ", ".join(shown + (["..."] if len(value) > len(shown) else [])) + "]")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()  # as TOML writes it
    return _cut(repr(value) if isinstance(value, int | float) else str(value))


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
