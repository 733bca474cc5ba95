"""Fuzzed bad input, end to end: a real `pytest --release` run given a bad config, version or `[vars]` SLO
exits with 4 and one `ERROR:` line, prints no traceback, and sends no request to the target; a bad profile
file of the demo is found when the local target opens (the preflight item fails with the loader's message,
exit 4) before any process starts.

The target is the fake API server (tests/fakekube), its cluster seeded with `web` at v1: a config that got
past validation would read it and then write to it, and its request log shows every request it got. The
inputs are drawn by hypothesis from the strategies of tests/test_fuzz_inputs.py, few and seeded (each case
starts a pytest process). Only inputs the loader rejects in process are run, and the message the process
prints must be the one the loader gives: the same words reach the user, one line, nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given

from releasegate.core.config import load_config
from releasegate.core.errors import ConfigError
from releasegate.core.versions import validate_version
from releasegate.demo import profiles as demo_profiles
from tests.fakekube.fake import FakeKube
from tests.release_project import ReleaseProject, copy_shipped_suites
from tests.test_fuzz_inputs import (
    config_documents,
    fuzz,
    profile_documents,
    toml_document,
    toml_profile_document,
    version_strings,
)

APP, NAMESPACE = "web", "shop"


@pytest.fixture(scope="module")
def fake_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeKube, Path]]:
    """`web` at v1 on blue, simulated pods (nothing here may get as far as starting one)."""
    fake = FakeKube().start()
    try:
        fake.seed_blue_green(namespace=NAMESPACE, app=APP, blue_image=f"shop/{APP}:v1", replicas=1)
        kubeconfig = Path(fake.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig", namespace=NAMESPACE))
        yield fake, kubeconfig
    finally:
        fake.stop()


def base_config(kubeconfig: Path) -> dict[str, Any]:
    """A config that works: a release of `web` on the fake API server."""
    unreachable = "http://127.0.0.1:9"  # never asked: every run below stops before any request to the app
    return {
        "app": {"name": APP},
        "release": {"target": "kubernetes", "keep_warm_s": 0.5},
        "kubernetes": {"kubeconfig": str(kubeconfig), "namespace": NAMESPACE, "access": "url",
                       "service_url": unreachable, "preview_url": unreachable},
    }


def merged(base: dict[str, Any], fuzzed: dict[str, Any]) -> dict[str, Any]:
    """`fuzzed` over `base`, table by table: a fuzzed key replaces the same key of the base."""
    result = dict(base)
    for key, value in fuzzed.items():
        both_tables = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = {**result[key], **value} if both_tables else value
    return result


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> ReleaseProject:
    project = ReleaseProject(pytester, monkeypatch)
    project.minimal_suites()  # a release that got past its input would have tests to run
    return project


def files_of(root: Path) -> dict[str, bytes]:
    """The project's files, without what pytester itself keeps there (the run's output, its basetemp)."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and not path.relative_to(root).parts[0].startswith(PYTESTER_OWN)}


PYTESTER_OWN = ("stdout", "stderr", "runpytest-")


def assert_usage_error_alone(result: pytest.RunResult, expected: str) -> None:
    """Exit 4, and the output is the one `ERROR:` line pytest prints for a usage error: `expected`."""
    output = [line for line in [*result.outlines, *result.errlines] if line.strip()]
    assert result.ret == 4, "\n".join(output)
    assert not any("Traceback" in line for line in output), "\n".join(output)
    assert output == [f"ERROR: {expected}"], "\n".join(output)


def assert_no_request(fake: FakeKube) -> None:
    assert fake.write_requests() == []
    assert [f"{request.method} {request.path}" for request in fake.requests] == []  # not even a read


@fuzz(max_examples=12)
@given(document=config_documents())
def test_a_bad_config_exits_4_with_its_one_message_and_touches_nothing(
        document: dict[str, Any], project: ReleaseProject, fake_kube: tuple[FakeKube, Path]) -> None:
    fake, kubeconfig = fake_kube
    (project.path / "releasegate.toml").write_text(toml_document(merged(base_config(kubeconfig), document)),
                                                   encoding="utf-8")
    try:
        load_config(search_dir=project.path)
    except ConfigError as exc:
        expected = str(exc)
    else:
        assume(False)  # a config the loader accepts would run a release: not this test's input
    fake.clear_requests()
    before = files_of(project.path)
    # In process (pytest's main, as the `pytest` command runs it): the cases below start real processes.
    result = project.pytester.runpytest_inprocess("--release", "v2")
    assert_usage_error_alone(result, expected)
    assert_no_request(fake)
    assert files_of(project.path) == before  # no run ledger, no report: nothing started


@fuzz(max_examples=6)
@given(version=version_strings.filter(lambda version: "\x00" not in version))  # argv cannot hold NUL
def test_a_bad_version_exits_4_with_its_one_message_and_touches_nothing(
        version: str, project: ReleaseProject, fake_kube: tuple[FakeKube, Path]) -> None:
    fake, kubeconfig = fake_kube
    (project.path / "releasegate.toml").write_text(toml_document(base_config(kubeconfig)), encoding="utf-8")
    try:
        validate_version(version, source="--release")
    except ConfigError as exc:
        expected = str(exc)
    else:
        assume(False)
    fake.clear_requests()
    before = files_of(project.path)
    result = project.release(f"--release={version}")  # `=`: a version may start with `-`
    assert_usage_error_alone(result, expected)
    assert_no_request(fake)
    assert files_of(project.path) == before


def test_the_fake_api_server_is_reached_by_the_same_config_with_good_input(
        project: ReleaseProject, fake_kube: tuple[FakeKube, Path]) -> None:
    """The control: with good input the same config reaches the fake API server (it reads), so the silence
    above is validation stopping the run, not a config that points nowhere. v1 already serves, so preflight
    stops there with exit 4 before anything is written."""
    fake, kubeconfig = fake_kube
    (project.path / "releasegate.toml").write_text(toml_document(base_config(kubeconfig)), encoding="utf-8")
    fake.clear_requests()
    result = project.release("--release", "v1")
    assert result.ret == 4, "\n".join(result.outlines + result.errlines)
    assert any(request.method == "GET" for request in fake.requests)
    assert fake.write_requests() == []


@fuzz(max_examples=3)
@given(document=profile_documents())
def test_a_bad_profile_file_exits_4_before_the_local_target_starts(document: dict[str, Any],
                                                                   project: ReleaseProject) -> None:
    """The demo's profile file is checked when the run starts, before any process: exit 4, one line, no run dir."""
    profiles = project.path / "profiles.toml"
    profiles.write_text(toml_profile_document(document), encoding="utf-8")
    try:
        demo_profiles.load_profiles("profiles.toml")  # as the run names it: relative to the project (the cwd)
    except demo_profiles.ProfileError as exc:
        expected = f"local.profiles: {exc}"
    else:
        assume(False)
    config = {"release": {"keep_warm_s": 0.5}, "local": {"run_dir": "run", "replicas": 1, "profiles": "profiles.toml"}}
    (project.path / "releasegate.toml").write_text(toml_document(config), encoding="utf-8")
    result = project.release("--release", "v2")
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == 4, output
    assert "Traceback" not in output
    # Found when the run starts, like a bad config: one line, the loader's message whole.
    errors = [line for line in result.errlines if line.strip()]
    assert errors == [f"ERROR: {expected}"], output
    assert not (project.path / "run").exists(), "the local target started"
    assert os.listdir(project.path / "suites")  # the project is intact


def test_a_malformed_vars_slo_exits_4_before_anything_is_provisioned(
        project: ReleaseProject, fake_kube: tuple[FakeKube, Path]) -> None:
    """The shipped load suite reads `[vars] slos`; a bad one is found at start-up (plugins/release_vars.py),
    not in the load stage with a candidate already provisioned."""
    fake, kubeconfig = fake_kube
    copy_shipped_suites(project.path / "suites")
    config = merged(base_config(kubeconfig), {"vars": {"slos": ["p(95) < soon", "error_rate < 1%"]}})
    (project.path / "releasegate.toml").write_text(toml_document(config), encoding="utf-8")
    fake.clear_requests()
    result = project.release("--release", "v2")
    output = [line for line in [*result.outlines, *result.errlines] if line.strip()]
    assert result.ret == 4, "\n".join(output)
    assert len(output) == 1 and output[0].startswith("ERROR: ") and "'p(95) < soon'" in output[0], output
    assert_no_request(fake)
