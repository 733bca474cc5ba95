"""Version strings: a version ends up as a Kubernetes label value, so it must be a valid one."""

from __future__ import annotations

import re
import reprlib

from releasegate.core.errors import ConfigError

# Kubernetes label value: at most 63 characters, alphanumerics at both ends, `-_.` inside.
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")

# Bad input is echoed in its error message, but shortened: a 10,000-character argument must still give one
# readable line. repr() also shows what is invisible or confusing in a version (spaces, newlines, NUL).
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80


def quoted(value: object) -> str:
    """`value` as quoted in an error message: its repr, cut in the middle when long."""
    return _SHORT.repr(value)


def is_valid_label_value(value: str) -> bool:
    return bool(_LABEL_VALUE.fullmatch(value))


def validate_version(version: str, *, source: str = "--release") -> str:
    """Return `version` unchanged, or raise ConfigError saying why it cannot be a label value."""
    if not version:
        raise ConfigError(f"{source}: the version is empty; give one such as v2 or 1.4.0")
    if len(version) > 63:
        raise ConfigError(
            f"{source}: version {quoted(version)} is {len(version)} characters long; "
            "a Kubernetes label value holds at most 63"
        )
    if not is_valid_label_value(version):
        raise ConfigError(
            f"{source}: version {quoted(version)} is not a valid Kubernetes label value; use letters, digits "
            "and '-', '_' or '.' inside, starting and ending with a letter or digit (e.g. v2, 1.4.0-rc1)"
        )
    return version
