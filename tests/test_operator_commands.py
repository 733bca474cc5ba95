"""`releasegate status|rollback|switch|promote|abort` on a real local cluster and on the fake API server.

The commands run in-process through `main(argv)` (the console script's function), and once as
`python -m releasegate` to prove the entry point. A dead release is staged on the target as a crash leaves
it: a recorded phase, a candidate, and a lock whose holder is a process of this host that has exited.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from releasegate.commands.cli import main
from releasegate.core.recovery import LockInfo, holder_is_dead, resume_refusal
from releasegate.core.types import LockHolder, Phase, ReleaseState, TrafficSplit
from releasegate.targets.local.target import LocalTarget
from tests.local_cluster import TEST_PROFILES, local_config

HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and was reaped): a runner killed with SIGKILL."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def release_state(phase: Phase, *, live_slot: str, live_version: str, run_id: str = "run-dead") -> ReleaseState:
    return ReleaseState(run_id=run_id, version="v2", previous_version="v1", live_slot=live_slot,
                        live_version=live_version, candidate_slot="green", phase=phase, updated_at=time.time())


# -- the proofs of death and the resume rule, without a target ----------------------------------------

def test_a_holder_is_dead_when_its_pid_is_gone_on_this_host_or_it_missed_two_renewals() -> None:
    fresh = LockInfo(LockHolder("run-a", "v2", HOST, 4242), renewed_at=1000.0, ttl_s=900.0)
    assert holder_is_dead(fresh, now=1001.0, this_host=HOST, alive=lambda pid: False) == (
        f"its process 4242 on {HOST} is gone")
    assert holder_is_dead(fresh, now=1001.0, this_host=HOST, alive=lambda pid: True) is None
    elsewhere = LockInfo(LockHolder("run-a", "v2", "build-7", 4242), renewed_at=1000.0, ttl_s=900.0)
    assert holder_is_dead(elsewhere, now=1001.0, this_host=HOST, alive=lambda pid: False) is None  # not our pid
    # Renewed every ttl/3 = 300 s: silent for 599 s is one missed renewal, 600 s two.
    assert holder_is_dead(elsewhere, now=1599.0, this_host=HOST) is None
    assert holder_is_dead(elsewhere, now=1600.0, this_host=HOST) == (
        "it has not renewed the lock for 600s (2 renew periods of 300s)")


@pytest.mark.parametrize(("phase", "safe"), [(Phase.STARTED, True), (Phase.PROVISIONING, True),
                                             (Phase.VERIFYING, True), (Phase.SHIFTING, False),
                                             (Phase.SWITCHED, False), (Phase.FINALIZING, False),
                                             (Phase.ROLLING_BACK, False)])
def test_resume_is_safe_only_before_users_reached_the_candidate(phase: Phase, safe: bool) -> None:
    state = release_state(phase, live_slot="blue", live_version="v1")
    refusal = resume_refusal(state, "v2", exposed_at_provision=False)
    assert (refusal is None) is safe, refusal
    assert resume_refusal(state, "v3", exposed_at_provision=False) == (
        f"--release-resume: the unfinished release on the target is v2 (run run-dead, stopped at phase "
        f"{phase.value}), not v3; resume with --release v2, or run without --release-resume to roll it back first")
    # A canary Rollout gives users the candidate at provision: only a run killed before that resumes.
    assert (resume_refusal(state, "v2", exposed_at_provision=True) is None) is (phase == Phase.STARTED)


# -- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["bogus"], "releasegate: argument command: invalid choice: 'bogus'"),
    (["status", "--target", "mars"], "releasegate: argument --target: invalid choice: 'mars'"),
    (["rollback", "--config", "missing.toml"], "releasegate: config file missing.toml does not exist"),
    (["status", "--run-dir", "nowhere"], "releasegate: no local cluster runs in "),
])
def test_bad_input_is_one_line_and_exit_4(argv: list[str], message: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message) and captured.err.count("\n") == 1, captured.err


# -- the local target -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalTarget, Path]]:
    """A local cluster (v1 on blue) and a config file naming its run directory, for the commands."""
    folder = tmp_path_factory.mktemp("operator")
    (folder / "profiles.toml").write_text(TEST_PROFILES)
    config_file = folder / "releasegate.toml"
    config_file.write_text(f'[local]\nrun_dir = "{folder / "run"}"\nprofiles = "{folder / "profiles.toml"}"\n'
                           "replicas = 1\nready_timeout_s = 20\nmin_ready_s = 0.2\n")
    target = LocalTarget.open(local_config(folder / "run", profiles=folder / "profiles.toml", replicas=1,
                                           min_ready_s=0.2))
    try:
        yield target, config_file
    finally:
        target.close()


@pytest.fixture
def local(cluster: tuple[LocalTarget, Path]) -> tuple[LocalTarget, Path]:
    """Each test starts from v1 live on blue, nothing on green, the lock free, nothing unfinished."""
    target, config_file = cluster
    lock = target.read_lock()
    if lock is not None:
        target.release_lock(lock.holder)
    target.set_traffic(TrafficSplit.all_to("blue"))
    target.remove("green")
    target.record_release_state(release_state(Phase.ROLLED_BACK, live_slot="blue", live_version="v1",
                                              run_id="run-before"))
    return target, config_file


def stage_dead_release(target: LocalTarget, phase: Phase, *, pid: int | None = None) -> LockHolder:
    """What a runner SIGKILLed in `phase` leaves: v2 on green (with traffic once switched), its lock, its state."""
    target.deploy("green", "v2")
    target.wait_ready("green", 20)
    switched = phase in (Phase.SWITCHED, Phase.FINALIZING)
    if switched:
        target.set_traffic(TrafficSplit.all_to("green"))
    holder = LockHolder("run-dead", "v2", HOST, pid if pid is not None else dead_pid())
    target.acquire_lock(holder, 600)
    target.record_release_state(release_state(phase, live_slot="green" if switched else "blue",
                                              live_version="v2" if switched else "v1"))
    return holder


def command(config_file: Path, *argv: str) -> list[str]:
    return [*argv, "--config", str(config_file)]


@pytest.mark.slow
def test_status_shows_live_version_weights_the_unfinished_release_and_the_lock(
        local: tuple[LocalTarget, Path], capsys: pytest.CaptureFixture[str]) -> None:
    target, config_file = local
    holder = stage_dead_release(target, Phase.SWITCHED)
    assert main(command(config_file, "status")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "  live     v2 (slot green); traffic green 100%"
    assert lines[2:4] == ["  blue     v1  1/1 ready", "  green    v2  1/1 ready"]
    assert lines[4] == ("  release  v2 (run run-dead, previous v1) at phase switched: UNFINISHED: the next release "
                        "rolls it back first; `releasegate rollback` does it now")
    assert lines[5].startswith(f"  lock     held by run-dead (version v2, host {HOST}, pid {holder.pid}) until ")
    assert lines[5].endswith(f"; holder dead: its process {holder.pid} on {HOST} is gone")
    assert main(command(config_file, "status", "--json")) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["traffic"] == {"green": 100} and found["release"]["unfinished"] is True
    assert found["lock"]["run_id"] == "run-dead" and found["lock"]["dead"].endswith("is gone")


@pytest.mark.slow
@pytest.mark.parametrize("phase", [Phase.VERIFYING, Phase.SWITCHED])
def test_rollback_undoes_a_dead_release_while_its_lock_is_held(
        local: tuple[LocalTarget, Path], capsys: pytest.CaptureFixture[str], phase: Phase) -> None:
    target, config_file = local
    stage_dead_release(target, phase)
    assert main(command(config_file, "rollback")) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"unfinished release v2 (run run-dead, stopped at phase {phase.value}) rolled back: "
                          "traffic on v1 (slot blue); "), out
    assert "candidate slot green (v2) removed" in out
    assert "release.lock.taken_over: run run-dead (version v2, " in out and "is gone" in out
    live = target.live_state()
    assert live.traffic.weights == {"blue": 100} and live.versions["green"] is None
    assert target.read_lock() is None
    recorded = target.read_release_state()
    assert recorded is not None and recorded.phase is Phase.ROLLED_BACK and recorded.live_version == "v1"


@pytest.mark.slow
def test_a_live_holder_refuses_the_command_unless_forced(local: tuple[LocalTarget, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    target, config_file = local
    stage_dead_release(target, Phase.VERIFYING, pid=os.getpid())  # this process: alive, so no proof of death
    assert main(command(config_file, "abort")) == 4
    err = capsys.readouterr().err
    assert err.startswith("releasegate: another release of demo is in progress: lock held by run-dead (version v2, ")
    assert err.rstrip().endswith("or pass --force to override it (that release then stops at its next lock renewal)")
    assert target.live_state().versions["green"] == "v2"  # nothing changed
    assert main(command(config_file, "abort", "--force")) == 0
    out = capsys.readouterr().out
    assert out.startswith("unfinished release v2 (run run-dead, stopped at phase verifying) aborted: ")
    assert "--force: released the lock of run run-dead (version v2, " in out
    recorded = target.read_release_state()
    assert recorded is not None and recorded.phase is Phase.ABORTED
    assert target.read_lock() is None and target.live_state().versions["green"] is None


@pytest.mark.slow
def test_switch_then_rollback_goes_back_and_keeps_the_newer_slot_warm(local: tuple[LocalTarget, Path],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    target, config_file = local
    assert main(command(config_file, "switch")) == 4  # green runs nothing yet
    assert "slot green of demo runs nothing with 0/0 ready replicas" in capsys.readouterr().err
    target.deploy("green", "v2")
    target.wait_ready("green", 20)
    assert main(command(config_file, "switch", "--to", "purple")) == 4
    assert "--to 'purple' is not a slot of demo; use one of: blue, green" in capsys.readouterr().err
    assert main(command(config_file, "switch")) == 0
    assert capsys.readouterr().out.startswith("switched demo to v2 (slot green) in ")
    assert target.live_state().traffic.weights == {"green": 100}
    assert main(command(config_file, "rollback")) == 0
    assert capsys.readouterr().out.startswith("rolled back v2 to v1 (slot blue) in ")
    live = target.live_state()
    assert live.traffic.weights == {"blue": 100} and live.versions["green"] == "v2"
    assert main(command(config_file, "rollback")) == 0
    assert capsys.readouterr().out.startswith("nothing to roll back: v1 (slot blue) serves all traffic")


@pytest.mark.slow
def test_promote_finishes_a_dead_release_forward(local: tuple[LocalTarget, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    target, config_file = local
    assert main(command(config_file, "promote")) == 4
    assert "nothing to promote: no unfinished release with a candidate" in capsys.readouterr().err
    stage_dead_release(target, Phase.VERIFYING)
    assert main(command(config_file, "promote")) == 0
    assert capsys.readouterr().out.startswith("promoted v2 by hand (run run-dead stopped at phase verifying, ")
    recorded = target.read_release_state()
    assert recorded is not None and recorded.phase is Phase.PROMOTED
    assert target.live_state().traffic.weights == {"green": 100} and target.read_lock() is None
    assert main(command(config_file, "abort")) == 0
    assert capsys.readouterr().out.startswith("nothing to abort: no unfinished release")


@pytest.mark.slow
def test_python_dash_m_releasegate_is_the_same_command(local: tuple[LocalTarget, Path]) -> None:
    _, config_file = local
    result = subprocess.run([sys.executable, "-m", "releasegate", "status", "--config", str(config_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "  live     v1 (slot blue); traffic blue 100%" in result.stdout.splitlines()


# -- the fake API server ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_rollback_on_the_fake_api_server_takes_over_a_dead_lease(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from releasegate.core.config import parse_config
    from releasegate.targets.kubernetes.target import KubernetesTarget
    from tests.kube_cluster import process_cluster

    (tmp_path / "profiles.toml").write_text(TEST_PROFILES)
    with process_cluster(tmp_path / "cluster", profiles=tmp_path / "profiles.toml", replicas=1) as cluster:
        config_file = tmp_path / "releasegate.toml"
        config_file.write_text(cluster.config_toml())
        import tomllib

        config = parse_config(tomllib.loads(config_file.read_text()), source="test", base_dir=tmp_path)
        target = KubernetesTarget.open(config)
        try:
            target.deploy("green", "v2")
            target.wait_ready("green", 60)
            target.promote("green", "v2")
            holder = LockHolder("run-dead", "v2", HOST, dead_pid())
            target.acquire_lock(holder, 600)
            target.record_release_state(release_state(Phase.SWITCHED, live_slot="green", live_version="v2"))
            assert main(command(config_file, "rollback")) == 0
            out = capsys.readouterr().out
            assert out.startswith("unfinished release v2 (run run-dead, stopped at phase switched) rolled back: "
                                  "traffic on v1 (slot blue); "), out
            assert cluster.fake.get_object("services", "shop", "demo")["spec"]["selector"]["slot"] == "blue"
            assert cluster.fake.get_object("deployments", "shop", "demo-green") is None
            lease = cluster.fake.get_object("leases", "shop", "demo-release")
            assert lease is not None and not lease["spec"].get("holderIdentity")
        finally:
            target.close()
