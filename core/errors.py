"""Error types with the exit code each one maps to (README: exit codes follow pytest's meanings)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    PROMOTED = 0
    VERIFICATION_FAILED = 1
    INTERRUPTED = 2
    INTERNAL_ERROR = 3
    USAGE_ERROR = 4
    NO_VERIFICATION = 5
    INCONCLUSIVE = 6  # not promoted, traffic on the previous version; a person may extend or accept


class ReleasegateError(Exception):
    """Base of every error that releasegate raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL_ERROR


class ConfigError(ReleasegateError):
    """Bad input: a malformed config, an invalid version, a missing binary or kubeconfig, a taken port.

    The message names the problem and the fix in one line. Raised before anything on the target changes.
    """

    exit_code = ExitCode.USAGE_ERROR


class LockHeldError(ConfigError):
    """Another release of the same app holds the lock; nothing was changed."""


class TargetError(ReleasegateError):
    """The target failed while acting (API error, process died): the release must not promote."""

    exit_code = ExitCode.VERIFICATION_FAILED


class LockLostError(TargetError):
    """A running release no longer holds its lock (taken over, released or expired): it must stop."""


class NotReadyError(TargetError):
    """A workload did not become ready before its deadline; the message says why (crash, readiness...)."""
