"""Latency statistics of a load run: log-bucket histograms plus a bounded raw sample per cell.

The locust collector records into a `LatencyRecorder` per (endpoint, serving version); the calling
process rebuilds frozen `Stats` from its JSON and combines cells for "all endpoints" or "all versions".
All latencies are seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

BUCKET_FLOOR_S = 1e-5
"""Latencies up to 10 µs share bucket 0; nothing a network request takes is that fast."""

BUCKET_GROWTH = 1.02
"""Each bucket is 2% wider than the previous one: a quantile reported at a bucket's geometric midpoint is
within ~1% of the true value, at about 900 buckets from 10 µs to 10 minutes (kept sparse)."""

RESERVOIR_SIZE = 20_000
"""Raw latencies kept per cell for rank tests; beyond this the sample is a uniform random subset."""

_LOG_GROWTH = math.log(BUCKET_GROWTH)


def bucket_index(latency_s: float) -> int:
    """Bucket i >= 1 holds latencies in (floor * growth**(i-1), floor * growth**i]."""
    if latency_s <= BUCKET_FLOOR_S:
        return 0
    return max(1, math.ceil(math.log(latency_s / BUCKET_FLOOR_S) / _LOG_GROWTH))


def bucket_midpoint_s(index: int) -> float:
    """The geometric middle of a bucket: the value with the smallest worst-case relative error."""
    if index <= 0:
        return BUCKET_FLOOR_S / 2
    return float(BUCKET_FLOOR_S * BUCKET_GROWTH ** (index - 0.5))


def nearest_rank(q: float, count: int) -> int:
    """The 1-based rank of quantile q among `count` sorted values (nearest-rank definition)."""
    # The epsilon absorbs float noise: p(99.9) is 0.9990000000000001, and 1,000 requests must give 999.
    return min(count, max(1, math.ceil(q * count - 1e-9)))


@dataclass(frozen=True)
class Stats:
    """Requests, failures and latencies of one cell or a combination of cells, over `duration_s`.

    `quantile` is exact (nearest rank over `samples`) while the sample holds every request, and from
    the histogram (within ~1%) once the reservoir had to drop some.
    """

    count: int = 0
    failures: int = 0
    duration_s: float = 0.0
    latency_sum_s: float = 0.0
    fastest_s: float | None = None
    slowest_s: float | None = None
    buckets: Mapping[int, int] = field(default_factory=dict)
    samples: tuple[float, ...] = ()
    samples_complete: bool = True

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.count if self.count else None

    @property
    def rps(self) -> float | None:
        return self.count / self.duration_s if self.duration_s > 0 else None

    @property
    def avg(self) -> float | None:
        return self.latency_sum_s / self.count if self.count else None

    @property
    def min(self) -> float | None:
        return self.fastest_s

    @property
    def max(self) -> float | None:
        return self.slowest_s

    def quantile(self, q: float) -> float | None:
        """Latency at quantile q (0 < q <= 1) in seconds, or None without requests."""
        if not 0.0 < q <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {q}")
        if not self.count:
            return None
        if self.samples_complete and len(self.samples) == self.count:
            return self._sorted_samples[nearest_rank(q, self.count) - 1]
        return self._histogram_quantile(q)

    @cached_property
    def _sorted_samples(self) -> tuple[float, ...]:
        # Sorted once per Stats: a comparison reads a dozen ranks of it at every look.
        return tuple(sorted(self.samples))

    def value_at_rank(self, rank: int) -> float:
        """The `rank`-th smallest latency (1-based): exact from the samples while they hold every request,
        else the midpoint of its histogram bucket (within ~1%), clamped to the observed extremes."""
        if not 1 <= rank <= self.count:
            raise ValueError(f"rank {rank} outside 1..{self.count}")
        if self.samples_complete and len(self.samples) == self.count:
            return self._sorted_samples[rank - 1]
        return self._histogram_value(rank)

    def slow_counts(self, limit_s: float) -> tuple[int, int]:
        """Requests slower than `limit_s`: (surely, at most). Equal when the samples hold every request;
        from the histogram, the bucket holding the limit may be either side of it."""
        if self.samples_complete and len(self.samples) == self.count:
            slow = sum(1 for s in self.samples if s > limit_s)
            return slow, slow
        limit_bucket = bucket_index(limit_s)
        surely = sum(n for index, n in self.buckets.items() if index > limit_bucket)
        return surely, surely + self.buckets.get(limit_bucket, 0)

    def _histogram_quantile(self, q: float) -> float:
        return self._histogram_value(nearest_rank(q, self.count))

    def _histogram_value(self, rank: int) -> float:
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                value = bucket_midpoint_s(index)
                # The midpoint may lie outside what was observed; the observed extremes are exact.
                low = self.fastest_s if self.fastest_s is not None else value
                high = self.slowest_s if self.slowest_s is not None else value
                return min(max(value, low), high)
        return self.slowest_s if self.slowest_s is not None else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count, "failures": self.failures, "latency_sum_s": self.latency_sum_s,
            "fastest_s": self.fastest_s, "slowest_s": self.slowest_s,
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "samples": list(self.samples), "samples_complete": self.samples_complete,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, duration_s: float) -> Stats:
        return cls(
            count=int(data["count"]), failures=int(data["failures"]), duration_s=duration_s,
            latency_sum_s=float(data["latency_sum_s"]),
            fastest_s=None if data["fastest_s"] is None else float(data["fastest_s"]),
            slowest_s=None if data["slowest_s"] is None else float(data["slowest_s"]),
            buckets={int(k): int(v) for k, v in data["buckets"].items()},
            samples=tuple(float(s) for s in data["samples"]),
            samples_complete=bool(data["samples_complete"]),
        )

    @classmethod
    def combine(cls, parts: Sequence[Stats], *, duration_s: float, keep_samples: bool = True,
                seed: int = 0) -> Stats:
        """One Stats for several cells (endpoints or versions) measured over the same run."""
        parts = [p for p in parts if p.count]
        if not parts:
            return cls(duration_s=duration_s)
        buckets: dict[int, int] = {}
        for part in parts:
            for index, n in part.buckets.items():
                buckets[index] = buckets.get(index, 0) + n
        samples, complete = _combine_samples(parts, seed) if keep_samples else ((), False)
        return cls(
            count=sum(p.count for p in parts), failures=sum(p.failures for p in parts), duration_s=duration_s,
            latency_sum_s=sum(p.latency_sum_s for p in parts),
            fastest_s=min(p.fastest_s for p in parts if p.fastest_s is not None),
            slowest_s=max(p.slowest_s for p in parts if p.slowest_s is not None),
            buckets=buckets, samples=samples, samples_complete=complete,
        )


def _combine_samples(parts: Sequence[Stats], seed: int) -> tuple[tuple[float, ...], bool]:
    if all(p.samples_complete and len(p.samples) == p.count for p in parts):
        return tuple(s for p in parts for s in p.samples), True
    # Reservoirs of busy and quiet cells sample at different rates: take from each in proportion to its
    # request count, so the combined sample is still a uniform sample of all requests.
    total = sum(p.count for p in parts)
    size = min(total, max(len(p.samples) for p in parts))
    rng = random.Random(seed)
    combined: list[float] = []
    for part in parts:
        share = min(len(part.samples), round(size * part.count / total))
        combined.extend(rng.sample(part.samples, share))
    return tuple(combined), False


class LatencyRecorder:
    """Mutable counters for one cell while a run is going on (inside the locust process)."""

    def __init__(self, *, reservoir_size: int = RESERVOIR_SIZE, rng: random.Random | None = None) -> None:
        self.reservoir_size = reservoir_size
        self._rng = rng or random.Random(0)
        self.count = 0
        self.failures = 0
        self.latency_sum_s = 0.0
        self.fastest_s: float | None = None
        self.slowest_s: float | None = None
        self.buckets: dict[int, int] = {}
        self.samples: list[float] = []

    def add(self, latency_s: float, *, failed: bool) -> None:
        self.count += 1
        self.failures += int(failed)
        self.latency_sum_s += latency_s
        self.fastest_s = latency_s if self.fastest_s is None else min(self.fastest_s, latency_s)
        self.slowest_s = latency_s if self.slowest_s is None else max(self.slowest_s, latency_s)
        index = bucket_index(latency_s)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        # Reservoir sampling (algorithm R): every request so far is in the sample with equal probability.
        if len(self.samples) < self.reservoir_size:
            self.samples.append(latency_s)
        else:
            slot = self._rng.randrange(self.count)
            if slot < self.reservoir_size:
                self.samples[slot] = latency_s

    def snapshot(self, *, duration_s: float, keep_samples: bool = True) -> Stats:
        return Stats(
            count=self.count, failures=self.failures, duration_s=duration_s, latency_sum_s=self.latency_sum_s,
            fastest_s=self.fastest_s, slowest_s=self.slowest_s, buckets=dict(self.buckets),
            samples=tuple(self.samples) if keep_samples else (),
            samples_complete=keep_samples and len(self.samples) == self.count,
        )
