"""Warm spare pods of the local cluster (targets/local/spares.py, demo_spare.py), with real processes and HTTP.

A pod started from a spare must be the process a cold `python -m releasegate.demo` would have been: its
answers, its log, its command line, its priority and its exit; and spares must never be pods, never be used
for a user's command, never delay a pod and never outlive the cluster.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from releasegate.core.errors import NotReadyError
from releasegate.core.processes import can_leave_idle_scheduling
from releasegate.targets.local.cluster import demo_command
from releasegate.targets.local.target import LocalTarget
from tests.local_cluster import alive, cluster_pids, local_config, processes_mentioning, write_test_profiles
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

SPARE_MODULE = "releasegate.targets.local.demo_spare"


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_profiles(tmp_path_factory.mktemp("profiles"))


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, profiles: Path) -> Iterator[LocalTarget]:
    target = LocalTarget.open(local_config(tmp_path_factory.mktemp("run"), profiles=profiles, replicas=1,
                                           min_ready_s=0))
    try:
        yield target
    finally:
        target.close()


def cmdline(pid: int) -> list[str]:
    """The process's arguments as /proc shows them (a spare pads its own with NULs: dropped here)."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [arg.decode() for arg in raw.split(b"\0") if arg]


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def warm_spares(target: LocalTarget, count: int = 1) -> list[int]:
    """Wait until `count` spares said they imported the demo; their pids."""
    def ready() -> list[int]:
        spares = target.client.state()["spares"]
        return [s["pid"] for s in spares] if len(spares) == count and all(s["ready"] for s in spares) else []

    return wait_until(ready, timeout_s=60, what=f"{count} warm spare(s)")


def deploy_green(target: LocalTarget, version: str = "v2") -> dict[str, Any]:
    target.deploy("green", version)
    target.wait_ready("green", 30)
    [pod] = target.client.state()["slots"]["green"]["pods"]
    return dict(pod)


def test_a_pod_from_a_spare_is_the_demo_pod_a_cold_start_would_be(target: LocalTarget) -> None:
    [spare] = warm_spares(target)
    assert cmdline(spare) == [sys.executable, "-m", SPARE_MODULE]  # an idle spare says what it is
    pod = deploy_green(target)
    assert pod["started_warm"] and pod["pid"] == spare
    state = target.client.state()
    assert spare not in [s["pid"] for s in state["spares"]]  # a pod now, no longer a spare

    answer = httpx.get(f"{state['previews']['green']}/version", timeout=5)
    assert (answer.json()["version"], answer.json()["pod"]) == ("v2", pod["name"])
    assert (answer.headers["x-app-version"], answer.headers["x-pod"]) == ("v2", pod["name"])
    # Its command line, environment, priority and working directory are a cold pod's.
    command = [part.format(host="127.0.0.1", port=pod["port"], version="v2", pod=pod["name"])
               for part in demo_command()]
    assert cmdline(pod["pid"]) == command
    assert Path(f"/proc/{pod['pid']}/comm").read_text().strip() == Path(sys.executable).name[:15]
    [cold] = state["slots"]["blue"]["pods"]  # the initial pods start cold: spares come after them
    assert not cold["started_warm"]
    assert environ(pod["pid"]) == {**environ(cold["pid"]), "RELEASEGATE_POD": pod["name"]}
    assert os.readlink(f"/proc/{pod['pid']}/cwd") == os.readlink(f"/proc/{state['pid']}/cwd")
    assert os.sched_getscheduler(pod["pid"]) == os.SCHED_OTHER
    assert os.readlink(f"/proc/{pod['pid']}/fd/0") == os.devnull
    # It logs to its own file: the demo's start line, after the cluster's mark naming the spare.
    log = Path(pod["log"]).read_text()
    assert f"(warm spare pid {spare})" in log
    assert f"demo v2 (pod {pod['name']}): profile " in log and f"serving http://127.0.0.1:{pod['port']}\n" in log

    # SIGTERM (not from the cluster, so the cluster records the exit): killed by the signal after a graceful
    # shutdown, as uvicorn does in a cold pod; the restart is cold (spares are for a deploy's first start).
    os.kill(pod["pid"], signal.SIGTERM)

    def restarted() -> dict[str, Any]:
        [now] = target.client.state()["slots"]["green"]["pods"]
        return dict(now) if now["restarts"] == 1 and now["ready"] else {}

    again = wait_until(restarted, timeout_s=60, what="the pod to restart")
    assert again["last_exit_code"] == -signal.SIGTERM
    assert not again["started_warm"]
    assert not alive([spare])


def test_the_spares_are_replenished_after_a_deploy_and_are_never_pods(target: LocalTarget) -> None:
    first = warm_spares(target)
    deploy_green(target)
    second = warm_spares(target)
    assert set(first).isdisjoint(second)  # new processes: the old spare is a pod now
    state = target.client.state()
    pod_pids = [pod["pid"] for slot in state["slots"].values() for pod in slot["pods"]]
    assert set(second).isdisjoint(pod_pids)
    for spare in second:
        assert cmdline(spare) == [sys.executable, "-m", SPARE_MODULE]
        if can_leave_idle_scheduling():  # imports on CPU time nothing else wants
            assert os.sched_getscheduler(spare) == os.SCHED_IDLE


def test_a_spare_killed_before_the_hand_over_leads_to_a_cold_start(target: LocalTarget) -> None:
    spares = warm_spares(target)
    for pid in spares:
        os.kill(pid, signal.SIGKILL)
    pod = deploy_green(target)  # whether the cluster noticed the death yet or not: a cold, ready pod
    assert not pod["started_warm"] and pod["pid"] not in spares
    answer = httpx.get(f"{target.client.state()['previews']['green']}/version", timeout=5)
    assert answer.json()["pod"] == pod["name"]
    assert not alive(spares)  # reaped, not left as zombies
    warm_spares(target)  # and replaced


def test_a_crash_looping_version_from_a_spare_still_shows_as_crashloopbackoff(target: LocalTarget) -> None:
    warm_spares(target)
    target.deploy("green", "v2-crashloop")
    [pod] = target.client.state()["slots"]["green"]["pods"]
    log = Path(pod["log"])
    # The log, not the state: by the time the state is read the pod may have crashed and restarted (cold).
    first_start = wait_until(lambda: log.read_text().partition("\n")[0] if log.exists() else "", timeout_s=30,
                             what="the pod's first start")
    assert "(warm spare pid " in first_start
    with pytest.raises(NotReadyError, match=r"exited with code 1 .*CrashLoopBackOff.*simulated crash"):
        # minReadySeconds as a release has it (this module's clusters have none): a pod that answers /readyz for
        # the 0.3 s before its crash is not available.
        target.client.wait_slot_ready("green", 60, min_ready_s=1.0)


def test_a_user_command_never_uses_a_spare(tmp_path: Path, profiles: Path) -> None:
    target = LocalTarget.open(local_config(tmp_path, profiles=profiles, replicas=1, min_ready_s=0,
                                           command=demo_command()))
    try:
        pod = deploy_green(target)
        assert not pod["started_warm"]
        assert target.client.state()["spares"] == []
        assert not [line for line in processes_mentioning(SPARE_MODULE) if str(tmp_path) in line]
        assert not (tmp_path / "logs" / "spares.log").exists()  # not one was ever started
    finally:
        target.close()


def test_closing_the_cluster_leaves_no_spare_behind(tmp_path: Path, profiles: Path) -> None:
    target = LocalTarget.open(local_config(tmp_path, profiles=profiles, replicas=2, min_ready_s=0))
    try:
        spares = warm_spares(target, 2)
        pids = cluster_pids(target.client.state()) + spares
        assert alive(pids) == pids
    finally:
        target.close()
    assert alive(pids) == []


def test_the_status_output_counts_the_spares_apart_from_the_pods(target: LocalTarget) -> None:
    from releasegate.targets.local.__main__ import _describe

    warm_spares(target)
    assert "  spares      1 warm, 0 importing (for the next deploy's pods)" in _describe(target.client.state())


def test_a_spare_is_handed_out_only_once_warm_and_only_for_the_environment_it_started_with(tmp_path: Path) -> None:
    from releasegate.core.waiting import apoll_until
    from releasegate.targets.local.spares import DemoSpares

    env = {**os.environ, "RELEASEGATE_PROFILES": "/nowhere.toml"}

    async def scenario() -> None:
        spares = DemoSpares(1, env, tmp_path / "spares.log")
        await spares.replenish()
        try:
            # Its watcher has not run yet, so it cannot have said it imported: the pod starts cold, at once.
            assert spares.take({**env, "RELEASEGATE_POD": "p"}) is None

            async def warm() -> bool | None:
                return True if spares.idle and spares.idle[0].ready else None

            assert await apoll_until(warm, timeout_s=60, interval_s=0.05)
            # Started under other settings than the pod's (what acts at start or at import): not used.
            assert spares.take({**env, "PYTHONHASHSEED": "1", "RELEASEGATE_POD": "p"}) is None
            spare = spares.take({**env, "RELEASEGATE_POD": "p"})  # the pod's own variable does not count
            assert spare is not None and spares.idle == []
            assert spare.process.stdin is not None
            spare.process.stdin.close()  # let go unused: it exits on EOF, as when the cluster dies
            assert await spare.process.wait() == 0
        finally:
            await spares.close()

    asyncio.run(scenario())
