"""Dependency faults in whole releases on the local target: never promoted, one clear line, nothing half-switched.

Faults that only a whole run shows: Prometheus dying before the analysis or while it should find the
candidate, a candidate pod dying in the middle of the analysis, and a disk that is full when the reports
are written (after the decision).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.release_project import ReleaseProject

pytestmark = pytest.mark.slow


# A smoke test that stops the local cluster's real Prometheus (SIGKILL: no goodbye), as a crash would.
KILLS_PROMETHEUS = """
import json
import os
import signal
import time
from pathlib import Path


def test_prometheus_dies(candidate):
    state = json.loads(Path("run/state.json").read_text())
    pid = state["prometheus_pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:  # reaped by its parent, the cluster; until then a zombie
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except OSError:
            break
        time.sleep(0.05)
"""

ASKS_PROMETHEUS = """
def test_candidate_success_rate(metrics, candidate):
    metrics.success_rate(version=candidate.version, window_s=30).check("success_rate >= 99%")
"""


# Where Prometheus dies, and which testcase then reports it (the first one to need Prometheus). In the smoke
# stage: while Prometheus should find the candidate, so the first item after the smoke stage, which waits
# for that, errors. First in the analysis stage: after that wait, so the query itself fails.
PROMETHEUS_DIES = [
    ("smoke/test_zz_kill_prometheus.py", "test_analysis_sees_the_right_versions", "error"),
    ("analysis/test_aa_kill_prometheus.py", "test_candidate_success_rate", "failure"),
]


@pytest.mark.parametrize(("killer", "reporting_case", "outcome"), PROMETHEUS_DIES)
def test_prometheus_down_before_the_analysis_rolls_back_with_one_line(
        project: ReleaseProject, killer: str, reporting_case: str, outcome: str) -> None:
    project.minimal_suites()
    project.write_suite(killer, KILLS_PROMETHEUS)
    project.write_suite("analysis/test_slo.py", ASKS_PROMETHEUS)
    project.start_background_cluster()
    result = project.release("--release", "v2")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*releasegate: v2 was rolled back (previous: v1); exit code 1*"])
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "rolled-back"
    case = junit.case(reporting_case)
    assert case["outcome"] == outcome
    assert "Prometheus at http://127.0.0.1:" in case["message"]
    assert "is unreachable (connection refused or host unknown); check that it runs" in case["message"]
    assert junit.case("switch")["outcome"] == "skipped"
    result.stdout.fnmatch_lines(["*releasegate: why: analysis failed: Prometheus at http://127.0.0.1:* is "
                                 "unreachable (connection refused or host unknown); check that it runs*"])
    state = project.cluster_state()
    assert state["traffic"] == {"blue": 100}
    assert state["slots"]["green"]["pods"] == []


# The analysis test kills the candidate's only pod and waits until the kubelet-like supervisor has brought
# it back and it is ready again: the analysis itself then passes. A candidate that died during its
# verification must still not be promoted.
KILLS_THE_CANDIDATE_POD = """
import json
import os
import signal
import time
from pathlib import Path

import httpx


def candidate_pods():
    state = json.loads(Path("run/state.json").read_text())
    return [pod for slot in state["slots"].values() if slot["version"] == "v2" for pod in slot["pods"]]


def test_the_candidate_pod_dies_and_comes_back(candidate):
    [pod] = candidate_pods()
    os.kill(pod["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, "the candidate pod was not restarted within 30 s"
        [now] = candidate_pods()
        if now["restarts"] >= 1 and now["ready"]:
            break
        time.sleep(0.1)
    assert httpx.get(candidate.url + "/version", timeout=5).status_code == 200
"""


def test_a_candidate_pod_dying_mid_analysis_is_never_promoted(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.write_suite("analysis/test_pod_dies.py", KILLS_THE_CANDIDATE_POD)
    project.start_background_cluster()
    result = project.release("--release", "v2")
    assert result.ret != 0, result.stdout.str()
    assert project.junit().suite_properties["release.decision"] != "promoted"
    assert project.cluster_state()["traffic"] == {"blue": 100}
    result.stdout.fnmatch_lines(["*releasegate: why: switch failed: TargetError: candidate v2 restarted during its "
                                 "verification (*restarted 1 time(s)), so traffic stays where it is*"])
    assert project.cluster_state()["slots"]["green"]["pods"] == []


def mount_tiny_tmpfs(where: Path) -> None:
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a tmpfs mount, which this machine refuses: {mounted.stderr.strip()}")


def fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC: full
    finally:
        os.close(fd)


def test_a_full_disk_at_report_time_keeps_the_decision_and_its_exit_code(project: ReleaseProject) -> None:
    project.minimal_suites()
    reports = project.path / "reports"
    mount_tiny_tmpfs(reports)
    try:
        project.start_background_cluster()  # so the test can look at the traffic afterwards
        fill(reports)
        result = project.release("--release", "v2")
        out = result.stdout.str()
        # The decision was made before the reports: it reaches the terminal, and the exit code is its own.
        assert result.ret == 0, out + result.stderr.str()
        result.stdout.fnmatch_lines([
            "*releasegate: v2 now serves all traffic (previous: v1); exit code 0*",
            "releasegate: WARNING: could not write release-report.md (No space left on device), release-report.html "
            "(No space left on device), junit.xml (No space left on device) in */reports/*; the decision and exit "
            "code above stand: free space there and keep this output",
        ])
        assert "Traceback" not in out + result.stderr.str() and "INTERNALERROR" not in out
        assert not (reports / "latest").exists()  # `latest` never names a run without its reports
        run_dirs = [p for p in reports.iterdir() if p.is_dir()]
        assert len(run_dirs) == 1
        # No half-written report: the JSON report is whole or absent (the atomic write removed its temp file).
        assert not [p for p in run_dirs[0].iterdir() if p.name.endswith(".tmp")]
        assert project.cluster_state()["traffic"] == {"green": 100}
    finally:
        subprocess.run(["umount", str(reports)], check=False)
