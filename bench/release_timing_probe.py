"""Timing probe of bench/release_bench.py: copied as `conftest.py` into the bench's temporary project.

It records, in the release's own pytest process, when the run reached each point (conftest loaded, plugin
configured, collection done, every test item's start and end, the end of the session) and how long the
framework's inner steps took, by wrapping them where they are called: the cluster start (ephemeral), each
slot's readiness wait, the deploy call, the wait for the candidate's first Prometheus scrape, every
Prometheus query, the reports and the cluster stop. At the end it writes everything, as epoch seconds, to
the file named by $RELEASE_BENCH_TIMINGS.

Benchmark instrumentation only: it changes no behaviour (every wrapper calls the original and re-raises).
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

_IMPORTED_AT = time.time()
_TIMINGS: dict[str, Any] = {"marks": {"conftest_imported": _IMPORTED_AT}, "spans": [], "items": [],
                            "pods": [], "queries": {"count": 0, "seconds": 0.0}, "loads": []}
# "every check decided to pass after 15.0s (look 15)", "every comparison decided to pass after 27.1s": the
# elapsed time of the publication on which the run's checks were all decided.
_DECIDED_AFTER = re.compile(r"decided to pass after (\d+(?:\.\d+)?)s")


def _spanned(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            _TIMINGS["spans"].append({"name": name, "start": started, "end": time.time()})

    return timed


def _counted_query(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _TIMINGS["queries"]["count"] += 1
            _TIMINGS["queries"]["seconds"] += time.perf_counter() - started

    return timed


def _load_record(minimum_s: float, windows_s: list[float], notes: list[str | None]) -> dict[str, Any]:
    """One load's minimum, its window (the longest arm) and when its checks were all decided (None: not)."""
    decided = [float(m.group(1)) for note in notes if note and (m := _DECIDED_AFTER.search(note))]
    return {"minimum_s": minimum_s, "window_s": max(windows_s), "decided_after_s": max(decided) if decided else None}


def _recorded_loads() -> None:
    from releasegate.verifiers import compare, load

    original_run = load.run_load
    original_pair = compare.run_side_by_side

    @functools.wraps(original_run)
    def run_load(profile: Any, *args: Any, **kwargs: Any) -> Any:
        result = original_run(profile, *args, **kwargs)
        _TIMINGS["loads"].append(_load_record(profile.duration_s, [result.duration_s], [result.stop_note]))
        return result

    @functools.wraps(original_pair)
    def run_side_by_side(profile: Any, *args: Any, **kwargs: Any) -> Any:
        pair = original_pair(profile, *args, **kwargs)
        _TIMINGS["loads"].append(_load_record(profile.duration_s, [r.duration_s for r in pair],
                                              [r.stop_note for r in pair]))
        return pair

    load.run_load = run_load  # the fixtures import them from their modules when a load runs
    compare.run_side_by_side = run_side_by_side


def _install() -> None:
    from releasegate.plugins import finish, prometheus_gate
    from releasegate.targets.local import client, target
    from releasegate.verifiers import prometheus_client

    client._wait_started = _spanned("cluster.process_start", client._wait_started)
    original_ready = client.LocalClusterClient.wait_slot_ready

    def wait_slot_ready(self: Any, slot: str, *args: Any, **kwargs: Any) -> Any:
        started = time.time()
        try:
            return original_ready(self, slot, *args, **kwargs)
        finally:
            _TIMINGS["spans"].append({"name": f"ready.{slot}", "start": started, "end": time.time()})
            # The pods' own times (created, process started, ready) from the cluster's state.
            _TIMINGS["pods"] += [dict(pod, read_at=time.time()) for pod in self.state()["slots"][slot]["pods"]]

    client.LocalClusterClient.wait_slot_ready = wait_slot_ready
    original_open = target.LocalTarget.open.__func__  # type: ignore[attr-defined]
    target.LocalTarget.open = classmethod(_spanned("target.open", original_open))  # type: ignore[method-assign]
    target.LocalTarget.deploy = _spanned("provision.deploy", target.LocalTarget.deploy)  # type: ignore[method-assign]
    target.LocalTarget.close = _spanned("target.close", target.LocalTarget.close)  # type: ignore[method-assign]
    gate = prometheus_gate.LivePrometheusGate
    gate.wait_until_scraped = _spanned("first_scrape", gate.wait_until_scraped)  # type: ignore[method-assign]
    finish.write_report = _spanned("reports.release_report", finish.write_report)
    prometheus_client.PrometheusClient.query = _counted_query(  # type: ignore[method-assign]
        prometheus_client.PrometheusClient.query)
    _recorded_loads()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    _TIMINGS["marks"]["configured"] = time.time()
    _install()


def pytest_collection_finish(session: pytest.Session) -> None:
    _TIMINGS["marks"]["collected"] = time.time()


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _TIMINGS["items"].append({"nodeid": nodeid, "start": time.time(), "end": None})


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    for item in reversed(_TIMINGS["items"]):
        if item["nodeid"] == nodeid:
            item["end"] = time.time()
            break


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Any:
    _TIMINGS["marks"]["sessionfinish_start"] = time.time()
    try:
        return (yield)
    finally:
        _TIMINGS["marks"]["sessionfinish_end"] = time.time()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any) -> Any:
    _TIMINGS["marks"]["terminal_summary_start"] = time.time()
    try:
        return (yield)
    finally:
        _TIMINGS["marks"]["terminal_summary_end"] = time.time()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    _TIMINGS["marks"]["unconfigured"] = time.time()
    path = os.environ.get("RELEASE_BENCH_TIMINGS")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(_TIMINGS, handle)
