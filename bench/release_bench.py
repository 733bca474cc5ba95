"""Where the time of a release goes: configured waits versus the framework's own overhead, phase by phase.

    python bench/release_bench.py [--cluster persistent|ephemeral|both] [--repeat 3] [--json]
                                  [--load-s 15] [--compare-s 10] [--post-switch-s 10] [--keep-warm-s 10]
                                  [--min-ready-s 1]

Runs `pytest --release v2` with the shipped suites (the README's main job: the same waits as releasegate.toml)
in a temporary project, on a local cluster that is
- `persistent`: started first with `python -m releasegate.targets.local up` (not timed as part of the
  release), then left until its Prometheus has scraped the pods' target once (Prometheus 2.42 scrapes
  nothing until its first service-discovery tick, about 5 s after it starts: a cluster that has been up a
  while is past it), and a fraction of the scrape interval more (spread over the repeats, so that releases
  meet the scrape cycle at different points of it), or
- `ephemeral`: started by the release itself and stopped at its end.
It splits the release's wall time into
- configured waits: the minimum durations of the three loads (load stage, baseline comparison,
  post-switch) and the keep-warm delay, which a user chose and which would take as long with any tool;
- safety waits, which protect a decision and are kept whole (issue 13): a load running past its minimum
  until its sequential checks decide (up to the publication on which they did: the evidence they need),
  and pods staying ready for `local.min_ready_s` (minReadySeconds) at each wait for a slot's pods;
- overhead: everything else, broken down by phase and inside phases (pytest start-up and imports,
  collection, cluster start, pod start, readiness, the candidate's first Prometheus scrape, locust start-up
  and wind-down per load, a load's time from its decision to its stop, Prometheus queries, switch,
  reports, cluster stop, interpreter exit). The overhead counting the safety waits too is printed as well.
The inner figures come from a timing probe (bench/release_timing_probe.py, the temporary project's
conftest.py) that wraps the framework's steps where they are called. Each figure is the median over
`--repeat` runs. `--json` prints them as one JSON object on the last line. Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).resolve().parent / "release_timing_probe.py"
# The goals for the overhead beyond the configured waits (issue 13).
GOALS_S = {"persistent": 3.0, "ephemeral": 5.0}
# The local cluster's default scrape interval (local.scrape_interval_s): a release waits for the candidate's
# first scrape, so the repeats start at evenly spread points of this cycle.
SCRAPE_INTERVAL_S = 0.5
FIRST_SCRAPE_TIMEOUT_S = 30.0

CONFIG = """
[app]
name = "demo"

[release]
keep_warm_s = {keep_warm_s}
required_stages = ["smoke", "load", "analysis"]

[local]
run_dir = "run"
replicas = 2
initial_version = "v1"
min_ready_s = {min_ready_s}

[vars]
load_users = 10
load_duration_s = {load_s}
load_min_requests = 200
analysis_window_s = 60
compare_users = 5
# Loose latency tolerances, as the project's own release tests use: the comparison still runs its 10 s, but
# on a shared 2-core machine the tails are the machine's, and a run that ends inconclusive measures nothing.
compare_latency_tolerance = 1.0
compare_p95_tolerance = 1.0
compare_duration_s = {compare_s}
# p99 of a few thousand requests is the shared machine's worst stall of the minute, not the version's: with it,
# a healthy v2 sometimes ends inconclusive after compare_max_duration_s (60 s), and that run measures nothing.
compare_quantiles = [0.5, 0.95]
post_switch_duration_s = {post_switch_s}
"""
ATTEMPTS = 3  # a release that did not promote (the machine's noise) is run again, and said so

# A load's window as its checks record it: "16.1s of up to 120s (decided)", or "candidate 10.2s of up to
# 60s (decided), baseline 10.3s ..." for a side-by-side comparison; the longest arm is the load's time.
_WINDOW_SECONDS = re.compile(r"(?<!up to )\b(\d+(?:\.\d+)?)s\b")


def _project(tmp: Path, args: argparse.Namespace) -> Path:
    project = tmp / "project"
    project.mkdir()
    shutil.copytree(ROOT / "suites", project / "suites", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROBE, project / "conftest.py")
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:locust -p no:cacheprovider\n")
    (project / "releasegate.toml").write_text(CONFIG.format(
        keep_warm_s=args.keep_warm_s, load_s=args.load_s, compare_s=args.compare_s,
        post_switch_s=args.post_switch_s, min_ready_s=args.min_ready_s))
    return project


def _local(project: Path, env: dict[str, str], command: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "releasegate.targets.local", command], cwd=project, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"`releasegate.targets.local {command}` failed (exit {result.returncode}): "
                         f"{result.stderr[-2000:]}")
    return time.perf_counter() - started


def wait_first_scrape(run_dir: Path) -> None:
    """Until the local cluster's Prometheus (run directory `run_dir`) has scraped its pods' target once: its
    first service-discovery tick, about 5 s after it started, has passed."""
    import httpx

    url = json.loads((run_dir / "state.json").read_text())["prometheus_url"]
    deadline = time.monotonic() + FIRST_SCRAPE_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{url}/api/v1/query", params={"query": 'up{job="pods"} == 1'}, timeout=2,
                               trust_env=False).json()
            if answer["data"]["result"]:
                return
        time.sleep(0.05)
    raise SystemExit(f"the persistent cluster's Prometheus at {url} scraped nothing in {FIRST_SCRAPE_TIMEOUT_S:g}s")


def run_once(args: argparse.Namespace, mode: str, settle_s: float) -> dict[str, Any] | None:
    """One release of v2 over v1; its wall time, configured waits and every part of the overhead (seconds).
    None when it did not promote: its stages ran differently, so its overhead is not comparable."""
    with tempfile.TemporaryDirectory(prefix="release-bench-") as tmp:
        project = _project(Path(tmp), args)
        timings_path = Path(tmp) / "timings.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RELEASE_BENCH_TIMINGS": str(timings_path)}
        up_s = None
        if mode == "persistent":
            up_s = _local(project, env, "up")
            wait_first_scrape(project / "run")  # the cluster has been up a while: see the module docstring
            time.sleep(settle_s)
        try:
            started = time.time()
            result = subprocess.run([sys.executable, "-m", "pytest", "--release", "v2", "-q"],
                                    cwd=project, env=env, capture_output=True, text=True)
            ended = time.time()
        finally:
            if mode == "persistent":
                _local(project, env, "down")
        if result.returncode != 0:
            reason = result.stdout.strip().splitlines()[-3:]
            print(f"  {mode}: the release did not promote (exit {result.returncode}): {' '.join(reason)[:300]}",
                  file=sys.stderr, flush=True)
            return None
        report = json.loads((project / "reports" / "latest" / "release-report.json").read_text())
        timings = json.loads(timings_path.read_text())
    figures = breakdown(args, started, ended, timings, report)
    figures["cluster_up_s"] = up_s
    figures["settle_s"] = settle_s if mode == "persistent" else None
    return figures


def _spans(timings: dict[str, Any], name: str) -> list[dict[str, float]]:
    return [span for span in timings["spans"] if span["name"] == name]


def _seconds(timings: dict[str, Any], name: str) -> float:
    return sum(span["end"] - span["start"] for span in _spans(timings, name))


def _load_window_s(test: dict[str, Any]) -> float | None:
    windows = [float(n) for check in test["checks"] for n in _WINDOW_SECONDS.findall(check.get("window", ""))
               if "locust" in check.get("source", "") or " vs baseline" in check.get("check", "")]
    return max(windows) if windows else None


def _within(span: dict[str, float], outer: list[dict[str, float]]) -> bool:
    return any(o["start"] <= span["start"] and span["end"] <= o["end"] for o in outer)


def breakdown(args: argparse.Namespace, started: float, ended: float, timings: dict[str, Any],
              report: dict[str, Any]) -> dict[str, Any]:
    marks = timings["marks"]
    items = {item["nodeid"]: item for item in timings["items"] if item["end"] is not None}
    tests = {test["nodeid"]: test for test in report["tests"]}
    wall = ended - started
    minimum_load_s = {"load": args.load_s, "analysis": args.compare_s, "post_switch": args.post_switch_s}
    waits = {"load stage": args.load_s, "baseline comparison": args.compare_s,
             "post-switch load": args.post_switch_s, "keep-warm delay": args.keep_warm_s}
    configured = sum(waits.values())

    def item_s(nodeid: str) -> float:
        item = items.get(nodeid)
        return item["end"] - item["start"] if item else 0.0

    parts: dict[str, float] = {
        "pytest start-up and imports": marks["configured"] - started,
        "collection": marks["collected"] - marks["configured"],
    }
    ordered = sorted(items.values(), key=lambda item: item["start"])
    parts["between items"] = sum(max(0.0, b["start"] - a["end"]) for a, b in itertools.pairwise(ordered))
    if ordered:
        parts["before the first item"] = ordered[0]["start"] - marks["collected"]
    open_s = _seconds(timings, "target.open")
    ready_spans = [span for span in timings["spans"] if span["name"].startswith("ready.")]
    # Every wait for a slot's pods lasts min_ready_s at least (they must stay ready that long): a configured
    # safety wait, like Kubernetes's minReadySeconds, not overhead. An ephemeral cluster waits for its first
    # pods inside its start too.
    stability_s = args.min_ready_s * len(ready_spans)
    in_open = sum(1 for span in ready_spans if _within(span, _spans(timings, "target.open")))
    parts["preflight: cluster start or attach (beyond min_ready_s)"] = open_s - args.min_ready_s * in_open
    parts["preflight: the rest"] = item_s("release::preflight") - open_s
    deploy_s = _seconds(timings, "provision.deploy")
    scrape_spans = _spans(timings, "first_scrape")

    def scrape_wait_in(item: dict[str, Any] | None) -> float:
        """The part of an item spent waiting for the candidate's first scrape (provision, or the first item
        after the smoke stage: plugins/prometheus_gate.py)."""
        return 0.0 if item is None else sum(max(0.0, min(item["end"], span["end"]) - max(item["start"], span["start"]))
                                            for span in scrape_spans)

    provision = items.get("release::provision")
    in_provision = [s for s in ready_spans if provision and provision["start"] <= s["start"] <= provision["end"]]
    readiness_s = sum(s["end"] - s["start"] for s in in_provision)
    parts["provision: deploy call"] = deploy_s
    parts["provision: candidate pods ready (start, probe; beyond min_ready_s)"] = \
        readiness_s - args.min_ready_s * len(in_provision)
    parts["first Prometheus scrape of the candidate (after the smoke stage)"] = sum(
        span["end"] - span["start"] for span in scrape_spans)
    parts["provision: the rest"] = item_s("release::provision") - deploy_s - readiness_s - scrape_wait_in(provision)
    locust: list[float] = []
    other_tests = 0.0
    for nodeid, item in items.items():
        if nodeid.startswith("release::"):
            continue
        test = tests.get(nodeid)
        window = _load_window_s(test) if test else None
        duration = item["end"] - item["start"] - scrape_wait_in(item)
        if window is not None and test is not None and test["stage"] in minimum_load_s:
            locust.append(duration - window)
        else:
            other_tests += duration
    loads = timings["loads"]
    # Past its minimum, a load runs until its checks decide: the evidence they need, a safety wait. From that
    # decision to the end of its window is the framework's reaction: overhead.
    evidence_s = sum((load["decided_after_s"] if load["decided_after_s"] is not None else load["window_s"])
                     - load["minimum_s"] for load in loads)
    reaction_s = sum(load["window_s"] - load["decided_after_s"] for load in loads
                     if load["decided_after_s"] is not None)
    parts["locust start-up and wind-down (all loads)"] = sum(locust)
    parts["loads from their checks' decision to their stop"] = reaction_s
    parts["other tests (smoke, Prometheus SLO queries, post-switch checks)"] = other_tests
    parts["switch"] = item_s("release::switch")
    parts["finalize beyond keep-warm"] = item_s("release::finalize") - args.keep_warm_s
    close_s = _seconds(timings, "target.close")
    report_s = _seconds(timings, "reports.release_report")
    session_end = marks["sessionfinish_end"] - marks["sessionfinish_start"]
    # pytest's terminal summary runs inside the session's end (the terminal reporter's sessionfinish wrapper).
    summary_s = marks.get("terminal_summary_end", 0.0) - marks.get("terminal_summary_start", 0.0)
    parts["session end: cluster stop or detach"] = close_s
    parts["session end: release report"] = report_s
    parts["session end: terminal summary (every plugin's)"] = summary_s
    parts["session end: JUnit XML and the rest"] = session_end - close_s - report_s - summary_s
    parts["unconfigure and interpreter exit"] = ended - marks["sessionfinish_end"]
    last_item_end = ordered[-1]["end"] if ordered else marks["collected"]
    parts["after the last item"] = marks["sessionfinish_start"] - last_item_end
    pods = [pod for pod in timings["pods"] if pod["version"] == "v2"] or timings["pods"]
    pod_start = [pod["started_at"] - pod["created_at"] for pod in pods if pod.get("started_at")]
    pod_ready = [pod["ready_since"] - pod["started_at"] for pod in pods if pod.get("ready_since")]
    safety = {"loads past their minimum until their checks decided": evidence_s,
              f"pods staying ready for min_ready_s ({len(ready_spans)} slot wait(s))": stability_s}
    accounted = sum(parts.values())
    overhead = wall - configured - sum(safety.values())
    return {
        "wall_s": wall, "configured_s": configured, "overhead_s": overhead,
        "overhead_counting_safety_waits_s": wall - configured,
        "safety": safety, "safety_s": sum(safety.values()),
        "waits": waits, "parts": parts, "unaccounted_s": overhead - accounted,
        "load_decisions": loads,
        "locust_per_load_s": locust, "phase_times_s": report["phase_times_s"],
        "candidate_pod_spawn_s": max(pod_start) if pod_start else None,
        "candidate_pod_ready_after_spawn_s": max(pod_ready) if pod_ready else None,
        "prometheus_queries": timings["queries"]["count"],
        "prometheus_query_s": timings["queries"]["seconds"],
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every figure over the runs (the parts each on their own, so they need not add up)."""
    parts = {name: statistics.median(run["parts"][name] for run in runs) for name in runs[0]["parts"]}
    loads = len(runs[0]["locust_per_load_s"])
    return {
        "runs": len(runs),
        "wall_s": statistics.median(run["wall_s"] for run in runs),
        "configured_s": runs[0]["configured_s"],
        "overhead_s": statistics.median(run["overhead_s"] for run in runs),
        "overhead_each_run_s": [round(run["overhead_s"], 2) for run in runs],
        "overhead_counting_safety_waits_s": statistics.median(run["overhead_counting_safety_waits_s"] for run in runs),
        "safety": {name: statistics.median(run["safety"][name] for run in runs) for name in runs[0]["safety"]},
        "safety_s": statistics.median(run["safety_s"] for run in runs),
        "load_decisions": [[round(load["decided_after_s"] or load["window_s"], 1) for load in run["load_decisions"]]
                           for run in runs],
        "parts": parts,
        "unaccounted_s": statistics.median(run["unaccounted_s"] for run in runs),
        "locust_per_load_s": [statistics.median(run["locust_per_load_s"][i] for run in runs) for i in range(loads)],
        "phase_times_s": {stage: statistics.median(run["phase_times_s"].get(stage, 0.0) for run in runs)
                          for stage in runs[0]["phase_times_s"]},
        "candidate_pod_spawn_s": _median([run["candidate_pod_spawn_s"] for run in runs]),
        "candidate_pod_ready_after_spawn_s": _median([run["candidate_pod_ready_after_spawn_s"] for run in runs]),
        "prometheus_queries": statistics.median(run["prometheus_queries"] for run in runs),
        "prometheus_query_s": statistics.median(run["prometheus_query_s"] for run in runs),
        "cluster_up_s": _median([run["cluster_up_s"] for run in runs]),
    }


def _print_mode(mode: str, summary: dict[str, Any], waits: dict[str, float]) -> None:
    print(f"\n{mode} cluster: release of v2 over v1, shipped suites, 2 pods per slot; median of {summary['runs']} "
          f"run(s)")
    if summary["cluster_up_s"] is not None:
        print(f"  (`targets.local up` took {summary['cluster_up_s']:.1f}s before the release; not counted)")
    print(f"  wall time          {summary['wall_s']:6.1f}s")
    listed = ", ".join(f"{k} {v:g}s" for k, v in waits.items())
    print(f"  configured waits   {summary['configured_s']:6.1f}s  ({listed})")
    print(f"  safety waits       {summary['safety_s']:6.2f}s  (waits that protect a decision, kept whole; each load "
          "decided after: " + "; ".join(", ".join(f"{s:g}s" for s in run) for run in summary["load_decisions"]) + ")")
    for name, seconds in summary["safety"].items():
        print(f"    {name:<66} {seconds:6.2f}s")
    goal = GOALS_S[mode]
    verdict = "meets" if summary["overhead_s"] <= goal else "misses"
    print(f"  overhead           {summary['overhead_s']:6.2f}s  ({verdict} the goal of <= {goal:g}s; each run: "
          f"{', '.join(f'{v:.2f}' for v in summary['overhead_each_run_s'])})")
    for name, seconds in summary["parts"].items():
        print(f"    {name:<66} {seconds:6.2f}s")
    print(f"    {'(not accounted for above)':<66} {summary['unaccounted_s']:6.2f}s")
    print(f"  overhead counting the safety waits too: {summary['overhead_counting_safety_waits_s']:.2f}s")
    print("  inside:")
    per_load = ", ".join(f"{s:.2f}" for s in summary["locust_per_load_s"])
    print(f"    locust start-up and wind-down per load: {per_load} s")
    if summary["candidate_pod_spawn_s"] is not None:
        print(f"    candidate pod: process started {summary['candidate_pod_spawn_s']:.2f}s after its deploy, ready "
              f"{summary['candidate_pod_ready_after_spawn_s']:.2f}s after that (slowest pod)")
    print(f"    Prometheus queries from the pytest process: {summary['prometheus_queries']:.0f}, "
          f"{summary['prometheus_query_s']:.2f}s in all")
    print("    report phase_times_s: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["phase_times_s"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", choices=("persistent", "ephemeral", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cluster mode; figures are medians")
    parser.add_argument("--settle-s", type=float, default=None,
                        help="seconds between the cluster's first scrape and the release (default: spread over "
                             "the scrape interval)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    parser.add_argument("--load-s", type=float, default=15)
    parser.add_argument("--compare-s", type=float, default=10)
    parser.add_argument("--post-switch-s", type=float, default=10)
    parser.add_argument("--keep-warm-s", type=float, default=10)
    parser.add_argument("--min-ready-s", type=float, default=1.0, help="local.min_ready_s (its default)")
    args = parser.parse_args()
    modes = ["persistent", "ephemeral"] if args.cluster == "both" else [args.cluster]
    summaries: dict[str, dict[str, Any]] = {}
    waits: dict[str, float] = {}
    for mode in modes:
        runs = []
        for index in range(args.repeat):
            settle_s = SCRAPE_INTERVAL_S * (index + 0.5) / args.repeat if args.settle_s is None else args.settle_s
            for _attempt in range(ATTEMPTS):
                figures = run_once(args, mode, settle_s)
                if figures is not None:
                    break
            else:
                raise SystemExit(f"{mode}: no release promoted in {ATTEMPTS} attempts")
            runs.append(figures)
            print(f"{mode} run {index + 1}/{args.repeat}: overhead {runs[-1]['overhead_s']:.2f}s of "
                  f"{runs[-1]['wall_s']:.1f}s", file=sys.stderr, flush=True)
        waits = runs[0]["waits"]
        summaries[mode] = summarise(runs)
        _print_mode(mode, summaries[mode], waits)
    if args.json:
        figures: dict[str, Any] = {"bench": "release", "repeat": args.repeat, "configured_waits_s": waits,
                                   "goals_s": {f"overhead_{mode}_s": GOALS_S[mode] for mode in modes}}
        for mode, summary in summaries.items():
            figures[f"overhead_{mode}_s"] = round(summary["overhead_s"], 3)
            figures[f"wall_{mode}_s"] = round(summary["wall_s"], 3)
            figures[f"safety_waits_{mode}_s"] = round(summary["safety_s"], 3)
            figures[f"overhead_counting_safety_waits_{mode}_s"] = round(summary["overhead_counting_safety_waits_s"], 3)
            figures[mode] = summary
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
