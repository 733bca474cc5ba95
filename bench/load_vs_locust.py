"""The load runner's requests per second against plain `locust --headless`, same user class and settings.

    python bench/load_vs_locust.py [--users 10] [--spawn-rate 10] [--seconds 15] [--rounds 3] [--json]

One demo service process (`python -m releasegate.demo` through tests/verifiers_services.py, the shipped
profile of v1: 10 ms + |gauss(0, 10 ms)|, seeded) on a loopback port, and the shipped locustfile
(suites/load/locustfile.py, ShopUser: think time 10-50 ms, 3 x GET /api/items : 1 x POST /api/checkout)
against it, alternately:
- runner: the project's load runner, `verifiers.load.run_load` with a LoadProfile of --users, --spawn-rate
  and --seconds (locust in a subprocess with the collector beside the locustfile, live counts each second
  and the sequential judge watching them; no checks, so it runs the whole window, as a fixed load stage);
- plain: `python -m locust --headless -f <the same locustfile> -u <users> -r <spawn-rate> -t <seconds>s
  --json-file ...`, nothing else loaded.
Requests per second is each tool's own count over its own window (the runner: the collector's
`LoadResult.rps`, test start to test stop; plain locust: the requests of its final JSON stats over its first
to its last request, `last_request_timestamp - start_time`, a window a little shorter, which can only favour
plain locust), so both include the spawn ramp. Rounds alternate runner/plain and
swap who goes first each round, so a drift in the machine's load falls on both. The ratio is the median of
the runner's rounds over the median of plain locust's. A second witness counts at the service: the /api/*
answers of its Prometheus counter (`http_requests_total`) during each run, over the configured seconds: the
requests a run of that duration delivers, which also depends on how much of its duration each tool spends
sending. Wall seconds per run (process start to exit) are printed beside it: they include each tool's
start-up and shutdown. Prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, emit  # noqa: E402
from releasegate.verifiers.load import LoadProfile, run_load  # noqa: E402
from tests.verifiers_services import demo_service  # noqa: E402

LOCUSTFILE = ROOT / "suites" / "load" / "locustfile.py"
TARGET_RATIO = 0.95  # issue 12: the load runner keeps at least 95% of plain locust's rate


def runner_rps(url: str, users: int, spawn_rate: float, seconds: float) -> tuple[float, int]:
    profile = LoadProfile(LOCUSTFILE, users=users, spawn_rate=spawn_rate, duration_s=seconds, min_requests=1)
    result = run_load(profile, url)
    assert result.rps is not None
    return result.rps, result.requests


def plain_rps(url: str, users: int, spawn_rate: float, seconds: float) -> tuple[float, int]:
    # The environment the runner gives locust (verifiers.load._environment): no LOCUST_* settings, no proxy.
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith("LOCUST_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy",
                                                                        "no_proxy")}
    with tempfile.TemporaryDirectory(prefix="rg-plain-locust-") as tmp:
        stats_file = Path(tmp) / "stats.json"
        result = subprocess.run(
            [sys.executable, "-m", "locust", "--headless", "-f", str(LOCUSTFILE), "--host", url, "--users",
             str(users), "--spawn-rate", f"{spawn_rate:g}", "--run-time", f"{seconds:g}s", "--only-summary",
             "--loglevel", "WARNING", "--exit-code-on-error", "0", "--json-file", str(stats_file.with_suffix(""))],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=seconds + 60)
        if result.returncode != 0 or not stats_file.is_file():
            raise SystemExit(f"plain locust failed (exit {result.returncode}): {result.stderr[-1500:]}")
        stats = json.loads(stats_file.read_text())
    requests = sum(int(entry["num_requests"]) for entry in stats)
    started = min(float(entry["start_time"]) for entry in stats)
    last = max(float(entry["last_request_timestamp"]) for entry in stats)
    return requests / (last - started), requests


def served(url: str) -> int:
    """/api/* requests the demo service has answered so far, from its own Prometheus counter."""
    text = httpx.get(url + "/metrics", timeout=10, trust_env=False).text
    return int(sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == "http_requests_total" and sample.labels.get("handler", "").startswith("/api/")))


@dataclass(frozen=True)
class Measured:
    rps: float  # the tool's own count over its own window
    requests: int
    served_rps: float  # the service's count of /api/* answers during the run, over the configured seconds
    wall_s: float


def timed(url: str, seconds: float, measure: Callable[[], tuple[float, int]]) -> Measured:
    before, started = served(url), time.perf_counter()
    rps, requests = measure()
    wall = time.perf_counter() - started
    return Measured(rps, requests, (served(url) - before) / seconds, wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--spawn-rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=15.0, help="each run's duration")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tool")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = parser.parse_args()
    if args.users < 1 or args.spawn_rate <= 0 or args.seconds < 2 or args.rounds < 1:
        parser.error("--users and --rounds must be at least 1, --spawn-rate positive, --seconds at least 2")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    runs: dict[str, list[Measured]] = {"runner": [], "plain": []}
    with demo_service("v1", ROOT / "demo" / "profiles.toml", slot="blue") as service:
        url = service.url
        measures = {"runner": lambda: runner_rps(url, args.users, args.spawn_rate, args.seconds),
                    "plain": lambda: plain_rps(url, args.users, args.spawn_rate, args.seconds)}
        for round_number in range(args.rounds):
            order = ("runner", "plain") if round_number % 2 == 0 else ("plain", "runner")
            for tool in order:
                run = timed(url, args.seconds, measures[tool])
                runs[tool].append(run)
                print(f"  round {round_number + 1} {tool:<6} {run.rps:7.1f} req/s  {run.requests:6d} requests  "
                      f"served {run.served_rps:7.1f}/s  wall {run.wall_s:5.1f}s", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")

    def median(tool: str, attribute: str) -> float:
        return float(statistics.median(getattr(run, attribute) for run in runs[tool]))

    ratio = median("runner", "rps") / median("plain", "rps")
    served_ratio = median("runner", "served_rps") / median("plain", "served_rps")
    print(f"{args.users} users, spawn {args.spawn_rate:g}/s, {args.seconds:g}s, {args.rounds} rounds, "
          f"{LOCUSTFILE.relative_to(ROOT)} against the demo service (v1) directly; medians:")
    for tool, title in (("runner", "load runner (run_load) "), ("plain", "plain locust --headless")):
        print(f"  {title} {median(tool, 'rps'):7.1f} req/s (its own count)  {median(tool, 'served_rps'):7.1f} "
              f"answers/s (the service's count over {args.seconds:g}s)  wall {median(tool, 'wall_s'):5.1f}s")
    print(f"  ratio runner/plain = {ratio:.3f} by the tools' counts, {served_ratio:.3f} by the service's "
          f"(target >= {TARGET_RATIO})")
    if args.json:
        emit("load_vs_locust", [
            Figure("load runner / plain locust --headless, req/s", round(ratio, 3), "ratio", f">= {TARGET_RATIO}",
                   note="each tool's own count over its own window"),
            Figure("requests answered per run, runner / plain", round(served_ratio, 3), "ratio",
                   note=f"the service's count per run of {args.seconds:g}s: also shows how much of it each tool "
                        "spends sending"),
            Figure("load runner (run_load)", round(median("runner", "rps"), 1), "req/s"),
            Figure("plain locust --headless", round(median("plain", "rps"), 1), "req/s"),
            Figure("wall time per run: load runner", round(median("runner", "wall_s"), 1), "s",
                   note=f"plain locust {median('plain', 'wall_s'):.1f}s; both {args.seconds:g}s of load"),
        ], note=f"{args.users} users, spawn {args.spawn_rate:g}/s, {args.seconds:g}s, median of {args.rounds} "
                "rounds, shipped locustfile, demo v1 directly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
