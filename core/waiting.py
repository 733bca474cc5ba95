"""Waiting for a condition with a deadline: the one polling loop every wait in releasegate uses.

A wait asks a question again and again until it gets an answer or its time is up. The question is a
function that returns the answer, or None for "not yet"; it may raise to stop early with a reason (a pod
that crash-loops will not get better by waiting). The clock and the sleep are injectable so that tests
drive a wait without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(check: Callable[[], T | None], *, timeout_s: float, interval_s: float,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], object] = time.sleep) -> T | None:
    """The first answer of `check()` other than None, or None when `timeout_s` passed without one.

    `check` runs at least once, and once more at the deadline, so a wait never gives up on a condition
    that became true while it slept.
    """
    deadline = clock() + timeout_s
    while True:
        answer = check()
        if answer is not None:
            return answer
        left = deadline - clock()
        if left <= 0:
            return None
        sleep(min(interval_s, left))


async def apoll_until(check: Callable[[], Awaitable[T | None]], *, timeout_s: float, interval_s: float,
                      clock: Callable[[], float] = time.monotonic) -> T | None:
    """poll_until for coroutines: `await check()` until an answer or the deadline (asyncio.sleep between)."""
    deadline = clock() + timeout_s
    while True:
        answer = await check()
        if answer is not None:
            return answer
        left = deadline - clock()
        if left <= 0:
            return None
        await asyncio.sleep(min(interval_s, left))
