"""core.waiting: the one polling loop, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from releasegate.core.waiting import apoll_until, poll_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_first_answer_is_returned_at_once() -> None:
    clock = FakeClock()
    assert poll_until(lambda: "ready", timeout_s=5, interval_s=1, clock=clock, sleep=clock.sleep) == "ready"
    assert clock.sleeps == []


def test_it_polls_at_the_interval_and_checks_once_more_at_the_deadline() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def never() -> None:
        calls.append(clock.now)
        return None

    assert poll_until(never, timeout_s=2.5, interval_s=1, clock=clock, sleep=clock.sleep) is None
    assert calls == [0, 1, 2, 2.5]  # the last sleep is cut to the deadline, then one more look
    assert clock.sleeps == [1, 1, 0.5]


def test_an_answer_that_comes_late_is_still_taken() -> None:
    clock = FakeClock()
    answer = poll_until(lambda: "up" if clock.now >= 3 else None, timeout_s=10, interval_s=1,
                        clock=clock, sleep=clock.sleep)
    assert (answer, clock.now) == ("up", 3)


def test_false_and_zero_are_answers_only_none_means_not_yet() -> None:
    clock = FakeClock()
    assert poll_until(lambda: 0, timeout_s=1, interval_s=1, clock=clock, sleep=clock.sleep) == 0


def test_a_check_that_raises_stops_the_wait_with_its_reason() -> None:
    clock = FakeClock()

    def crash_looping() -> None:
        if clock.now >= 2:
            raise RuntimeError("pod restarted 3 times")
        return None

    with pytest.raises(RuntimeError, match="restarted 3 times"):
        poll_until(crash_looping, timeout_s=60, interval_s=1, clock=clock, sleep=clock.sleep)
    assert clock.now == 2


def test_the_async_twin_waits_the_same_way() -> None:
    state = {"calls": 0}

    async def third_time() -> str | None:
        state["calls"] += 1
        return "ok" if state["calls"] == 3 else None

    assert asyncio.run(apoll_until(third_time, timeout_s=5, interval_s=0.001)) == "ok"
    assert asyncio.run(apoll_until(lambda: asyncio.sleep(0, result=None), timeout_s=0.01, interval_s=0.005)) is None
