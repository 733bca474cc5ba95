"""The stage model: which stages a strategy runs, in which order, and which stage a test belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pytest

SUITES_DIR = "suites"
VERIFICATION_STAGES = ("smoke", "load", "analysis", "post_switch")
STAGE_PROPERTY = "release.stage"
"""The user property (JUnit) naming each item's stage label, `analysis[10%]`: how the reports group items."""


class Kind(StrEnum):
    ACTION = "action"  # the plugin changes the target (provision, switch, ...)
    VERIFY = "verify"  # user tests that only read


@dataclass(frozen=True)
class Stage:
    name: str
    kind: Kind
    step: int | None = None  # canary: the candidate's percent of traffic during this stage

    @property
    def label(self) -> str:
        """`analysis`, or `analysis[10%]` for a canary step: the name ledger records and reports use."""
        return self.name if self.step is None else f"{self.name}[{self.step}%]"


def blue_green_stages() -> list[Stage]:
    """preflight -> provision -> smoke -> load -> analysis -> switch -> post_switch -> finalize (+rollback)."""
    return [
        Stage("preflight", Kind.ACTION),
        Stage("provision", Kind.ACTION),
        Stage("smoke", Kind.VERIFY),
        Stage("load", Kind.VERIFY),
        Stage("analysis", Kind.VERIFY),
        Stage("switch", Kind.ACTION),
        Stage("post_switch", Kind.VERIFY),
        Stage("finalize", Kind.ACTION),
        Stage("rollback", Kind.ACTION),
    ]


def canary_stages(steps: list[int]) -> list[Stage]:
    """preflight -> provision -> smoke -> load -> [shift[w] -> analysis[w]] per step -> promote ->
    post_switch -> finalize (+rollback). The candidate reaches users only from the first shift on."""
    stages = [Stage("preflight", Kind.ACTION), Stage("provision", Kind.ACTION), Stage("smoke", Kind.VERIFY),
              Stage("load", Kind.VERIFY)]
    for weight in steps:
        stages += [Stage("shift", Kind.ACTION, weight), Stage("analysis", Kind.VERIFY, weight)]
    return [*stages, Stage("promote", Kind.ACTION), Stage("post_switch", Kind.VERIFY),
            Stage("finalize", Kind.ACTION), Stage("rollback", Kind.ACTION)]


def stages_for(strategy: str, canary_steps: list[int]) -> list[Stage]:
    return canary_stages(canary_steps) if strategy == "canary" else blue_green_stages()


def stage_of_path(path: Path, suites_root: Path) -> str | None:
    """`suites/<stage>/...` -> stage; None for a test outside a stage folder."""
    try:
        parts = path.relative_to(suites_root).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in VERIFICATION_STAGES else None


def stage_of_item(item: pytest.Item, suites_root: Path) -> str | None:
    """The marker wins over the folder: `@pytest.mark.stage("smoke")` moves a test to smoke."""
    marker = item.get_closest_marker("stage")
    if marker is not None:
        if len(marker.args) != 1 or marker.args[0] not in VERIFICATION_STAGES:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.stage takes one of {', '.join(VERIFICATION_STAGES)}, "
                f"got {marker.args!r}")
        return str(marker.args[0])
    return stage_of_path(item.path, suites_root)
