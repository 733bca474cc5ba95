"""What releases decide, on a matrix of good and bad candidates: decision, time to decide, requests spent.

    python bench/decisions.py [--runs 3] [--repeat 1] [--scenarios healthy,checkout-errors-3pct,...]
                              [--strategies blue-green,canary] [--project DIR] [--list]

Real releases with the shipped suites and config on the local target. The bench copies `suites/`,
`conftest.py` and `releasegate.toml` of this repository into a project folder (a temporary one unless
`--project`), once at its start, so every row of one table is judged by the same suites. It starts a
persistent local cluster there (`python -m releasegate.targets.local up`, pods running the demo service with
`RELEASEGATE_PROFILES` = `demo/profiles.toml`), then releases each scenario's candidate with
`pytest --release <version> --release-strategy <strategy> -p no:cacheprovider` and reads
`reports/latest/release-report.json` and `junit.xml`.

Every release starts from the same state: the scenario's baseline (v1, or v1-noisy for equal noise) live on
a cluster where the candidate's version never ran. A rolled-back or inconclusive release leaves that state
as it was (the baseline live, the candidate removed), so the next scenario uses the same cluster. After a
promotion (the candidate is live), before a scenario with another baseline, and before a version runs a
second time (Prometheus still holds its series of the last run, which the analysis' queries of that version
would count), the cluster is restarted: `down` + `up --version <baseline>` takes about 5 s, a re-release of
v1 a minute or two. The demo pods are not seeded: the pods of one cluster would all draw one sequence, so
baseline and candidate would answer alike request for request, and healthy runs would repeat each other.

Columns:
- expected: what the shipped SLOs (`error_rate < 1%`, `p(95) < 300ms`, every endpoint) and the comparison's
  shipped tolerances (errors +1 point; latency +10% at p50, +25% at p95, +50% at p99, each + 5 ms) call for.
  `not-promoted`: the regression sits on a limit (exactly 1% errors), so a pass would be wrong and either
  rolled-back or inconclusive is right.
- decision, exit: `release.decision` from junit.xml and the exit code of pytest (0 promoted, 1 rolled back,
  6 inconclusive; others as README says; -1: killed after 15 minutes). ok: `yes` when the decision is the
  expected one.
- decided in: the stage whose result decided (the first failed or inconclusive test; for a promotion the
  switch, or the canary's promote).
- to decision: seconds from the candidate's first request to the decision, as the sum of the report's
  `phase_times_s` of the stages after provision (smoke onward: provision's readiness probes are not
  requests) up to and including the deciding stage. The gaps between stages (pytest's own time between two
  items, milliseconds) are not in it. After a promotion the post-switch checks and the finalize watch may
  still switch back; a rollback decided there counts up to the end of that stage.
- candidate requests: requests the candidate's pods answered through the local router during the release
  (smoke, the loads on its preview endpoint, users' traffic of the canary steps and after the switch), from
  the router's own counter `releasegate_router_requests_total{version=<candidate>}` on the cluster's admin
  endpoint, read before and after the release: exact, with no scrape interval to miss at the end. Health
  probes and Prometheus scrapes go to the pods directly and are not counted.

Scenario `fails-after-switch` releases `v2-fails-on-signal` and sends its pods SIGUSR1 (the demo skips its
clock past `errors_after_s`: 10% errors from then on) as soon as all of the service's traffic is on the
candidate: the blue-green switch, or a canary's 100% step. Rows print as they finish, then each row's reason
(the report's `reason`), and each release's pytest output stays in the project's `logs/`. Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import Figure
from bench.figures import emit as emit_figures
from releasegate.targets.local.client import read_state_file

ROOT: Final = Path(__file__).resolve().parents[1]
PYTHON: Final = sys.executable
PROFILES: Final = ROOT / "demo" / "profiles.toml"
STRATEGIES: Final = ("blue-green", "canary")
RELEASE_TIMEOUT_S: Final = 900.0
POLL_S: Final = 0.1

PROMOTED: Final = "promoted"
ROLLED_BACK: Final = "rolled-back"
NOT_PROMOTED: Final = "not-promoted"  # rolled back or inconclusive: anything but a promotion


@dataclass(frozen=True)
class Scenario:
    name: str
    version: str
    expected: str
    baseline: str = "v1"
    fail_after_switch: bool = False
    healthy: bool = False


# Checkout is a quarter of the load mix: its errors alone move the total by a quarter as much.
SCENARIOS: Final = (
    Scenario("healthy", "v2", PROMOTED, healthy=True),
    Scenario("errors-0.5pct", "v2-errors-0p5pct", PROMOTED),
    Scenario("errors-1pct", "v2-errors-1pct", NOT_PROMOTED),
    Scenario("errors-2pct", "v2-errors-2pct", ROLLED_BACK),
    Scenario("errors-5pct", "v2-errors-5pct", ROLLED_BACK),
    Scenario("checkout-errors-0.5pct", "v2-checkout-errors-0p5pct", PROMOTED),
    Scenario("checkout-errors-1pct", "v2-checkout-errors-1pct", NOT_PROMOTED),
    Scenario("checkout-errors-2pct", "v2-checkout-errors-2pct", ROLLED_BACK),
    Scenario("checkout-errors-3pct", "v2-checkout-errors-3pct", ROLLED_BACK),
    Scenario("checkout-errors-5pct", "v2-checkout-errors-5pct", ROLLED_BACK),
    # Every quantile x1.2 / x1.3: +3.3 / +5 ms at the median, inside the p50 tolerance (+10% + 5 ms).
    Scenario("latency-median+20pct", "v2-slow-median-20pct", PROMOTED),
    Scenario("latency-median+30pct", "v2-slow-median-30pct", PROMOTED),
    Scenario("latency-median+100pct", "v2-slow-median-100pct", ROLLED_BACK),
    # 2% of requests slower: p99 +7.6 / +22 / +36 ms of the demo's 36 ms; the measured p99 (router and
    # locust add theirs, ~55 ms in all) may rise by 50% + 5 ms = ~32 ms.
    Scenario("latency-p99+20pct", "v2-slow-tail-20pct", PROMOTED),
    Scenario("latency-p99+60pct", "v2-slow-tail-60pct", PROMOTED),
    Scenario("latency-p99+100pct", "v2-slow-tail-100pct", ROLLED_BACK),
    Scenario("late-failure", "v2-late-failure", ROLLED_BACK),
    Scenario("fails-after-switch", "v2-fails-on-signal", ROLLED_BACK, fail_after_switch=True),
    Scenario("equal-noise", "v2-noisy", PROMOTED, baseline="v1-noisy"),
)
SCENARIO_NAMES: Final = tuple(scenario.name for scenario in SCENARIOS)


@dataclass(frozen=True)
class Row:
    scenario: str
    strategy: str
    expected: str
    decision: str
    exit_code: int
    decided_in: str
    to_decision_s: float | None
    candidate_requests: int | None
    reason: str = ""

    @property
    def as_expected(self) -> bool:
        if self.expected == NOT_PROMOTED:
            return self.decision in (ROLLED_BACK, "inconclusive")
        return self.decision == self.expected


@dataclass
class Project:
    """The bench's release project and the local cluster running in it."""

    path: Path
    env: dict[str, str]
    released: set[str] = field(default_factory=set)

    def local(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, "-m", "releasegate.targets.local", *args], cwd=self.path, env=self.env,
                              capture_output=True, text=True, timeout=120)

    def state(self) -> dict[str, Any] | None:
        result = self.local("status", "--json")
        if result.returncode != 0 or not result.stdout.lstrip().startswith("{"):
            return None
        state: dict[str, Any] = json.loads(result.stdout)
        return state

    def start(self, baseline: str) -> None:
        self.local("down")
        result = self.local("up", "--version", baseline)
        if result.returncode != 0:
            raise SystemExit(f"the local cluster did not start: {result.stderr.strip() or result.stdout.strip()}")
        self.released = {baseline}

    def ready_for(self, scenario: Scenario) -> None:
        """Restart the cluster unless it runs only the baseline, live, and never ran the candidate."""
        state = self.state()
        if state is None or live_versions(state) != {scenario.baseline} or scenario.version in self.released:
            self.start(scenario.baseline)


def live_versions(state: dict[str, Any]) -> set[str]:
    """The versions of every slot that has pods or traffic."""
    return {slot["version"] for name, slot in state["slots"].items()
            if slot["version"] and (slot["pods"] or state["traffic"].get(name, 0) > 0)}


def make_project(path: Path) -> Project:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "suites", path / "suites", ignore=ignore, dirs_exist_ok=True)
    shutil.copyfile(ROOT / "conftest.py", path / "conftest.py")
    shutil.copyfile(ROOT / "releasegate.toml", path / "releasegate.toml")
    (path / "pytest.ini").write_text("[pytest]\naddopts = -p no:locust -p no:cacheprovider\n", encoding="utf-8")
    (path / "logs").mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "RELEASEGATE_DEMO_SEED"}
    env["RELEASEGATE_PROFILES"] = str(PROFILES)
    return Project(path, env)


# --- one release --------------------------------------------------------------------------------------------


def router_requests(admin_url: str, version: str) -> int:
    """Requests the router has seen answered by pods of `version`, over all its listeners."""
    text = httpx.get(f"{admin_url}/metrics", timeout=10, trust_env=False).text
    return int(sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == "releasegate_router_requests_total" and sample.labels.get("version") == version))


class FailureAfterSwitch:
    """Sends SIGUSR1 to the candidate's pods once all of the service's traffic is on the candidate."""

    def __init__(self, run_dir: Path, version: str) -> None:
        self.run_dir, self.version = run_dir, version
        self.stopped = threading.Event()
        self.signalled_at: float | None = None
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.stopped.wait(POLL_S):
            state = read_state_file(self.run_dir)
            pods = candidate_pods_with_all_traffic(state, self.version) if state else []
            if pods:
                for pid in pods:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGUSR1)
                self.signalled_at = time.monotonic()
                return

    @contextlib.contextmanager
    def running(self) -> Iterator[FailureAfterSwitch]:
        self.thread.start()
        try:
            yield self
        finally:
            self.stopped.set()
            self.thread.join()


def candidate_pods_with_all_traffic(state: dict[str, Any], version: str) -> list[int]:
    for name, slot in state["slots"].items():
        if slot["version"] == version and state["traffic"].get(name, 0) == 100:
            return [int(pod["pid"]) for pod in slot["pods"] if pod.get("pid")]
    return []


def release(project: Project, scenario: Scenario, strategy: str, log_name: str) -> Row:
    state = project.state()
    if state is None:
        raise SystemExit(f"no local cluster runs in {project.path}")
    before = router_requests(state["admin_url"], scenario.version)
    previous_run = read_json(project.path / "reports" / "latest" / "release-report.json").get("run_id")
    argv = [PYTHON, "-m", "pytest", "--release", scenario.version, "--release-strategy", strategy,
            "-p", "no:cacheprovider", "-q"]
    trigger = FailureAfterSwitch(Path(state["run_dir"]), scenario.version)
    with (project.path / "logs" / log_name).open("w") as log, \
            (trigger.running() if scenario.fail_after_switch else contextlib.nullcontext()):
        try:
            exit_code = subprocess.run(argv, cwd=project.path, env=project.env, stdout=log, stderr=subprocess.STDOUT,
                                       timeout=RELEASE_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            exit_code = -1  # killed: the next ready_for() restarts the cluster it left mid-release
    project.released.add(scenario.version)
    report = read_json(project.path / "reports" / "latest" / "release-report.json")
    if report.get("run_id") == previous_run:
        report = {}  # this release wrote no report
    decided_in, seconds = time_to_decision(report)
    after = router_requests(state["admin_url"], scenario.version)
    reason = str(report.get("reason") or "")
    if scenario.fail_after_switch and trigger.signalled_at is None:
        reason = f"(the failure never began: no traffic moved to the candidate) {reason}"
    return Row(scenario.name, strategy, scenario.expected, junit_decision(project.path), exit_code, decided_in,
               seconds, after - before, reason)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def junit_decision(project: Path) -> str:
    try:
        root = ElementTree.parse(project / "reports" / "latest" / "junit.xml").getroot()
    except (FileNotFoundError, ElementTree.ParseError):
        return "no junit"
    found = root.find(".//testsuite/properties/property[@name='release.decision']")
    return "no decision" if found is None else found.get("value", "")


def deciding_stage(report: dict[str, Any]) -> str | None:
    """The stage of the first failed, errored or inconclusive test; for a promotion, the switch or promote."""
    for test in report.get("tests", []):
        if test["outcome"] in ("failed", "error", "inconclusive"):
            return str(test["stage"])
    if report.get("decision") == PROMOTED:
        return "promote" if report.get("strategy") == "canary" else "switch"
    return None


def time_to_decision(report: dict[str, Any]) -> tuple[str, float | None]:
    """(deciding stage, seconds from the end of provision to the end of that stage); see the module docstring."""
    stage = deciding_stage(report)
    phases: dict[str, float] = report.get("phase_times_s", {})
    if stage is None or stage not in phases:
        return stage or "-", None
    names = list(phases)
    first = names.index("provision") + 1 if "provision" in names else 0
    return stage, sum(phases[name] for name in names[first:names.index(stage) + 1])


# --- the table ----------------------------------------------------------------------------------------------

COLUMNS: Final = (("scenario", 24), ("strategy", 10), ("expected", 12), ("decision", 12), ("ok", 3), ("exit", 4),
                  ("decided in", 15), ("to decision", 11), ("candidate requests", 18))


def format_row(values: Sequence[str]) -> str:
    return "  ".join(value.ljust(width) if index < 7 else value.rjust(width)
                     for index, (value, (_, width)) in enumerate(zip(values, COLUMNS, strict=True)))


def row_values(row: Row) -> list[str]:
    seconds = "-" if row.to_decision_s is None else f"{row.to_decision_s:.1f}s"
    requests = "-" if row.candidate_requests is None else str(row.candidate_requests)
    return [row.scenario, row.strategy, row.expected, row.decision, "yes" if row.as_expected else "NO",
            str(row.exit_code), row.decided_in, seconds, requests]


def emit(line: str) -> None:
    print(line, flush=True)


def plan(scenarios: Sequence[Scenario], strategies: Sequence[str], runs: int,
         repeat: int) -> list[tuple[Scenario, str]]:
    """Every scenario over every strategy: healthy `runs` times, the others `repeat` times."""
    return [(scenario, strategy) for strategy in strategies for scenario in scenarios
            for _ in range(runs if scenario.healthy else repeat)]


def run_matrix(project: Project, matrix: list[tuple[Scenario, str]]) -> list[Row]:
    emit(format_row([name for name, _ in COLUMNS]))
    emit(format_row(["-" * width for _, width in COLUMNS]))
    rows = []
    for number, (scenario, strategy) in enumerate(matrix, start=1):
        project.ready_for(scenario)
        row = release(project, scenario, strategy, f"{number:03d}-{scenario.name}-{strategy}.log")
        emit(format_row(row_values(row)))
        rows.append(row)
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="healthy releases per strategy (default 3)")
    parser.add_argument("--repeat", type=int, default=1, help="releases of every other scenario (default 1)")
    parser.add_argument("--scenarios", default=",".join(SCENARIO_NAMES),
                        help="comma-separated scenario names (default: all; --list shows them)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="blue-green, canary or both")
    parser.add_argument("--project", type=Path, help="project folder to use and keep (default: a temporary one)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = parser.parse_args(argv)
    unknown = [name for name in split(args.scenarios) if name not in SCENARIO_NAMES]
    unknown += [name for name in split(args.strategies) if name not in STRATEGIES]
    if unknown:
        parser.error(f"unknown scenario or strategy: {', '.join(unknown)} (see --list)")
    return args


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def list_scenarios() -> None:
    for scenario in SCENARIOS:
        emit(f"{scenario.name:<24} {scenario.version:<26} baseline {scenario.baseline:<9} expected {scenario.expected}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list:
        list_scenarios()
        return
    chosen = set(split(args.scenarios))
    scenarios = [scenario for scenario in SCENARIOS if scenario.name in chosen]
    matrix = plan(scenarios, split(args.strategies), args.runs, args.repeat)
    with contextlib.ExitStack() as stack:
        path = args.project or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="decisions-")))
        path.mkdir(parents=True, exist_ok=True)
        project = make_project(path.resolve())
        stack.callback(project.local, "down")
        emit(f"{len(matrix)} releases in {project.path} (logs in logs/), shipped suites and releasegate.toml")
        rows = run_matrix(project, matrix)
    emit(f"{sum(row.as_expected for row in rows)} of {len(rows)} decisions as expected; the reasons:")
    for number, row in enumerate(rows, start=1):
        emit(f"{number:3d}. {row.scenario} ({row.strategy}): {shorten(row.reason) or row.decision}")
    if args.json:
        def median_s(healthy: bool) -> float | None:
            chosen = sorted(row.to_decision_s for row in rows if row.to_decision_s is not None
                            and (row.scenario == "healthy") == healthy)
            return round(chosen[len(chosen) // 2], 1) if chosen else None

        emit_figures("decisions", [
            Figure("decisions not as expected", sum(not row.as_expected for row in rows), f"of {len(rows)}"),
            Figure("healthy candidate: first request to decision, median", median_s(True), "s"),
            Figure("regressed candidates: first request to decision, median", median_s(False), "s"),
        ], note=f"scenarios {args.scenarios}; strategies {args.strategies}")


def shorten(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


if __name__ == "__main__":
    main()
