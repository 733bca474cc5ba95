"""`releasegate rollback`: time from the command to all traffic on the previous version. Prints medians.

    python bench/rollback_command.py [--runs 20] [--targets local,kubernetes]

Each run, on a persistent local cluster and on the fake API server (tests/kube_cluster.py: real pod
processes behind a kube-proxy), starts from v2 live on green after `releasegate switch`, with v1 warm on
blue and the lock held by a dead run (a pid of this host that has exited), so the rollback also proves the
holder dead and takes the lock over. Then `python -m releasegate rollback` starts as a subprocess (the time
includes the interpreter and its imports, as a script would see it) while a probe sends GET /version through
the public service, a new connection each time. "to v1" is the time from the command's start to the first
of 5 answers in a row from v1 (every answer after it was v1 too, until the command ended); "command" is the
time until the command exited; "undo alone" the part the command itself reports (lock takeover excluded:
traffic moved and verified on the target), without the interpreter's start-up and imports. No Prometheus
and no suite is involved.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import Figure, emit
from releasegate.core.config import load_config  # the repository root on the path first
from releasegate.core.target import Target
from releasegate.core.types import LockHolder
from tests.local_cluster import TEST_PROFILES, run_module

IN_A_ROW = 5


def dead_holder() -> LockHolder:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return LockHolder("run-killed", "v2", socket.gethostname(), process.pid)


def releasegate(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "releasegate", *argv, "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


class Probe:
    """GET /version through the service, a new connection each time, recording (monotonic time, version)."""

    def __init__(self, service_url: str) -> None:
        self.url = service_url + "/version"
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                served = httpx.get(self.url, timeout=2.0, trust_env=False).headers.get("X-App-Version", "?")
            except httpx.HTTPError as exc:
                served = type(exc).__name__
            self.answers.append((time.monotonic(), served))

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def all_on(self, version: str, since: float) -> float | None:
        """When the answers after `since` turned to `version` for good (the first of IN_A_ROW and every
        later one), or None."""
        after = [(at, served) for at, served in self.answers if at >= since]
        for index, (at, _) in enumerate(after):
            rest = [served for _, served in after[index:]]
            if len(rest) >= IN_A_ROW and all(served == version for served in rest):
                return at
        return None


def measure(target: Target, config: Path, service_url: str,
            runs: int) -> tuple[list[float], list[float], list[float], list[str]]:
    to_previous: list[float] = []
    command: list[float] = []
    undo: list[float] = []
    problems: list[str] = []
    for run in range(runs):
        switched = releasegate(config, "switch", "--to", "green")
        assert switched.returncode == 0, switched.stderr
        target.acquire_lock(dead_holder(), 600)  # a killed run holds the lock
        with Probe(service_url) as probe:
            started = time.monotonic()
            result = releasegate(config, "rollback")
            ended = time.monotonic()
            deadline = ended + 10
            while probe.all_on("v1", started) is None and time.monotonic() < deadline:
                time.sleep(0.01)  # a bench: a few more answers after the command
        if result.returncode != 0 or "taken_over" not in result.stdout:
            problems.append(f"run {run}: exit {result.returncode}: {(result.stderr or result.stdout).strip()[:200]}")
            continue
        on_v1 = probe.all_on("v1", started)
        if on_v1 is None:
            problems.append(f"run {run}: the service never answered v1 {IN_A_ROW} times in a row")
            continue
        to_previous.append(on_v1 - started)
        command.append(ended - started)
        # "rolled back v2 to v1 (slot blue) in 0.07s: ...": the target's own part, without interpreter start-up
        undo.append(float(result.stdout.split(") in ", 1)[1].split("s", 1)[0]))
    return to_previous, command, undo, problems


@contextlib.contextmanager
def local_setup(workdir: Path) -> Iterator[tuple[Target, Path, str]]:
    from releasegate.targets.local.target import LocalTarget

    (workdir / "profiles.toml").write_text(TEST_PROFILES)
    config_file = workdir / "releasegate.toml"
    config_file.write_text(f'[app]\nname = "demo"\n\n[local]\nrun_dir = "{workdir / "run"}"\nreplicas = 2\n'
                           f'profiles = "{workdir / "profiles.toml"}"\nmin_ready_s = 0.2\n')
    up = run_module("releasegate.targets.local", "--config", str(config_file), "up", cwd=workdir)
    assert up.returncode == 0, up.stderr
    target = LocalTarget.open(load_config(config_file, search_dir=workdir), start_if_missing=False)
    try:
        target.deploy("green", "v2")
        target.wait_ready("green", 30)
        yield target, config_file, target.client.state()["service_url"]
    finally:
        target.close()
        run_module("releasegate.targets.local", "--config", str(config_file), "down", cwd=workdir)


@contextlib.contextmanager
def kube_setup(workdir: Path) -> Iterator[tuple[Target, Path, str]]:
    from releasegate.targets.kubernetes.target import KubernetesTarget
    from tests.kube_cluster import process_cluster

    (workdir / "profiles.toml").write_text(TEST_PROFILES)
    with process_cluster(workdir / "cluster", profiles=workdir / "profiles.toml", replicas=2) as cluster:
        config_file = workdir / "releasegate.toml"
        config_file.write_text(cluster.config_toml())
        target = KubernetesTarget.open(load_config(config_file, search_dir=workdir))
        try:
            target.deploy("green", "v2")
            target.wait_ready("green", 60)
            yield target, config_file, cluster.proxy.urls["demo"]
        finally:
            target.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--targets", default="local,kubernetes")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = parser.parse_args()
    figures: list[Figure] = []
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| target          | runs | to v1: median | min   | max    | command exits: median | undo alone: median "
          "| problems |")
    print("|-----------------|------|---------------|-------|--------|-----------------------|--------------------"
          "|----------|")
    failed = 0
    for name in args.targets.split(","):
        setup = local_setup if name == "local" else kube_setup
        with tempfile.TemporaryDirectory(prefix="rg-rollback-") as workdir, setup(Path(workdir)) as (
                target, config, service_url):
            to_previous, command, undo, problems = measure(target, config, service_url, args.runs)
        failed += len(problems)
        label = "local" if name == "local" else "fake API server"
        if to_previous:
            print(f"| {label:<15} | {len(to_previous):>4} | {statistics.median(to_previous):12.2f}s | "
                  f"{min(to_previous):4.2f}s | {max(to_previous):5.2f}s | {statistics.median(command):20.2f}s | "
                  f"{statistics.median(undo):17.2f}s | {len(problems):>8} |", flush=True)
            figures += [Figure(f"{label}: command start to all traffic on v1, median", round(
                                   statistics.median(to_previous), 3), "s", note=f"{len(to_previous)} runs"),
                        Figure(f"{label}: the undo alone, median", round(statistics.median(undo), 3), "s")]
        figures.append(Figure(f"{label}: runs with a problem", len(problems), "runs"))
        for problem in problems:
            print(f"  {label}: {problem}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        emit("rollback_command", figures, note="a dead run holds the lock")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
