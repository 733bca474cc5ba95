"""Waiting in tests: poll a condition until a deadline, never sleep a fixed time and hope."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from releasegate.core.waiting import poll_until

T = TypeVar("T")


def wait_until(condition: Callable[[], T], *, timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Return the first truthy value of `condition()`, or fail the test naming `what` at the deadline."""
    last: list[T] = []

    def truthy() -> T | None:
        value = condition()
        last[:] = [value]
        return value if value else None

    answer = poll_until(truthy, timeout_s=timeout_s, interval_s=interval_s)
    if answer is None:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what} "
                             f"(last value: {last[0] if last else None!r})")
    return answer
