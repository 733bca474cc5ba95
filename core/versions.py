"""Version strings: a version ends up as a Kubernetes label value, so it must be a valid one."""

from __future__ import annotations

import re

from releasegate.core.errors import ConfigError

# Kubernetes label value: at most 63 characters, alphanumerics at both ends, `-_.` inside.
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def is_valid_label_value(value: str) -> bool:
    return bool(_LABEL_VALUE.fullmatch(value))


def validate_version(version: str, *, source: str = "--release") -> str:
    """Return `version` unchanged, or raise ConfigError saying why it cannot be a label value."""
    if not version:
        raise ConfigError(f"{source}: the version is empty; give one such as v2 or 1.4.0")
    if len(version) > 63:
        raise ConfigError(
            f"{source}: version {version!r} is {len(version)} characters long; "
            "a Kubernetes label value holds at most 63"
        )
    if not is_valid_label_value(version):
        raise ConfigError(
            f"{source}: version {version!r} is not a valid Kubernetes label value; use letters, digits "
            "and '-', '_' or '.' inside, starting and ending with a letter or digit (e.g. v2, 1.4.0-rc1)"
        )
    return version
