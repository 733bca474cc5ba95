"""The stage model: which stages a strategy runs, in which order, and which stage a test belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pytest

SUITES_DIR = "suites"
VERIFICATION_STAGES = ("smoke", "load", "analysis", "post_switch")


class Kind(StrEnum):
    ACTION = "action"  # the plugin changes the target (provision, switch, ...)
    VERIFY = "verify"  # user tests that only read


@dataclass(frozen=True)
class Stage:
    name: str
    kind: Kind

    @property
    def label(self) -> str:
        return self.name


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
