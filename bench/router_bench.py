"""Router overhead and switch time of the local target. Prints figures; asserts nothing.

    python bench/router_bench.py [--seconds 5] [--connections 16] [--switches 100]

Throughput: the same asyncio keep-alive client drives GET /api/items straight at one pod, then through
the service listener of the router (which spreads over the slot's pods), each for --seconds. The pods
run the demo profile with zero injected latency so the figures show the proxy, not the profile.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from releasegate.core.config import parse_config
from releasegate.core.types import TrafficSplit
from releasegate.targets.local import httpwire
from releasegate.targets.local.target import LocalTarget

FAST_PROFILE = "[defaults]\nlatency_ms = 0\nlatency_spread_ms = 0\n"


async def _drive(host: str, port: int, seconds: float, connections: int) -> tuple[int, int, list[float]]:
    deadline = time.perf_counter() + seconds
    done = errors = 0
    latencies: list[float] = []
    request = f"GET /api/items HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()

    async def one_connection() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection(host, port, limit=httpwire.MAX_HEAD_BYTES)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                response = await httpwire.read_response(reader, request_method="GET")
                latencies.append(time.perf_counter() - started)
                done += 1
                errors += response.status != 200
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return done, errors, latencies


def measure(url: str, seconds: float, connections: int) -> tuple[float, float, int]:
    host, port = url.removeprefix("http://").split(":")
    done, errors, latencies = asyncio.run(_drive(host, int(port), seconds, connections))
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    return done / seconds, p50, errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--switches", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        profiles = Path(tmp) / "profiles.toml"
        profiles.write_text(FAST_PROFILE)
        config = parse_config({"local": {"run_dir": tmp, "replicas": 1, "profiles": str(profiles)}},
                              source="bench", base_dir=Path(tmp), project_root=Path(tmp))
        target = LocalTarget.open(config)
        try:
            target.deploy("green", "v2")
            target.wait_ready("green", 30)
            state = target.client.state()
            pod = state["slots"]["blue"]["pods"][0]
            direct_url = f"http://{pod['host']}:{pod['port']}"
            measure(direct_url, 1.0, args.connections)  # warm-up: imports, JIT-free but caches
            direct_rps, direct_p50, direct_errors = measure(direct_url, args.seconds, args.connections)
            routed_rps, routed_p50, routed_errors = measure(state["service_url"], args.seconds, args.connections)
            print(f"throughput, {args.connections} keep-alive connections, {args.seconds:.0f}s each, 1 pod:")
            print(f"  direct to pod   {direct_rps:8.0f} req/s  p50 {direct_p50:6.2f} ms  errors {direct_errors}")
            print(f"  through router  {routed_rps:8.0f} req/s  p50 {routed_p50:6.2f} ms  errors {routed_errors}")
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
