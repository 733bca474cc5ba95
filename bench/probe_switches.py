"""Zero downtime, measured: the probe's figures over many switches and rollbacks under load. Prints figures;
asserts nothing.

    python bench/probe_switches.py [--cycles 50] [--connections 8] [--replicas 2]

One local cluster (blue runs v1 with the demo's shipped latency, 10 ms + |gauss(0, 10 ms)|). A load process
keeps --connections keep-alive clients busy with GET /api/items through the service for the whole run.
Each cycle does what a release's traffic actions do on the local target, with the probe the release
controller puts around each change (verifiers/probe.py, the controller's settings: GET /healthz every
10 ms, 2 s timeout, settled after 5 answers in a row from the expected version):
  provision  deploy v2 to green and wait until it is ready (not probed: no traffic moves)
  switch     target.promote(green, v2)                         probed, expecting v2
  rollback   all traffic back to blue, then remove green       probed, expecting v1
             (the controller's _undo: the candidate's pods drain while the probe goes on)
  no change  the probe alone for --idle-ms with nothing changing: the control. Its gaps are what this
             machine's scheduling costs the probe (a loaded machine stretches them); a change is only
             worse than no change where its gaps exceed these.
So --cycles 50 is 50 switches and 50 rollbacks. Printed: the probe's failed requests (total) and the
longest gap between two successful answers (max and median over the changes), per kind of change; and
the load's own requests and failures over the whole run, a second witness that users saw no error.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import Figure, emit
from releasegate.core.config import parse_config
from releasegate.core.types import Role, TrafficSplit
from releasegate.targets.local.target import LocalTarget
from releasegate.verifiers.probe import ProbeReport, ProbeSettings, TrafficProbe

# The controller's probe settings (plugins/controller.py `_probed`: release.version_path and header).
PROBE = ProbeSettings(path="/healthz", version_header="X-App-Version")


def load(url: str, connections: int, stop: EventType, results: multiprocessing.Queue[tuple[int, int, str]]) -> None:
    """In its own process (so the probe's thread never waits for the load's GIL): `connections` threads,
    each a keep-alive client sending GET /api/items back to back until `stop`."""
    def one_client(tally: list[int], first_failure: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=5.0, trust_env=False) as client:
            while not stop.is_set():
                tally[0] += 1
                try:
                    status = client.get("/api/items").status_code
                except httpx.HTTPError as exc:
                    tally[1] += 1
                    first_failure[:] = first_failure or [type(exc).__name__]
                    continue
                if status >= 500:
                    tally[1] += 1
                    first_failure[:] = first_failure or [str(status)]

    tallies = [[0, 0] for _ in range(connections)]
    failures: list[list[str]] = [[] for _ in range(connections)]
    threads = [threading.Thread(target=one_client, args=(tallies[n], failures[n])) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first = next((f[0] for f in failures if f), "")
    results.put((sum(t[0] for t in tallies), sum(t[1] for t in tallies), first))


def probed(url: str, expected: str, change: Callable[[], object]) -> ProbeReport:
    """`change()` with the probe around it, as `probed_change` does (which yields JUnit properties instead)."""
    probe = TrafficProbe(url, PROBE).start()
    try:
        change()
    except BaseException:
        probe.abandon()
        raise
    return probe.finish(expected)


def describe(kind: str, reports: list[ProbeReport]) -> str:
    gaps = [r.longest_gap_s * 1000 for r in reports]
    failed = sum(r.failed for r in reports)
    requests = sum(r.requests for r in reports)
    windows = [r.duration_s * 1000 for r in reports]
    unsettled = sum(not r.settled for r in reports)
    kinds: dict[str, int] = {}
    for report in reports:
        for name, count in report.failure_kinds.items():
            kinds[name] = kinds.get(name, 0) + count
    shown = ", ".join(f"{count} x {name}" for name, count in kinds.items()) or "none"
    return (f"  {kind:<9} {len(reports):3d} changes  probe requests {requests:6d}  failed {failed} ({shown})  "
            f"longest gap: max {max(gaps):6.1f} ms, median {statistics.median(gaps):5.1f} ms  "
            f"window: median {statistics.median(windows):5.0f} ms  not settled {unsettled}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=50, help="switches, and as many rollbacks")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive clients of the load")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--idle-ms", type=float, default=250.0, help="the control probe's window")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config({"local": {"run_dir": tmp, "replicas": args.replicas, "min_ready_s": 0.2}},
                              source="bench", base_dir=Path(tmp), project_root=Path(tmp))
        target = LocalTarget.open(config)
        stop = multiprocessing.Event()
        results: multiprocessing.Queue[tuple[int, int, str]] = multiprocessing.Queue()
        try:
            url = target.endpoints(None)[Role.SERVICE].url
            loader = multiprocessing.Process(target=load, args=(url, args.connections, stop, results))
            loader.start()
            switches: list[ProbeReport] = []
            rollbacks: list[ProbeReport] = []
            controls: list[ProbeReport] = []
            started = time.monotonic()
            for cycle in range(args.cycles):
                target.deploy("green", "v2")
                target.wait_ready("green", 60)
                switches.append(probed(url, "v2", lambda: target.promote("green", "v2")))

                def roll_back() -> None:
                    target.set_traffic(TrafficSplit.all_to("blue"))
                    target.remove("green")

                rollbacks.append(probed(url, "v1", roll_back))
                controls.append(probed(url, "v1", lambda: stop.wait(args.idle_ms / 1000)))  # nothing changes
                if (cycle + 1) % 10 == 0:
                    print(f"  ... {cycle + 1} cycles, {time.monotonic() - started:.0f}s", flush=True)
            elapsed = time.monotonic() - started
            stop.set()
            requests, failed, first = results.get(timeout=30)
            loader.join(30)
        finally:
            stop.set()
            target.close()
    print(f"{args.cycles} switches and {args.cycles} rollbacks on the local target ({args.replicas} pods a slot), "
          f"under load: {args.connections} keep-alive clients on GET /api/items through the service")
    print(describe("switch", switches))
    print(describe("rollback", rollbacks))
    print(describe("no change", controls))
    print(f"  load      {requests} requests in {elapsed:.0f}s ({requests / elapsed:.0f} req/s), failed {failed}"
          + (f" (first: {first})" if failed else ""))
    if args.json:
        def gap_ms(reports: list[ProbeReport]) -> float:
            return round(max(r.longest_gap_s for r in reports) * 1000, 1)

        emit("probe_switches", [
            Figure("failed probe requests around switches and rollbacks",
                   sum(r.failed for r in switches + rollbacks), "requests"),
            Figure("longest gap between two answers, switch (max)", gap_ms(switches), "ms"),
            Figure("longest gap between two answers, rollback (max)", gap_ms(rollbacks), "ms"),
            Figure("longest gap between two answers, no change (max)", gap_ms(controls), "ms",
                   note="the control: this machine's scheduling"),
            Figure("failed requests of the load during all changes", failed, "requests",
                   note=f"of {requests}"),
        ], note=f"{args.cycles} switches and {args.cycles} rollbacks under load")


if __name__ == "__main__":
    main()
