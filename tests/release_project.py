"""A release project in a pytester directory: config, suites, an optional background cluster, JUnit parsing."""

from __future__ import annotations

import os
import shutil
import textwrap
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from releasegate.plugins.junit_format import case_properties
from releasegate.targets.local.client import LocalClusterClient, read_state_file
from tests.local_cluster import PROJECT_ROOT, TEST_PROFILES, run_module
from tests.report_formats import assert_property_names, assert_valid_junit, assert_valid_report

# The example suites releasegate ships (suites/ of this repository), by name: a suite a user adds to
# suites/ is theirs, and the framework's own tests never run it.
SHIPPED_SUITES = (
    "smoke/test_smoke.py",
    "load/test_load.py",
    "load/locustfile.py",
    "analysis/test_slo.py",
    "analysis/test_compare.py",
    "analysis/test_canary.py",
    "post_switch/test_service.py",
)


def copy_shipped_suites(destination: Path) -> None:
    """Copy the shipped example suites, and nothing else from suites/, into `destination`."""
    for relative in SHIPPED_SUITES:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / "suites" / relative, target)


BASE_CONFIG = """
[release]
keep_warm_s = 0.5
lock_ttl_s = 120

[local]
run_dir = "run"
replicas = 1
profiles = "profiles.toml"
ready_timeout_s = 20
"""


@dataclass
class JUnit:
    """The parts of reports/latest/junit.xml the tests look at."""

    suite_properties: dict[str, str]
    cases: list[dict[str, Any]]

    @classmethod
    def read(cls, path: Path) -> JUnit:
        # Every run's reports a test reads follow their published formats (tests/report_formats.py).
        assert_valid_junit(path)
        if (path.parent / "release-report.json").exists():
            assert_valid_report(path.parent / "release-report.json")
        root = ElementTree.parse(path).getroot()
        suite = root.find("testsuite")
        assert suite is not None
        properties = {p.get("name", ""): p.get("value", "") for p in suite.findall("properties/property")}
        assert_property_names(list(properties), "the testsuite")
        cases = []
        for case in suite.findall("testcase"):
            outcome = "passed"
            message = text = ""
            for tag in ("failure", "error", "skipped"):
                element = case.find(tag)
                if element is not None:
                    # junitxml cuts long messages; the element's text holds the whole report.
                    outcome, message, text = tag, element.get("message", ""), element.text or ""
            recorded = case_properties(case)  # from its <system-out> (plugins/junit_format.py)
            assert_property_names([name for name, _ in recorded], f"testcase {case.get('name')}")
            cases.append({
                "id": f"{case.get('classname')}::{case.get('name')}", "name": case.get("name"),
                "outcome": outcome, "message": message, "text": text, "properties": recorded,
            })
        return cls(properties, cases)

    def case(self, name: str) -> dict[str, Any]:
        found = [case for case in self.cases if case["name"] == name]
        assert found, f"no testcase {name} in {[c['name'] for c in self.cases]}"
        return found[0]

    def order(self) -> list[str]:
        return [case["name"] for case in self.cases]


class ReleaseProject:
    def __init__(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pytester = pytester
        self.path = pytester.path
        # locust's own pytest plugin is installed too; it must not load into these runs.
        pytester.makeini("[pytest]\naddopts = -p no:locust -p no:cacheprovider\n")
        (self.path / "profiles.toml").write_text(TEST_PROFILES)
        self.write_config("")
        self.background = False

    def write_config(self, extra: str) -> None:
        (self.path / "releasegate.toml").write_text(BASE_CONFIG + textwrap.dedent(extra))

    def write_suite(self, relative: str, source: str) -> None:
        path = self.path / "suites" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))

    def minimal_suites(self) -> None:
        """One passing test in each required stage and in post_switch."""
        for stage in ("smoke", "analysis", "post_switch"):
            self.write_suite(f"{stage}/test_{stage}.py", f"""
                import httpx

                def test_{stage}_sees_the_right_versions(candidate, release):
                    served = httpx.get(candidate.url + "/version", timeout=5).headers["X-App-Version"]
                    assert served == release.version
            """)

    def write_late_failure_trigger(self, pods_parent: int, version: str = "v2-late-failure") -> None:
        """A post_switch test, first of its stage, that starts the candidate's late failure after the switch.

        It sends SIGUSR1 (the demo skips its clock past errors_after_s) to every demo process of `version`
        whose parent is `pods_parent` (the local cluster's process, or the test process that runs the pods of
        tests/kube_cluster.py), then waits until each of them has answered an injected 500 through the
        service. So the failure begins after the switch whatever the stages before it took, and the shipped
        post_switch load meets it from its first request.
        """
        self.write_suite("post_switch/test_late_failure_begins.py", f"""
            import os
            import signal
            import time

            import httpx


            def candidate_pods():
                found = []
                for entry in filter(str.isdigit, os.listdir("/proc")):
                    try:
                        with open(f"/proc/{{entry}}/cmdline", "rb") as cmdline:
                            argv = cmdline.read().decode(errors="replace").split("\\0")
                        with open(f"/proc/{{entry}}/stat") as stat:
                            parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                    except (OSError, ValueError, IndexError):
                        continue
                    if (parent == {pods_parent} and "releasegate.demo" in argv and "--version" in argv
                            and argv[argv.index("--version") + 1:][:1] == [{version!r}]):
                        found.append(int(entry))
                return found


            def test_the_late_failure_begins_after_the_switch(service):
                pods = candidate_pods()
                assert pods, "no demo process of {version} is a child of process {pods_parent}"
                for pid in pods:
                    os.kill(pid, signal.SIGUSR1)
                failed_on = set()
                deadline = time.monotonic() + 30
                with httpx.Client(base_url=service.url, timeout=5, trust_env=False) as client:
                    while len(failed_on) < len(pods):
                        assert time.monotonic() < deadline, f"only {{sorted(failed_on)}} failed within 30s"
                        response = client.get("/api/items")
                        if response.status_code == 500:
                            failed_on.add(response.headers["X-Pod"])
        """)

    # -- a cluster that outlives the run, so the tests can look at the target afterwards -------------
    def start_background_cluster(self, *up_args: str) -> None:
        # From the project's folder, as a user would: the run directory resolves from the project root.
        result = run_module("releasegate.targets.local", "--config", str(self.path / "releasegate.toml"), "up",
                            *up_args, cwd=self.path)
        assert result.returncode == 0, result.stderr
        self.background = True

    def stop_background_cluster(self) -> None:
        if self.background:
            run_module("releasegate.targets.local", "--config", str(self.path / "releasegate.toml"), "down",
                       cwd=self.path)
            self.background = False

    def cluster_state(self) -> dict[str, Any]:
        state = read_state_file(self.path / "run")
        assert state is not None, "no local cluster runs"
        return state

    def client(self) -> LocalClusterClient:
        client = LocalClusterClient.find_running(self.path / "run")
        assert client is not None
        return client

    # -- running --------------------------------------------------------------------------------------
    def release(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess(*args, timeout=300)

    def junit(self) -> JUnit:
        return JUnit.read(self.path / "reports" / "latest" / "junit.xml")

    def no_cluster_left(self) -> bool:
        state = read_state_file(self.path / "run")
        return state is None or not os.path.exists(f"/proc/{state['pid']}")
