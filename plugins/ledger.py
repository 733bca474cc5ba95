"""What every process of one release run shares: the release context and each item's outcome.

Under pytest-xdist, verification items run in several worker processes and the actions in one of them.
They coordinate through this directory: the action that provisions writes the endpoints, every item
writes when it started and how it ended, and an item waits for the stages before it by reading those
records (see plugins/gates.py). Files are written whole and renamed into place, so a reader never sees
half a record.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ItemRecord:
    index: int
    nodeid: str
    stage: str
    outcome: str  # passed | failed | skipped
    message: str  # one line: why it failed or was skipped
    started: float
    finished: float
    usage_error: bool = False  # a ConfigError: the run ends with exit code 4


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


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
    def read_context(self) -> dict[str, Any]:
        return dict(_read_json(self.root / "context.json") or {})

    def update_context(self, **fields: Any) -> dict[str, Any]:
        context = {**self.read_context(), **fields}
        _write_json(self.root / "context.json", context)
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
                records[int(data["index"])] = ItemRecord(**data)
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
