"""Helpers for tests that run a real local cluster: configs in a temporary run directory, pid checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from releasegate.core.config import Config, parse_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Fast-failing variants of the shipped bad profiles, so readiness tests take seconds, not minutes.
TEST_PROFILES = """
[defaults]
latency_ms = 2
latency_spread_ms = 1

[versions.v2-errors]
error_rate = 0.05

[versions.v2-crashloop]
crash_after_s = 0.3

[versions.v2-never-ready]
never_ready = true

[versions.v2-late-failure]
# Later than the pre-switch stages of the late-failure tests can take (about 10-20 s after the pod starts);
# those tests give post_switch 45 s of load, which stops early as soon as the errors begin.
errors_after_s = 25.0
error_rate_after = 0.5
"""


def local_config(run_dir: Path, *, profiles: Path | None = None, **local: Any) -> Config:
    data: dict[str, Any] = {"local": {"run_dir": str(run_dir), "ready_timeout_s": 20, **local}}
    if profiles is not None:
        data["local"]["profiles"] = str(profiles)
    return parse_config(data, source="test config", base_dir=run_dir, project_root=run_dir)


def cluster_pids(state: dict[str, Any]) -> list[int]:
    """Every process a cluster started: itself, Prometheus and each pod."""
    pids = [int(state["pid"])]
    if state.get("prometheus_pid"):
        pids.append(int(state["prometheus_pid"]))
    for slot in state["slots"].values():
        pids += [int(pod["pid"]) for pod in slot["pods"] if pod["pid"]]
    return pids


def alive(pids: list[int]) -> list[int]:
    from releasegate.targets.local.procs import pid_alive

    return [pid for pid in pids if pid_alive(pid)]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (a run directory, say): orphans show here."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.append(cmdline)
    return found


def run_module(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or PROJECT_ROOT)
