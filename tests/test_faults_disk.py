"""A full disk under our own writes: the old file stays whole, no temporary file is left, ENOSPC is raised.

The disk is a real 64 KiB tmpfs (mounting needs root; elsewhere these tests skip and say why). The whole
release on a full disk is in tests/test_faults_release.py.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from releasegate.core.files import write_atomically
from releasegate.plugins.reporting import write_report


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a tmpfs mount, which this machine refuses: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary_file(tiny_disk: Path) -> None:
    state = tiny_disk / "state.json"
    write_atomically(state, json.dumps({"phase": "verifying"}))
    fill(tiny_disk)
    with pytest.raises(OSError) as error:
        write_atomically(state, json.dumps({"phase": "switched", "padding": "x" * 20_000}))
    assert error.value.errno == errno.ENOSPC
    assert json.loads(state.read_text()) == {"phase": "verifying"}  # the old one, whole
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "state.json"]


def test_a_report_on_a_full_disk_is_whole_or_absent_and_readable_by_others(tiny_disk: Path) -> None:
    summary = {"version": "v2", "decision": "promoted", "previous": "v1", "strategy": "blue-green",
               "target": "local", "dry_run": False, "run_id": "r1", "exit_code": 0, "reason": "", "tests": [],
               "phase_times_s": {}}
    report = tiny_disk / "run" / "release-report.md"
    write_report(summary, report)
    assert json.loads(report.with_suffix(".json").read_text())["decision"] == "promoted"
    assert report.stat().st_mode & 0o777 == 0o644  # shared like junit.xml, not private like a kubeconfig
    fill(tiny_disk)
    with pytest.raises(OSError) as error:
        write_report({**summary, "decision": "rolled-back", "reason": "x" * 40_000}, report)
    assert error.value.errno == errno.ENOSPC
    assert json.loads(report.with_suffix(".json").read_text())["decision"] == "promoted"
    assert not [p for p in report.parent.iterdir() if p.name.endswith(".tmp")]
