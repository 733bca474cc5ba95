"""targets/kind with fake `kind`, `docker`, `helm` and `kubectl` executables, and the fake API server.

kind and a Docker engine cannot run here, so each tool is a small script first (and alone) on PATH that
appends its argv to calls.jsonl and answers from scenario.json. `kind get kubeconfig` prints a kubeconfig
of tests/fakekube, seeded with the layout the chart installs, so the returned target is a real
KubernetesTarget talking HTTP to an API server.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from releasegate.core.config import Config, parse_config
from releasegate.core.errors import ConfigError, TargetError
from releasegate.targets.kind.target import (
    DEFAULT_BUILD_CONTEXT,
    DEFAULT_CHART,
    DEFAULT_DOCKERFILE,
    KindTarget,
    find_tools,
    open_kind_target,
)
from releasegate.targets.kubernetes.target import KubernetesTarget

TOOLS = ("kind", "docker", "helm", "kubectl")
REAL_DOCKER = shutil.which("docker")  # looked up before any test puts the fakes alone on PATH

FAKE_TOOL = '''#!{python}
# A stand-in for `{tool}`: record argv, answer from scenario.json by the longest matching command prefix.
import json, pathlib, sys
root = pathlib.Path({root!r})
argv = [{tool!r}, *sys.argv[1:]]
with open(root / "calls.jsonl", "a", encoding="utf-8") as log:
    log.write(json.dumps(argv) + "\\n")
scenario = json.loads((root / "scenario.json").read_text(encoding="utf-8"))
command = " ".join(argv)
matches = [prefix for prefix in scenario if command == prefix or command.startswith(prefix + " ")]
answer = scenario[max(matches, key=len)] if matches else {{}}
if "stdout_file" in answer:
    sys.stdout.write(pathlib.Path(answer["stdout_file"]).read_text(encoding="utf-8"))
sys.stdout.write(answer.get("stdout", ""))
sys.stderr.write(answer.get("stderr", ""))
sys.exit(answer.get("rc", 0))
'''


class FakeTools:
    """The fake executables' directory, their scripted answers and the argv they received."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.scenario: dict[str, dict[str, Any]] = {}
        for tool in TOOLS:
            path = self.bin / tool
            path.write_text(FAKE_TOOL.format(python=sys.executable, tool=tool, root=str(root)))
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
        self._save()

    def _save(self) -> None:
        (self.root / "scenario.json").write_text(json.dumps(self.scenario))

    def answer(self, command: str, *, stdout: str = "", stderr: str = "", rc: int = 0,
               stdout_file: Path | None = None) -> None:
        entry: dict[str, Any] = {"stdout": stdout, "stderr": stderr, "rc": rc}
        if stdout_file is not None:
            entry["stdout_file"] = str(stdout_file)
        self.scenario[command] = entry
        self._save()

    def remove(self, tool: str) -> None:
        (self.bin / tool).unlink()

    def calls(self) -> list[list[str]]:
        log = self.root / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]

    def clear(self) -> None:
        (self.root / "calls.jsonl").unlink(missing_ok=True)


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    fake = FakeTools(tmp_path / "tools")
    # Only the fakes: a real kind/docker/helm elsewhere on PATH must never be reached.
    monkeypatch.setenv("PATH", str(fake.bin))
    return fake


@pytest.fixture
def fake_kube(tmp_path: Path) -> Iterator[Any]:
    from tests.fakekube import FakeKube

    with FakeKube() as kube:
        # What the chart leaves after `helm upgrade --install` (app demo, live slot blue, v1).
        kube.seed_blue_green(namespace="default", app="demo", live_slot="blue",
                             blue_image="releasegate-demo:v1", replicas=2)
        yield kube


@pytest.fixture
def kind_kubeconfig(tools: FakeTools, fake_kube: Any) -> Path:
    """`kind get kubeconfig --name rg-test` prints a kubeconfig of the fake API server."""
    path = fake_kube.write_kubeconfig(tools.root / "kind-kubeconfig.yaml", context="kind-rg-test",
                                      namespace="default")
    tools.answer("kind get kubeconfig", stdout_file=path)
    return Path(path)


def make_config(tmp_path: Path, **kind: Any) -> Config:
    return parse_config({"app": {"name": "demo"}, "kind": {"cluster_name": "rg-test", **kind}},
                        source="test config", base_dir=tmp_path / "project", project_root=tmp_path / "project")


def helm_install_argv(run_dir: Path, *, release: str = "demo", chart: Path = DEFAULT_CHART,
                      values: tuple[str, ...] = (), repository: str = "releasegate-demo") -> list[str]:
    argv = ["helm", "upgrade", "--install", release, str(chart), "--namespace", "default", "--create-namespace",
            "--kubeconfig", str(run_dir / "kubeconfig-rg-test.yaml"), "--kube-context", "kind-rg-test"]
    for values_file in values:
        argv += ["--values", values_file]
    return [*argv, "--set-string", "app=demo", "--set-string", f"image.repository={repository}",
            "--set-string", "version=v1", "--set-string", "labels.slot=slot",
            "--set-string", "labels.version=version", "--set", "replicas=2",
            "--wait", "--timeout", "300s"]


# -- the happy paths ------------------------------------------------------------------------------------

def test_creates_the_cluster_loads_the_image_installs_the_chart_and_opens_the_target(
        tmp_path: Path, tools: FakeTools, kind_kubeconfig: Path) -> None:
    tools.answer("kind get clusters", stdout="another\n")
    target = open_kind_target(make_config(tmp_path))
    try:
        run_dir = tmp_path / "project" / ".releasegate" / "kind"
        assert tools.calls() == [
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            ["kind", "get", "clusters"],
            ["kind", "create", "cluster", "--name", "rg-test", "--wait", "120s"],
            ["kind", "get", "kubeconfig", "--name", "rg-test"],
            ["docker", "build", "-f", str(DEFAULT_DOCKERFILE), "-t", "releasegate-demo:v1",
             "--build-arg", "APP_VERSION=v1", str(DEFAULT_BUILD_CONTEXT)],
            ["kind", "load", "docker-image", "releasegate-demo:v1", "--name", "rg-test"],
            helm_install_argv(run_dir),
        ]
        written = run_dir / "kubeconfig-rg-test.yaml"
        assert written.read_text() == kind_kubeconfig.read_text()
        assert stat.S_IMODE(written.stat().st_mode) == 0o600  # it holds the cluster's admin credentials
        assert [p.name for p in run_dir.iterdir()] == ["kubeconfig-rg-test.yaml"]  # no temporary left over

        assert isinstance(target, KindTarget) and isinstance(target, KubernetesTarget)
        assert target.name == "kind"
        kube = target.config.kubernetes
        assert (kube.kubeconfig, kube.context, kube.access) == (str(written), "kind-rg-test", "port-forward")
        state = target.live_state()  # a real request to the (fake) API server through that kubeconfig
        assert state.live_slot == "blue" and state.versions["blue"] == "v1"
    finally:
        target.close()


def test_reuses_an_existing_cluster(tmp_path: Path, tools: FakeTools, kind_kubeconfig: Path) -> None:
    tools.answer("kind get clusters", stdout="another\nrg-test\n")
    open_kind_target(make_config(tmp_path)).close()
    commands = [argv[:3] for argv in tools.calls()]
    assert ["kind", "create", "cluster"] not in commands
    assert commands[:3] == [["docker", "info", "--format"], ["kind", "get", "clusters"],
                            ["kind", "get", "kubeconfig"]]
    assert tools.calls()[-1][:3] == ["helm", "upgrade", "--install"]


def test_the_candidate_image_is_built_and_loaded_before_the_deployment(
        tmp_path: Path, tools: FakeTools, kind_kubeconfig: Path, fake_kube: Any) -> None:
    target = open_kind_target(make_config(tmp_path))
    try:
        tools.clear()
        target.deploy("green", "v2")
        assert tools.calls() == [
            ["docker", "build", "-f", str(DEFAULT_DOCKERFILE), "-t", "releasegate-demo:v2",
             "--build-arg", "APP_VERSION=v2", str(DEFAULT_BUILD_CONTEXT)],
            ["kind", "load", "docker-image", "releasegate-demo:v2", "--name", "rg-test"],
        ]
        green = fake_kube.get_object("deployments", "default", "demo-green")
        assert green["spec"]["template"]["spec"]["containers"][0]["image"] == "releasegate-demo:v2"
        # Prepared once per version and process: preflight and deploy may both ask.
        assert target.cluster is not None and target.cluster.prepare_image("v2") == "releasegate-demo:v2"
        target.prepare_image("v2")
        assert len(tools.calls()) == 2
    finally:
        target.close()


def test_prepare_image_in_preflight_means_a_broken_build_touches_nothing(
        tmp_path: Path, tools: FakeTools, kind_kubeconfig: Path, fake_kube: Any) -> None:
    target = open_kind_target(make_config(tmp_path))
    try:
        tools.clear()
        tools.answer("docker build", rc=1, stderr="#5 ERROR: failed to solve: process did not complete\n")
        with pytest.raises(TargetError, match=r"`docker build -f .* failed with exit code 1: .*failed to solve"):
            target.prepare_image("v2")
        assert fake_kube.get_object("deployments", "default", "demo-green") is None
        assert [argv[:2] for argv in tools.calls()] == [["docker", "build"]]  # and no `kind load`
    finally:
        target.close()


def test_settings_from_a_kind_section(tmp_path: Path, tools: FakeTools, kind_kubeconfig: Path) -> None:
    config = make_config(tmp_path, node_image="kindest/node:v1.32.2", create_wait_s=30, build=False,
                         image_repository="reg.local/shop", release_name="shop-release",
                         chart="deploy/chart", values_files=["deploy/kind.yaml"],
                         run_dir=str(tmp_path / "state"))
    open_kind_target(config).close()
    calls = tools.calls()
    assert ["kind", "create", "cluster", "--name", "rg-test", "--wait", "30s",
            "--image", "kindest/node:v1.32.2"] in calls
    assert "build" not in [argv[1] for argv in calls if argv[0] == "docker"]  # build = false: load only
    assert ["kind", "load", "docker-image", "reg.local/shop:v1", "--name", "rg-test"] in calls
    project = tmp_path / "project"
    assert (tmp_path / "state" / "kubeconfig-rg-test.yaml").exists()
    assert calls[-1] == helm_install_argv(
        tmp_path / "state", release="shop-release",
        chart=project / "deploy" / "chart", values=(str(project / "deploy" / "kind.yaml"),),
        repository="reg.local/shop")


def test_defaults_without_a_kind_section() -> None:
    settings = Config().kind
    assert (settings.cluster_name, settings.image_repository, settings.initial_version) == \
        ("releasegate", "releasegate-demo", "v1")


# -- what is missing, said in one line, before anything is touched ---------------------------------------

@pytest.mark.parametrize(("tool", "ran"), [("kind", []), ("docker", []), ("helm", ["docker"]),
                                           ("kubectl", ["docker"])])
def test_a_missing_tool_is_a_config_error_naming_it(tmp_path: Path, tools: FakeTools, tool: str,
                                                     ran: list[str]) -> None:
    tools.remove(tool)
    with pytest.raises(ConfigError) as error:
        open_kind_target(make_config(tmp_path))
    message = str(error.value)
    assert f"needs `{tool}` and it is not on path; install {tool}" in message.lower()
    assert "\n" not in message
    assert [argv[0] for argv in tools.calls()] == ran  # at most `docker info`: nothing was created


def test_a_stopped_docker_engine_is_a_config_error(tmp_path: Path, tools: FakeTools) -> None:
    tools.answer("docker info", rc=1, stdout="\n", stderr="Cannot connect to the Docker daemon at "
                 "unix:///var/run/docker.sock. Is the docker daemon running?\n")
    with pytest.raises(ConfigError) as error:
        open_kind_target(make_config(tmp_path))
    message = str(error.value)
    assert message.startswith("the Docker engine is not running (`docker info` failed: Cannot connect to the "
                              "Docker daemon at unix:///var/run/docker.sock")
    assert "start it" in message and "\n" not in message
    assert tools.calls() == [["docker", "info", "--format", "{{.ServerVersion}}"]]


@pytest.mark.skipif(REAL_DOCKER is None, reason="no docker CLI on this machine")
def test_the_real_docker_cli_without_an_engine(tools: FakeTools, monkeypatch: pytest.MonkeyPatch) -> None:
    assert REAL_DOCKER is not None
    if subprocess.run([REAL_DOCKER, "info"], capture_output=True, timeout=30).returncode == 0:
        pytest.skip("a Docker engine runs here; this test is about the CLI without one")
    tools.remove("docker")
    monkeypatch.setenv("PATH", f"{tools.bin}{os.pathsep}{Path(REAL_DOCKER).parent}")
    with pytest.raises(ConfigError, match=r"^the Docker engine is not running \(`docker info` failed: "):
        find_tools()


def test_a_failing_command_stops_with_its_output(tmp_path: Path, tools: FakeTools) -> None:
    tools.answer("kind create cluster", rc=1,
                 stderr="Creating cluster ...\nERROR: failed to create cluster: node(s) already exist\n")
    with pytest.raises(TargetError) as error:
        open_kind_target(make_config(tmp_path))
    assert str(error.value).startswith("`kind create cluster --name ...` failed with exit code 1: ")
    assert "node(s) already exist" in str(error.value)
    assert "helm" not in [argv[0] for argv in tools.calls()]


@pytest.mark.parametrize(("setting", "message"), [
    ({"cluster_name": "Bad_Name"}, "kind.cluster_name 'Bad_Name' is not a valid kind cluster name"),
    ({"initial_version": "v1/bad"}, "kind.initial_version: version 'v1/bad' is not a valid Kubernetes label"),
    ({"replicas": 0}, "kind.replicas = 0 is invalid: Input should be greater than or equal to 1"),
])
def test_bad_settings_are_config_errors_before_any_command(tmp_path: Path, tools: FakeTools,
                                                          setting: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        open_kind_target(make_config(tmp_path, **setting))  # the config itself may refuse it first
    assert tools.calls() == []
