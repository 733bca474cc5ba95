"""Dependency faults, each provoked for real in a whole release: the outcome, the exit code and the message.

    python bench/faults.py [--only SUBSTRING]

Every row is one `pytest --release v2` in a temporary project, with the fault provoked while it runs:
- local target (pods are processes, a real Prometheus): Prometheus killed (SIGKILL) before the analysis, a
  stand-in at the Prometheus URL that is slow or answers HTML, locust killed (SIGKILL) or stopped (SIGSTOP)
  mid-load, the candidate's pod killed during the analysis (once under load, once between two checks), a
  candidate that never becomes ready, and reports on a full 64 KiB tmpfs;
- kubernetes target (tests/fakekube over real HTTP, pods as real processes): 503, 429 with Retry-After,
  answers slower than the request timeout, and 409 conflicts on the API server.
For each: the decision and exit code the run printed, where traffic is afterwards, and the run's `why:` line.
Prints a table; asserts nothing. Needs root for the tmpfs row (skipped otherwise). Takes a few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, emit  # noqa: E402
from tests.kube_cluster import process_cluster  # noqa: E402
from tests.local_cluster import TEST_PROFILES  # noqa: E402
from tests.release_project import BASE_CONFIG  # noqa: E402

INI = "[pytest]\naddopts = -p no:locust -p no:cacheprovider\n"

MINIMAL = {stage: f"""
import httpx

def test_{stage}_sees_the_right_versions(candidate, release):
    served = httpx.get(candidate.url + "/version", timeout=5).headers["X-App-Version"]
    assert served == release.version
""" for stage in ("smoke", "analysis", "post_switch")}

KILL_PROMETHEUS = """
import json, os, signal, time
from pathlib import Path

def test_prometheus_dies(candidate):
    pid = json.loads(Path("run/state.json").read_text())["prometheus_pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except OSError:
            break
        time.sleep(0.05)
"""

SLO_CHECK = """
def test_candidate_success_rate(metrics, candidate):
    metrics.success_rate(version=candidate.version, window_s=30).check("success_rate >= 99%")
"""

# A user's analysis test querying the Prometheus at FAULT_PROMETHEUS_URL (the stand-in) directly.
STAND_IN_CHECK = """
import os
from releasegate.verifiers.prometheus_client import PrometheusClient

def test_candidate_errors(candidate):
    with PrometheusClient(os.environ["FAULT_PROMETHEUS_URL"], timeout_s=2) as prometheus:
        prometheus.query('sum(rate(http_requests_total{status=~"5.."}[1m]))')
"""

LOAD_SIGNALLING_ITSELF = """
from pathlib import Path
from releasegate.verifiers.load import LoadProfile, run_load

LOCUSTFILE = '''
import json, os, signal
from locust import FastHttpUser, constant, task
SENT = []
class Shopper(FastHttpUser):
    wait_time = constant(0.01)
    @task
    def items(self):
        self.client.get("/api/items", name="/api/items")
        live = json.loads(os.environ["RELEASEGATE_LOAD_SETTINGS"])["live_path"]
        if not SENT and os.path.exists(live):
            SENT.append(True)
            os.kill(os.getpid(), signal.{signal})
'''

def test_candidate_under_load(candidate, tmp_path):
    path = tmp_path / "locustfile.py"
    path.write_text(LOCUSTFILE)
    result = run_load(LoadProfile(path, users=2, spawn_rate=2, duration_s=20, min_requests=1), candidate,
                      stall_s=3)
    result.check("error_rate < 1%")
"""

POD_DIES_UNDER_LOAD = """
import json, os, signal, threading, time
from pathlib import Path
from releasegate.verifiers.load import LoadProfile, run_load

LOCUSTFILE = '''
from locust import FastHttpUser, constant, task
class Shopper(FastHttpUser):
    wait_time = constant(0.01)
    @task
    def items(self):
        self.client.get("/api/items", name="/api/items")
'''

def test_candidate_under_load(candidate, tmp_path):
    path = tmp_path / "locustfile.py"
    path.write_text(LOCUSTFILE)
    state = json.loads(Path("run/state.json").read_text())
    [pod] = [p for s in state["slots"].values() if s["version"] == "v2" for p in s["pods"]]
    threading.Timer(2.0, os.kill, (pod["pid"], signal.SIGKILL)).start()
    result = run_load(LoadProfile(path, users=2, spawn_rate=2, duration_s=5, min_requests=50), candidate)
    result.check("error_rate < 1%")
"""

POD_DIES_AND_RECOVERS = """
import json, os, signal, time
from pathlib import Path

def pods():
    state = json.loads(Path("run/state.json").read_text())
    return [p for s in state["slots"].values() if s["version"] == "v2" for p in s["pods"]]

def test_the_candidate_pod_dies_and_comes_back(candidate):
    [pod] = pods()
    os.kill(pod["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (pods()[0]["restarts"] >= 1 and pods()[0]["ready"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
"""


@dataclass
class Row:
    fault: str
    where: str
    outcome: str
    exit_code: str
    traffic: str
    message: str
    seconds: float


@dataclass
class Run:
    exit_code: int
    lines: list[str]
    output: str

    def line(self, prefix: str) -> str:
        return next((line[len(prefix):] for line in self.lines if line.startswith(prefix)), "")

    @property
    def decision(self) -> str:
        first = self.line("releasegate: ")
        if not first:
            return "no decision line"
        for verb, name in (("now serves all traffic", "promoted"), ("was rolled back", "rolled back"),
                           ("inconclusive", "inconclusive"), ("was not promoted", "not promoted")):
            if verb in first:
                return name
        return first

    @property
    def message(self) -> str:
        why = self.line("releasegate: why: ")
        warning = self.line("releasegate: WARNING: ")
        return why or warning or self.line("releasegate: ")


class Project:
    """A release project in a temporary folder, with an optional background local cluster."""

    def __init__(self, suites: dict[str, str], *, config: str | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="releasegate-faults-"))
        (self.path / "pytest.ini").write_text(INI)
        (self.path / "profiles.toml").write_text(TEST_PROFILES)
        (self.path / "releasegate.toml").write_text(BASE_CONFIG if config is None else config)
        for relative, text in suites.items():
            target = self.path / "suites" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text))
        self.cluster = False
        self.mounts: list[Path] = []  # unmounted before the folder is removed

    def local(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "releasegate.targets.local", "--config",
                        str(self.path / "releasegate.toml"), *args], cwd=self.path, check=True,
                       capture_output=True, timeout=120)

    def up(self) -> Project:
        self.local("up")
        self.cluster = True
        return self

    def release(self, version: str = "v2", env: dict[str, str] | None = None) -> Run:
        completed = subprocess.run([sys.executable, "-m", "pytest", "--release", version], cwd=self.path,
                                   capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
        output = completed.stdout + completed.stderr
        lines = [line.strip() for line in output.splitlines() if line.strip().startswith("releasegate: ")]
        return Run(completed.returncode, lines, output)

    def local_traffic(self) -> str:
        state = json.loads((self.path / "run" / "state.json").read_text())
        return ", ".join(f"{state['slots'][slot]['version']} {weight}%" for slot, weight in state["traffic"].items())

    def close(self) -> None:
        if self.cluster:
            with contextlib.suppress(subprocess.SubprocessError):
                self.local("down")
        for mount in self.mounts:
            subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(self.path, ignore_errors=True)


def suites(**overrides: str) -> dict[str, str]:
    chosen = {f"{stage}/test_{stage}.py": text for stage, text in MINIMAL.items()}
    chosen.update({relative.replace("__", "/") + ".py": text for relative, text in overrides.items()})
    return chosen


def local_row(fault: str, where: str, chosen: dict[str, str], *, config: str | None = None, version: str = "v2",
              env: dict[str, str] | None = None, before: Callable[[Project], None] | None = None) -> Row:
    started = time.monotonic()
    project = Project(chosen, config=config)
    try:
        project.up()
        if before is not None:
            before(project)
        run = project.release(version, env)
        return Row(fault, where, run.decision, str(run.exit_code), project.local_traffic(), run.message,
                   time.monotonic() - started)
    finally:
        project.close()


@contextlib.contextmanager
def stand_in(answer: bytes | None) -> Iterator[str]:
    """A loopback server that answers every request with `answer`, or never (None: a Prometheus stuck)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection, contextlib.suppress(OSError):
                connection.recv(65536)
                if answer is None:
                    stopping.wait(30)
                else:
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join(5)
        listener.close()


PROXY_PAGE = b"<html><body>Sign in to the proxy</body></html>"
HTML = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
        + f"Content-Length: {len(PROXY_PAGE)}\r\n\r\n".encode() + PROXY_PAGE)


def prometheus_stand_in(fault: str, answer: bytes | None) -> Row:
    with stand_in(answer) as url:
        return local_row(fault, "local: analysis test queries it",
                         suites(analysis__test_stand_in=STAND_IN_CHECK), env={"FAULT_PROMETHEUS_URL": url})


def locust_signalled(fault: str, signal_name: str) -> Row:
    return local_row(fault, "local: analysis load", suites(
        analysis__test_load=LOAD_SIGNALLING_ITSELF.replace("{signal}", signal_name)))


def short_readiness_deadline(project: Project) -> None:
    """3 s for the candidate, once the cluster is up: v1 itself may need more than that on a busy machine."""
    config = project.path / "releasegate.toml"
    config.write_text(config.read_text().replace("ready_timeout_s = 20", "ready_timeout_s = 3"))


def local_rows() -> list[tuple[str, Callable[[], Row]]]:
    return [
        ("Prometheus down (SIGKILL)", partial(
            local_row, "Prometheus down (SIGKILL)", "local: smoke kills it, analysis queries",
            suites(smoke__test_zz_kill=KILL_PROMETHEUS, analysis__test_slo=SLO_CHECK))),
        ("Prometheus slow", partial(prometheus_stand_in, "Prometheus slow (no answer in 2s)", None)),
        ("Prometheus garbage", partial(prometheus_stand_in, "Prometheus garbage (HTML page)", HTML)),
        ("locust crash", partial(locust_signalled, "locust crash (SIGKILL mid-load)", "SIGKILL")),
        ("locust hang", partial(locust_signalled, "locust hang (SIGSTOP mid-load, stall 3s)", "SIGSTOP")),
        ("candidate pod under load", partial(
            local_row, "candidate pod SIGKILL under load", "local: analysis load",
            suites(analysis__test_load=POD_DIES_UNDER_LOAD))),
        ("candidate pod back before next check", partial(
            local_row, "candidate pod SIGKILL, back before next check", "local: analysis",
            suites(analysis__test_pod_dies=POD_DIES_AND_RECOVERS))),
        ("candidate never ready", partial(
            local_row, "candidate never ready", "local: provision", suites(), before=short_readiness_deadline,
            version="v2-never-ready")),
        ("disk full at report time", disk_full_row),
    ]


def disk_full_row() -> Row:
    def mount_and_fill(project: Project) -> None:
        reports = project.path / "reports"
        reports.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(reports)], check=True,
                       capture_output=True)
        project.mounts.append(reports)
        fd = os.open(reports / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        with contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)

    try:
        return local_row("disk full at report time", "local: reports on 64k tmpfs", suites(),
                         before=mount_and_fill)
    except subprocess.CalledProcessError as exc:
        return Row("disk full at report time", "local: reports on tmpfs", "skipped (mount refused)", "-", "-",
                   str(exc.stderr), 0.0)


def kube_row(fault: str, where: str, rule: dict[str, object], extra: str = "") -> Row:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="releasegate-faults-kube-"))
    profiles = workdir / "profiles.toml"
    profiles.write_text(TEST_PROFILES)
    try:
        with process_cluster(workdir / "cluster", profiles=profiles, namespace="shop", app="demo") as cluster:
            project = Project(suites(), config=cluster.config_toml() + "max_retries = 2\n" + extra)
            try:
                cluster.fake.inject_fault(**rule)  # type: ignore[arg-type]
                run = project.release()
            finally:
                project.close()
            selector = (cluster.fake.get_object("services", "shop", "demo") or {})["spec"]["selector"]["slot"]
            faulted = sum(1 for r in cluster.fake.requests if r.fault)
            return Row(fault, where, run.decision, str(run.exit_code), f"selector {selector}",
                       f"[{faulted} faulted requests] {run.message}", time.monotonic() - started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def kube_rows() -> list[tuple[str, Callable[[], Row]]]:
    # Three in a row: all attempts of one call (1 + max_retries 2), and the API server is well again after.
    service: dict[str, object] = {"method": "PATCH", "path_regex": r"/services/demo$", "times": 3}
    first_patch = "kubernetes: first Service patch"
    return [(fault, partial(kube_row, fault, where, rule, extra)) for fault, where, rule, extra in [
        ("API server 503 storm", first_patch, {**service, "status": 503}, ""),
        ("API server 429, Retry-After 1", first_patch, {**service, "status": 429, "retry_after": 1}, ""),
        ("API server slower than timeout (3s > 1s)", first_patch, {**service, "status": None, "latency_s": 3},
         "request_timeout_s = 1\n"),
        # The green Deployment does not exist yet: provision creates it (POST), and each 409 is re-read.
        ("API server 409 storm", "kubernetes: candidate Deployment",
         {"method": "POST", "path_regex": r"/deployments(\?.*)?$", "status": 409, "times": 10}, ""),
        ("API server 503 brief (2x)", first_patch, {**service, "status": 503, "times": 2}, ""),
    ]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="run only the rows whose fault contains this text")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = parser.parse_args()
    rows: list[Row] = []
    print("| fault | where | outcome | exit | traffic after | message (the run's why: line) | run |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for name, make in [*local_rows(), *kube_rows()]:
        if args.only.lower() not in name.lower():
            continue
        row = make()  # printed at once: a row that took a minute is not lost if a later one breaks
        rows.append(row)
        message = row.message.replace("|", "\\|")
        print(f"| {row.fault} | {row.where} | {row.outcome} | {row.exit_code} | {row.traffic} | {message} | "
              f"{row.seconds:.0f}s |", flush=True)
    if args.json:
        emit("faults", [Figure("faults that ended in a promotion", sum(row.outcome == "promoted" for row in rows),
                               f"of {len(rows)}", note="each fault must fail closed")],
             note=f"rows matching {args.only!r}" if args.only else "every fault")


if __name__ == "__main__":
    main()
