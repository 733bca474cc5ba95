"""Crash recovery: a `pytest --release` runner SIGKILLed in a phase, then the next run for the app.

The runner is a real subprocess. It is killed once the target's recorded release state shows the phase
(polled with a deadline) and, for phases that pass in a blink, once it waits at a gate: the project's
conftest holds the run after an item (`hold-after-<item>`) or inside a stage's test (`hold-<stage>`) until
the test process lets go or kills it. Then the same release runs again and must: roll the dead release back
first and say so (JUnit `release.recovered.summary`), take the dead runner's lock at once (its pid is gone), finish
with the live version expected, and leave nothing behind (no candidate pods, no lock, no dead run's child).

The scenario code is shared with bench/crash_recovery.py, which runs every phase on both targets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from releasegate.core.types import Phase
from tests.local_cluster import TEST_PROFILES, run_module
from tests.release_project import JUnit
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

GATES = '''
import os, pathlib, time

import httpx
import pytest

HERE = pathlib.Path(__file__).parent


def hold(name):
    """Write reached-<name>; while hold-<name> exists, wait (the outer test kills the run meanwhile)."""
    (HERE / f"reached-{name}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 300
    while (HERE / f"hold-{name}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def pytest_runtest_teardown(item):
    hold(f"after-{item.name}")
'''

STAGE_TEST = '''
from conftest import HERE, hold
import httpx


def test_{stage}_sees_the_candidate(candidate, release):
    hold("{stage}")
    assert not (HERE / "fail-{stage}").exists(), "made to fail: the release rolls back"
    served = httpx.get(candidate.url + "/version", timeout=5, trust_env=False).headers["X-App-Version"]
    assert served == release.version
'''

LOCAL_CONFIG = """
[release]
keep_warm_s = {keep_warm_s}
lock_ttl_s = 120

[local]
run_dir = "run"
replicas = 1
profiles = "profiles.toml"
ready_timeout_s = 20
min_ready_s = {min_ready_s}
"""


@dataclass(frozen=True)
class Kill:
    """Where to kill the runner: the phase recorded on the target, and the gate it waits at (if any)."""

    name: str
    phase: Phase
    gate: str | None = None  # "after-<item>" or "<stage>"; None: caught by polling the phase alone
    keep_warm_s: float = 0.5
    min_ready_s: float = 0.5
    candidate_deployed: bool = False  # also wait until the target runs the candidate's workload
    load: bool = False  # the project has a load stage, whose locust run says when it started (gate "load")
    fail_stage: str | None = None  # this stage's test fails in the killed run (not in the rerun): a rollback


BLUE_GREEN_KILLS = [
    Kill("preflight", Phase.STARTED, gate="after-preflight"),
    Kill("provision", Phase.PROVISIONING, min_ready_s=3.0, candidate_deployed=True),
    Kill("smoke", Phase.VERIFYING, gate="smoke"),
    Kill("load", Phase.VERIFYING, gate="load", load=True),
    Kill("analysis", Phase.VERIFYING, gate="analysis"),
    Kill("switch", Phase.SWITCHED, gate="after-switch"),
    Kill("post_switch", Phase.SWITCHED, gate="post_switch"),
    Kill("finalize", Phase.FINALIZING, keep_warm_s=30.0),
    # During the rollback of a release whose post_switch failed: traffic goes back, then the candidate's pods
    # drain. No gate can hold it half-way, so the phase is polled (every 10 ms; the rollback takes ~0.3 s).
    Kill("rollback", Phase.ROLLING_BACK, fail_stage="post_switch"),
]
CANARY_KILLS = [Kill("shift", Phase.SHIFTING, gate="after-shift[50%]")]


def kill_named(name: str) -> Kill:
    return next(kill for kill in BLUE_GREEN_KILLS + CANARY_KILLS if kill.name == name)


LOCUSTFILE = '''
import pathlib

from locust import HttpUser, constant, events, task

PROJECT = pathlib.Path(__file__).resolve().parents[2]


@events.test_start.add_listener
def _started(environment, **_):
    (PROJECT / "reached-load").write_text("locust runs")  # the gate "load": the runner is killed now


class Shopper(HttpUser):
    wait_time = constant(0.05)

    @task
    def items(self):
        self.client.get("/api/items")
'''

LOAD_TEST = '''
import pathlib


def test_load_runs_until_the_runner_dies(load):
    # The run to be killed loads long (the gate's hold file exists while it runs); the rerun briefly.
    held = (pathlib.Path(__file__).resolve().parents[2] / "hold-load").exists()
    duration_s = 60 if held else 2
    load.run("locustfile.py", users=2, duration_s=duration_s, max_duration_s=duration_s, min_requests=10)
'''
CANARY_STEPS = "\n[canary]\nsteps = [50, 100]\nstep_window_s = 0.5\n"


class CrashProject:
    """A release project on disk (config, suites with gates) and the runs made in it."""

    def __init__(self, path: Path, config_toml: str, *, with_load: bool = False) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        (path / "pytest.ini").write_text("[pytest]\naddopts = -p no:locust -p no:cacheprovider\n")
        (path / "profiles.toml").write_text(TEST_PROFILES)
        (path / "releasegate.toml").write_text(config_toml)
        (path / "conftest.py").write_text(GATES)
        for stage in ("smoke", "analysis", "post_switch"):
            folder = path / "suites" / stage
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"test_{stage}.py").write_text(textwrap.dedent(STAGE_TEST.format(stage=stage)))
        if with_load:
            (path / "suites" / "load").mkdir(parents=True, exist_ok=True)
            (path / "suites" / "load" / "locustfile.py").write_text(LOCUSTFILE)
            (path / "suites" / "load" / "test_load.py").write_text(LOAD_TEST)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=self.path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def run(self, *args: str, timeout: float = 300) -> tuple[int, str]:
        process = self.start(*args)
        try:
            output, _ = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
        return process.returncode, output

    def junit(self) -> JUnit:
        return JUnit.read(self.path / "reports" / "latest" / "junit.xml")

    def preflight_properties(self) -> dict[str, str]:
        return dict(self.junit().case("preflight")["properties"])

    def kill_at(self, kill: Kill, read_phase: Callable[[], str | None], *args: str,
                candidate_deployed: Callable[[], bool] = lambda: True) -> int:
        """Start a release, SIGKILL it (the runner alone, as a dead CI runner) in `kill`'s phase; its pid."""
        if kill.gate is not None:
            (self.path / f"hold-{kill.gate}").write_text("hold")
        if kill.fail_stage is not None:
            (self.path / f"fail-{kill.fail_stage}").write_text("fail")
        runner = self.start(*args)
        try:
            def reached() -> bool:
                if runner.poll() is not None:
                    raise AssertionError(f"the run ended (exit {runner.returncode}) before phase {kill.phase.value}:\n"
                                         + (runner.stdout.read() if runner.stdout else ""))
                at_gate = kill.gate is None or (self.path / f"reached-{kill.gate}").exists()
                deployed = not kill.candidate_deployed or candidate_deployed()
                return at_gate and read_phase() == kill.phase.value and deployed

            wait_until(reached, timeout_s=120, what=f"the run to reach {kill.name} ({kill.phase.value})",
                       interval_s=0.01)
            os.kill(runner.pid, signal.SIGKILL)
            runner.wait(30)
        finally:
            if runner.poll() is None:
                runner.kill()
            runner.communicate()
            for made in (f"hold-{kill.gate}", f"fail-{kill.fail_stage}"):
                with contextlib.suppress(FileNotFoundError):
                    (self.path / made).unlink()
        return runner.pid


def demo_processes(version: str, parent: int | None = None) -> list[int]:
    """Pids of demo processes serving `version` (children of `parent` when given)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if "releasegate.demo" not in argv or "--version" not in argv:
            continue
        if argv[argv.index("--version") + 1:][:1] != [version]:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            continue
        if parent is None or int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry))
    return found


def surviving_loads(project: Path, grace_s: float = 15.0) -> list[int]:
    """Locust runs of the project's locustfile still alive `grace_s` after its runner died: a locust is in a
    session of its own, so it must end by itself once the pipe its runner held closes (verifiers.load)."""
    def loads() -> list[int]:
        found = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if " -m locust " in argv.replace("\0", " ") and str(project) in argv and state != "Z":
                    found.append(int(entry))
        return found

    with contextlib.suppress(TimeoutError, AssertionError):
        wait_until(lambda: not loads(), timeout_s=grace_s, what="the killed run's locust to end")
    return loads()


def processes_in_session(session: int) -> list[int]:
    """Live processes of the runner's session (it starts one of its own): what a dead runner left running."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                found.append(int(entry))
    return found


# -- the local target: a persistent cluster ---------------------------------------------------------

@dataclass
class LocalOutcome:
    exit_code: int
    output: str
    live_version: str | None
    leftovers: list[str]
    recovered: str
    took_over: str


class LocalCrash:
    """One SIGKILL-then-rerun on a persistent local cluster in `path`."""

    def __init__(self, path: Path, kill: Kill, *, strategy: str = "blue-green") -> None:
        self.kill = kill
        self.strategy = strategy
        config = LOCAL_CONFIG.format(keep_warm_s=kill.keep_warm_s, min_ready_s=kill.min_ready_s)
        if strategy == "canary":
            config += CANARY_STEPS
        self.project = CrashProject(path, config, with_load=kill.load)

    def __enter__(self) -> LocalCrash:
        result = run_module("releasegate.targets.local", "up", cwd=self.project.path)
        assert result.returncode == 0, result.stderr
        return self

    def __exit__(self, *exc: object) -> None:
        run_module("releasegate.targets.local", "down", cwd=self.project.path)

    def state(self) -> dict[str, Any]:
        from releasegate.targets.local.client import read_state_file

        state = read_state_file(self.project.path / "run")
        assert state is not None, "the local cluster is gone"
        return state

    def phase(self) -> str | None:
        return (self.state().get("release_state") or {}).get("phase")

    def crash_and_rerun(self, *rerun_args: str) -> LocalOutcome:
        args = ["--release", "v2", "--release-strategy", self.strategy]
        runner = self.project.kill_at(self.kill, self.phase, *args,
                                      candidate_deployed=lambda: bool(self.state()["slots"]["green"]["pods"]))
        killed = self.state()
        assert killed["lease"] is not None and killed["lease"]["pid"] == runner, "the killed run held no lock"
        left_by_runner = processes_in_session(runner)
        loads_left = surviving_loads(self.project.path)
        code, output = self.project.run(*args, *rerun_args)
        state = self.state()
        live = state["live_slot"]
        leftovers = [f"pid {pid} of the killed run's session" for pid in left_by_runner]
        leftovers += [f"locust pid {pid} of the killed run" for pid in loads_left]
        for slot, slot_state in state["slots"].items():
            if slot != live and slot_state["pods"]:
                leftovers.append(f"{len(slot_state['pods'])} pod(s) in {slot} ({slot_state['version']})")
        if state["lease"] is not None:
            leftovers.append(f"lock held by {state['lease']['holder']}")
        cluster_pid = state["pid"]
        # A pod the rerun scaled down ends in the background (a scale-down answers once it takes no traffic).
        wait_until(lambda: not self.state()["terminating"], timeout_s=30, what="retired pods to end")
        pods = sum(len(s["pods"]) for s in state["slots"].values())
        stray = [pid for version in ("v1", "v2") for pid in demo_processes(version, cluster_pid)]
        if len(stray) != pods:
            leftovers.append(f"{len(stray)} demo processes for {pods} pods")
        properties = self.project.preflight_properties() if (self.project.path / "reports/latest").exists() else {}
        live_version = state["slots"][live]["version"] if live else None
        return LocalOutcome(code, output, live_version, leftovers, properties.get("release.recovered.summary", ""),
                            properties.get("release.lock.taken_over", ""))


def test_a_rerun_after_sigkill_rolls_back_first_and_releases_on_the_local_target(tmp_path: Path) -> None:
    kill = kill_named("switch")  # right after the switch: users on the candidate (bench/crash_recovery.py: all)
    with LocalCrash(tmp_path / "project", kill) as crash:
        outcome = crash.crash_and_rerun()
    assert outcome.exit_code == 0, outcome.output
    assert outcome.recovered.startswith("unfinished release v2 (run "), outcome.recovered
    assert f"stopped at phase {kill.phase.value}) rolled back first: traffic on v1 (slot blue)" in outcome.recovered
    assert f"releasegate: recovered: {outcome.recovered}" in outcome.output  # the one line on the terminal
    assert outcome.took_over.endswith("is gone"), outcome.took_over  # at once: the dead runner's pid is gone
    assert outcome.live_version == "v2"
    assert outcome.leftovers == []


def test_resume_continues_a_release_killed_before_users_saw_it(tmp_path: Path) -> None:
    with LocalCrash(tmp_path / "project", kill_named("analysis")) as crash:
        outcome = crash.crash_and_rerun("--release-resume")
        resumed = crash.project.preflight_properties().get("release.resumed", "")
    assert outcome.exit_code == 0, outcome.output
    assert resumed.startswith("resuming release v2 (run ") and "stopped at phase verifying" in resumed
    assert outcome.recovered == "" and outcome.live_version == "v2" and outcome.leftovers == []


def test_resume_is_refused_once_users_reached_the_candidate(tmp_path: Path) -> None:
    with LocalCrash(tmp_path / "project", kill_named("post_switch")) as crash:
        crash.project.kill_at(crash.kill, crash.phase, "--release", "v2")
        code, output = crash.project.run("--release", "v2", "--release-resume")
        state = crash.state()
    assert code == 4, output
    assert "--release-resume: run " in output and "stopped at phase switched, after users could reach" in output
    # Refused before any change: traffic still on the candidate the dead run switched to, the lock given back.
    assert state["traffic"] == {"green": 100} and state["lease"] is None
    assert state["release_state"]["phase"] == "switched"


# -- the fake API server ------------------------------------------------------------------------------

@dataclass
class KubeOutcome:
    exit_code: int
    output: str
    live_version: str | None
    leftovers: list[str]
    recovered: str
    took_over: str


@contextlib.contextmanager
def kube_crash(workdir: Path, kill: Kill, *, strategy: str = "blue-green") -> Iterator[tuple[Any, CrashProject]]:
    """A fake API server with v1 live (blue-green: on blue; canary: charts/canary-app's layout, two stable
    replicas so that a 50% step is one canary pod beside one stable pod) and a project that releases on it."""
    from tests.kube_cluster import process_cluster

    profiles = workdir / "profiles.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    profiles.write_text(TEST_PROFILES)
    canary = strategy == "canary"
    with process_cluster(workdir / "cluster", profiles=profiles, namespace="shop", app="demo",
                         replicas=2 if canary else 1, layout="canary" if canary else "bluegreen") as cluster:
        config = cluster.config_toml().replace("keep_warm_s = 0.5", f"keep_warm_s = {kill.keep_warm_s}")
        config = config.replace("min_ready_s = 2", f"min_ready_s = {kill.min_ready_s}")
        yield cluster, CrashProject(workdir / "project", config + (CANARY_STEPS if canary else ""), with_load=kill.load)


def kube_crash_and_rerun(cluster: Any, project: CrashProject, kill: Kill, *,
                         strategy: str = "blue-green") -> KubeOutcome:
    def phase() -> str | None:
        service = cluster.fake.get_object("services", "shop", "demo") or {}
        return ((service.get("metadata") or {}).get("annotations") or {}).get("releasegate.io/phase")

    args = ["--release", "v2", "--release-strategy", strategy]
    candidate = "demo-canary" if strategy == "canary" else "demo-green"
    runner = project.kill_at(kill, phase, *args, candidate_deployed=lambda: cluster.fake.get_object(
        "deployments", "shop", candidate) is not None)
    left_by_runner = processes_in_session(runner)
    loads_left = surviving_loads(project.path)
    code, output = project.run(*args)
    leftovers = [f"pid {pid} of the killed run's session" for pid in left_by_runner]
    leftovers += [f"locust pid {pid} of the killed run" for pid in loads_left]
    service = cluster.fake.get_object("services", "shop", "demo")
    slots = ("stable", "canary") if strategy == "canary" else ("blue", "green")
    live_slot = service["spec"]["selector"].get("slot") or "stable"  # the canary chart selects the whole app
    live = cluster.fake.get_object("deployments", "shop", f"demo-{live_slot}")
    live_version = live["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
    for slot in slots:
        deployment = cluster.fake.get_object("deployments", "shop", f"demo-{slot}")
        if slot != live_slot and deployment is not None and deployment["spec"].get("replicas"):
            leftovers.append(f"deployment demo-{slot} with {deployment['spec']['replicas']} replicas")
    lease = cluster.fake.get_object("leases", "shop", "demo-release")
    if lease is not None and lease["spec"].get("holderIdentity"):
        leftovers.append(f"lease held by {lease['spec']['holderIdentity']}")
    running = [pod for pod in cluster.runtime.pods() if pod["alive"]]
    if len(running) != int(live["spec"]["replicas"]):
        leftovers.append(f"{len(running)} pod processes for {live['spec']['replicas']} replicas")
    properties = project.preflight_properties() if (project.path / "reports/latest").exists() else {}
    return KubeOutcome(code, output, live_version, leftovers, properties.get("release.recovered.summary", ""),
                       properties.get("release.lock.taken_over", ""))


def test_a_rerun_after_sigkill_rolls_back_first_and_releases_on_the_fake_api_server(tmp_path: Path) -> None:
    kill = kill_named("post_switch")  # post_switch: users on the candidate, the old slot warm
    with kube_crash(tmp_path, kill) as (cluster, project):
        outcome = kube_crash_and_rerun(cluster, project, kill)
    assert outcome.exit_code == 0, outcome.output
    assert "stopped at phase switched) rolled back first: traffic on v1 (slot blue)" in outcome.recovered
    assert "candidate slot green (v2) removed" in outcome.recovered
    assert outcome.took_over.endswith("is gone"), outcome.took_over
    assert outcome.live_version == "v2" and outcome.leftovers == []

