"""What each load measured, kept small for the HTML report's charts: counts and coarse latency histograms.

A load runs in whichever process runs its test (an xdist worker); the report is written by the reporting
process. So the process that ran the load writes one record per load to the ledger (plugins/ledger.py),
like the load slot's record: per (target, endpoint, serving version) cell the requests, the failures and
the latency histogram. The histogram is the load's own log buckets (verifiers/stats.py, 2% wide) merged
six at a time, about 12.6% wide: a few dozen buckets per cell, never the raw samples.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from releasegate.plugins.ledger import LoadHistogramRecord
from releasegate.verifiers.stats import BUCKET_FLOOR_S, BUCKET_GROWTH, Stats

if TYPE_CHECKING:
    from releasegate.plugins.load_slot import LoadSlot
    from releasegate.verifiers.load import LoadResult

MERGED_BUCKETS = 6
"""Fine buckets per report bucket: 1.02**6, about 12.6% wide, plenty to see a distribution's shape."""


def coarse_buckets(stats: Stats) -> list[list[float]]:
    """`[[upper bound in s, count], ...]` in increasing order, empty buckets left out.

    Report bucket j holds the fine buckets (6(j-1), 6j], so its upper bound is a fine bucket's upper bound
    and the report's buckets nest exactly in the load's own.
    """
    merged: dict[int, int] = {}
    for index, count in stats.buckets.items():
        coarse = -(-index // MERGED_BUCKETS)  # ceil: fine bucket 0 (up to the floor) stays bucket 0
        merged[coarse] = merged.get(coarse, 0) + count
    return [[float(f"{BUCKET_FLOOR_S * BUCKET_GROWTH ** (coarse * MERGED_BUCKETS):.6g}"), count]
            for coarse, count in sorted(merged.items()) if count]


def histogram_cells(result: LoadResult) -> list[dict[str, Any]]:
    """One cell per (endpoint, serving version) of a load result, tagged with the target it ran against."""
    target = result.target.role.value if result.target is not None else "host"
    return [{"target": target, "endpoint": endpoint, "version": version, "requests": stats.count,
             "failures": stats.failures, "latency_buckets": coarse_buckets(stats)}
            for (endpoint, version), stats in sorted(result.cells.items())]


def histogram_record(slot: LoadSlot, results: Sequence[LoadResult]) -> LoadHistogramRecord:
    """One record for the results of one load (the pair of `side_by_side` is one load, two targets)."""
    first = results[0]
    return LoadHistogramRecord(
        key=f"{int(first.started_at * 1000)}-{secrets.token_hex(4)}", nodeid=slot.nodeid, stage=slot.stage,
        started=first.started_at, duration_s=round(max(r.duration_s for r in results), 3),
        source=first.profile.describe(), cells=[cell for result in results for cell in histogram_cells(result)])


def keep_histograms(slot: LoadSlot | None, *results: LoadResult) -> None:
    """Write the load's histograms to the ledger; outside a release (no slot) there is nowhere to keep them.

    An OSError (a full disk) only costs the report its chart: the load's checks, not this record, decide.
    """
    if slot is None or not results:
        return
    with contextlib.suppress(OSError):
        slot.ledger.record_load_histograms(histogram_record(slot, results))
