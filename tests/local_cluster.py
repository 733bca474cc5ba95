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
# Never by the clock within a test: the late-failure tests start the errors after the switch by sending
# the candidate's pods SIGUSR1 (ReleaseProject.write_late_failure_trigger), which skips their clock a day
# ahead. A timer would race the pre-switch stages, whose duration depends on the machine's load.
errors_after_s = 3600.0
error_rate_after = 0.5
"""

# Every demo process the tests start draws its latency and errors from this seed: tests/conftest.py puts
# it in RELEASEGATE_DEMO_SEED, which the pods of the local target and of tests/kube_cluster.py inherit, and
# tests/verifiers_services.py passes it as --seed. Which request of a pod fails is then the same in every
# run, and whether a check sees errors depends on the number of requests only. With v2-errors' 5% this
# seed draws no failure in a pod's first 13 requests (smoke, two per pod at most, always passes), and over
# any 50 to 10,000 requests after that an error rate between 2% and 9%, in-flight requests included
# (test_demo.py::test_the_demo_seed_of_the_tests_keeps_v2_errors_out_of_smoke_and_within_2_to_9_percent).
DEMO_SEED = 10


def write_test_profiles(folder: Path) -> Path:
    """TEST_PROFILES as `folder`/profiles.toml, for local.profiles."""
    path = folder / "profiles.toml"
    path.write_text(TEST_PROFILES)
    return path


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
    from releasegate.core.processes import pid_alive

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
