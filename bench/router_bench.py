"""Router overhead and switch time of the local target. Prints figures; asserts nothing.

    python bench/router_bench.py [--seconds 5] [--connections 16] [--switches 100] [--replicas 2]

Throughput: one asyncio client process keeps --connections keep-alive connections busy with GET /api/items
for --seconds, twice:
  direct   the connections split evenly over the live slot's --replicas pods, each connection straight to
           one pod (the split the router's round-robin makes, without the router);
  router   all connections to the service listener, which spreads the requests over the same pods.
The ratio router/direct is the share of the direct throughput that is left through the router. Client,
router and pods share this machine's cores, so when they are saturated the ratio also measures the CPU
the router takes from the pods. The pods run the demo profile with zero injected latency so the figures
show the proxy, not the profile; the client speaks HTTP/1.1 through the same h11 connection class as the
router (targets/local/httpwire.py). Before the two measured runs, a one-second run of each warms both up.
Switch time: --switches traffic switches blue <-> green through the admin API, measured at the caller
(the round trip a release controller waits for) and inside the router (the table swap alone).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import h11

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from releasegate.core.config import parse_config
from releasegate.core.types import TrafficSplit
from releasegate.targets.local.httpwire import HTTPConnection
from releasegate.targets.local.target import LocalTarget

FAST_PROFILE = "[defaults]\nlatency_ms = 0\nlatency_spread_ms = 0\n"


@dataclass
class Tally:
    done: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


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


def measure(urls: list[str], seconds: float, connections: int) -> tuple[float, float, int]:
    """req/s, p50 in ms and errors with `connections` spread round-robin over `urls`."""
    tally = Tally()

    async def drive() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(_one_connection(urls[index % len(urls)], deadline, tally)
                               for index in range(connections)))

    asyncio.run(drive())
    tally.latencies.sort()
    p50 = tally.latencies[len(tally.latencies) // 2] * 1000 if tally.latencies else float("nan")
    return tally.done / seconds, p50, tally.errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--switches", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        profiles = Path(tmp) / "profiles.toml"
        profiles.write_text(FAST_PROFILE)
        config = parse_config({"local": {"run_dir": tmp, "replicas": args.replicas, "profiles": str(profiles)}},
                              source="bench", base_dir=Path(tmp), project_root=Path(tmp))
        target = LocalTarget.open(config)
        try:
            target.deploy("green", "v2")
            target.wait_ready("green", 30)
            state = target.client.state()
            pods = [f"http://{pod['host']}:{pod['port']}" for pod in state["slots"]["blue"]["pods"]]
            service = [state["service_url"]]
            measure(pods, 1.0, args.connections)  # warm-up: imports, caches, pools
            measure(service, 1.0, args.connections)
            direct_rps, direct_p50, direct_errors = measure(pods, args.seconds, args.connections)
            routed_rps, routed_p50, routed_errors = measure(service, args.seconds, args.connections)
            print(f"throughput, {args.connections} keep-alive connections, {args.seconds:.0f}s each, "
                  f"{len(pods)} pods:")
            print(f"  direct to the pods  {direct_rps:8.0f} req/s  p50 {direct_p50:6.2f} ms  errors {direct_errors}"
                  f"  ({args.connections // len(pods)} connections to each pod)")
            print(f"  through the router  {routed_rps:8.0f} req/s  p50 {routed_p50:6.2f} ms  errors {routed_errors}")
            print(f"  ratio router/direct = {routed_rps / direct_rps:.2f}")

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
        finally:
            target.close()


if __name__ == "__main__":
    main()
