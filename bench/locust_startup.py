"""Locust start-up per load test, cold and warm, and requests per second with 1 and 2 locust processes.

    python bench/locust_startup.py [--runs 10] [--rps-seconds 8] [--rps-users 10] [--skip-rps] [--skip-startup]
                                   [--json]

Start-up: the time from creating a `verifiers.load.LoadProcess` (what `run_load` does first) to the first
request that reaches the service, median of --runs, each a 1-user load of one second against a tiny
loopback HTTP server in this process (it records when the first request arrives, on this process's clock):
- cold: locust started as `python -m locust ...` when the load starts, as every load did before warm spares
  (a LocustSpares pool of size 0 takes this path: the same command, environment and files);
- warm: a spare (verifiers/locust_spare.py) that imported locust beforehand takes the run. The bench waits
  until the spare is warm before it starts the clock, as a release's spares are: started beside provisioning,
  and again at the end of every load, so they import between loads. What is left is handing the run over
  (one JSON line on a pipe) and locust's own start (argument parsing, the locustfile, spawning the user).
Runs alternate cold and warm, so a drift in the machine's load falls on both.

Requests per second: the shipped locustfile (suites/load/locustfile.py: think time 10-50 ms) with
--rps-users users for --rps-seconds against one demo service (the shipped v1 profile), through `run_load`
with processes=1, then 2, then 1 and 2 again (the medians of two each), and the same with zero think time
(every user sends as fast as it can), where the load generator rather than the think time is the limit.
Each figure is the runner's own count over its window (LoadResult.rps). On this 2-core machine the demo
service, locust and the master share the cores. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, emit  # noqa: E402
from releasegate.verifiers.load import LoadProcess, LoadProfile, LocustSpares, run_load  # noqa: E402
from tests.verifiers_services import demo_service  # noqa: E402

SHOP_LOCUSTFILE = ROOT / "suites" / "load" / "locustfile.py"

ONE_REQUEST_LOOP = """
from locust import FastHttpUser, constant, task

class Probe(FastHttpUser):
    wait_time = constant(0.05)

    @task
    def ping(self):
        self.client.get("/ping", name="/ping")
"""

FLAT_OUT = """
from locust import FastHttpUser, constant, task

class FlatOut(FastHttpUser):
    wait_time = constant(0)

    @task(3)
    def items(self):
        self.client.get("/api/items", name="/api/items")

    @task(1)
    def checkout(self):
        self.client.post("/api/checkout", json={"item_id": 1, "quantity": 1}, name="/api/checkout")
"""


class FirstRequest:
    """A loopback HTTP server that notes when the first request of each run arrives (monotonic clock)."""

    def __init__(self) -> None:
        self.first_at: float | None = None
        self.arrived = threading.Event()
        watcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if watcher.first_at is None:
                    watcher.first_at = time.monotonic()
                    watcher.arrived.set()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        self.first_at = None
        self.arrived.clear()

    @contextmanager
    def serving(self) -> Iterator[FirstRequest]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def startup_once(profile: LoadProfile, server: FirstRequest, spares: LocustSpares) -> float:
    """Seconds from LoadProcess() to the first request at the server, for one run through `spares`."""
    server.reset()
    started = time.monotonic()
    with LoadProcess(profile, server.url, spares=spares) as process:
        if not server.arrived.wait(60):
            raise RuntimeError("no request arrived within 60 s")
        process.result()
    assert server.first_at is not None
    return server.first_at - started


def measure_startup(runs: int, workdir: Path) -> tuple[list[float], list[float]]:
    locustfile = workdir / "probe_locustfile.py"
    locustfile.write_text(ONE_REQUEST_LOOP, encoding="utf-8")
    profile = LoadProfile(locustfile, users=1, spawn_rate=100, duration_s=1, min_requests=0)
    cold_pool, warm_pool = LocustSpares(size=0), LocustSpares(size=1)
    cold: list[float] = []
    warm: list[float] = []
    with FirstRequest().serving() as server:
        try:
            for _ in range(runs):
                cold.append(startup_once(profile, server, cold_pool))
                warm_pool.replenish()
                if not warm_pool.wait_ready(60):
                    raise RuntimeError("the spare did not import locust within 60 s")
                warm.append(startup_once(profile, server, warm_pool))
                print(f"  cold {cold[-1]:.3f} s   warm {warm[-1]:.3f} s", flush=True)
        finally:
            warm_pool.close()
    return cold, warm


def rps(url: str, locustfile: Path, users: int, seconds: float, processes: int) -> float:
    profile = LoadProfile(locustfile, users=users, spawn_rate=max(users, 1), duration_s=seconds, min_requests=0,
                          processes=processes)
    result = run_load(profile, url)
    assert result.rps is not None
    return result.rps


def measure_rps(users: int, seconds: float, workdir: Path) -> dict[str, dict[int, float]]:
    from tests.verifiers_services import write_profiles

    flat_out = workdir / "flat_out_locustfile.py"
    flat_out.write_text(FLAT_OUT, encoding="utf-8")
    shipped_profiles = ROOT / "demo" / "profiles.toml"
    figures: dict[str, dict[int, float]] = {}
    with demo_service("v1", shipped_profiles if shipped_profiles.is_file() else write_profiles(workdir),
                      slot="blue") as service:
        for name, locustfile in (("shipped locustfile", SHOP_LOCUSTFILE), ("zero think time", flat_out)):
            seen: dict[int, list[float]] = {1: [], 2: []}
            for processes in (1, 2, 1, 2):
                seen[processes].append(rps(service.url, locustfile, users, seconds, processes))
                print(f"  {name}: {processes} process(es): {seen[processes][-1]:.1f} requests/s", flush=True)
            figures[name] = {n: statistics.median(values) for n, values in seen.items()}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rps-seconds", type=float, default=8.0)
    parser.add_argument("--rps-users", type=int, default=10)
    parser.add_argument("--skip-rps", action="store_true")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="locust-startup-") as tmp:
        workdir = Path(tmp)
        figures: list[Figure] = []
        if not args.skip_startup:
            print(f"locust start-up per load test, {args.runs} runs each (LoadProcess() to the first request):")
            cold, warm = measure_startup(args.runs, workdir)
            print(f"  median: cold {statistics.median(cold):.3f} s, warm {statistics.median(warm):.3f} s "
                  f"(cold {min(cold):.3f}-{max(cold):.3f}, warm {min(warm):.3f}-{max(warm):.3f})")
            figures += [
                Figure("locust start-up per load, cold (before)", round(statistics.median(cold), 3), "s"),
                Figure("locust start-up per load, warm spare (after)", round(statistics.median(warm), 3), "s"),
            ]
        if not args.skip_rps:
            print(f"requests per second, {args.rps_users} users, {args.rps_seconds:g} s, demo v1 (median of 2):")
            for name, by_processes in measure_rps(args.rps_users, args.rps_seconds, workdir).items():
                print(f"  {name}: 1 process {by_processes[1]:.1f}/s, 2 processes {by_processes[2]:.1f}/s")
                figures += [Figure(f"requests/s, {name}, 1 process", round(by_processes[1], 1), "1/s"),
                            Figure(f"requests/s, {name}, 2 processes", round(by_processes[2], 1), "1/s")]
    if args.json:
        emit("locust_startup", figures, note=f"start-up: median of {args.runs}; requests/s: median of 2 runs")


if __name__ == "__main__":
    main()
