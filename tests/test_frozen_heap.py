"""plugins/frozen_heap.py: a release's long-lived objects are out of the collector's passes to the end."""

from __future__ import annotations

import json

from tests.release_project import ReleaseProject

# Records gc's frozen count where pytest's last collections run, and once pytest has returned.
RECORDING_CONFTEST = """
import atexit
import gc
import json
from pathlib import Path

RECORD = Path(__file__).parent / "frozen.json"
seen = {}


def pytest_unconfigure(config):
    seen["at_unconfigure"] = gc.get_freeze_count()


def _after_pytest():
    seen["after_pytest"] = gc.get_freeze_count()
    RECORD.write_text(json.dumps(seen))


atexit.register(_after_pytest)
"""


def test_a_release_process_freezes_what_it_collected_until_it_exits(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.pytester.makeconftest(RECORDING_CONFTEST)
    result = project.release("--release", "v2", "--collect-only")
    assert result.ret == 0, result.stdout.str()
    seen = json.loads((project.path / "frozen.json").read_text())
    assert seen["at_unconfigure"] > 0  # pytest's last collections (at unconfigure and cleanup) skip them
    assert seen["after_pytest"] > 0  # still frozen after pytest returned: the exit's own collection skips them


def test_without_release_nothing_is_frozen(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.pytester.makeconftest(RECORDING_CONFTEST)
    result = project.release("--collect-only")
    assert result.ret == 0, result.stdout.str()
    assert json.loads((project.path / "frozen.json").read_text())["at_unconfigure"] == 0
