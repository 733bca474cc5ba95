"""Release actions as test items, and the ordering of all items into stages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import ExceptionInfo, TerminalRepr

from releasegate.core.errors import ReleasegateError
from releasegate.plugins.stages import Kind, Stage, stage_of_item

STAGE_KEY = pytest.StashKey[Stage]()
INDEX_KEY = pytest.StashKey[int]()
ACTION_PREFIX = "release::"


class ReleaseNode(pytest.Collector):
    """The parent of the action items, so that their ids read `release::provision`."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        return []


class ActionItem(pytest.Item):
    """One plugin action (preflight, provision, switch, finalize, rollback) as a test item of its own.

    `run_action` is the release's action runner (it owns the controller), given when the item is made.
    """

    def __init__(self, *, stage: Stage, run_action: Callable[[ActionItem], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage = stage
        self._run_action = run_action

    def runtest(self) -> None:
        self._run_action(self)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"release action: {self.stage.label}"

    def repr_failure(self, excinfo: ExceptionInfo[BaseException],
                     style: Any = None) -> str | TerminalRepr:
        # Our own errors already say what happened and what to do: no traceback for them.
        if isinstance(excinfo.value, ReleasegateError):
            return f"{type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo)


CANARY_PARAM = "releasegate_canary_step"
"""The parameter that runs an analysis test once per canary step (its requested weight, `[10%]` in the id).
Tests read the weight from the `canary_weight` fixture, which gives the effective one."""


def canary_step_of(item: pytest.Item) -> int | None:
    callspec = getattr(item, "callspec", None)
    step = callspec.params.get(CANARY_PARAM) if callspec is not None else None
    return int(step) if step is not None else None


def order_items(session: pytest.Session, items: Sequence[pytest.Item], stages: Sequence[Stage],
                suites_root: Path, run_action: Callable[[ActionItem], None],
                ) -> tuple[list[pytest.Item], dict[str, int]]:
    """Give every test its stage, add the action items, and sort everything into stage order.

    Returns the ordered items and the number of verification tests per stage.
    """
    by_key = {(stage.name, stage.step): stage for stage in stages}
    position = {stage: number for number, stage in enumerate(stages)}
    unstaged = []
    counts = {stage.name: 0 for stage in stages if stage.kind is Kind.VERIFY}
    verify: list[tuple[int, int, pytest.Item]] = []
    for order, item in enumerate(items):
        name = stage_of_item(item, suites_root)
        stage = by_key.get((name, canary_step_of(item))) if name is not None else None
        if stage is None:
            unstaged.append(item.nodeid)
            continue
        item.stash[STAGE_KEY] = stage
        counts[stage.name] += 1
        verify.append((position[stage], order, item))
    if unstaged:
        raise pytest.UsageError(
            f"{len(unstaged)} test(s) belong to no stage, e.g. {unstaged[0]}; put them under "
            f"suites/<stage>/ or mark them @pytest.mark.stage(...) with one of: "
            + ", ".join(s.name for s in stages if s.kind is Kind.VERIFY))
    parent = ReleaseNode.from_parent(session, name="release", nodeid="release", path=session.config.rootpath)
    actions = []
    for stage in stages:
        if stage.kind is Kind.ACTION:
            item = ActionItem.from_parent(parent, name=stage.label, stage=stage, run_action=run_action)
            item.stash[STAGE_KEY] = stage
            actions.append((position[stage], -1, item))
    ordered = [item for _, _, item in sorted(actions + verify, key=lambda entry: (entry[0], entry[1]))]
    for index, item in enumerate(ordered):
        item.stash[INDEX_KEY] = index
    return ordered, counts
