"""Router overhead and switch time of the local target. Prints figures; asserts nothing.

    python bench/router_bench.py [--seconds 5] [--connections 16] [--switches 100] [--replicas 2]

One local cluster with --replicas pods per slot: blue runs v1 with the demo's shipped latency
(10 ms + |gauss(0, 10 ms)|, median about 17 ms), green runs v2-fast with zero injected latency.

Throughput, for each of the two: one asyncio client process keeps --connections keep-alive connections
busy with GET /api/items for --seconds, three times:
  one pod  every connection straight to the slot's first pod (the comparison of this bench's first
           version, and of the issue that asked for a ratio of 0.9);
  direct   the connections split evenly over the slot's pods, each connection straight to one pod (the
           split the router's round-robin makes, without the router);
  router   all connections to the service listener (traffic all on that slot), which spreads the
           requests over the same pods.
The ratio router/direct is the share of the direct throughput that is left through the router, against
one pod and against the same pods.
  - Zero latency: every process is busy all the time, and client, router and pods share this machine's
    cores, so the ratio measures the CPU the router takes from the pods, not only its latency. On a
    machine with more cores than processes it would be higher.
  - The shipped demo latency: a service whose answers take milliseconds, as real ones do; the machine is
    not saturated, and the ratio is what a client loses by going through the router.
"cpu per request" is the CPU time (user + system, from /proc) of the router process and of all pods
together, divided by the requests answered: the proxy's own cost, whatever else runs on the machine.
The router process also supervises the pods (readiness probes several times a second), which costs
the same with or without traffic; "net" subtracts that idle rate, measured for two seconds before the
runs, and is the figure to compare between router versions.
The client speaks HTTP/1.1 through the same h11 connection class as the router
(targets/local/httpwire.py); a one-second run of each warms both up first.

Switch time: --switches traffic switches blue <-> green through the admin API, measured at the caller
(the round trip a release controller waits for) and inside the router (the table swap alone).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import Figure, emit
from releasegate.core.config import parse_config
from releasegate.core.types import TrafficSplit
from releasegate.targets.local.httpwire import HTTPConnection
from releasegate.targets.local.target import LocalTarget

# The defaults are the demo's own (demo/profiles.toml), written out so that the bench does not change with it.
PROFILES = """
[defaults]
latency_ms = 10
latency_spread_ms = 10

[versions.v2-fast]
latency_ms = 0
latency_spread_ms = 0
"""


@dataclass
class Tally:
    done: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Run:
    rps: float
    p50_ms: float
    errors: int
    cpu_us: dict[str, float]  # process group -> CPU microseconds per request
    net_cpu_us: dict[str, float]  # the same without the group's idle CPU rate


async def _one_connection(url: str, deadline: float, tally: Tally) -> None:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    conn = HTTPConnection(h11.CLIENT, reader, writer)
    headers = [(b"Host", f"{host}:{port}".encode())]
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            conn.send(h11.Request(method=b"GET", target=b"/api/items", headers=headers), h11.EndOfMessage())
            status = 0
            while not isinstance(event := await conn.next_event(), h11.EndOfMessage):
                if isinstance(event, h11.Response):
                    status = event.status_code
            conn.h11.start_next_cycle()
            tally.latencies.append(time.perf_counter() - started)
            tally.done += 1
            tally.errors += status != 200
    finally:
        conn.close()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far; 0 where /proc is not there to say."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_rates(pids: dict[str, list[int]], seconds: float = 2.0) -> dict[str, float]:
    """CPU seconds per second that each group of `pids` takes with no traffic."""
    before = {group: sum(map(_cpu_s, members)) for group, members in pids.items()}
    time.sleep(seconds)
    return {group: (sum(map(_cpu_s, members)) - before[group]) / seconds for group, members in pids.items()}


def measure(urls: list[str], seconds: float, connections: int, pids: dict[str, list[int]],
            idle: dict[str, float] | None = None) -> Run:
    """Throughput with `connections` spread round-robin over `urls`; CPU per request of each group of `pids`,
    also without the group's `idle` rate (CPU seconds per second)."""
    tally = Tally()

    async def drive() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(_one_connection(urls[index % len(urls)], deadline, tally)
                               for index in range(connections)))

    before = {group: sum(map(_cpu_s, members)) for group, members in pids.items()}
    started = time.perf_counter()
    asyncio.run(drive())
    elapsed = time.perf_counter() - started
    used = {group: sum(map(_cpu_s, members)) - before[group] for group, members in pids.items()}
    done = max(tally.done, 1)
    cpu_us = {group: cpu / done * 1e6 for group, cpu in used.items()}
    net_cpu_us = {group: (cpu - (idle or {}).get(group, 0.0) * elapsed) / done * 1e6 for group, cpu in used.items()}
    tally.latencies.sort()
    p50 = tally.latencies[len(tally.latencies) // 2] * 1000 if tally.latencies else float("nan")
    return Run(tally.done / seconds, p50, tally.errors, cpu_us, net_cpu_us)


def compare(state: dict[str, Any], slot: str, title: str, args: argparse.Namespace) -> list[Figure]:
    pods = state["slots"][slot]["pods"]
    direct_urls = [f"http://{pod['host']}:{pod['port']}" for pod in pods]
    service = [state["service_url"]]
    pids = {"router": [int(state["pid"])], "pods": [int(pod["pid"]) for pod in pods]}
    measure(direct_urls, 1.0, args.connections, pids)  # warm-up: imports, caches, pools
    measure(service, 1.0, args.connections, pids)
    idle = idle_rates(pids)
    one_pod = measure(direct_urls[:1], args.seconds, args.connections, pids, idle)
    direct = measure(direct_urls, args.seconds, args.connections, pids, idle)
    routed = measure(service, args.seconds, args.connections, pids, idle)
    print(f"{title}: {args.connections} keep-alive connections, {args.seconds:g}s each, {len(pods)} pods "
          f"(idle: router process {idle['router'] * 1000:.0f} ms/s of CPU)")
    for name, run in (("direct to one pod  ", one_pod), ("direct to the pods ", direct),
                      ("through the router ", routed)):
        print(f"  {name}  {run.rps:7.0f} req/s  p50 {run.p50_ms:6.2f} ms  errors {run.errors}  "
              f"cpu per request: pods {run.cpu_us['pods']:4.0f} us, router {run.cpu_us['router']:4.0f} us "
              f"(net {run.net_cpu_us['router']:4.0f} us)")
    # The figure (and this bench's first version) compares with one pod; the stricter one with
    # the same pods the router spreads over.
    print(f"  ratio router/direct = {routed.rps / one_pod.rps:.2f} against one pod, "
          f"{routed.rps / direct.rps:.2f} against the same {len(pods)} pods split by the client")
    short = title.split(" (")[0]
    return [Figure(f"router/direct req/s, {short}, vs one pod", round(routed.rps / one_pod.rps, 3), "ratio"),
            Figure(f"router/direct req/s, {short}, vs the same {len(pods)} pods", round(routed.rps / direct.rps, 3),
                   "ratio", note=f"{routed.rps:.0f} req/s through the router"),
            Figure(f"router CPU per request, {short}", round(routed.net_cpu_us["router"]), "us", note="net of idle")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--switches", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        profiles = Path(tmp) / "profiles.toml"
        profiles.write_text(PROFILES)
        config = parse_config({"local": {"run_dir": tmp, "replicas": args.replicas, "profiles": str(profiles)}},
                              source="bench", base_dir=Path(tmp), project_root=Path(tmp))
        target = LocalTarget.open(config)
        try:
            target.deploy("green", "v2-fast")
            target.wait_ready("green", 30)
            target.set_traffic(TrafficSplit.all_to("green"))
            figures = compare(target.client.state(), "green", "zero latency (v2-fast)", args)
            target.set_traffic(TrafficSplit.all_to("blue"))
            figures += compare(target.client.state(), "blue", "the demo's shipped latency (v1, median ~17 ms)", args)

            caller_ms: list[float] = []
            swap_ms: list[float] = []
            for index in range(args.switches):
                slot = "green" if index % 2 == 0 else "blue"
                started = time.perf_counter()
                answer = target.client.call("POST", "/traffic", {"weights": {slot: 100}})
                caller_ms.append((time.perf_counter() - started) * 1000)
                swap_ms.append(float(answer["swap_ms"]))
            target.set_traffic(TrafficSplit.all_to("blue"))
            print(f"switch time over {args.switches} switches:")
            print(f"  at the caller (admin API round trip)  median {statistics.median(caller_ms):.2f} ms  "
                  f"max {max(caller_ms):.2f} ms")
            print(f"  routing table swap in the router     median {statistics.median(swap_ms) * 1000:.1f} us  "
                  f"max {max(swap_ms) * 1000:.1f} us")
            figures += [Figure("switch time at the caller (admin API round trip), median", round(
                                   statistics.median(caller_ms), 2), "ms", note=f"{args.switches} switches"),
                        Figure("switch: routing table swap in the router, median",
                               round(statistics.median(swap_ms) * 1000, 1), "us")]
        finally:
            target.close()
    if args.json:
        emit("router_bench", figures, note=f"{args.seconds:g}s per run, {args.connections} connections")


if __name__ == "__main__":
    main()
