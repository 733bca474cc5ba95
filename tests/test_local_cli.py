"""`python -m targets.local up|status|down`, bad input, and no orphan processes after any kind of exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.local_cluster import PROJECT_ROOT, alive, cluster_pids, processes_mentioning, run_module
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "releasegate.toml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run"
    yield path
    run_module("releasegate.targets.local", "--run-dir", str(path), "down")


def test_up_status_down(tmp_path: Path, run_dir: Path) -> None:
    config = write_config(tmp_path, """
        [local]
        replicas = 1
    """)
    cli = ("releasegate.targets.local", "--config", str(config), "--run-dir", str(run_dir))
    up = run_module(*cli, "up", "--version", "v3")
    assert up.returncode == 0, up.stderr
    assert "blue   v3" in up.stdout
    status = run_module(*cli, "status", "--json")
    state = json.loads(status.stdout)
    pids = cluster_pids(state)
    assert state["persistent"] and alive(pids) == pids
    down = run_module("releasegate.targets.local", "--config", str(config), "--run-dir", str(run_dir), "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert alive(pids) == []
    assert run_module("releasegate.targets.local", "--run-dir", str(run_dir), "status").returncode == 1


@pytest.mark.parametrize(
    ("config_body", "profiles_body", "expected"),
    [
        ("[local]\nreplica = 3\n", None, "unknown key 'local.replica'; did you mean 'replicas'?"),
        ("[local\nreplicas = 3\n", None, "not valid TOML"),
        ("[local]\nprofiles = 'profiles.toml'\n", "[versions.v1]\nerror_rate = 1.5\n",
         "local.profiles: .*profiles.toml: versions.v1.error_rate = 1.5 is outside 0..1"),
        ("[local]\nprofiles = 'profiles.toml'\n", "[versions.v1\n", r"local.profiles: .*profiles.toml:1"),
        ("[local]\ninitial_version = 'v1!'\n", None, "not a valid Kubernetes label value"),
    ],
    ids=["unknown-key", "malformed-config", "profile-value", "malformed-profile", "bad-version"],
)
def test_bad_input_is_one_line_exit_4_and_starts_nothing(
        tmp_path: Path, run_dir: Path, config_body: str, profiles_body: str | None, expected: str) -> None:
    config = write_config(tmp_path, config_body)
    if profiles_body is not None:
        (tmp_path / "profiles.toml").write_text(profiles_body)
    result = run_module("releasegate.targets.local", "--config", str(config), "--run-dir", str(run_dir), "up")
    assert result.returncode == 4, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("releasegate: "), result.stderr
    import re

    assert re.search(expected, lines[0]), lines[0]
    assert not (run_dir / "state.json").exists()
    assert processes_mentioning(str(run_dir)) == []


def test_a_taken_service_port_is_exit_4_and_starts_nothing(tmp_path: Path, run_dir: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        config = write_config(tmp_path, f"[local]\nservice_port = {port}\n")
        result = run_module("releasegate.targets.local", "--config", str(config), "--run-dir", str(run_dir), "up")
    assert result.returncode == 4
    assert f"local.service_port: port {port} on 127.0.0.1 is already in use" in result.stderr
    assert result.stderr.count("\n") == 1
    assert processes_mentioning(str(run_dir)) == []


def test_a_missing_prometheus_binary_names_both_fixes(tmp_path: Path, run_dir: Path) -> None:
    config = write_config(tmp_path, "[local]\nprometheus_binary = 'prometheus-not-installed'\n")
    result = run_module("releasegate.targets.local", "--config", str(config), "--run-dir", str(run_dir), "up")
    assert result.returncode == 4
    assert "apt-get install prometheus" in result.stderr and "prometheus.url" in result.stderr


# A process that opens an ephemeral cluster, prints its pids, then ends the way the test asks.
OWNER_SCRIPT = """
import json, os, sys, time
sys.path.insert(0, {root!r})
from tests.local_cluster import local_config, cluster_pids
from releasegate.targets.local.target import LocalTarget
from pathlib import Path
target = LocalTarget.open(local_config(Path({run_dir!r}), replicas=1))
try:
    print(json.dumps(cluster_pids(target.client.state())), flush=True)
    if {how!r} == "exception":
        raise RuntimeError("boom")
    sys.stdin.read()  # wait to be interrupted or killed
finally:
    if {how!r} != "kill":
        target.close()
"""


@pytest.mark.parametrize("how", ["exception", "sigint", "sigkill"])
def test_no_process_outlives_its_ephemeral_cluster(tmp_path: Path, how: str) -> None:
    run_dir = tmp_path / "run"
    script = OWNER_SCRIPT.format(root=str(PROJECT_ROOT), run_dir=str(run_dir), how=how)
    owner = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        assert owner.stdout is not None
        pids = json.loads(owner.stdout.readline())
        assert len(pids) == 3
        if how == "sigint":
            os.kill(owner.pid, signal.SIGINT)
        elif how == "sigkill":
            os.kill(owner.pid, signal.SIGKILL)
        owner.wait(30)
        # SIGKILL gives the owner no chance to clean up: the parent-death signal must do it.
        wait_until(lambda: alive(pids) == [], timeout_s=20, what=f"cluster processes {pids} to exit")
        assert processes_mentioning(str(run_dir)) == []
    finally:
        if owner.poll() is None:
            owner.kill()
