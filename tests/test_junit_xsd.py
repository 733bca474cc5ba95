"""junit.xml validates against the JUnit schema Jenkins' xUnit plugin reads (junit-10.xsd, from pytest's sdist).

pytest's own junit.xml of tests with properties does not (it puts <properties> in <testcase>); releasegate's
rewrite (plugins/junit_format.py) moves them into <system-out>, where every reader keeps them and from where
`case_properties` reads them back unchanged. The end-to-end releases check their own junit.xml
(tests/release_project.py's JUnit.read).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from releasegate.plugins.junit_format import HEADER, case_properties, move_case_properties_to_output
from tests.report_formats import junit_errors, property_convention_breaks

pytest_plugins = ["pytester"]

# Names and values as the checks write them, and the characters that could split a line or the tab.
PROPERTIES = [("release.stage", "load"), ("check.p(95) < 300ms [/api/checkout].verdict", "pass"),
              ("check.success_rate >= 99%.value", "99.5%"), ("release.reason", "a\ttab, a\nnewline, a \\n, a\\"),
              ("release.empty", "")]

SUITE = f"""
import pytest

PROPERTIES = {PROPERTIES!r}

def test_records(request):
    print("printed by the test")
    request.node.user_properties.extend(PROPERTIES)

def test_fails(request):
    request.node.user_properties.append(("release.stage", "smoke"))
    assert False, "a failed check"

def test_without_properties():
    pass

def test_skipped(request):
    request.node.user_properties.append(("release.stage", "analysis"))
    pytest.skip("release stopped")
"""


def _pytest_junit(pytester: pytest.Pytester, *args: str) -> Path:
    """The junit.xml pytest itself writes for SUITE (junit_family xunit2, pytest's default)."""
    pytester.makepyfile(test_suite=SUITE)
    path = pytester.path / "junit.xml"
    # (hypothesis' plugin alone takes a second to load, and SUITE does not use it)
    pytester.runpytest_inprocess(f"--junitxml={path}", "-p", "no:cacheprovider", "-p", "no:locust",
                                 "-p", "no:hypothesispytest", *args)
    return path


def _cases(path: Path) -> dict[str, ElementTree.Element]:
    return {case.get("name", ""): case for case in ElementTree.parse(path).getroot().iter("testcase")}


@pytest.mark.parametrize("logging", ["no", "all"], ids=["plain", "junit_logging=all"])
def test_properties_move_into_system_out_so_the_file_validates_and_read_back_unchanged(
        pytester: pytest.Pytester, logging: str) -> None:
    path = _pytest_junit(pytester, "-o", f"junit_logging={logging}")
    before = {name: case_properties(case) for name, case in _cases(path).items()}
    # pytest's own file breaks the schema on each testcase with properties: the check can fail.
    assert junit_errors(path) and all("Unexpected child with tag 'properties'" in e for e in junit_errors(path))

    move_case_properties_to_output(path, mode=0o644)

    assert junit_errors(path) == []
    assert path.stat().st_mode & 0o777 == 0o644
    cases = _cases(path)
    assert {name: case_properties(case) for name, case in cases.items()} == before
    assert before["test_records"] == PROPERTIES and before["test_without_properties"] == []
    outputs = cases["test_records"].findall("system-out")
    assert len(outputs) == 1 and (outputs[0].text or "").startswith(HEADER + "\nrelease.stage\tload\n")
    assert ("printed by the test" in (outputs[0].text or "")) is (logging == "all")  # pytest's section kept
    assert cases["test_fails"].find("failure") is not None and cases["test_skipped"].find("skipped") is not None
    assert HEADER not in "".join(output.text or "" for output in cases["test_without_properties"].iter("system-out"))


def test_a_document_that_breaks_the_schema_fails_validation(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" '
                    'failures="0" tests="1"><testcase classname="a" time="0.1"><failure message="m"/>'
                    '<properties><property name="x" value="1"/></properties></testcase></testsuite></testsuites>')
    errors = junit_errors(path)
    assert any("missing required attribute 'name'" in e for e in errors), errors  # a testcase needs a name
    assert any("Unexpected child with tag 'properties'" in e for e in errors), errors


def test_the_property_name_convention_check_catches_each_kind_of_break() -> None:
    follows = ["release.stage", "release.phase.analysis[10%]_s", "release.switch.probe.longest_gap_ms",
               "check.p(95) < 300ms [/api/checkout].verdict", "check.success_rate >= 99%.samples",
               "release.finalize.watch.slo.error_rate < 1%", "release.recovered.summary", "release.recovered.run_id"]
    assert property_convention_breaks(follows) == []
    assert property_convention_breaks(["stage", "Release.Decision", "release.loads.overlap s", "check.x.colour"]) == [
        f"{name!r}: not <area>.<subject>.<field> in dotted lowercase"
        for name in ("stage", "Release.Decision", "release.loads.overlap s", "check.x.colour")]
    assert property_convention_breaks(["release.recovered", "release.recovered.run_id"]) == [
        "'release.recovered': both a value and the prefix of 'release.recovered.run_id'"]
