"""Fuzzed bad input, in process: every loader and validator of user input either accepts the input or raises
ConfigError with one line naming the problem; no other exception ever escapes (a traceback is a bug).

hypothesis draws the inputs: TOML documents shaped like the release config and the demo's profile files
(known tables and keys holding values of every TOML type, unknown keys, out-of-range numbers, tables where a
value belongs and the reverse), bytes that are not TOML or not UTF-8, version strings and threshold
expressions. The settings are fixed (derandomize, explicit max_examples, no deadline) so CI sees the same
cases every run; `pytest --hypothesis-show-statistics tests/test_fuzz_inputs.py` prints how many ran.
"""

from __future__ import annotations

import datetime
import math
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from releasegate.core.config import Config, load_config
from releasegate.core.errors import ConfigError
from releasegate.core.versions import validate_version
from releasegate.demo import profiles as demo_profiles
from releasegate.plugins.options import release_options
from releasegate.plugins.release_vars import check_release_vars
from releasegate.verifiers.thresholds import parse_threshold

_FUZZ = settings(
    derandomize=True,  # the same cases on every run and machine: a failure in CI reproduces locally
    deadline=None,  # a slow CI machine is not a bug
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,  # nothing learned on one run changes what the next one tries
)


def fuzz(*, max_examples: int) -> settings:
    """The fixed settings with this test's number of cases."""
    return settings(_FUZZ, max_examples=max_examples)

# A ConfigError is shown as pytest's one `ERROR: ...` line; a message longer than this is not "one clear
# line" but a dump of the input.
MAX_MESSAGE_CHARS = 600


def assert_one_clear_line(message: str, *must_name: str) -> None:
    assert message, "an empty error message says nothing"
    assert "\n" not in message and "\r" not in message, f"the message spans lines: {message!r}"
    assert len(message) <= MAX_MESSAGE_CHARS, f"{len(message)} characters: {message[:200]!r}..."
    assert "Traceback" not in message
    for part in must_name:
        assert part in message, f"{part!r} is not named in {message!r}"


# --- TOML documents ---------------------------------------------------------------------------------------
# tomllib only reads, so the documents are written here: every key and string as a basic string with the
# escapes TOML defines, which round-trips any text hypothesis draws (it draws no surrogates).

_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    escaped = "".join(_TOML_ESCAPES.get(char) or (f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F
                                                  else char) for char in text)
    return f'"{escaped}"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)  # repr: 1e+16, -inf, 0.5 are TOML floats
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_string(key)} = {toml_value(item)}" for key, item in value.items()) + "}"


def toml_document(document: dict[str, Any]) -> str:
    """Scalars first (a top-level key after a table header would belong to that table), then the tables."""
    lines = [f"{toml_string(key)} = {toml_value(value)}" for key, value in document.items()
             if not isinstance(value, dict)]
    for name, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_string(name)}]")
            lines.extend(f"{toml_string(key)} = {toml_value(value)}" for key, value in table.items())
    return "\n".join(lines) + "\n"


keys = st.text(min_size=1, max_size=20)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 1, 65536, 2**62, -(2**62)]),
    st.floats(),  # nan, inf, -0.0, subnormals
    st.sampled_from([0.0, -0.5, 1e-9, 1e300, math.inf, -math.inf]),
    st.text(max_size=40),
    st.sampled_from(["", " ", "v2", "-v2", "../x", "a\nb", "$(reboot)", "é" * 64, "x" * 2000]),
    st.dates(),
    st.times(),
    st.datetimes(timezones=st.none() | st.just(datetime.UTC)),
)
# Arrays and inline tables of scalars, one level: deeper nesting finds nothing new and costs examples.
toml_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.lists(st.text(max_size=30), max_size=4),
    st.lists(st.integers(min_value=-200, max_value=200), max_size=5),
    st.dictionaries(keys, scalars, max_size=3),
)


def fields_of(model: type[BaseModel]) -> list[str]:
    return [name for name in model.model_fields if name not in ("base_dir", "project_root")]


def sections(model: type[BaseModel], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A table of `model`: mostly its own keys with any value, now and then an unknown key."""
    own_keys = st.sampled_from(fields_of(model))
    return st.dictionaries(own_keys | keys, values, max_size=5)


def config_documents() -> st.SearchStrategy[dict[str, Any]]:
    tables: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            tables[name] = sections(annotation, toml_values) | toml_values  # a table, or a value where one belongs
    tables["vars"] = st.dictionaries(keys, toml_values, max_size=4) | toml_values
    known = st.fixed_dictionaries({}, optional=tables)
    unknown = st.dictionaries(keys, toml_values | st.dictionaries(keys, toml_values, max_size=2), max_size=2)
    return st.tuples(known, unknown).map(lambda parts: {**parts[1], **parts[0]})


# --- (a) the release config -----------------------------------------------------------------------------------


def load_or_config_error(path: Path) -> Config | None:
    """The config at `path`, or None after checking the ConfigError is one clear line naming the file."""
    try:
        return load_config(path)
    except ConfigError as exc:
        assert_one_clear_line(str(exc), str(path))
        return None


@fuzz(max_examples=400)
@given(document=config_documents())
def test_config_documents_load_or_raise_one_config_error(document: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "releasegate.toml"
    path.write_text(toml_document(document), encoding="utf-8")
    config = load_or_config_error(path)
    if config is not None:  # accepted: names fit where they go, every number is one a deadline can use
        assert validate_version(config.app.name, source="app.name")
        assert config.kubernetes.namespace == config.kubernetes.namespace.lower().strip()
        assert all(char.isalnum() or char in "-_./" for char in config.kubernetes.slot_label)
        for section in (config.release, config.stages, config.local, config.kubernetes, config.kind,
                        config.prometheus, config.canary):
            for name, value in section:
                if isinstance(value, float) and not isinstance(value, bool):
                    assert math.isfinite(value), f"{name} = {value} was accepted"


@fuzz(max_examples=150)
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(lambda text: text.encode("utf-8")))
def test_config_bytes_that_are_not_toml_raise_one_config_error(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "releasegate.toml"
    path.write_bytes(content)
    load_or_config_error(path)


@pytest.mark.parametrize("content", [b"\xff\xfe[release]\n", b"[release]\nstrategy = \"\xe9\"\n",
                                     b"base_dir = \"/etc\"\n", b"project_root = 5\n"])
def test_config_edge_cases_raise_one_config_error(content: bytes, tmp_path: Path) -> None:
    """Found by the fuzzer: bytes that are not UTF-8, and the loader's own fields written as keys."""
    path = tmp_path / "releasegate.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert_one_clear_line(str(raised.value), str(path))


# --- (b) the demo's profile files ---------------------------------------------------------------------------


def version_tables() -> st.SearchStrategy[Any]:
    endpoint_names = st.sampled_from([*demo_profiles.API_ENDPOINTS, "/api/checkout/", "/healthz"]) | keys
    endpoint_table = sections(demo_profiles._EndpointTable, toml_values) | toml_values
    endpoints = st.dictionaries(endpoint_names, endpoint_table, max_size=2) | toml_values
    numbers = st.floats() | st.integers(min_value=-5, max_value=5) | st.booleans()
    table = st.dictionaries(st.sampled_from(fields_of(demo_profiles._VersionTable)) | keys,
                            numbers | toml_values, max_size=6)
    return st.tuples(table, st.none() | endpoints).map(
        lambda parts: parts[0] if parts[1] is None else {**parts[0], "endpoints": parts[1]})


def profile_documents() -> st.SearchStrategy[dict[str, Any]]:
    version_names = st.sampled_from(["v1", "v2", "1.4.0-rc1", "-v2", "v2.", "x" * 64]) | keys
    versions = st.dictionaries(version_names, version_tables() | toml_values, max_size=3) | toml_values
    known = st.fixed_dictionaries({}, optional={"defaults": version_tables() | toml_values, "versions": versions})
    unknown = st.dictionaries(keys, toml_values, max_size=1)
    return st.tuples(known, unknown).map(lambda parts: {**parts[1], **parts[0]})


def profiles_or_error(path: Path) -> demo_profiles.ProfileSet | None:
    try:
        return demo_profiles.load_profiles(path)
    except demo_profiles.ProfileError as exc:
        assert_one_clear_line(str(exc), path.name)
        return None


def toml_profile_document(document: dict[str, Any]) -> str:
    """Version tables as `[versions."<name>"]` headers, so the files look like the shipped one."""
    versions = document.get("versions")
    if not isinstance(versions, dict) or not all(isinstance(table, dict) for table in versions.values()):
        return toml_document(document)
    rest = toml_document({key: value for key, value in document.items() if key != "versions"})
    tables = [f"[versions.{toml_string(name)}]\n" + toml_document(table) for name, table in versions.items()]
    return rest + "".join(tables)


@fuzz(max_examples=400)
@given(document=profile_documents())
def test_profile_documents_load_or_raise_one_profile_error(document: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(toml_profile_document(document), encoding="utf-8")
    loaded = profiles_or_error(path)
    if loaded is not None:  # accepted: every rate is a probability and no latency is negative or infinite
        for profile in (loaded.defaults, *loaded.versions.values()):
            for endpoint in demo_profiles.API_ENDPOINTS:
                behaviour = profile.endpoint(endpoint)
                assert 0 <= behaviour.error_rate <= 1 and 0 <= behaviour.tail_fraction <= 1
                assert 0 <= behaviour.latency_ms < math.inf and 0 <= behaviour.tail_latency_ms < math.inf


@fuzz(max_examples=150)
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(lambda text: text.encode("utf-8")))
def test_profile_bytes_that_are_not_toml_raise_one_profile_error(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_bytes(content)
    profiles_or_error(path)


# --- (c) version strings ------------------------------------------------------------------------------------

LABEL_CHARS = string.ascii_letters + string.digits + "-_."
version_strings = st.one_of(
    st.text(max_size=80),  # any unicode: letters of other scripts, control characters, emoji
    st.text(alphabet=LABEL_CHARS, max_size=70),  # near misses: bad ends, 64 characters
    st.text(alphabet=LABEL_CHARS + " \t\n/\\;|&$`'\"*?<>(){}~!#%", max_size=30),  # paths, shell metacharacters
    st.sampled_from(["", " v2", "v2 ", "v2\n", "../v2", "v2/../../etc", "$(id)", "v2;rm -rf /", "x" * 10_000,
                     "v\uff12", "\uff562", "v2\x00", "\u200bv2"]),
)


def check_version(validate: Callable[[str], str], version: str, error: type[Exception]) -> None:
    try:
        accepted = validate(version)
    except error as exc:
        assert_one_clear_line(str(exc))
        return
    # Accepted: a Kubernetes label value, so nothing in it can act as a path, a shell word or a matcher.
    assert accepted == version and 1 <= len(version) <= 63
    assert set(version) <= set(LABEL_CHARS) and version[0].isalnum() and version[-1].isalnum()


@fuzz(max_examples=500)
@given(version=version_strings)
def test_version_strings_are_label_values_or_one_config_error(version: str) -> None:
    check_version(validate_version, version, ConfigError)


@fuzz(max_examples=300)
@given(version=version_strings)
def test_demo_version_check_agrees_with_the_release_one(version: str) -> None:
    check_version(demo_profiles.validate_version, version, demo_profiles.VersionError)
    release_accepts = demo_accepts = True
    try:
        validate_version(version)
    except ConfigError:
        release_accepts = False
    try:
        demo_profiles.validate_version(version)
    except demo_profiles.VersionError:
        demo_accepts = False
    assert release_accepts == demo_accepts  # the demo mirrors core/versions.py rather than importing it


@fuzz(max_examples=150)
@given(version=version_strings.filter(lambda version: "\x00" not in version),  # argv cannot hold NUL
       strategy=st.none() | st.text(max_size=12) | st.sampled_from(["canary"]),
       target=st.none() | st.text(max_size=12) | st.sampled_from(["kind", "kubernetes"]))
def test_release_option_parsing_raises_only_config_errors(pytester: pytest.Pytester, version: str,
                                                          strategy: str | None, target: str | None) -> None:
    """The command line as pytest parses it (`--release=...`: a value may start with `-`), then resolved."""
    args = [f"--release={version}"]
    args += [] if strategy is None else [f"--release-strategy={strategy}"]
    args += [] if target is None else [f"--release-target={target}"]
    config = pytester.parseconfig(*args)
    assert config.getoption("release") == version
    try:
        resolved = release_options(config, Config(), version, run_id="run")
    except ConfigError as exc:
        assert_one_clear_line(str(exc))
        return
    assert resolved.version == validate_version(version)
    assert resolved.strategy in ("blue-green", "canary") and resolved.target in ("local", "kubernetes", "kind")


# --- (d) threshold expressions --------------------------------------------------------------------------------

threshold_parts = st.tuples(
    st.sampled_from(["p(95)", "p(99.9)", "p(0)", "p(100.1)", "p(1e3)", "med", "avg", "min", "max", "error_rate",
                     "success_rate", "rps", "requests", "value", "latency", "p95", "P(95)", ""]),
    st.sampled_from(["<", "<=", ">", ">=", "==", "=", "!=", "=<", ""]),
    st.sampled_from(["300", "0.3", ".5", "1e999", "1e-999", "99999999999999999999", "0", "-1", "5.", "nan", "inf",
                     "1_000", "١٢"]),
    st.sampled_from(["ms", "s", "%", "/s", "", "m", "us", "%%", " ms"]),
    st.sampled_from(["", " ", "\t", "\n", "\u00a0"]),
).map(lambda parts: f"{parts[0]}{parts[4]}{parts[1]} {parts[2]}{parts[3]}")


@fuzz(max_examples=500)
@given(text=threshold_parts | st.text(max_size=40) | st.text(alphabet="p()0123456789.<>=%ms/ e", max_size=20)
       | st.sampled_from(["p(95) < 300ms " + "x" * 5000, "x" * 5000 + " < 1", "p(" + "9" * 5000 + ") < 1ms"]))
def test_thresholds_parse_or_raise_one_config_error(text: str) -> None:
    try:
        threshold = parse_threshold(text)
    except ConfigError as exc:
        assert_one_clear_line(str(exc))
        return
    assert math.isfinite(threshold.limit) and threshold.limit >= 0
    assert threshold.quantile is None or 0 < threshold.quantile <= 1
    assert threshold.display(threshold.limit)  # an accepted threshold can be shown in a verdict


# --- (e) the [vars] the shipped suites read -------------------------------------------------------------------

SUITE_VAR_NAMES = ("slos", "load_slos", "compare_quantiles", "load_duration_s", "load_max_duration_s", "load_users",
                   "load_min_requests", "compare_p95_tolerance", "analysis_window_s", "canary_scrape_wait_s")
vars_values = toml_values | st.lists(threshold_parts, min_size=1, max_size=3) | st.lists(
    st.sampled_from([0.5, 0.95, 0.99, 0.9, 1, 0, -0.5, math.nan]), max_size=3)


@fuzz(max_examples=300)
@given(values=st.dictionaries(st.sampled_from(SUITE_VAR_NAMES) | keys, vars_values, max_size=4))
def test_suite_vars_are_usable_or_one_config_error_before_the_release(values: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    """Through the loader and the start-up check of plugins/release_vars.py: what passes both, the suites
    can use (an SLO parses, a number is a finite number)."""
    path = tmp_path / "releasegate.toml"
    path.write_text(toml_document({"vars": values}), encoding="utf-8")
    config = load_or_config_error(path)
    if config is None:
        return
    try:
        check_release_vars(config.vars, source=str(path))
    except ConfigError as exc:
        assert_one_clear_line(str(exc), str(path))
        return
    for key, value in config.vars.items():
        if key == "slos" or key.endswith("_slos"):
            assert isinstance(value, list)
            for text in value:
                parse_threshold(str(text))
        elif key.endswith(("_s", "_users", "_requests", "_tolerance")):
            assert math.isfinite(float(value))  # type: ignore[arg-type]
