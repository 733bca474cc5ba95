"""releasegate installed from a wheel (not editable) into a service repository of its own.

The service has its own `core/` and `plugins/` packages and its own `tests/`, as a real service might:
nothing of releasegate may collide with them, the plugin must load from its entry point, and the suites,
reports and config are the service's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.local_cluster import PROJECT_ROOT
from tests.report_formats import assert_valid_junit, assert_valid_report

pytestmark = pytest.mark.slow

# What a wheel is built from: the packaging files and the folders releasegate/ links to.
SOURCES = ("pyproject.toml", "README.md", "releasegate", "core", "plugins", "verifiers", "targets", "demo",
           "charts", "commands")


@dataclass(frozen=True)
class Installed:
    python: Path
    site_packages: Path


def _build_wheel(workdir: Path) -> Path:
    """Build from a copy of the sources, so the checkout gets no build/ or egg-info of the test's making."""
    source = workdir / "source"
    source.mkdir()
    for name in SOURCES:
        path = PROJECT_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(path, source / name)
    wheels = workdir / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("releasegate-*.whl")
    return wheel


def _venv_with_dependencies(path: Path) -> Installed:
    """A fresh virtualenv that sees this environment's dependencies, but not its (editable) releasegate."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site_packages = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        name = entry.name.lower()
        if "releasegate" in name or name.startswith("__editable__") or name == "__pycache__":
            continue
        (site_packages / entry.name).symlink_to(entry)
    return Installed(python=python, site_packages=site_packages)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    workdir = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(workdir)
    venv = _venv_with_dependencies(workdir / "venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv.python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    return venv


SERVICE_FILES = {
    "pyproject.toml": """
        [tool.pytest.ini_options]
        testpaths = ["tests"]
    """,
    # The service's own packages, with names releasegate's folders have in its repository.
    "core/__init__.py": "SERVICE_CORE = 'the service core'\n",
    "plugins/__init__.py": "SERVICE_PLUGINS = True\n",
    "tests/test_service_core.py": """
        import core
        import plugins

        def test_the_service_imports_its_own_packages():
            assert core.SERVICE_CORE == "the service core"
            assert plugins.SERVICE_PLUGINS
    """,
    "suites/smoke/test_smoke.py": """
        import httpx

        def test_candidate_answers_as_its_version(candidate, release):
            response = httpx.get(candidate.url + "/version", timeout=5)
            assert response.headers["X-App-Version"] == release.version
    """,
    "suites/analysis/test_analysis.py": """
        import core
        import httpx

        def test_candidate_and_baseline_are_different_versions(candidate, baseline):
            assert core.SERVICE_CORE  # the service's own core, not releasegate's
            assert httpx.get(candidate.url + "/version", timeout=5).headers["X-App-Version"] == "v2"
            assert httpx.get(baseline.url + "/version", timeout=5).headers["X-App-Version"] == "v1"
    """,
    "suites/post_switch/test_service.py": """
        import httpx

        def test_the_service_serves_the_new_version(service):
            assert httpx.get(service.url + "/version", timeout=5).headers["X-App-Version"] == "v2"
    """,
}

CONFIG = """
[release]
keep_warm_s = 0.5

[local]
replicas = 1
ready_timeout_s = 30
"""


@pytest.fixture
def service_repo(tmp_path: Path) -> Iterator[Path]:
    repo = tmp_path / "service"
    for relative, text in SERVICE_FILES.items():
        path = repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    yield repo


def _run(installed: Installed, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "VIRTUAL_ENV")}
    return subprocess.run([str(installed.python), *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_wheel_holds_only_the_releasegate_package(installed: Installed) -> None:
    top_level = {path.name for path in installed.site_packages.iterdir() if not path.is_symlink()}
    assert "releasegate" in top_level
    assert not top_level & {"core", "plugins", "verifiers", "targets", "demo", "charts", "suites", "tests"}
    package = installed.site_packages / "releasegate"
    assert not (package / "__init__.py").is_symlink()  # a real install, not a link to this checkout
    assert (package / "charts" / "bluegreen-app" / "Chart.yaml").is_file()
    assert (package / "demo" / "Dockerfile").is_file()
    assert (package / "demo" / "profiles.toml").is_file()
    assert (package / "plugins" / "schemas" / "release-report.schema.json").is_file()  # the report's JSON Schema


def test_a_service_repository_releases_with_its_own_suites_and_a_config_from_elsewhere(
        installed: Installed, service_repo: Path, tmp_path: Path) -> None:
    own_tests = _run(installed, service_repo, "-m", "pytest", "-p", "no:cacheprovider")
    assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr
    assert "1 passed" in own_tests.stdout

    # The config outside the repository, given with a space (pytest would take it for a test path).
    elsewhere = tmp_path / "ci-configs" / "prod.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(CONFIG)
    result = _run(installed, service_repo, "-m", "pytest", "-p", "no:cacheprovider", "--release", "v2",
                  "--release-config", str(elsewhere))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "releasegate: v2 now serves all traffic (previous: v1); exit code 0" in output
    # The project is the service repository, not the config's folder: the cluster, state and reports.
    assert f"in {service_repo / '.releasegate' / 'local'}" in output
    assert not (elsewhere.parent / ".releasegate").exists()
    junit = ElementTree.parse(service_repo / "reports" / "latest" / "junit.xml").getroot()
    names = [case.get("name") for case in junit.iter("testcase")]
    assert "test_candidate_and_baseline_are_different_versions" in names
    assert "test_the_service_imports_its_own_packages" not in names  # the service's tests are not a suite
    assert (service_repo / "reports" / "latest" / "release-report.md").is_file()
    assert_valid_junit(service_repo / "reports" / "latest" / "junit.xml")  # as an installed releasegate writes them
    assert_valid_report(service_repo / "reports" / "latest" / "release-report.json")


def test_without_release_the_plugin_is_inert(installed: Installed, service_repo: Path) -> None:
    result = _run(installed, service_repo, "-m", "pytest", "-p", "no:cacheprovider", "--trace-config")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "releasegate" in result.stdout  # loaded from its entry point ...
    assert not (service_repo / "reports").exists()  # ... and did nothing
    assert not (service_repo / ".releasegate").exists()
