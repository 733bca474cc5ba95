"""The waits a release no longer pays (issue 13) protect its decisions as before.

- Provision leaves the wait for the candidate's first scrape to the first item after the smoke stage:
  smoke runs during it, and no load or analysis starts before it.
- The provision gate looks every 50 ms (was 200 ms) and still starts the analysis only once Prometheus has
  scraped every candidate pod successfully.
- A cluster starts its first pods while Prometheus starts, and says it runs only once Prometheus answers
  (the release's preflight queries it at once). Its process launches Prometheus before importing the rest.
- Modules a run only sometimes needs are not imported when a release starts (numpy, scipy, the cluster's server
  side).
- hypothesis's pytest plugin, which imports hypothesis in its terminal summary, is dropped at the end of a
  release run in which no test used hypothesis, and kept in one that did.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from releasegate.core.config import PrometheusConfig
from releasegate.core.errors import NotReadyError
from releasegate.core.types import MetricsScope
from releasegate.core.waiting import poll_until
from releasegate.plugins.idle_plugins import HYPOTHESIS_PLUGIN, IdlePlugins
from releasegate.plugins.prometheus_gate import LivePrometheusGate
from releasegate.targets.local.client import read_state_file, write_cluster_config
from releasegate.targets.local.cluster import LocalCluster
from releasegate.verifiers.metrics import Metrics
from tests.local_cluster import local_config, processes_mentioning
from tests.release_project import ReleaseProject

APP = "demo"


def test_the_gate_looks_more_often_but_waits_for_every_candidate_pod_to_be_scraped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its 50 ms looks change when the analysis may start, not what it waits for: `up == 1` of every
    candidate pod as Prometheus counts it (a pod it knows but could not scrape is 0); fewer at the deadline is
    NotReadyError, never a start."""
    replicas = 2
    answers = iter([0, 0, 1, 2, 2])
    looks: list[int] = []

    def targets_up(self: Metrics, *, slot: str | None = None, version: str | None = None) -> int:
        assert version == "v2"
        looks.append(next(answers))
        return looks[-1]

    monkeypatch.setattr(Metrics, "targets_up", targets_up)
    scope = MetricsScope(prometheus_url="http://127.0.0.1:9", app=APP)
    LivePrometheusGate(PrometheusConfig(timeout_s=1, discovery_timeout_s=30)).wait_until_scraped(scope, "v2", replicas)
    assert looks == [0, 0, 1, 2]  # looked until the last pod was scraped, then stopped

    monkeypatch.setattr(Metrics, "targets_up", lambda self, **_: 1)
    with pytest.raises(NotReadyError, match=r"scrapes 1/2 candidate pods"):
        LivePrometheusGate(PrometheusConfig(timeout_s=1, discovery_timeout_s=0.2)).wait_until_scraped(
            scope, "v2", replicas)


# A stand-in for the `prometheus` binary: answers /-/ready with 503 until the file "ready" appears beside it.
FAKE_PROMETHEUS = """
import http.server, pathlib, sys
flags = dict(arg.split("=", 1) for arg in sys.argv[1:] if "=" in arg)
host, port = flags["--web.listen-address"].rsplit(":", 1)
ready = pathlib.Path(sys.argv[0]).with_name("ready")

class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if ready.exists() else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer((host, int(port)), Answer).serve_forever()
"""


def test_the_first_pods_start_while_prometheus_starts_and_the_cluster_runs_only_once_it_answers(
        tmp_path: Path) -> None:
    binary = tmp_path / "fake-prometheus"
    binary.write_text(f"#!{sys.executable}\n{FAKE_PROMETHEUS}")
    binary.chmod(0o755)
    config = local_config(tmp_path / "run", prometheus_binary=str(binary), replicas=2,
                          command=[sys.executable, "-c", "import time; time.sleep(60)"])

    async def scenario() -> None:
        cluster = LocalCluster(config, tmp_path / "run", persistent=False)
        starting = asyncio.create_task(cluster.start())
        try:
            async def pods_spawned() -> None:
                pods = cluster.slots["blue"].pods
                while not (pods and all(pod.phase == "Running" for pod in pods)):
                    await asyncio.sleep(0.01)
                    pods = cluster.slots["blue"].pods

            await asyncio.wait_for(pods_spawned(), 10)
            prometheus = cluster.prometheus
            assert prometheus is not None

            async def prometheus_answers_not_ready() -> None:
                while await prometheus._ready_status() != 503:
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(prometheus_answers_not_ready(), 30)
            assert cluster.status == "starting" and not starting.done()  # so the cluster does not run yet
            (tmp_path / "ready").touch()
            await asyncio.wait_for(starting, 30)
            assert cluster.status == "running"
        finally:
            if not starting.done():
                starting.cancel()
            await cluster.shutdown()

    (tmp_path / "run").mkdir()
    asyncio.run(scenario())


def test_starting_a_release_imports_neither_numpy_scipy_nor_the_clusters_server_side() -> None:
    code = ("import sys; import releasegate.plugins.run, releasegate.plugins.collection, "
            "releasegate.targets.local.target; "
            "print(sorted(m for m in ('numpy', 'scipy', 'uvicorn', 'starlette') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]"


@pytest.mark.parametrize(("imported", "kept"), [(False, False), (True, True)])
def test_hypothesis_plugin_is_dropped_at_the_end_only_when_no_test_used_hypothesis(
        monkeypatch: pytest.MonkeyPatch, imported: bool, kept: bool) -> None:
    registered = {HYPOTHESIS_PLUGIN}
    manager = SimpleNamespace(has_plugin=lambda name: name in registered,
                              unregister=lambda name: registered.discard(name))
    if imported:
        monkeypatch.setitem(sys.modules, "hypothesis", SimpleNamespace())
    else:
        monkeypatch.delitem(sys.modules, "hypothesis", raising=False)
    IdlePlugins().pytest_sessionfinish(SimpleNamespace(config=SimpleNamespace(pluginmanager=manager)))  # type: ignore[arg-type]
    assert (HYPOTHESIS_PLUGIN in registered) is kept


# Runs the cluster process as `python -m releasegate.targets.local.daemon` does, and notes, when uvicorn (the
# cluster's server side) is first imported, whether the process has a Prometheus child already.
DAEMON_WITH_IMPORT_SPY = """
import os, pathlib, sys
from releasegate.targets.local.daemon import exit_at_once, main

note, binary = pathlib.Path(sys.argv[1]), sys.argv[2]

def prometheus_children():
    found = []
    for task in pathlib.Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            found += [pid] if binary.encode() in cmdline else []
    return found

class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "uvicorn" and not note.exists():
            note.write_text(f"prometheus children at uvicorn's import: {len(prometheus_children())}")

sys.meta_path.insert(0, Spy())
exit_at_once(main(sys.argv[3:]))
"""


def test_the_cluster_process_launches_prometheus_before_it_imports_its_server_side(tmp_path: Path) -> None:
    """Prometheus's first scrape comes a fixed 5 s after its start: the cluster process launches it first, and
    imports uvicorn, starlette and the rest (about 0.2 s) while it starts. It still runs as before: it says so
    once Prometheus answers, and a SIGTERM stops it and every process it started."""
    binary = tmp_path / "fake-prometheus"
    binary.write_text(f"#!{sys.executable}\n{FAKE_PROMETHEUS}")
    binary.chmod(0o755)
    run_dir, note = tmp_path / "run", tmp_path / "note"
    config = local_config(run_dir, prometheus_binary=str(binary), replicas=1,
                          command=[sys.executable, "-c", "import time; time.sleep(60)"])
    write_cluster_config(config, run_dir)
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON_WITH_IMPORT_SPY, str(note), str(binary),
                               "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert poll_until(lambda: note.exists() or None, timeout_s=30, interval_s=0.02), "uvicorn never imported"
        assert note.read_text() == "prometheus children at uvicorn's import: 1"
        (tmp_path / "ready").touch()
        running = poll_until(lambda: (read_state_file(run_dir) or {}).get("status") == "running" or None,
                             timeout_s=30, interval_s=0.02)
        assert running, "the cluster never said it runs"
    finally:
        daemon.terminate()
        output = daemon.communicate(timeout=30)[0].decode()
    assert daemon.returncode == 0, output
    assert processes_mentioning(str(run_dir)) == [] and processes_mentioning(str(binary)) == []


def test_smoke_runs_while_prometheus_finds_the_candidate_and_the_first_load_waits_for_it(
        project: ReleaseProject) -> None:
    """Provision no longer waits for Prometheus's first scrape of the candidate (on a fresh local cluster,
    about 5 s after its Prometheus started): the smoke stage runs meanwhile, and the first item after it
    waits. So the load meets every candidate pod scraped, as it did after provision, and its JUnit testcase
    and the report's phase parts say how long that wait took."""
    events = project.path / "events.txt"
    project.minimal_suites()
    project.write_suite("conftest.py", f"""
        from releasegate.plugins.prometheus_gate import LivePrometheusGate

        waits = LivePrometheusGate.wait_until_scraped

        def noted(self, scope, version, replicas):
            waits(self, scope, version, replicas)
            with open({str(events)!r}, "a") as out:
                out.write(f"scraped {{version}} x{{replicas}}\\n")

        LivePrometheusGate.wait_until_scraped = noted
    """)
    project.write_suite("smoke/test_smoke_order.py", f"""
        def test_smoke_goes_first(candidate):
            with open({str(events)!r}, "a") as out:
                out.write("smoke\\n")
    """)
    project.write_suite("load/test_load_order.py", f"""
        def test_the_load_meets_the_candidate_scraped(metrics, release):
            with open({str(events)!r}, "a") as out:
                out.write(f"load: {{metrics.targets_up(version=release.version)}} pod(s) scraped\\n")
    """)
    project.start_background_cluster()
    result = project.release("--release", "v2")
    assert result.ret == 0, result.stdout.str()
    assert events.read_text().splitlines() == ["smoke", "scraped v2 x1", "load: 1 pod(s) scraped"]
    junit = project.junit()
    assert "release.provision.first_scrape_s" not in dict(junit.case("provision")["properties"])
    waited = dict(junit.case("test_the_load_meets_the_candidate_scraped")["properties"])
    assert float(waited["release.first_scrape.waited_s"]) >= 0
    report = json.loads((project.path / "reports" / "latest" / "release-report.json").read_text())
    assert set(report["phase_parts_s"]["load"]) == {"first_scrape"}
    assert "first_scrape" not in report["phase_parts_s"].get("provision", {})
