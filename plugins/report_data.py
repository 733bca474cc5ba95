"""The release report's data for charts: when each item ran, the traffic split over time, each load's histograms.

Runs on the reporting process from the ledger (item records and load histograms written by whichever
process ran them) and the test reports' properties, like the rest of plugins/reporting.py. Times are
seconds from the release's first item (`started_at`, epoch seconds), so a reader's charts need no clock.
Keys added to release-report.json (all always present):

- `started_at`: number or null, epoch seconds of the first item's start (null: no item ran)
- `timeline`: list of {nodeid, stage, outcome, start_s, end_s}, in the order the items started
- `traffic_timeline`: list of {at_s, candidate_percent, by}: the candidate's share of the public service's
  traffic from `at_s` on, 0 at the start, changed by the item `by` (shift, switch, promote, rollback,
  finalize switching back)
- `load_histograms`: list of {nodeid, stage, start_s, duration_s, source, cells}, one per load; each cell
  {target, endpoint, version, requests, failures, latency_buckets: [[upper bound s, count], ...]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from releasegate.plugins.ledger import ItemRecord, Ledger, Outcome

SWITCH_BACK_PROPERTY = "release.finalize.watch.time_to_switch_back_s"
"""Finalize's watch switched traffic back to the old version (plugins/controller.py)."""


def _seconds(value: float) -> float:
    return round(value, 3)


def item_timeline(records: Sequence[ItemRecord], outcomes: Mapping[str, str], started_at: float,
                  ) -> list[dict[str, Any]]:
    """Each item that ran, with its outcome as the report says it (an interrupt is an error there)."""
    return [{"nodeid": record.nodeid, "stage": record.stage,
             "outcome": outcomes.get(record.nodeid, record.outcome.value),
             "start_s": _seconds(record.started - started_at), "end_s": _seconds(record.finished - started_at)}
            for record in sorted(records, key=lambda r: (r.started, r.index))]


def _weight_after(record: ItemRecord, properties: Mapping[str, str], outcome: str) -> int | None:
    """The candidate's percent of traffic after this item, or None when it did not move traffic."""
    action = record.stage.split("[", 1)[0]
    if action == "finalize" and SWITCH_BACK_PROPERTY in properties:
        return 0  # the watch saw a breach and switched back (the item itself fails)
    if outcome != Outcome.PASSED.value:
        return None  # failed or skipped: a failed move is undone by the rollback, which says so
    if action == "shift" and "release.shift.effective_weight" in properties:
        return int(properties["release.shift.effective_weight"])
    if action in ("switch", "promote"):
        return 100
    if action == "rollback" and "release.rollback.reason" in properties:
        return 0
    return None


def traffic_timeline(records: Sequence[ItemRecord], properties: Mapping[str, Mapping[str, str]],
                     outcomes: Mapping[str, str], started_at: float) -> list[dict[str, Any]]:
    """The candidate's share over time: a canary's steps, a blue-green switch as one step 0 -> 100."""
    points: list[dict[str, Any]] = [{"at_s": 0.0, "candidate_percent": 0, "by": "start"}]
    for record in sorted(records, key=lambda r: (r.started, r.index)):
        if not record.nodeid.startswith("release::"):
            continue
        weight = _weight_after(record, properties.get(record.nodeid, {}),
                               outcomes.get(record.nodeid, record.outcome.value))
        if weight is not None and weight != points[-1]["candidate_percent"]:
            points.append({"at_s": _seconds(record.finished - started_at), "candidate_percent": weight,
                           "by": record.nodeid})
    return points


def load_histograms(ledger: Ledger, started_at: float) -> list[dict[str, Any]]:
    return [{"nodeid": record.nodeid, "stage": record.stage, "start_s": _seconds(record.started - started_at),
             "duration_s": record.duration_s, "source": record.source, "cells": record.cells}
            for record in ledger.load_histograms()]


def chart_data(ledger: Ledger, properties: Mapping[str, Sequence[tuple[str, str]]],
               outcomes: Mapping[str, str]) -> dict[str, Any]:
    """The keys above, from the ledger and each test's properties and outcome (by node id)."""
    records = list(ledger.finished_items().values())
    if not records:
        return {"started_at": None, "timeline": [], "traffic_timeline": [], "load_histograms": []}
    started_at = min(record.started for record in records)
    by_nodeid = {nodeid: dict(pairs) for nodeid, pairs in properties.items()}
    return {"started_at": started_at, "timeline": item_timeline(records, outcomes, started_at),
            "traffic_timeline": traffic_timeline(records, by_nodeid, outcomes, started_at),
            "load_histograms": load_histograms(ledger, started_at)}
