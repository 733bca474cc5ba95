"""release-report.json follows its published JSON Schema (plugins/schemas/release-report.schema.json).

The end-to-end releases check their own reports (tests/release_project.py's JUnit.read validates the report
beside the junit.xml it reads); here, the reporter's summaries of each way a release ends, the inconclusive
one included (no end-to-end test ends that way), and that the check can fail.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from releasegate.core.checks import ArmBound, CheckOutcome, Verdict
from releasegate.plugins.ledger import (
    INCONCLUSIVE_PROPERTY,
    Decision,
    ItemRecord,
    Ledger,
    LoadRecord,
    Outcome,
    ReleaseContext,
)
from releasegate.plugins.options import ReleaseOptions
from releasegate.plugins.report_schema import SCHEMA_ID, SCHEMA_VERSION, report_schema
from releasegate.plugins.reporting import ReleaseReporter, write_report
from releasegate.plugins.signals import INTERRUPTED_PROPERTY
from releasegate.plugins.stages import STAGE_PROPERTY
from tests.report_formats import report_errors

P95 = CheckOutcome(check="p(95) < 300ms", verdict=Verdict.PASS, value=0.21, display_value="210ms", threshold="300ms",
                   subject="/api/checkout (candidate v2)", source="locustfile.py, 10 users, 15s", window="15s",
                   samples=1843, message="p(95) 210ms < 300ms over 1,843 requests", bound="upper bound 240ms",
                   scope="/api/checkout", interval=(0.2, 0.24), limits=(0.3,))
ERRORS = CheckOutcome(check="error_rate < 1%", verdict=Verdict.FAIL, value=0.046, display_value="4.6%",
                      threshold="1%", subject="all endpoints (candidate v2)", source="locustfile.py", window="15s",
                      samples=413, message="error_rate 4.6% > 1% over 413 requests", looks=7, decided_after_s=6.5,
                      interval=(0.0263, 0.0771), limits=(0.01,))
LATENCY = CheckOutcome(check="latency vs baseline", verdict=Verdict.INCONCLUSIVE, value=0.017,
                       display_value="median 17ms", threshold="baseline x (1 + 10% at p50)",
                       subject="all endpoints (candidate v2 vs baseline v1)",
                       source="locustfile.py", window="15s", samples=60, message="latency: undecided",
                       interval=(0.015, 0.02), arms=(ArmBound("candidate", 0.5, 0.015, 0.02),
                                                     ArmBound("baseline", 0.5, 0.014, 0.019),
                                                     ArmBound("candidate", 0.99, 0.03, math.inf)))
UNDECIDED = CheckOutcome(check="error_rate < 0.1%", verdict=Verdict.INCONCLUSIVE, value=0.0, display_value="0%",
                         threshold="0.1%", subject="all endpoints (candidate v2)", source="up{...}", window="60s",
                         samples=None, message="INCONCLUSIVE: error_rate 0% < 0.1% over 300 requests")


def _report(nodeid: str, stage: str, outcome: str = "passed", *, checks: tuple[CheckOutcome, ...] = (),
            extra: tuple[tuple[str, str], ...] = ()) -> pytest.TestReport:
    longrepr: Any = ("f", 1, "Skipped: release stopped") if outcome == "skipped" else (
        "E   AssertionError: a check failed" if outcome == "failed" else None)
    properties = [(STAGE_PROPERTY, stage), *[p for check in checks for p in check.properties()], *extra]
    return pytest.TestReport(nodeid, ("f", 1, nodeid), {}, outcome, longrepr, "call",  # type: ignore[arg-type]
                             user_properties=properties, duration=0.25)


def _summary(tmp_path: Path, exit_code: int, reports: list[pytest.TestReport], *, strategy: str = "blue-green",
             **context: Any) -> dict[str, Any]:
    ledger = Ledger(tmp_path / "ledger")
    ledger.start(ReleaseContext(run_id="run-a", version="v2", strategy=strategy, target="local"))
    ledger.update_context(previous_version="v1", **context)
    for index, report in enumerate(reports):
        stage = dict(report.user_properties)[STAGE_PROPERTY]
        ledger.item_finished(ItemRecord(index, report.nodeid, stage, Outcome(report.outcome), "", 100.0 + index,
                                        100.5 + index))
    ledger.record_load(LoadRecord("k1", "suites/load/test_load.py::test_load", "load", 101.0, 101.5, False, 0.2))
    reporter = ReleaseReporter(ReleaseOptions("v2", strategy, "local", False, "run-a"), ledger)
    for report in reports:
        reporter.add(report)
    return reporter.summary(exit_code)


def _promoted_canary(tmp_path: Path) -> dict[str, Any]:
    shift = ("release.shift.requested_weight", "10"), ("release.shift.effective_weight", "10"), \
        ("release.shift.traffic", "stable 90%, canary 10%")
    return _summary(tmp_path, 0, [
        _report("release::preflight", "preflight"), _report("release::provision", "provision"),
        _report("suites/load/test_load.py::test_load", "load", checks=(P95,)),
        _report("release::shift[10%]", "shift[10%]", extra=shift),
        _report("release::promote", "promote"),
    ], strategy="canary", decision=Decision.PROMOTED)


def test_the_schema_is_a_valid_2020_12_schema_shipped_in_the_package_and_names_its_version() -> None:
    schema = report_schema()  # from the package data (importlib.resources), as an installed copy reads it
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_ID and schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert report_errors({}) != []  # the validator is built from it (check_schema passed)


@pytest.mark.parametrize("ending", ["promoted", "rolled-back", "inconclusive", "interrupted"])
def test_each_way_a_release_ends_gives_a_report_that_follows_the_schema(tmp_path: Path, ending: str) -> None:
    load = "suites/load/test_load.py::test_load"
    summary = {
        "promoted": lambda: _promoted_canary(tmp_path),
        "rolled-back": lambda: _summary(tmp_path, 1, [
            _report(load, "load", "failed", checks=(P95, ERRORS)),
            _report("suites/analysis/test_slo.py::test_slo", "analysis", "skipped"),
            _report("release::rollback", "rollback", extra=(("release.rollback.reason", "load failed"),))],
            decision=Decision.ROLLED_BACK),
        "inconclusive": lambda: _summary(tmp_path, 6, [
            _report(load, "load", "failed", checks=(UNDECIDED,), extra=((INCONCLUSIVE_PROPERTY, "true"),)),
            _report("release::rollback", "rollback")], decision=Decision.INCONCLUSIVE),
        "interrupted": lambda: _summary(tmp_path, 2, [
            _report(load, "load", "failed", extra=((INTERRUPTED_PROPERTY, "interrupted by SIGTERM during load"),)),
            _report("release::rollback", "rollback")], decision=Decision.ROLLED_BACK,
            interrupted="interrupted by SIGTERM during load"),
    }[ending]()
    assert (summary["$schema"], summary["schema_version"]) == (SCHEMA_ID, SCHEMA_VERSION)
    assert summary["decision"] == ("rolled-back" if ending == "interrupted" else ending)
    assert report_errors(summary) == []
    write_report(summary, tmp_path / "release-report.md")  # what the file holds, after json.dumps
    assert report_errors(json.loads((tmp_path / "release-report.json").read_text())) == []


@pytest.mark.parametrize(("change", "error"), [
    (lambda r: r.pop("decision"), "(top): 'decision' is a required property"),
    (lambda r: r["tests"][2]["checks"][0].pop("threshold"), "tests/2/checks/0: 'threshold' is a required property"),
    (lambda r: r.update(exit_code="0"), "exit_code: '0' is not one of [0, 1, 2, 3, 4, 5, 6]"),
    (lambda r: r.update(dry_run="false"), "dry_run: 'false' is not of type 'boolean'"),
    (lambda r: r["tests"][2].update(duration_s="0.25"), "tests/2/duration_s: '0.25' is not of type 'number'"),
    (lambda r: r["tests"][2]["checks"][0].update(verdict="ok"), "tests/2/checks/0/verdict: 'ok' is not one of"),
    (lambda r: r["phase_times_s"].update(load="18s"), "phase_times_s/load: '18s' is not of type 'number'"),
    (lambda r: r.update(schema_version="2.0"), f"schema_version: '{SCHEMA_VERSION}' was expected"),
    (lambda r: r.update(decison="promoted"), "(top): Additional properties are not allowed ('decison' was unexpected)"),
], ids=["missing-key", "missing-check-field", "exit-code-as-text", "bool-as-text", "number-as-text",
        "unknown-verdict", "phase-as-text", "other-major-version", "unknown-key"])
def test_a_report_with_a_missing_key_or_a_wrong_type_fails_validation(tmp_path: Path, change: Any,
                                                                       error: str) -> None:
    report = copy.deepcopy(_promoted_canary(tmp_path))
    assert report_errors(report) == []
    change(report)
    errors = report_errors(report)
    assert len(errors) == 1 and errors[0].startswith(error), errors


def test_open_maps_take_any_key_closed_objects_do_not(tmp_path: Path) -> None:
    report = copy.deepcopy(_promoted_canary(tmp_path))
    report["phase_times_s"]["analysis[50%]"] = 12.5  # one key per stage label: any stage
    report["loads"]["waited_s"]["suites/x.py::test_y"] = 1.0  # one key per test
    assert report_errors(report) == []
    report["traffic"][0]["weight"] = "10"
    assert report_errors(report) == ["traffic/0: Additional properties are not allowed ('weight' was unexpected)"]


def test_a_checks_numbers_are_numbers_in_the_report_and_an_unbounded_end_is_null(tmp_path: Path) -> None:
    summary = _summary(tmp_path, 1, [
        _report("suites/load/test_load.py::test_load", "load", "failed", checks=(P95, ERRORS, LATENCY)),
        _report("release::rollback", "rollback")], decision=Decision.ROLLED_BACK)
    p95, errors, latency = summary["tests"][0]["checks"]
    assert (p95["interval"], p95["limits"]) == ([0.2, 0.24], [0.3])
    assert (errors["interval"], errors["limits"]) == ([0.0263, 0.0771], [0.01])
    assert "limits" not in latency and latency["arms"] == [
        {"arm": "candidate", "quantile": 0.5, "low": 0.015, "high": 0.02},
        {"arm": "baseline", "quantile": 0.5, "low": 0.014, "high": 0.019},
        {"arm": "candidate", "quantile": 0.99, "low": 0.03, "high": None}]  # JSON has no infinity
    write_report(summary, tmp_path / "release-report.md")
    assert report_errors(json.loads((tmp_path / "release-report.json").read_text())) == []
    # closed like every other object: the numbers are numbers, an arm has exactly its four keys
    errors["interval"] = ["0.0263", "0.0771"]
    latency["arms"][0]["side"] = "left"
    assert report_errors(summary) == [
        "tests/0/checks/1/interval/0: '0.0263' is not of type 'number'",
        "tests/0/checks/1/interval/1: '0.0771' is not of type 'number', 'null'",
        "tests/0/checks/2/arms/0: Additional properties are not allowed ('side' was unexpected)"]
