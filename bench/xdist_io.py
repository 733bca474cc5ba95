"""`pytest --release -n 0 / -n 2 / -n 4` on a suite of checks that each wait on I/O; the stage barriers checked.

    python bench/xdist_io.py [--checks 20] [--wait-s 1] [--workers 0,2,4] [--repeat 1] [--json]

The bench writes a release project into a temporary folder: 20 checks spread over three stages (smoke 8,
analysis 8, post_switch 4: multiples of 4, so 4 workers can share every stage evenly), each one request to the
candidate's GET /api/items, which the demo pods answer after --wait-s (the profile's latency, no spread): a
check that waits on a slow dependency, as most release checks do, and no CPU. One persistent local cluster
(`python -m releasegate.targets.local up`, 1 pod a slot) serves every run, so its start (router, pods,
Prometheus) is outside every timing; each run releases a version of its own over the last one, with
`keep_warm_s = 0`. Runs alternate between the worker counts (-n 0, 2, 4, then again) so a change in the
machine's load spreads over all of them.

Timed, per worker count (the median over --repeat runs):
- whole run: the wall time of the pytest process, start to exit, as a CI job sees it (pytest and xdist
  start-up, collection, preflight, provision, the stages, switch, finalize, reports);
- verification stages: smoke + analysis + post_switch from the report's `phase_times_s` (each stage from its
  first item's start to its last item's end): the part -n spreads over workers;
- before the first item: from the pytest process's start to the first item's start (the ledger), which is
  where xdist's worker start-up shows; after the last item: from the last item's end to the process's exit
  (reports, and the workers shutting down).
A release waits for the candidate's first Prometheus scrape after its smoke stage: 0-0.5 s, by where in the cluster's
scrape interval (0.5 s; its Prometheus scrapes every pod through one stable target) it lands. Runs alternate,
so without care each worker count could meet that cycle at its own fixed point and the speed-up would
measure that luck. The runs start once Prometheus has scraped the cluster at all (its first discovery tick,
about 5 s after `up`), each round starts its runs at the same point of the scrape cycle (counted from then),
and the rounds spread that point evenly over the cycle.
Speed-ups are -n 0 over -n N. Barriers: in every run, every check writes when its request started and ended
(its own clock, not the framework's), and the ledger records every item, actions included; the barrier
holds when no item of a stage started before the last item of every earlier stage finished. Prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, emit  # noqa: E402
from bench.release_bench import wait_first_scrape  # noqa: E402
from tests.local_cluster import run_module  # noqa: E402

SCRAPE_CYCLE_S = 0.5
"""The local cluster's scrape interval (local.scrape_interval_s's default; see the module docstring)."""

STAGES = {"smoke": 8, "analysis": 8, "post_switch": 4}
"""Checks per stage for the default 20; other counts are spread in the same proportions."""

VERIFICATION = tuple(STAGES)

CONFIG = """
[release]
keep_warm_s = 0
required_stages = ["smoke", "analysis"]

[local]
run_dir = "run"
replicas = 1
profiles = "profiles.toml"
min_ready_s = 0.2
"""

PROFILES = """
# Every version's /api/* answers after exactly {wait_ms} ms: the checks' I/O wait.
[defaults]
latency_ms = {wait_ms}
latency_spread_ms = 0
error_rate = 0
"""

CHECK = '''
"""{count} checks of the {stage} stage, each waiting on the candidate's slow GET /api/items."""

import json
import time
from pathlib import Path

import httpx
import pytest

WITNESS = Path(__file__).resolve().parents[2] / "witness"


@pytest.mark.parametrize("number", range({count}))
def test_waits_on_io(number, candidate, release):
    started = time.time()
    answer = httpx.get(candidate.url + "/api/items", timeout=30, trust_env=False)
    finished = time.time()
    WITNESS.mkdir(exist_ok=True)
    (WITNESS / f"{{release.version}}-{stage}-{{number}}.json").write_text(json.dumps(
        {{"stage": "{stage}", "started": started, "finished": finished}}))
    assert answer.status_code == 200
    assert answer.headers["X-App-Version"] == release.version
'''


@dataclass(frozen=True)
class Run:
    workers: int
    version: str
    exit_code: int
    wall_s: float
    verification_s: float
    before_first_item_s: float
    after_last_item_s: float
    barrier_problems: tuple[str, ...]
    checks_passed: int
    phases: dict[str, float]


def spread(checks: int) -> dict[str, int]:
    """`checks` over the stages in the default proportions (8:8:4), at least one each."""
    total = sum(STAGES.values())
    counts = {stage: max(1, round(checks * share / total)) for stage, share in STAGES.items()}
    counts["smoke"] += checks - sum(counts.values())
    return counts


def write_project(path: Path, checks: int, wait_s: float) -> dict[str, int]:
    counts = spread(checks)
    (path / "pytest.ini").write_text("[pytest]\naddopts = -p no:locust -p no:cacheprovider\n")
    (path / "conftest.py").write_text("")
    (path / "releasegate.toml").write_text(CONFIG)
    (path / "profiles.toml").write_text(PROFILES.format(wait_ms=round(wait_s * 1000)))
    for stage, count in counts.items():
        folder = path / "suites" / stage
        folder.mkdir(parents=True)
        (folder / f"test_{stage}_io.py").write_text(textwrap.dedent(CHECK.format(stage=stage, count=count)).lstrip())
    return counts


def local(project: Path, *args: str) -> None:
    result = run_module("releasegate.targets.local", "--config", str(project / "releasegate.toml"), *args,
                        cwd=project, timeout=180)
    if result.returncode != 0:
        raise SystemExit(f"local cluster {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")


def barrier_problems(spans: list[tuple[str, float, float]], order: list[str], source: str) -> list[str]:
    """Each pair of stages where an item of the later one started before an item of an earlier one ended."""
    problems = []
    for position, stage in enumerate(order):
        starts = [started for name, started, _ in spans if name == stage]
        if not starts:
            continue
        for earlier in order[:position]:
            ends = [finished for name, _, finished in spans if name == earlier]
            if ends and min(starts) < max(ends):
                problems.append(f"{source}: a {stage} item started {max(ends) - min(starts):.3f}s before the last "
                                f"{earlier} item ended")
    return problems


def ledger_spans(project: Path, run_id: str) -> tuple[list[tuple[str, float, float]], list[str]]:
    """(stage, started, finished) of every item the run's ledger recorded, and the stages in item order."""
    records = [json.loads(path.read_text())
               for path in (project / ".releasegate" / "runs" / run_id / "items").glob("*.json")]
    records.sort(key=lambda record: record["index"])
    order: list[str] = []
    for record in records:
        if record["stage"] not in order:
            order.append(record["stage"])
    return [(str(r["stage"]), float(r["started"]), float(r["finished"])) for r in records], order


def release(project: Path, version: str, workers: int) -> Run:
    argv = [sys.executable, "-m", "pytest", "--release", version, "-q"]
    if workers:
        argv += ["-n", str(workers)]
    started_epoch, started = time.time(), time.perf_counter()
    result = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=600)
    wall, ended_epoch = time.perf_counter() - started, time.time()
    report = json.loads((project / "reports" / "latest" / "release-report.json").read_text())
    if report.get("version") != version:
        raise SystemExit(f"-n {workers}: the run wrote no report of {version} (exit {result.returncode})\n"
                         + result.stdout[-2000:] + result.stderr[-2000:])
    phases: dict[str, float] = report["phase_times_s"]
    spans, order = ledger_spans(project, report["run_id"])
    problems = barrier_problems(spans, order, "ledger")
    witnessed = [json.loads(path.read_text()) for path in (project / "witness").glob(f"{version}-*.json")]
    problems += barrier_problems([(w["stage"], w["started"], w["finished"]) for w in witnessed],
                                 list(VERIFICATION), "the checks' own clocks")
    first_item = min((item_started for _, item_started, _ in spans), default=started_epoch)
    last_item = max((item_finished for _, _, item_finished in spans), default=ended_epoch)
    passed = sum(1 for test in report["tests"] if test["stage"] in VERIFICATION and test["outcome"] == "passed")
    if result.returncode != 0:  # the figures of this run mean little: show why
        print(f"-n {workers}: exit {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-1000:]}",
              file=sys.stderr)
    return Run(workers, version, result.returncode, wall, sum(phases.get(stage, 0.0) for stage in VERIFICATION),
               first_item - started_epoch, ended_epoch - last_item, tuple(problems), passed, phases)


def at_point_of_cycle(up_at: float, point_s: float) -> None:
    """Return when `point_s` seconds of a scrape cycle counted from `up_at` have passed: every worker count
    of a round starts at the same point of Prometheus's cycle (a deliberate offset, not a wait for a state)."""
    elapsed = time.monotonic() - up_at
    time.sleep((point_s - elapsed) % SCRAPE_CYCLE_S)


def ideal_s(counts: dict[str, int], workers: int, wait_s: float) -> float:
    """The verification stages' time with no overhead at all: each stage takes ceil(checks / workers) waits."""
    return sum(-(-count // max(workers, 1)) * wait_s for count in counts.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=20)
    parser.add_argument("--wait-s", type=float, default=1.0, help="each check's I/O wait")
    parser.add_argument("--workers", default="0,2,4", help="comma-separated -n values; the first is the base")
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count (the median is shown)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = parser.parse_args()
    workers = [int(n) for n in args.workers.split(",")]
    if args.checks < len(STAGES) or args.repeat < 1 or not workers or min(workers) < 0 or args.wait_s <= 0:
        parser.error(f"--checks must be at least {len(STAGES)}, --repeat at least 1, --workers non-negative "
                     "integers such as 0,2,4, --wait-s positive")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="rg-xdist-io-") as tmp:
        project = Path(tmp)
        counts = write_project(project, args.checks, args.wait_s)
        local(project, "up")
        wait_first_scrape(project / "run")
        up_at = time.monotonic()
        try:
            for round_number in range(args.repeat):
                point_s = SCRAPE_CYCLE_S * (round_number + 0.5) / args.repeat
                for n in workers:
                    at_point_of_cycle(up_at, point_s)
                    run = release(project, f"io-n{n}-r{round_number + 1}", n)
                    runs.append(run)
                    print(f"  -n {n}: exit {run.exit_code}, whole run {run.wall_s:5.1f}s, verification stages "
                          f"{run.verification_s:5.1f}s, first item after {run.before_first_item_s:4.1f}s, exit "
                          f"{run.after_last_item_s:4.1f}s after the last, "
                          f"{run.checks_passed}/{args.checks} checks passed, barrier "
                          f"{'held' if not run.barrier_problems else 'BROKEN: ' + '; '.join(run.barrier_problems)}",
                          flush=True)
        finally:
            local(project, "down")
    print(f"load average after: {os.getloadavg()[0]:.1f}")

    def median(n: int, attribute: str) -> float:
        return float(statistics.median(getattr(run, attribute) for run in runs if run.workers == n))

    base = workers[0]
    stages = ", ".join(f"{stage} {count}" for stage, count in counts.items())
    print(f"{args.checks} checks ({stages}), each {args.wait_s:g}s on I/O; medians of {args.repeat} run(s):")
    figures: list[Figure] = []
    for n in workers:
        wall, verification = median(n, "wall_s"), median(n, "verification_s")
        before = median(n, "before_first_item_s")
        line = (f"  -n {n}: whole run {wall:5.1f}s, verification stages {verification:5.1f}s, "
                f"first item after {before:4.1f}s")
        ideal = ideal_s(counts, n, args.wait_s)
        phases = {stage: statistics.median(run.phases.get(stage, 0.0) for run in runs if run.workers == n)
                  for stage in next(run.phases for run in runs if run.workers == n)}
        line += f" (ideal {ideal:g}s)"
        phases_line = ("      phases: " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
                       + f"; outside every stage {wall - sum(phases.values()):.2f}")
        figures += [Figure(f"-n {n}: whole pytest run", round(wall, 2), "s"),
                    Figure(f"-n {n}: verification stages (report phase times)", round(verification, 2), "s",
                           note=f"ideal {ideal:g}s: ceil(checks/workers) waits a stage"),
                    Figure(f"-n {n}: outside the verification stages", round(wall - verification, 2), "s",
                           note="start-up, preflight, provision, switch, finalize, reports"),
                    Figure(f"-n {n}: pytest start to first item (ledger)", round(before, 2), "s",
                           note="xdist: workers started and collected"),
                    Figure(f"-n {n}: last item to pytest exit (ledger)", round(median(n, "after_last_item_s"), 2), "s",
                           note="reports, workers shut down")]
        if n != base:
            whole_x = median(base, "wall_s") / wall
            stages_x = median(base, "verification_s") / verification if verification else float("nan")
            line += f"; speed-up over -n {base}: whole run {whole_x:.2f}x, verification stages {stages_x:.2f}x"
            target = ">= 3" if n == 4 and base == 0 else None
            # Amdahl: -n spreads only the stages; the rest of -n 0's run (start-up, provision, switch, finalize,
            # reports) stays even if xdist cost nothing and every stage took its ideal time.
            bound_x = median(base, "wall_s") / (median(base, "wall_s") - median(base, "verification_s") + ideal)
            line += f" (at most {bound_x:.2f}x if xdist cost nothing)"
            figures += [Figure(f"-n {n} speed-up over -n {base}: whole pytest run", round(whole_x, 2), "x", target,
                               note=f"at most {bound_x:.2f}x: -n {base}'s time outside the stages + ideal stages"),
                        Figure(f"-n {n} speed-up over -n {base}: verification stages", round(stages_x, 2), "x",
                               target)]
        print(line)
        print(phases_line)
    broken = [f"{run.version}: {problem}" for run in runs for problem in run.barrier_problems]
    failed = [run for run in runs if run.exit_code != 0 or run.checks_passed != args.checks]
    print(f"  stage barriers: {'held in every run' if not broken else 'BROKEN'}; runs not promoted with every "
          f"check passed: {len(failed)}")
    for problem in broken:
        print(f"    {problem}")
    figures += [Figure("runs where a stage barrier broke", len({b.split(':')[0] for b in broken}), "runs", "== 0",
                       note="ledger (all items) and the checks' own clocks"),
                Figure("runs not promoted with every check passed", len(failed), "runs", "== 0")]
    if args.json:
        emit("xdist_io", figures, note=f"{args.checks} checks x {args.wait_s:g}s I/O, median of {args.repeat}; "
                                        "persistent local cluster (its start-up not timed)")
    return 1 if broken or failed else 0


if __name__ == "__main__":
    sys.exit(main())
