"""What a running load, comparison or watch reports about itself while it runs: one snapshot a look.

The verifiers call an `on_progress(snapshot)` callback after each look at their live counts; the pytest
plugin draws it (plugins/progress.py). Verifiers never import pytest, so this is the whole contract between
them: plain data, serialisable to JSON because under pytest-xdist the snapshot crosses from the worker that
runs the load to the controller that owns the terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class CheckState(StrEnum):
    """Where a sequential check stands at one look (a check decided at the end only is AT_END)."""

    PASS = "pass"
    FAIL = "fail"
    UNDECIDED = "undecided"
    AT_END = "at end"


@dataclass(frozen=True)
class CheckProgress:
    """One check at one look: `error_rate < 1%` passed, or is still undecided after `samples` requests."""

    check: str
    state: CheckState
    samples: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckProgress:
        return cls(check=str(data["check"]), state=CheckState(data["state"]), samples=int(data["samples"]))


@dataclass(frozen=True)
class ProgressSnapshot:
    """A running activity's figures so far: a load, a side-by-side comparison or the post-switch watch."""

    activity: str  # "load", "comparison", "watch", "step window"
    elapsed_s: float
    total_s: float | None  # the longest it may run (a load's max_duration_s); None: unknown
    requests: int = 0
    failures: int = 0
    rps: float | None = None  # requests per second over the activity so far; None: not a rate of its own
    p95_s: float | None = None
    versions: Mapping[str, int] = field(default_factory=dict)  # requests per serving version
    through_service: bool = False  # the public service split these requests: the candidate's share matters
    checks: tuple[CheckProgress, ...] = ()
    baseline_p95_s: float | None = None  # a comparison's other arm

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["versions"] = dict(self.versions)
        data["checks"] = [{"check": c.check, "state": c.state.value, "samples": c.samples} for c in self.checks]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProgressSnapshot:
        return cls(
            activity=str(data["activity"]), elapsed_s=float(data["elapsed_s"]),
            total_s=None if data.get("total_s") is None else float(data["total_s"]),
            requests=int(data.get("requests", 0)), failures=int(data.get("failures", 0)),
            rps=None if data.get("rps") is None else float(data["rps"]),
            p95_s=None if data.get("p95_s") is None else float(data["p95_s"]),
            versions={str(k): int(v) for k, v in (data.get("versions") or {}).items()},
            through_service=bool(data.get("through_service", False)),
            checks=tuple(CheckProgress.from_json(c) for c in data.get("checks") or ()),
            baseline_p95_s=None if data.get("baseline_p95_s") is None else float(data["baseline_p95_s"]))


ProgressCallback = Callable[[ProgressSnapshot], None]
"""Where a verifier sends a snapshot after each look; None (the default everywhere) sends nothing."""
