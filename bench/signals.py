"""SIGINT and SIGTERM in every phase of a release, on the local target and on the fake API server.

    python bench/signals.py [--targets local,kubernetes] [--phases load,switch] [--signals SIGINT,SIGTERM]

For each target x phase x signal: `pytest --release v2` in a session of its own (as a CI job runs), held in
the phase (tests/test_signals.py's conftest: a verifying stage before its test, an action after its change,
the rollback of a failed release before its cleanup), or caught in it (the load stage while locust runs,
finalize once its 30 s keep-warm started in the ledger), the signal sent to the whole process group,
then the outcome read from the target and the reports: exit code, the version the service answers with,
what is left (candidate pods or objects, the lock, processes of the run), the interrupted item in JUnit and
the rollback's row. One persistent local cluster
and one fake API server (tests/kube_cluster.py, pods are real processes) serve all runs: every run must
leave them as it found them (v1 live on blue), or the next one would say so. Prints the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, emit  # noqa: E402
from tests.kube_cluster import ProcessCluster, process_cluster  # noqa: E402
from tests.local_cluster import PROJECT_ROOT, TEST_PROFILES, run_module  # noqa: E402
from tests.release_project import BASE_CONFIG, JUnit  # noqa: E402
from tests.test_signals import HOLD_CONFTEST, finish, held, locust_running, send, start_release  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

PHASES = ["preflight", "provision", "smoke", "load", "analysis", "switch", "post_switch", "finalize", "rollback"]
SIGNALS = ["SIGINT", "SIGTERM"]

VERIFY = """
import httpx

def test_{stage}_sees_the_right_versions(candidate, release):
    served = httpx.get(candidate.url + "/version", timeout=5).headers["X-App-Version"]
    assert served == release.version
"""
FAILING = """
def test_the_candidate_fails_its_analysis(candidate):
    assert False, "p(95) 412ms > 300ms over 1,843 requests (candidate v2)"
"""
VARS = """
[vars]
load_users = 5
load_duration_s = 4
load_max_duration_s = 30
load_min_requests = 50
# Loose on purpose: the bench measures the interrupt, not the candidate; on a busy machine a strict
# latency SLO fails the load stage and the release rolls back before it reaches the phase under test.
slos = ["p(95) < 5000ms", "error_rate < 2%"]
"""


@dataclass
class Row:
    target: str
    phase: str
    signal: str
    code: int
    live: str
    leftovers: str
    interrupted: str
    rollback: str
    decision: str
    seconds: float


class Project:
    """A release project in a folder: the version-check suites, the shipped load test, the hold conftest."""

    def __init__(self, path: Path, config: str) -> None:
        self.path = path
        (path / "pytest.ini").write_text("[pytest]\naddopts = -p no:locust -p no:cacheprovider\n")
        (path / "conftest.py").write_text(HOLD_CONFTEST)
        (path / "profiles.toml").write_text(TEST_PROFILES)
        for stage in ("smoke", "analysis", "post_switch"):
            (path / "suites" / stage).mkdir(parents=True, exist_ok=True)
            (path / "suites" / stage / f"test_{stage}.py").write_text(VERIFY.format(stage=stage))
        (path / "suites" / "load").mkdir(parents=True, exist_ok=True)
        for name in ("test_load.py", "locustfile.py"):
            shutil.copyfile(PROJECT_ROOT / "suites" / "load" / name, path / "suites" / "load" / name)
        self.config = config

    def prepare(self, phase: str) -> None:
        failing = self.path / "suites" / "analysis" / "test_fails.py"
        failing.unlink(missing_ok=True)
        if phase == "rollback":
            failing.write_text(FAILING)
        config = self.config
        if phase == "finalize":  # a keep-warm long enough to be interrupted in
            assert "keep_warm_s = 0.5" in config
            config = config.replace("keep_warm_s = 0.5", "keep_warm_s = 30")
        (self.path / "releasegate.toml").write_text(config + VARS)
        for path in self.path.glob("held-*"):
            path.unlink()


def run_one(project: Project, target: str, phase: str, sig: str, service_url: str,
            leftovers: Callable[[], list[str]]) -> Row:
    project.prepare(phase)
    started = time.monotonic()
    natural = phase in ("load", "finalize")  # long enough to be caught in the act: no hold
    earlier_runs = set((project.path / ".releasegate" / "runs").glob("*"))
    process = start_release(project.path, "--release", "v2", hold=() if natural else (phase,))
    try:
        if phase == "load":
            wait_until(lambda: locust_running(project.path), timeout_s=180, what="locust")
        elif phase == "finalize":
            wait_until(lambda: stage_running(project.path, "finalize", earlier_runs), timeout_s=180,
                       what="the keep-warm")
        else:
            wait_until(held(project.path, phase).exists, timeout_s=180, what=f"the {phase}")
        send(process, signal.Signals[sig], group=True)
    finally:
        run = finish(process, project.path)
    live = httpx.get(service_url + "/version", timeout=5, trust_env=False).headers.get("X-App-Version", "?")
    left = leftovers() + [f"process: {line[:60]}" for line in run.leftover_processes()]
    junit = JUnit.read(project.path / "reports" / "latest" / "junit.xml")
    suite = ElementTree.parse(project.path / "reports" / "latest" / "junit.xml").getroot()[0]
    errors = [case for case in junit.cases if case["outcome"] == "error"]
    counted = f"({suite.get('errors')} error)"
    interrupted = f"{errors[0]['name']} {counted}" if errors else f"none {counted}"
    if not all(case["name"] for case in junit.cases):
        interrupted += ", NAMELESS TESTCASE"
    rollback = junit.case("rollback")["outcome"]
    return Row(target, phase, sig, run.code, live, ", ".join(left) or "none", interrupted, rollback,
               junit.suite_properties.get("release.decision", "?"), time.monotonic() - started)


def stage_running(path: Path, stage: str, earlier_runs: set[Path]) -> bool:
    """An item of `stage` started and has not finished, in this run's ledger (a run folder that is new since
    `earlier_runs`): .releasegate/runs/<run>/items/<index>.start without its <index>.json."""
    for run in set((path / ".releasegate" / "runs").glob("*")) - earlier_runs:
        for start in (run / "items").glob("*.start"):
            try:
                if json.loads(start.read_text())["stage"] == stage and not start.with_suffix(".json").exists():
                    return True
            except (OSError, ValueError, KeyError):
                continue
    return False


def run_safely(project: Project, target: str, phase: str, sig: str, service_url: str,
               leftovers: Callable[[], list[str]]) -> Row:
    """One run; a run that goes wrong is a row that says so, and the table goes on."""
    started = time.monotonic()
    try:
        return run_one(project, target, phase, sig, service_url, leftovers)
    except Exception as exc:
        return Row(target, phase, sig, -1, "?", f"BENCH ERROR: {exc}"[:80], "?", "?", "?", time.monotonic() - started)


def local_rows(workdir: Path, phases: list[str], signals: list[str]) -> list[Row]:
    path = workdir / "local"
    path.mkdir()
    project = Project(path, BASE_CONFIG)
    project.prepare("smoke")
    up = run_module("releasegate.targets.local", "--config", str(path / "releasegate.toml"), "up", cwd=path)
    assert up.returncode == 0, up.stderr
    from releasegate.targets.local.client import read_state_file

    def state() -> dict[str, object]:
        found = read_state_file(path / "run")
        assert found is not None
        return found

    def leftovers() -> list[str]:
        current = state()
        left = []
        slots = current["slots"]
        assert isinstance(slots, dict)
        if slots["green"]["pods"]:
            left.append(f"{len(slots['green']['pods'])} candidate pod(s)")
        if current["traffic"] != {"blue": 100}:
            left.append(f"traffic {current['traffic']}")
        if current["lease"] is not None:
            left.append("lock held")
        return left

    rows = []
    try:
        service_url = str(state()["service_url"])
        for phase in phases:
            for sig in signals:
                rows.append(run_safely(project, "local", phase, sig, service_url, leftovers))
                print(format_row(rows[-1]), flush=True)
    finally:
        project.prepare("smoke")  # a config `down` can read, whatever the last run wrote
        run_module("releasegate.targets.local", "--config", str(path / "releasegate.toml"), "down", cwd=path)
    return rows


def kube_rows(workdir: Path, phases: list[str], signals: list[str]) -> list[Row]:
    path = workdir / "kube"
    (workdir / "cluster").mkdir()
    (workdir / "cluster" / "profiles.toml").write_text(TEST_PROFILES)
    path.mkdir()
    rows = []
    with process_cluster(workdir / "cluster", profiles=workdir / "cluster" / "profiles.toml", namespace="shop",
                         app="demo") as cluster:
        project = Project(path, cluster.config_toml())

        def leftovers() -> list[str]:
            return kube_leftovers(cluster)

        for phase in phases:
            for sig in signals:
                rows.append(run_safely(project, "kubernetes", phase, sig, cluster.proxy.urls["demo"], leftovers))
                print(format_row(rows[-1]), flush=True)
    return rows


def kube_leftovers(cluster: ProcessCluster) -> list[str]:
    left = []
    if cluster.fake.get_object("deployments", "shop", "demo-green") is not None:
        left.append("Deployment demo-green")
    service = cluster.fake.get_object("services", "shop", "demo")
    if service is None or service["spec"]["selector"].get("slot") != "blue":
        left.append(f"Service selector {service and service['spec']['selector']}")
    lease = cluster.fake.get_object("leases", "shop", "demo-release")
    if lease is not None and lease["spec"].get("holderIdentity"):
        left.append("Lease held")
    try:  # a deleted Deployment's pods stop shortly after: poll, with a deadline
        wait_until(lambda: not [p for p in cluster.runtime.pods() if p["alive"] and p["version"] != "v1"],
                   timeout_s=30, what="candidate pods to stop")
    except AssertionError:
        left.append("candidate pod process(es)")
    return left


HEADER = (f"{'target':<10} {'phase':<11} {'signal':<7} {'exit':>4} {'live':<4} {'decision':<12} "
          f"{'interrupted item (JUnit errors)':<48} {'rollback':<8} {'left over':<10} {'s':>5}")


def format_row(row: Row) -> str:
    return (f"{row.target:<10} {row.phase:<11} {row.signal:<7} {row.code:>4} {row.live:<4} {row.decision:<12} "
            f"{row.interrupted[:48]:<48} {row.rollback:<8} {row.leftovers:<10} {row.seconds:>5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", default="local,kubernetes")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--signals", default=",".join(SIGNALS))
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = parser.parse_args()
    phases, signals = args.phases.split(","), args.signals.split(",")
    rows: list[Row] = []
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if "local" in args.targets:
            rows += local_rows(Path(tmp), phases, signals)
        if "kubernetes" in args.targets:
            rows += kube_rows(Path(tmp), phases, signals)
    good = [r for r in rows if r.code == 2 and r.live == "v1" and r.leftovers == "none"]
    print(f"\n{len(good)}/{len(rows)} runs: exit 2, v1 serves, nothing left over")
    print(HEADER)
    for row in rows:
        print(format_row(row))
    if args.json:
        emit("signals", [Figure("runs not as expected", len(rows) - len(good), f"of {len(rows)}",
                                note="exit 2, v1 serves, nothing left over")],
             note=f"targets {args.targets}; phases {args.phases}; signals {args.signals}")


if __name__ == "__main__":
    main()
