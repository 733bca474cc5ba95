"""The outcome of a release: the decision, the exit code, JUnit suite properties and the release report.

Everything here runs on the reporting process (the only pytest process, or the xdist controller), from the
test reports it receives and the ledger, so the report is the same with or without `-n`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from releasegate.core.checks import finite_or_none, parse_arms, parse_numbers
from releasegate.core.errors import ExitCode
from releasegate.core.files import write_atomically
from releasegate.core.recovery import RECOVERED_PROPERTY
from releasegate.core.redact import redact_tree
from releasegate.plugins.ledger import INCONCLUSIVE_PROPERTY, Decision, Ledger, Outcome
from releasegate.plugins.options import ReleaseOptions
from releasegate.plugins.prometheus_gate import FIRST_SCRAPE_PROPERTY
from releasegate.plugins.report_data import chart_data
from releasegate.plugins.report_schema import schema_fields
from releasegate.plugins.signals import INTERRUPTED_PROPERTY
from releasegate.plugins.stages import STAGE_PROPERTY

# Action properties that time a part of their stage: (stage, part) in the report's `phase_parts_s`.
PHASE_PARTS = {
    "release.preflight.target_open_s": ("preflight", "target_open"),
    "release.provision.deploy_s": ("provision", "deploy"),
    "release.provision.readiness_s": ("provision", "readiness"),
    "release.provision.first_scrape_s": ("provision", "first_scrape"),  # when users reach it from provision on
}

CHECK_FIELDS = ("verdict", "value", "threshold", "subject", "source", "window", "samples", "bound", "message",
                "interval", "limits", "arms")
"""`bound` (the confidence bound the verdict rests on), `message` (the one-line explanation of a check that
did not pass) and the numbers `interval`, `limits` and `arms` are there only when the check recorded them."""

NUMERIC_CHECK_FIELDS = ("interval", "limits", "arms")


def check_numbers(field_name: str, text: str) -> Any:
    """A numeric check field's property value as JSON (core.checks.format_numbers, format_arms): `interval`
    [low, high] and `arms` [{arm, quantile, low, high}] with null for an unbounded end, `limits` [number, ...].
    A value that does not read back as numbers is left out (None): a chart then draws no whisker for it."""
    try:
        if field_name == "arms":
            return [{"arm": arm.arm, "quantile": arm.quantile, "low": finite_or_none(arm.low),
                     "high": finite_or_none(arm.high)} for arm in parse_arms(text)]
        numbers = parse_numbers(text)
    except ValueError:
        return None
    if field_name == "interval":
        valid = len(numbers) == 2 and math.isfinite(numbers[0]) and not math.isnan(numbers[1])
        return [numbers[0], finite_or_none(numbers[1])] if valid else None
    return list(numbers) if numbers and all(math.isfinite(n) for n in numbers) else None


@dataclass
class TestOutcome:
    nodeid: str
    stage: str
    outcome: Outcome
    duration_s: float
    message: str
    properties: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False  # a signal stopped it (plugins/signals.py): an error, its message the reason

    @property
    def checks(self) -> list[dict[str, Any]]:
        """The check outcomes recorded as `check.<expression>.<field>` properties, in order: text as recorded,
        the numeric fields (NUMERIC_CHECK_FIELDS) as numbers."""
        found: list[dict[str, Any]] = []
        for name, value in self.properties:
            if not name.startswith("check."):
                continue
            expression, _, field_name = name[len("check."):].rpartition(".")
            if field_name == "verdict":
                found.append({"check": expression})
            if not found or field_name not in CHECK_FIELDS:
                continue
            if field_name in NUMERIC_CHECK_FIELDS:
                numbers = check_numbers(field_name, value)
                if numbers is not None:
                    found[-1][field_name] = numbers
            else:
                found[-1][field_name] = value
        return found


def one_line(report: pytest.TestReport) -> str:
    """The first meaningful line of a failure or the reason of a skip."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(crash.message) if crash is not None else str(report.longrepr or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


class ReleaseReporter:
    """Collects the test reports on the reporting process and turns them into the release's outcome."""

    def __init__(self, options: ReleaseOptions, ledger: Ledger) -> None:
        self.options = options
        self.ledger = ledger
        self.outcomes: dict[str, TestOutcome] = {}

    def add(self, report: pytest.TestReport) -> None:
        properties = [(str(k), str(v)) for k, v in report.user_properties]
        stage = next((v for k, v in properties if k == STAGE_PROPERTY), "")
        outcome = self.outcomes.get(report.nodeid)
        if outcome is None:
            outcome = self.outcomes[report.nodeid] = TestOutcome(report.nodeid, stage, Outcome.PASSED, 0.0, "")
        outcome.duration_s += report.duration
        outcome.properties = properties or outcome.properties
        outcome.stage = stage or outcome.stage
        if report.failed and not outcome.outcome.is_failure:
            inconclusive = (INCONCLUSIVE_PROPERTY, "true") in properties
            interrupted = next((value for name, value in properties if name == INTERRUPTED_PROPERTY), None)
            outcome.outcome = Outcome.of_failed_call(inconclusive) if report.when == "call" else Outcome.ERROR
            outcome.message = one_line(report)
            if interrupted is not None:  # an error whatever the phase, its message the reason alone
                outcome.outcome, outcome.message, outcome.interrupted = Outcome.ERROR, interrupted, True
        elif report.skipped and outcome.outcome is Outcome.PASSED:
            outcome.outcome = Outcome.SKIPPED
            outcome.message = one_line(report)

    # -- the decision -------------------------------------------------------------------------------
    def decision(self) -> Decision:
        return self.ledger.read_context().decision or Decision.NOT_PROMOTED

    def failures(self) -> list[TestOutcome]:
        return [o for o in self.outcomes.values() if o.outcome.is_failure]

    def exit_code(self, pytest_status: int) -> int:
        records = self.ledger.finished_items().values()
        rollback = self.outcomes.get("release::rollback")
        if (pytest_status == ExitCode.USAGE_ERROR or any(r.usage_error for r in records)
                or self.ledger.read_context().usage_error):
            return ExitCode.USAGE_ERROR
        if (rollback is not None and rollback.outcome.is_failure) or self.ledger.read_context().cleanup_problem:
            return ExitCode.INTERNAL_ERROR  # the release could not be undone (interrupted or not): a person must look
        if pytest_status == ExitCode.INTERRUPTED or self.ledger.aborted():
            return ExitCode.INTERRUPTED
        if pytest_status == ExitCode.INTERNAL_ERROR:
            return ExitCode.INTERNAL_ERROR
        failures = self.failures()
        if failures and all(f.outcome is Outcome.INCONCLUSIVE for f in failures):
            return ExitCode.INCONCLUSIVE  # not promoted; nothing failed: a person may extend or accept
        if failures:
            return ExitCode.VERIFICATION_FAILED
        verified = [o for o in self.outcomes.values()
                    if not o.nodeid.startswith("release::") and o.outcome is Outcome.PASSED]
        if not verified:
            return ExitCode.NO_VERIFICATION
        if self.decision() is Decision.PROMOTED or self.options.dry_run:
            return ExitCode.PROMOTED
        return ExitCode.NO_VERIFICATION

    # -- what a reader sees -------------------------------------------------------------------------
    def phase_times(self) -> dict[str, float]:
        spans: dict[str, list[float]] = {}
        for record in self.ledger.finished_items().values():
            span = spans.setdefault(record.stage, [record.started, record.finished])
            span[0], span[1] = min(span[0], record.started), max(span[1], record.finished)
        first_index = {r.stage: r.index for r in sorted(self.ledger.finished_items().values(),
                                                        key=lambda r: -r.index)}
        return {stage: round(end - start, 3)
                for stage, (start, end) in sorted(spans.items(), key=lambda kv: first_index[kv[0]])}

    def phase_parts(self) -> dict[str, dict[str, float]]:
        """The parts of a stage that its action timed (PHASE_PARTS), by stage: where an overhead went."""
        parts: dict[str, dict[str, float]] = {}
        for outcome in self.outcomes.values():
            for name, value in outcome.properties:
                if name in PHASE_PARTS:
                    stage, part = PHASE_PARTS[name]
                    parts.setdefault(stage, {})[part] = float(value)
                elif name == FIRST_SCRAPE_PROPERTY:  # the first item after the smoke stage waited for it
                    stage_parts = parts.setdefault(outcome.stage, {})  # xdist: items of one stage may each wait
                    stage_parts["first_scrape"] = max(stage_parts.get("first_scrape", 0.0), float(value))
        return parts

    def traffic_steps(self) -> list[dict[str, str]]:
        """Each canary shift that ran: the weight asked for and the one the target gave (pod counts round)."""
        steps = []
        for outcome in self.outcomes.values():
            found = dict(outcome.properties)
            if "release.shift.requested_weight" in found:
                steps.append({"step": outcome.stage, "requested": found["release.shift.requested_weight"],
                              "effective": found.get("release.shift.effective_weight", ""),
                              "traffic": found.get("release.shift.traffic", "")})
        return steps

    def loads(self) -> dict[str, Any]:
        """The run's loads (plugins/load_slot.py) and each pair that ran at the same time, for how long."""
        records = self.ledger.loads()
        finished = [r for r in records if r.finished is not None]
        overlaps = []
        for number, first in enumerate(finished):
            for second in finished[number + 1:]:
                assert first.finished is not None and second.finished is not None
                seconds = min(first.finished, second.finished) - max(first.started, second.started)
                if seconds > 0:
                    overlaps.append({"tests": sorted([first.nodeid, second.nodeid]), "seconds": round(seconds, 3),
                                     "allowed": first.may_overlap and second.may_overlap})
        waited: dict[str, float] = {}
        for record in records:
            if record.waited_s > 0:
                waited[record.nodeid] = round(waited.get(record.nodeid, 0.0) + record.waited_s, 3)
        return {"count": len(records), "overlaps": overlaps,
                "unfinished": [r.nodeid for r in records if r.finished is None], "waited_s": waited}

    def summary(self, exit_code: int) -> dict[str, Any]:
        """Everything the report and the JUnit suite properties say, with credentials masked: messages are
        redacted where a secret enters them, and this pass catches one that came in some other way."""
        context = self.ledger.read_context()
        failures = self.failures()
        summary: dict[str, Any] = redact_tree({
            **schema_fields(),  # which JSON Schema release-report.json follows (plugins/report_schema.py)
            "run_id": self.options.run_id,
            "version": self.options.version,
            "previous": context.previous_version,
            "strategy": self.options.strategy,
            "target": self.options.target,
            "dry_run": self.options.dry_run,
            "decision": self.decision().value,
            "exit_code": int(exit_code),
            "target_detail": context.target_detail,
            "reason": _with_signal_notes(
                context.usage_error
                or (_failure_reason(failures[0]) if failures else None)
                or context.not_promoted_reason or context.interrupted or self.ledger.aborted(),
                self.ledger.signal_notes()),
            "phase_times_s": self.phase_times(),
            "phase_parts_s": self.phase_parts(),
            "traffic": self.traffic_steps(),
            "loads": self.loads(),
            # A rerun that first rolled back a release whose runner died (core/recovery.py), in one line.
            "recovered": next((value for o in self.outcomes.values() for name, value in o.properties
                               if name == RECOVERED_PROPERTY), None),
            "tests": [{"nodeid": o.nodeid, "stage": o.stage, "outcome": o.outcome.value,
                       "duration_s": round(o.duration_s, 3), "message": o.message, "checks": o.checks}
                      for o in self.outcomes.values()],
            # For the HTML report's charts (plugins/report_data.py): item times, traffic split, load histograms.
            **chart_data(self.ledger, {o.nodeid: o.properties for o in self.outcomes.values()},
                         {o.nodeid: o.outcome.value for o in self.outcomes.values()}),
        })
        return summary

    def suite_properties(self, summary: dict[str, Any]) -> list[tuple[str, str]]:
        properties = [
            ("release.version", summary["version"]),
            ("release.previous", str(summary["previous"] or "")),
            ("release.strategy", summary["strategy"]),
            ("release.target", summary["target"]),
            ("release.decision", summary["decision"]),
            ("release.run_id", summary["run_id"]),
            ("release.dry_run", str(summary["dry_run"]).lower()),
        ]
        if summary["reason"]:
            properties.append(("release.reason", summary["reason"]))
        if summary.get("target_detail"):
            properties.append(("release.target_detail", summary["target_detail"]))
        properties += [(f"release.phase.{stage}_s", f"{seconds:.3f}")
                       for stage, seconds in summary["phase_times_s"].items()]
        loads = summary.get("loads") or {}
        if loads.get("count"):
            properties += [("release.loads.count", str(loads["count"])),
                           ("release.loads.overlap_s", f"{sum(o['seconds'] for o in loads['overlaps']):.3f}"),
                           ("release.loads.overlapped", describe_overlaps(loads))]
        return properties


def _failure_reason(first: TestOutcome) -> str:
    return first.message if first.interrupted else f"{first.stage} failed: {first.message}"


def _with_signal_notes(reason: str | None, notes: list[str]) -> str | None:
    """Signals that came during the cleanup are part of why the run ended as it did (plugins/signals.py)."""
    if not notes:
        return reason
    return f"{reason or 'interrupted'} ({'; '.join(notes)})"


def describe_overlaps(loads: dict[str, Any]) -> str:
    """`none overlapped another (one at a time)`, or each pair that overlapped, for how long and whether allowed."""
    pairs = [f"{first} and {second} for {overlap['seconds']:.2f}s "
             + ("(both marked load_may_overlap)" if overlap["allowed"] else "(NOT allowed: a load asked to run alone)")
             for overlap in loads["overlaps"] for first, second in [overlap["tests"]]]
    text = "; ".join(pairs) if pairs else "none overlapped another (one at a time)"
    if loads.get("unfinished"):
        text += f"; did not finish (its process died?): {', '.join(loads['unfinished'])}"
    return text


LATEST_LINK = "latest"


def point_latest_at(report_dir: Path) -> None:
    """Make `<reports>/latest` a relative link to this run's folder, replaced atomically."""
    link = report_dir.parent / LATEST_LINK
    tmp = report_dir.parent / f".{LATEST_LINK}.{report_dir.name}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(report_dir.name, target_is_directory=True)
    tmp.replace(link)


REPORT_MODE = 0o644
"""Reports are read by CI artifact uploaders and people, as junit.xml is; credentials are redacted in them."""


def write_report(summary: dict[str, Any], path: Path) -> None:
    """The release report: JSON for tools, Markdown for people, side by side.

    Each file whole or not at all (core.files): on a full disk a tool must not read half a JSON report.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path.with_suffix(".json"), json.dumps(summary, indent=2), mode=REPORT_MODE)
    lines = [
        f"# Release {summary['version']}: {summary['decision']}",
        "",
        f"- previous version: {summary['previous'] or '-'}",
        f"- strategy: {summary['strategy']} on {summary['target']}{' (dry run)' if summary['dry_run'] else ''}",
        f"- run: {summary['run_id']}, exit code {summary['exit_code']}",
    ]
    if summary.get("target_detail"):
        lines.append(f"- target: {summary['target_detail']}")
    if summary["reason"]:
        lines.append(f"- why: {summary['reason']}")
    lines += ["", "| stage | test | outcome | time | detail |", "|---|---|---|---|---|"]
    for test in summary["tests"]:
        detail = test["message"].replace("|", "\\|")
        lines.append(f"| {test['stage']} | `{test['nodeid']}` | {test['outcome']} | {test['duration_s']:.2f}s "
                     f"| {detail} |")
    checks = [(test["nodeid"], check) for test in summary["tests"] for check in test["checks"]]
    if checks:
        lines += ["", "## Checks", "", "| test | check | verdict | measured | threshold | subject | samples | "
                  "window | source |", "|---|---|---|---|---|---|---|---|---|"]
        for nodeid, check in checks:
            cells = [check.get(name, "").replace("|", "\\|") for name in
                     ("check", "verdict", "value", "threshold", "subject", "samples", "window", "source")]
            lines.append(f"| `{nodeid}` | " + " | ".join(cells) + " |")
    if summary.get("traffic"):
        lines += ["", "## Traffic steps", "", "| step | requested | effective | split |", "|---|---|---|---|"]
        lines += [f"| {step['step']} | {step['requested']}% | {step['effective']}% | {step['traffic']} |"
                  for step in summary["traffic"]]
    if (summary.get("loads") or {}).get("count"):
        lines += ["", "## Loads", "", f"- {summary['loads']['count']} load(s): {describe_overlaps(summary['loads'])}"]
        lines += [f"- `{nodeid}` waited {seconds:.1f}s for the load slot"
                  for nodeid, seconds in summary["loads"]["waited_s"].items()]
    if summary["phase_times_s"]:
        lines += ["", "## Phase times", ""]
        parts = summary.get("phase_parts_s") or {}
        lines += [f"- {stage}: {seconds:.2f}s" + (" (" + ", ".join(
            f"{part} {value:.2f}s" for part, value in parts[stage].items()) + ")" if stage in parts else "")
            for stage, seconds in summary["phase_times_s"].items()]
    write_atomically(path, "\n".join(lines) + "\n", mode=REPORT_MODE)
