"""The `[vars]` a release's suites read, checked before anything starts.

`[vars]` is free-form: the suites read it as `release.vars` when their test runs. A typo there (an SLO
written `p(95) < 300 mss`, a duration written `"15 s"`) used to surface only when the test reached it: the
load stage, minutes into a release, with a candidate already provisioned. The values are checked at start-up
instead, by the names the shipped suites use (README, "Suite settings"), so a bad one is a usage error
(exit 4) naming the key, the value and the fix, before anything on the target changes:

- `slos`, and any key ending in `_slos`: a list of thresholds (`"p(95) < 300ms"`, `"error_rate < 1%"`);
- `compare_quantiles`: a list of latency quantiles among 0.5, 0.95 and 0.99;
- keys ending in `_s`, `_ms`, `_pp`, `_tolerance`, `_requests`, `_users`, `_processes` or `_workers`: a
  number, not negative (`_users` and `_processes` at least 1);
- keys ending in `_master`: empty, or a locust master's `host:port`.

A key that follows none of these names is the suites' own business and is not checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from releasegate.core.errors import ConfigError
from releasegate.core.versions import quoted
from releasegate.verifiers.master_address import parse_master
from releasegate.verifiers.thresholds import parse_threshold

COMPARED_QUANTILES = (0.5, 0.95, 0.99)
"""The quantiles the shipped comparison has tolerances for (suites/analysis/test_compare.py)."""

_NUMBER_SUFFIXES = ("_s", "_ms", "_pp", "_tolerance", "_requests", "_users", "_processes", "_workers")


def check_release_vars(values: Mapping[str, Any], *, source: str) -> None:
    """Raise ConfigError for the first `[vars]` value the suites could not use (see the module docstring)."""
    for key, value in values.items():
        if key == "slos" or key.endswith("_slos"):
            _check_thresholds(key, value, source)
        elif key == "compare_quantiles":
            _check_quantiles(key, value, source)
        elif key.endswith(_NUMBER_SUFFIXES):
            _check_number(key, value, source, minimum=1 if key.endswith(("_users", "_processes")) else 0)
        elif key.endswith("_master") and value != "":  # a locust master's host:port (verifiers.load)
            try:
                parse_master(str(value))
            except ConfigError as exc:
                raise ConfigError(f"{source}: [vars] {key}: {exc}") from None


def _check_thresholds(key: str, value: Any, source: str) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{source}: [vars] {key} = {quoted(value)} must be a non-empty list of thresholds, e.g. "
                          f'{key} = ["p(95) < 300ms", "error_rate < 1%"]')
    for index, text in enumerate(value):
        try:
            parse_threshold(text)
        except ConfigError as exc:
            raise ConfigError(f"{source}: [vars] {key}[{index}]: {exc}") from None


def _check_quantiles(key: str, value: Any, source: str) -> None:
    allowed = ", ".join(f"{q:g}" for q in COMPARED_QUANTILES)
    numbers = value if isinstance(value, list) else [value]
    wrong = [q for q in numbers if isinstance(q, bool) or not isinstance(q, (int, float))
             or float(q) not in COMPARED_QUANTILES]
    if not isinstance(value, list) or not value or wrong:
        raise ConfigError(f"{source}: [vars] {key} = {quoted(value)} must be a non-empty list of quantiles among "
                          f"{allowed} (the comparison's tolerances cover those), e.g. {key} = [0.5, 0.95]")


def _check_number(key: str, value: Any, source: str, *, minimum: float) -> None:
    try:
        number = float(value) if not isinstance(value, (bool, list)) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < minimum:
        what = {"_s": "a number of seconds", "_ms": "a number of milliseconds", "_pp": "a number of percentage "
                "points", "_tolerance": "a ratio (0.25 for 25%)", "_requests": "a number of requests",
                "_users": "a number of users", "_processes": "a number of locust processes",
                "_workers": "a number of locust workers"}[next(s for s in _NUMBER_SUFFIXES if key.endswith(s))]
        raise ConfigError(f"{source}: [vars] {key} = {quoted(value)} must be {what}, at least {minimum:g}, written "
                          f"without a unit (e.g. {key} = {max(minimum, 10):g})")
