"""Pods of the local cluster: supervised subprocesses with a readiness probe and a restart policy.

A pod behaves like a Deployment's pod under a kubelet: it is restarted when it exits (with a growing
back-off, so a crash loop shows as CrashLoopBackOff), and it is ready only while its readiness probe
answers 200. The router sends traffic only to ready pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from releasegate.core.processes import astop_process
from releasegate.targets.local.procs import die_with_parent, free_port, tail_lines
from releasegate.targets.local.spares import DemoSpares

PROBE_INTERVAL_S = 0.2
# Until a pod is first ready, like a kubelet's startupProbe with a short period: a refused connection costs
# next to nothing, and each tick saved is time a release waits for its candidate.
STARTUP_PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 1.0
# Like a kubelet's failureThreshold: one failed probe of a ready pod is noise, three are a problem.
UNREADY_AFTER_FAILURES = 3
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0
START_MARK = "--- start"  # written to a pod's log before each start; not the pod's own output


@dataclass(frozen=True)
class PodSpec:
    name: str
    slot: str
    version: str
    command: tuple[str, ...]  # with {port} {version} {slot} {pod} {host} placeholders
    env: tuple[tuple[str, str], ...]
    log_path: Path
    readiness_path: str = "/readyz"
    host: str = "127.0.0.1"


def probe_client() -> httpx.AsyncClient:
    """The HTTP client of readiness probes, shared by a cluster's pods: building one costs tens of
    milliseconds of CPU (its TLS context), which would stall the router's event loop at every pod start.
    A new connection for every probe, as a kubelet makes: a pod that stops accepting is not ready."""
    return httpx.AsyncClient(timeout=httpx.Timeout(PROBE_TIMEOUT_S), trust_env=False,
                             limits=httpx.Limits(max_keepalive_connections=0),
                             headers={"User-Agent": "releasegate-probe"})


class Pod:
    """One supervised pod process. `on_change` is called whenever readiness or the port changes;
    `probes` sends the readiness probes (probe_client()). With `spares` (the demo command's warm spares), the
    pod's first process is a spare that imported the demo already, when one is ready; restarts start cold:
    they come after a back-off of 0.5 s or more anyway, and a crash loop would use up the spares the next
    deploy needs, making the cluster re-import the demo all the time."""

    def __init__(self, spec: PodSpec, on_change: Callable[[Pod], None], probes: httpx.AsyncClient,
                 spares: DemoSpares | None = None) -> None:
        self.spec = spec
        self._spares = spares
        self.started_warm = False  # its current process was a warm spare
        self.on_change = on_change
        self._probes = probes
        self.port: int | None = None
        self.ready = False
        self.phase = "Pending"
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.last_exit_after_s: float | None = None
        self.probe_message = "not probed yet"
        self.created_at = time.time()
        self.started_at: float | None = None
        self.ready_since: float | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"pod {self.spec.name}")

    def terminate(self) -> None:
        """The pod is on its way out: never restarted, not ready, phase Terminating; stop() ends its process."""
        self._stopping = True
        self.phase = "Terminating"
        self._set_ready(False, "terminating")

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace_s`; the pod must already be out of the routing table."""
        self.terminate()
        process = self._process
        if process is not None:
            await astop_process(process, grace_s=grace_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.phase = "Terminated"

    async def _supervise(self) -> None:
        backoff = BACKOFF_START_S
        while not self._stopping:
            started = time.monotonic()
            await self._spawn()
            exit_code = await self._probe_until_exit()
            if self._stopping:
                return
            self.last_exit_code = exit_code
            self.last_exit_after_s = time.monotonic() - started
            self.restarts += 1
            self._set_ready(False, f"exited with code {exit_code}")
            self.phase = "CrashLoopBackOff"
            self.on_change(self)
            # A pod that ran a while before dying starts its back-off over, as a kubelet does.
            backoff = BACKOFF_START_S if self.last_exit_after_s > 60 else backoff
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _spawn(self) -> None:
        self.port = free_port(self.spec.host)
        values = {"port": str(self.port), "version": self.spec.version, "slot": self.spec.slot,
                  "pod": self.spec.name, "host": self.spec.host}
        argv = [part.format(**values) for part in self.spec.command]
        env = {**os.environ, **dict(self.spec.env), "RELEASEGATE_POD": self.spec.name}
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        first_start = self._process is None
        spare = self._spares.take(env) if self._spares is not None and first_start else None
        with self.spec.log_path.open("ab") as log:
            how = f" (warm spare pid {spare.process.pid})" if spare is not None else ""
            log.write(f"{START_MARK} {time.strftime('%H:%M:%S')} port {self.port}{how}: {' '.join(argv)}\n".encode())
            log.flush()
            if spare is not None and self._spares is not None and \
                    await self._spares.hand_over(spare, argv, env, self.spec.log_path):
                self._process, self.started_warm = spare.process, True
            else:  # no spare, or it died since it said it was ready: a cold start, at once
                self._process, self.started_warm = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                    preexec_fn=die_with_parent(),
                ), False
        self.started_at = time.time()
        self.phase = "Running"
        self.probe_message = "started, not ready yet"
        self.on_change(self)

    async def _probe_until_exit(self) -> int:
        assert self._process is not None
        failures = 0
        started_up = False  # this process has answered a probe: from then on the kubelet's usual period
        while True:
            interval = PROBE_INTERVAL_S if started_up else STARTUP_PROBE_INTERVAL_S
            try:
                return await asyncio.wait_for(asyncio.shield(self._process.wait()), interval)
            except TimeoutError:
                pass
            ok, message = await self._probe()
            started_up = started_up or ok
            failures = 0 if ok else failures + 1
            if ok and not self.ready:
                self._set_ready(True, message)
            elif not ok and (not self.ready or failures >= UNREADY_AFTER_FAILURES):
                self._set_ready(False, message)

    async def _probe(self) -> tuple[bool, str]:
        path = self.spec.readiness_path
        try:
            response = await self._probes.get(f"http://{self.spec.host}:{self.port}{path}")
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return False, f"GET {path}: cannot connect ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            return False, f"GET {path}: {type(exc).__name__}"
        body = response.content[:160].decode("utf-8", "replace").strip()
        return response.status_code == 200, f"GET {path} -> {response.status_code} {body}".strip()

    def _set_ready(self, ready: bool, message: str) -> None:
        flipped = ready != self.ready
        # A new message of a pod that is not ready is news too: readers of the state must see why.
        news = flipped or (not ready and message != self.probe_message)
        self.probe_message = message
        if flipped:
            self.ready = ready
            self.ready_since = time.time() if ready else None
            if ready:
                self.phase = "Ready"
        if news:
            self.on_change(self)

    # -- reporting ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name, "slot": self.spec.slot, "version": self.spec.version,
            "host": self.spec.host, "port": self.port, "ready": self.ready, "ready_since": self.ready_since,
            "phase": self.phase,
            "restarts": self.restarts, "last_exit_code": self.last_exit_code,
            "pid": self._process.pid if self._process else None,
            "message": self.probe_message, "log": str(self.spec.log_path),
            "started_at": self.started_at, "created_at": self.created_at,
            "last_exit_after_s": self.last_exit_after_s, "started_warm": self.started_warm,
        }


def why_not_ready(pod: dict[str, Any], now: float | None = None) -> str | None:
    """One line a person understands: what the pod did, and the last lines it printed if it died.

    Works on the pod's state dict so that any process reading state.json can say it, with times
    computed when it is said rather than when the state was written.
    """
    if pod["ready"]:
        return None
    if pod["last_exit_code"] is not None:
        printed = [line for line in tail_lines(Path(pod["log"]), 8) if not line.startswith(START_MARK)]
        output = " | ".join(printed[-3:]) or "(no output)"
        return (f"pod {pod['name']} exited with code {pod['last_exit_code']} after "
                f"{pod['last_exit_after_s']:.1f}s ({pod['restarts']} restart(s), {pod['phase']}); "
                f"last output: {output}")
    alive_for = (now or time.time()) - (pod["started_at"] or pod["created_at"])
    return f"pod {pod['name']} readiness still failing after {alive_for:.1f}s: {pod['message']}"
