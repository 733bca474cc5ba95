"""[vars] checked at start-up by the names the shipped suites read (plugins/release_vars.py)."""

from __future__ import annotations

from typing import Any

import pytest

from releasegate.core.errors import ConfigError
from releasegate.plugins.release_vars import check_release_vars


def test_the_shipped_settings_and_keys_of_ones_own_pass() -> None:
    check_release_vars({"slos": ["p(95) < 300ms", "error_rate < 1%"], "watch_slos": ["error_rate < 2%"],
                        "compare_quantiles": [0.5, 0.95], "load_duration_s": 15, "compare_p95_tolerance": 0.25,
                        "canary_success_tolerance_pp": 2, "load_users": 10, "load_min_requests": 0,
                        "canary_latency_tolerance_ms": 50.5, "my_own_setting": "anything", "region": [1, "x"]},
                       source="releasegate.toml")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("slos", "p(95) < 300ms", "slos = 'p(95) < 300ms' must be a non-empty list of thresholds"),
    ("slos", [], "must be a non-empty list of thresholds"),
    ("post_switch_slos", ["error_rate < 1%", "p95 < 3"], "post_switch_slos[1]: "),
    ("compare_quantiles", [0.5, 0.9], "compare_quantiles = [0.5, 0.9] must be a non-empty list of quantiles "
                                      "among 0.5, 0.95, 0.99"),
    ("compare_quantiles", [True], "must be a non-empty list of quantiles"),
    ("load_duration_s", "15 s", "load_duration_s = '15 s' must be a number of seconds, at least 0"),
    ("load_duration_s", -1, "must be a number of seconds, at least 0"),
    ("load_duration_s", float("inf"), "must be a number of seconds"),
    ("compare_p95_tolerance", True, "must be a ratio (0.25 for 25%)"),
    ("load_users", 0, "load_users = 0 must be a number of users, at least 1"),
    ("canary_success_tolerance_pp", [2], "must be a number of percentage points"),
])
def test_a_value_the_suites_cannot_use_names_the_key_the_value_and_the_fix(key: str, value: Any,
                                                                          message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_release_vars({"load_users": 5, key: value}, source="releasegate.toml")
    text = str(caught.value)
    assert text.startswith(f"releasegate.toml: [vars] {key}") and message in text, text
    assert "\n" not in text
