"""What every process of one release run shares: the release context and each item's outcome.

Under pytest-xdist, verification items run in several worker processes and the actions in one of them.
They coordinate through this directory: the action that provisions writes the endpoints, every item
writes when it started and how it ended, and an item waits for the stages before it by reading those
records (see plugins/gates.py). Files are written whole and renamed into place, so a reader never sees
half a record. The records are typed (ReleaseContext, ItemRecord): a misspelt field is an error at the
writer, not a silent None at a reader in another process.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from releasegate.core.files import write_atomically
from releasegate.core.types import Endpoint, MetricsScope, Role


class Decision(StrEnum):
    """What a release ended in, as the exit code, the JUnit and the report say it."""

    PROMOTED = "promoted"
    ROLLED_BACK = "rolled-back"
    NOT_PROMOTED = "not-promoted"
    INCONCLUSIVE = "inconclusive"  # the analysis decided neither way: not promoted, a person may extend


INCONCLUSIVE_PROPERTY = "release.item.inconclusive"
"""The user property (JUnit) of a test whose checks were inconclusive: how the reporting process knows."""


class Outcome(StrEnum):
    """How one test item ended. ERROR: its setup or teardown failed (a fixture), not its checks.

    INCONCLUSIVE: its checks ran out of window before the evidence decided (none failed, none lacked data).
    It stops the release like a failure (never a pass) but ends in its own decision and exit code.
    """

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"
    INCONCLUSIVE = "inconclusive"

    @property
    def is_failure(self) -> bool:
        return self in (Outcome.FAILED, Outcome.ERROR, Outcome.INCONCLUSIVE)

    @classmethod
    def of_failed_call(cls, inconclusive: bool) -> Outcome:
        return cls.INCONCLUSIVE if inconclusive else cls.FAILED


@dataclass(frozen=True)
class ReleaseContext:
    """The release as every process sees it; written by the process that runs the actions."""

    run_id: str
    version: str
    strategy: str
    target: str
    dry_run: bool = False
    target_detail: str | None = None  # which cluster: run directory, API server and namespace
    previous_version: str | None = None
    live_slot: str | None = None
    candidate_slot: str | None = None
    metrics_scope: MetricsScope | None = None
    endpoints: dict[Role, Endpoint] = field(default_factory=dict)
    switched: bool = False
    canary_weight: int | None = None  # the candidate's percent of traffic in the current canary step
    step_started_at: float | None = None  # wall clock (epoch s) when the current step's split took effect
    exposed_at_provision: bool = False  # users reach the candidate from provision on (a canary Rollout)
    # Candidate pods Prometheus must have scraped before the first load, analysis or traffic change, when
    # provision left that wait to them (plugins/prometheus_gate.await_first_scrape); None: nothing to wait for.
    first_scrape_of: int | None = None
    decision: Decision | None = None
    # Why the release stopped when no test failed: each says a different kind of stop.
    usage_error: str | None = None  # bad input found after the run started (a test in no stage)
    not_promoted_reason: str | None = None  # e.g. a required stage with no test
    interrupted: str | None = None  # Ctrl-C, a dead worker, a lost lock
    cleanup_problem: str | None = None  # something the emergency stop could not undo

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["endpoints"] = {role.value: {"url": e.url, "slot": e.slot, "version": e.version}
                             for role, e in self.endpoints.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReleaseContext:
        known = {f.name for f in fields(cls)}
        values = {name: value for name, value in data.items() if name in known}
        values["endpoints"] = {Role(role): Endpoint(Role(role), e["url"], e["slot"], e["version"])
                               for role, e in (data.get("endpoints") or {}).items()}
        if data.get("metrics_scope"):
            values["metrics_scope"] = MetricsScope(**data["metrics_scope"])
        if data.get("decision"):
            values["decision"] = Decision(data["decision"])
        return cls(**values)


@dataclass(frozen=True)
class ItemRecord:
    index: int
    nodeid: str
    stage: str
    outcome: Outcome
    message: str  # one line: why it failed or was skipped
    started: float
    finished: float
    usage_error: bool = False  # a ConfigError: the run ends with exit code 4

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ItemRecord:
        return cls(**{**data, "outcome": Outcome(data["outcome"])})


@dataclass(frozen=True)
class LoadRecord:
    """One load on the machine (plugins/load_slot.py): when it held the load slot, and whether it asked to
    run alone. The pair of `load.side_by_side` is one load; so are the loads one test runs at once."""

    key: str  # unique per load: its file in the ledger
    nodeid: str
    stage: str
    started: float  # epoch s: when it got the slot
    finished: float | None  # epoch s; None while it runs (or when its process died)
    may_overlap: bool  # marked load_may_overlap: it took the slot shared
    waited_s: float  # how long it waited for the slot

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})


@dataclass(frozen=True)
class LoadHistogramRecord:
    """What one load measured, small enough for the report's charts (plugins/load_histograms.py): per
    (target, endpoint, serving version) cell the request and failure counts and a coarse latency histogram,
    never raw samples. Written by the process that ran the load, read by the reporting process."""

    key: str  # unique per load: its file in the ledger
    nodeid: str
    stage: str
    started: float  # epoch s
    duration_s: float
    source: str  # the load profile, as the load's checks name it
    cells: list[dict[str, Any]]  # {target, endpoint, version, requests, failures, latency_buckets: [[le_s, n]]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadHistogramRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})


def _write_json(path: Path, data: Any) -> None:
    write_atomically(path, json.dumps(data, sort_keys=True))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


class Ledger:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.items_dir = root / "items"
        self.items_dir.mkdir(parents=True, exist_ok=True)

    # -- the release context (written by the process that runs the actions) -----------------------
    def start(self, context: ReleaseContext) -> None:
        _write_json(self.root / "context.json", context.to_json())

    def read_context(self) -> ReleaseContext:
        data = _read_json(self.root / "context.json")
        if data is None:
            raise RuntimeError(f"no release context in {self.root}: the release controller never started it")
        return ReleaseContext.from_json(data)

    def update_context(self, **changes: Any) -> ReleaseContext:
        """Change fields of the context by name; an unknown name is a TypeError (dataclasses.replace)."""
        context = replace(self.read_context(), **changes)
        _write_json(self.root / "context.json", context.to_json())
        return context

    # -- item records -------------------------------------------------------------------------------
    def item_started(self, index: int, stage: str) -> None:
        _write_json(self.items_dir / f"{index}.start", {"stage": stage, "started": time.time()})

    def item_finished(self, record: ItemRecord) -> None:
        _write_json(self.items_dir / f"{record.index}.json", asdict(record))

    def finished_items(self) -> dict[int, ItemRecord]:
        records: dict[int, ItemRecord] = {}
        for path in self.items_dir.glob("*.json"):
            data = _read_json(path)
            if data is not None:
                records[int(data["index"])] = ItemRecord.from_json(data)
        return records

    def stage_started_at(self, stage: str) -> float | None:
        """When the first item of `stage` started: the stage's deadline counts from there."""
        starts = [data["started"] for path in self.items_dir.glob("*.start")
                  if (data := _read_json(path)) is not None and data["stage"] == stage]
        return min(starts) if starts else None

    # -- abort (a worker crashed, the run was interrupted) ----------------------------------------
    def abort(self, reason: str) -> None:
        if self.aborted() is None:
            _write_json(self.root / "abort.json", {"reason": reason, "at": time.time()})

    def aborted(self) -> str | None:
        data = _read_json(self.root / "abort.json")
        return None if data is None else str(data["reason"])

    def note_signal(self, note: str) -> None:
        """A signal that came while the release was already stopping (plugins/signals.py), from any process."""
        notes_dir = self.root / "signals"
        notes_dir.mkdir(exist_ok=True)
        _write_json(notes_dir / f"{time.time_ns()}-{os.getpid()}.json", {"note": note, "at": time.time()})

    def signal_notes(self) -> list[str]:
        found = [data for path in (self.root / "signals").glob("*.json") if (data := _read_json(path)) is not None]
        return [str(data["note"]) for data in sorted(found, key=lambda data: data["at"])]

    # -- loads (plugins/load_slot.py): each load's time on the machine, for the report --------------
    def record_load(self, record: LoadRecord) -> None:
        """Write (or rewrite, when it finished) one load's record."""
        loads_dir = self.root / "loads"
        loads_dir.mkdir(exist_ok=True)
        _write_json(loads_dir / f"{record.key}.json", asdict(record))

    def loads(self) -> list[LoadRecord]:
        """Every load of the run so far, by start time."""
        found = [LoadRecord.from_json(data) for path in (self.root / "loads").glob("*.json")
                 if (data := _read_json(path)) is not None]
        return sorted(found, key=lambda record: record.started)

    # -- load histograms (plugins/load_histograms.py): what each load measured, for the report's charts --
    def record_load_histograms(self, record: LoadHistogramRecord) -> None:
        histograms_dir = self.root / "load-histograms"
        histograms_dir.mkdir(exist_ok=True)
        _write_json(histograms_dir / f"{record.key}.json", asdict(record))

    def load_histograms(self) -> list[LoadHistogramRecord]:
        """Every load's histograms so far, by start time."""
        found = [LoadHistogramRecord.from_json(data) for path in (self.root / "load-histograms").glob("*.json")
                 if (data := _read_json(path)) is not None]
        return sorted(found, key=lambda record: (record.started, record.key))
