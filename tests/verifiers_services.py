"""Real processes for the verifier tests: demo services on loopback ports and a Prometheus scraping them.

Every wait polls a condition with a deadline (tests/waiting.py); every process is stopped in a finally.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from releasegate.core.types import Endpoint, Role
from tests.local_cluster import DEMO_SEED
from tests.waiting import wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Fast scenarios: 2-3 ms answers; v2-errors fails 5% of /api/*; v2-slow takes 400 ms on /api/checkout only.
# Our own (not tests/local_cluster.py's): the numbers below are what these tests assert against.
PROFILES = """
[defaults]
latency_ms = 2
latency_spread_ms = 1

[versions.v2-errors]
error_rate = 0.05

[versions.v2-slow.endpoints."/api/checkout"]
latency_ms = 400
"""


def free_port() -> int:
    """A port the kernel just handed out and took back; the process binds it right after."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_profiles(directory: Path) -> Path:
    path = directory / "profiles.toml"
    path.write_text(PROFILES, encoding="utf-8")
    return path


@dataclass(frozen=True)
class DemoService:
    version: str
    slot: str
    pod: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, role: Role = Role.CANDIDATE) -> Endpoint:
        return Endpoint(role=role, url=self.url, slot=self.slot, version=self.version)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _answers(url: str, expected: int = 200) -> bool:
    try:
        return httpx.get(url, timeout=1.0, trust_env=False).status_code == expected
    except httpx.TransportError:
        return False


@contextmanager
def _running(process: subprocess.Popen[bytes], ready_url: str, *, timeout_s: float,
             what: str) -> Iterator[None]:
    """Wait until `ready_url` answers 200 (failing early if the process dies), stop the process at the end."""
    try:
        wait_until(lambda: process.poll() is not None or _answers(ready_url), timeout_s=timeout_s,
                   what=f"{what} ready at {ready_url}")
        assert process.poll() is None, f"{what} exited with {process.returncode} before it was ready"
        yield
    finally:
        _stop(process)


@contextmanager
def demo_service(version: str, profiles: Path, *, slot: str, pod: str | None = None) -> Iterator[DemoService]:
    """`python -m demo` on a free loopback port, ready (GET /readyz 200) when the block starts.

    Seeded with DEMO_SEED: a fresh service draws the sequence tests/local_cluster.py describes from its first
    request on, so a test that needs v2-errors' rate within bounds starts a service of its own.
    """
    service = DemoService(version=version, slot=slot, pod=pod or f"{version}-pod", port=free_port())
    env = {k: v for k, v in os.environ.items() if k != "RELEASEGATE_PROFILES"}
    process = subprocess.Popen(
        [sys.executable, "-m", "releasegate.demo", "--host", "127.0.0.1", "--port", str(service.port), "--version",
         version, "--profiles", str(profiles), "--pod", service.pod, "--seed", str(DEMO_SEED)],
        cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with _running(process, f"{service.url}/readyz", timeout_s=20, what=f"demo {version}"):
        yield service


@contextmanager
def prometheus(workdir: Path, services: Sequence[DemoService], *, app: str = "demo") -> Iterator[str]:
    """A real Prometheus on a free loopback port scraping `services` every second; yields its URL."""
    binary = shutil.which("prometheus")
    assert binary, "the prometheus binary is needed (apt-get install prometheus)"
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "800ms", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "demo", "static_configs": [
            {"targets": [f"127.0.0.1:{s.port}"],
             "labels": {"app": app, "slot": s.slot, "version": s.version, "pod": s.pod}}
            for s in services]}],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with _running(process, f"{url}/-/ready", timeout_s=30, what="prometheus"):
            yield url
    finally:
        log.close()
