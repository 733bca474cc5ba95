"""A real Prometheus server: the local cluster's, which scrapes every pod through one stable target, or the
fake Kubernetes cluster's of the tests, with pods registered one by one by file-based discovery."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import h11

from releasegate.core.errors import ConfigError, TargetError
from releasegate.core.files import write_atomically
from releasegate.core.processes import astop_process
from releasegate.core.waiting import apoll_until
from releasegate.targets.local.httpwire import HTTPConnection
from releasegate.targets.local.pod_metrics import PODS_METRICS_PATH
from releasegate.targets.local.procs import die_with_parent, free_port, tail_lines

READY_TIMEOUT_S = 30.0
READY_PROBE_TIMEOUT_S = 2.0
READY_POLL_S = 0.02
# scrape_timeout may not exceed the interval; 80% leaves room for a slow scrape to be reported.
SCRAPE_TIMEOUT_SHARE = 0.8


def scrape_timeout_s(scrape_interval_s: float) -> float:
    """How long Prometheus waits for a scrape's answer, at a scrape interval of `scrape_interval_s`."""
    return scrape_interval_s * SCRAPE_TIMEOUT_SHARE


def find_prometheus(binary: str) -> str:
    """The path of the Prometheus binary, or a ConfigError that names both ways to fix it."""
    path = shutil.which(binary)
    if path is None:
        raise ConfigError(
            f"the Prometheus server binary {binary!r} was not found on PATH; install it "
            "(Debian: apt-get install prometheus) or set prometheus.url to an existing Prometheus server"
        )
    return path


class PrometheusServer:
    """Starts `prometheus` on a loopback port, scraping the router and every pod each scrape interval.

    The pods are scraped one of two ways. With `pods_target` (host:port, the local cluster's admin API), as
    one stable target at PODS_METRICS_PATH that answers with every pod's samples, labelled app, slot,
    version and pod already (`honor_labels`): a new pod is in the next scrape. Without it, each pod is a
    target of its own, registered by update_targets (file-based discovery, as a Prometheus in Kubernetes
    discovers pods), and Prometheus 2.42 starts scraping a new one only at its next 5-second discovery tick.
    """

    def __init__(self, binary: str, workdir: Path, *, app: str, scrape_interval_s: float,
                 router_target: str, pods_target: str | None = None) -> None:
        self.binary = find_prometheus(binary)
        self.workdir = workdir
        self.app = app
        self.scrape_interval_s = scrape_interval_s
        self.router_target = router_target
        self.pods_target = pods_target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets_file = workdir / "pods.json"
        self.log_path = workdir / "prometheus.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _config(self) -> str:
        interval = f"{int(self.scrape_interval_s * 1000)}ms"
        timeout = f"{int(scrape_timeout_s(self.scrape_interval_s) * 1000)}ms"
        pods: dict[str, object]
        if self.pods_target is None:
            pods = {"job_name": "pods", "file_sd_configs": [
                {"files": [str(self.targets_file)], "refresh_interval": "1s"}]}
        else:
            # honor_labels: the samples' own app/slot/version/pod are the pods' target labels. The target's
            # app label is on its own series only (`up`, scrape durations), so that it counts as one of the
            # app's scrape targets (Metrics.wait_scraped_after).
            pods = {"job_name": "pods", "metrics_path": PODS_METRICS_PATH, "honor_labels": True,
                    "static_configs": [{"targets": [self.pods_target], "labels": {"app": self.app}}]}
        return json.dumps({  # JSON is valid YAML, and needs no YAML writer here
            "global": {"scrape_interval": interval, "scrape_timeout": timeout,
                       "evaluation_interval": interval},
            "scrape_configs": [
                pods,
                {"job_name": "router", "static_configs": [
                    {"targets": [self.router_target], "labels": {"app": self.app}}]},
            ],
        }, indent=2)

    async def start(self) -> None:
        await self.launch()
        await self.wait_ready()

    async def launch(self) -> None:
        """Start the server process without waiting for it: the cluster starts its pods meanwhile."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.pods_target is None:
            self.update_targets([])
        else:  # from a previous start of this run directory with file-based discovery: nothing reads it now
            self.targets_file.unlink(missing_ok=True)
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(self._config(), encoding="utf-8")
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                self.binary, f"--config.file={config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2d",
                "--log.level=warn", stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=die_with_parent(),
            )

    async def wait_ready(self) -> None:
        """Until GET /-/ready answers 200; a TargetError with the log's last lines if the process exits."""
        async def ready() -> bool | None:
            assert self._process is not None, "launch() first"
            if self._process.returncode is not None:
                raise TargetError(f"prometheus exited with code {self._process.returncode}: "
                                  + " | ".join(tail_lines(self.log_path, 3)))
            return True if await self._ready_status() == 200 else None

        # A refused connection costs microseconds: a short interval finds the ready server within 20 ms.
        if await apoll_until(ready, timeout_s=READY_TIMEOUT_S, interval_s=READY_POLL_S) is None:
            raise TargetError(f"prometheus did not become ready within {READY_TIMEOUT_S:.0f}s; see {self.log_path}")

    async def _ready_status(self) -> int | None:
        """The status of GET /-/ready; None while Prometheus does not answer.

        The router's HTTP/1.1 connection rather than httpx: this runs in test processes too, where pytester
        runs may have unloaded the httpcore that httpx loads lazily, and its errors would escape unmapped.
        """
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return None
        conn = HTTPConnection(h11.CLIENT, reader, writer)
        try:
            async with asyncio.timeout(READY_PROBE_TIMEOUT_S):
                conn.send(h11.Request(method=b"GET", target=b"/-/ready", headers=[(b"Host", b"prometheus")]),
                          h11.EndOfMessage())
                while not isinstance(event := await conn.next_event(), h11.Response):
                    pass
                return event.status_code
        except (OSError, TimeoutError, h11.RemoteProtocolError):
            return None
        finally:
            conn.close()

    def update_targets(self, pods: Iterable[dict[str, object]]) -> None:
        """Register the pods with their labels, without a `pods_target`; Prometheus watches the file.

        Register a pod as soon as its process starts (its port is known then): Prometheus hands newly
        discovered targets to its scrapers only every 5 s, and that wait then runs while the pod starts.
        Until the pod answers, its scrapes fail (`up` 0), and nothing counts it as scraped: the provision
        gate asks for `up == 1` of every candidate pod.
        """
        if self.pods_target is not None:
            raise ValueError("this Prometheus scrapes the pods through pods_target; it has no targets file")
        groups = [
            {"targets": [f"{pod['host']}:{pod['port']}"],
             "labels": {"app": self.app, "slot": str(pod["slot"]), "version": str(pod["version"]),
                        "pod": str(pod["name"])}}
            for pod in pods if pod.get("port")
        ]
        write_atomically(self.targets_file, json.dumps(groups, indent=2))

    async def stop(self) -> None:
        if self._process is not None:
            await astop_process(self._process, grace_s=10)
