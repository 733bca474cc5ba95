"""The local cluster process: pods, the router (the Service), a Prometheus server and an admin API.

One asyncio process owns everything, like a tiny control plane. Other processes (the release controller,
xdist workers, `python -m releasegate.targets.local status`) read `state.json` in the run directory and send changes
to the admin API; only this process writes, so there is no race between writers.

The admin API is a small Starlette app that uvicorn serves on 127.0.0.1 inside the cluster's event loop,
so its handlers change pods and the routing table without locks. It also serves what the cluster's
Prometheus scrapes: the router's /metrics, and /pods/metrics, every pod's /metrics fetched at each scrape
(pod_metrics.py says why one stable target rather than one discovered target per pod).

Loopback is not a boundary on a shared machine (any local user, or a browser page, can reach 127.0.0.1),
so every admin request but the two scrapes needs the run directory's token: a random value the cluster
writes to `admin-token` (mode 0600) at start, sent as `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from releasegate.core.config import Config
from releasegate.core.files import write_atomically
from releasegate.core.waiting import apoll_until
from releasegate.demo.serving import PromptExitServer
from releasegate.targets.local.head_start import HOST, HeadStart, cannot_listen, open_head_start, socket_url
from releasegate.targets.local.pod_metrics import POD_UP_METRIC, PODS_METRICS_PATH, PodScrape, merge_expositions
from releasegate.targets.local.pods import Pod, PodSpec, probe_client
from releasegate.targets.local.prometheus import PrometheusServer, scrape_timeout_s
from releasegate.targets.local.router import METRICS_CONTENT_TYPE, Router, RouterMetrics, Upstream
from releasegate.targets.local.run_files import ADMIN_TOKEN_FILE, STATE_FILE
from releasegate.targets.local.spares import DemoSpares

SLOTS = ("blue", "green")
# Read-only and scraped by Prometheus, which has no token: the only admin routes open without one.
OPEN_ADMIN_PATHS = frozenset({"/metrics", PODS_METRICS_PATH})
# Of Prometheus's scrape timeout, what a pod has to answer /pods/metrics' fetch of its /metrics: the rest is
# for merging the answers and sending them, so a slow pod is reported down rather than failing the scrape.
POD_SCRAPE_SHARE = 0.75
# Pods answer in the text format, whose HELP and TYPE lines pod_metrics.py merges (not OpenMetrics).
POD_SCRAPE_HEADERS = {"Accept": "text/plain;version=0.0.4", "User-Agent": "releasegate-pod-scrape"}
# Longer than an httpx client keeps an idle connection (5 s): the client always gives up on one first, so it
# never sends a request into a connection the server is closing at that moment.
ADMIN_KEEP_ALIVE_S = 60
ADMIN_SHUTDOWN_GRACE_S = 5  # seconds
SPARES_WAIT_POLL_S = 0.05  # how often the spares' start looks whether a deploy's pods are up


_Handler = Callable[[Request], Awaitable[Response]]


def demo_command() -> list[str]:
    return [sys.executable, "-m", "releasegate.demo", "--host", "{host}", "--port", "{port}", "--version", "{version}",
            "--pod", "{pod}"]


@dataclass
class SlotState:
    version: str | None = None
    replicas: int = 0
    pods: list[Pod] = field(default_factory=list)
    generation: int = 0


@dataclass
class Lease:
    holder: str  # the run id
    acquired_at: float
    renewed_at: float
    ttl_s: float
    version: str = ""
    host: str = ""
    pid: int | None = None

    @property
    def expires_at(self) -> float:
        return self.renewed_at + self.ttl_s

    @property
    def expired(self) -> bool:
        return time.time() > self.expires_at

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "expires_at": self.expires_at, "expired": self.expired}


class LocalCluster:
    def __init__(self, config: Config, run_dir: Path, *, persistent: bool) -> None:
        self.config = config
        self.local = config.local
        self.run_dir = run_dir
        self.persistent = persistent
        self.metrics = RouterMetrics(app=config.app.name)
        self.router = Router(self.metrics, upstream_timeout_s=self.local.upstream_timeout_s)
        self.slots: dict[str, SlotState] = {slot: SlotState() for slot in SLOTS}
        self.traffic: dict[str, int] = {}
        self.release_state: dict[str, Any] | None = None
        self.lease: Lease | None = None
        self.prometheus: PrometheusServer | None = None
        self.servers: list[asyncio.Server] = []
        self._admin_server: _AdminServer | None = None
        self._admin_task: asyncio.Task[None] | None = None
        self._probes = probe_client()
        self.admin_token = secrets.token_urlsafe(32)
        self.urls: dict[str, str] = {}
        self.status = "starting"
        self.started_at = time.time()
        self._stopped = asyncio.Event()
        # One Upstream per (pod, port) for the pod's life, so its keep-alive pool survives table rebuilds.
        self._upstreams_by_pod: dict[tuple[str, int], Upstream] = {}
        # Pods out of their slot whose processes are still ending (kubectl's Terminating): a scale-down, remove
        # or redeploy answers once they take no traffic, and their stop() goes on here; shutdown awaits them.
        self._terminating: list[Pod] = []
        self._terminations: dict[asyncio.Task[None], Pod] = {}  # their stop(), each forgotten when done
        # Warm spares only for the built-in demo command: a user's command starts cold, as it always did.
        self.spares = None if self.local.command else DemoSpares(
            self.local.replicas, {**os.environ, **dict(self._pod_env())}, run_dir / "logs" / "spares.log",
            on_change=self._spares_changed)
        self._background: set[asyncio.Task[None]] = set()  # the spares' (re)starts

    # -- start and stop -----------------------------------------------------------------------------
    async def start(self, head_start: HeadStart | None = None) -> None:
        """Start serving; `head_start`: the sockets and Prometheus the daemon set up before its imports."""
        head = head_start or await open_head_start(
            self.run_dir, app=self.config.app.name, service_port=self.local.service_port,
            prometheus_binary=None if self.config.prometheus.url else self.local.prometheus_binary,
            scrape_interval_s=self.local.scrape_interval_s)
        self.prometheus = head.prometheus  # from here on, shutdown stops it
        try:
            self.servers.append(await asyncio.start_server(self._serve_route(None), sock=head.service))
            self.urls["service"] = socket_url(head.service)
            for slot in SLOTS:
                self.urls[f"preview-{slot}"] = await self._listen(f"preview-{slot}", 0, self._serve_route(slot))
        except BaseException:
            head.admin.close()  # the service socket is its server's now, or closed with it
            raise
        # The token is in place before the admin API answers, and before state.json says where it listens.
        write_atomically(self.run_dir / ADMIN_TOKEN_FILE, self.admin_token)  # private: created mode 0600
        self.urls["admin"] = self._serve_admin(head.admin)
        self.urls["prometheus"] = self.prometheus.url if self.prometheus else self.config.prometheus.url
        initial = self.local.initial_version
        if initial:  # empty: nothing serves until a first deploy is promoted (the router answers 503)
            # Started while Prometheus starts: both take about a second, and neither needs the other.
            await self.deploy("blue", initial, self.local.replicas)
        if self.prometheus is not None:
            await self.prometheus.wait_ready()
        self.traffic = {"blue": 100}
        self.router.update(weights=self.traffic)
        self.status = "running"
        self.write_state()
        self._warm_spares_after("blue")  # after the initial pods: the cluster's own start never waits on them

    async def _listen(self, name: str, port: int, handler: Any) -> str:
        try:
            server = await asyncio.start_server(handler, HOST, port, reuse_address=True)
        except OSError as exc:
            raise cannot_listen(name, port, exc) from None
        self.servers.append(server)
        return f"http://{HOST}:{server.sockets[0].getsockname()[1]}"

    def _serve_admin(self, sock: socket.socket) -> str:
        """Start uvicorn on `sock`, bound and listening already: the port is known, and queues requests."""
        config = uvicorn.Config(
            self.admin_app(), http="h11", ws="none", lifespan="off", log_config=None, log_level="warning",
            access_log=False, server_header=False, proxy_headers=False, timeout_keep_alive=ADMIN_KEEP_ALIVE_S,
            timeout_graceful_shutdown=ADMIN_SHUTDOWN_GRACE_S)
        self._admin_server = _AdminServer(config)
        self._admin_task = asyncio.get_running_loop().create_task(
            self._admin_server.serve(sockets=[sock]), name="admin API")
        self._admin_task.add_done_callback(self._admin_ended)
        return socket_url(sock)

    def _admin_ended(self, task: asyncio.Task[None]) -> None:
        # Without its admin API nobody can change or stop the cluster: a failed server stops it all.
        if not task.cancelled() and task.exception() is not None:
            print(f"releasegate: the admin API failed: {task.exception()!r}", file=sys.stderr, flush=True)
        if self.status != "stopping":
            self.request_stop()

    def _serve_route(self, slot: str | None) -> Any:
        listener = "service" if slot is None else f"preview-{slot}"

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.router.serve(reader, writer, listener=listener, slot=slot)

        return handler

    async def run_until_stopped(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        self._stopped.set()

    async def shutdown(self) -> None:
        self.status = "stopping"
        self.write_state()
        if self._admin_server is not None and self._admin_task is not None:
            self._admin_server.exit_now()  # answers in progress are finished first
            with contextlib.suppress(Exception):
                await self._admin_task
        for server in self.servers:
            server.close()
        self.router.close_connections()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        # Pods and Prometheus stop side by side: each waits for its own processes only. Pods already terminating
        # finish their own stop (and grace): a stopped cluster leaves no process behind.
        stopping: list[Awaitable[Any]] = [pod.stop(grace_s=3.0) for state in self.slots.values() for pod in state.pods]
        # Their failures were logged as they ended (_terminated): awaited here only so that none outlives us.
        stopping.append(asyncio.gather(*self._terminations, return_exceptions=True))
        # Out of their slot but not stopping yet: their drain was cut short with the admin API's last request.
        stopping += [pod.stop(grace_s=3.0) for pod in self._terminating if pod not in self._terminations.values()]
        if self.prometheus is not None:
            stopping.append(self.prometheus.stop())
        if self.spares is not None:
            stopping.append(self.spares.close())
        await asyncio.gather(*stopping)
        await self._probes.aclose()
        for name in (STATE_FILE, ADMIN_TOKEN_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / name).unlink()

    # -- workloads ----------------------------------------------------------------------------------
    async def deploy(self, slot: str, version: str, replicas: int) -> None:
        """Replace a slot's pods with `replicas` pods of `version` (old ones drain first)."""
        state = self.slots[slot]
        await self._stop_pods(slot)
        state.version, state.replicas = version, replicas
        state.generation += 1
        command = tuple(self.local.command or demo_command())
        for index in range(replicas):
            name = f"{self.config.app.name}-{slot}-{state.generation}-{index}"
            spec = PodSpec(name=name, slot=slot, version=version, command=command, env=self._pod_env(),
                           log_path=self.run_dir / "logs" / f"{name}.log",
                           readiness_path=self.local.readiness_path, host=HOST)
            pod = Pod(spec, self._pod_changed, self._probes, self.spares)
            state.pods.append(pod)
            pod.start()
        self._sync()
        self._warm_spares_after(slot)

    def _pod_env(self) -> tuple[tuple[str, str], ...]:
        """What every pod gets on top of the cluster's environment (a spare is started with the same)."""
        if self.local.profiles:
            return (("RELEASEGATE_PROFILES", str(self.config.resolve_path(self.local.profiles))),)
        return ()

    def _warm_spares_after(self, slot: str) -> None:
        """Bring the spares back to `local.replicas` once the pods just started in `slot` are up.

        Not before: at normal priority (where SCHED_IDLE cannot be left) their imports would compete with those
        pods for the CPU, and even at idle priority starting them stalls this event loop for a few
        milliseconds while the pods' probes are due. A pod that does not get ready does not hold them up past
        local.ready_timeout_s.
        """
        spares = self.spares
        if spares is None or self.status == "stopping":
            return
        generation = self.slots[slot].generation

        async def pods_up() -> bool | None:
            state = self.slots[slot]
            if state.generation != generation or all(pod.ready or pod.restarts for pod in state.pods):
                return True
            return None

        async def warm_up() -> None:
            await apoll_until(pods_up, timeout_s=self.local.ready_timeout_s, interval_s=SPARES_WAIT_POLL_S)
            await spares.replenish()
            self.write_state()

        task = asyncio.get_running_loop().create_task(warm_up(), name=f"spares after {slot}")
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _spares_changed(self) -> None:
        if self.status != "stopping":  # shutdown removes state.json; a late write must not bring it back
            self.write_state()

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Spares are an optimisation: pods start cold without them. Say why they are missing, and go on.
            print(f"releasegate: {task.get_name()} failed: {task.exception()!r}", file=sys.stderr, flush=True)

    async def scale(self, slot: str, replicas: int) -> None:
        state = self.slots[slot]
        if replicas == 0:
            await self._stop_pods(slot)
            state.replicas = 0
            self._sync()
        elif state.version is not None:
            await self.deploy(slot, state.version, replicas)

    async def remove(self, slot: str) -> None:
        await self._stop_pods(slot)
        self.slots[slot] = SlotState(generation=self.slots[slot].generation)
        self._sync()

    async def _stop_pods(self, slot: str) -> None:
        """Take the slot's pods out of service and let them terminate in the background.

        Before it returns, no request reaches them any more and the ones they were serving are finished (or the
        drain timed out). Their processes end afterwards, as a Deployment scaled to 0 answers at once and its
        pods terminate within their grace period: a release's finalize or rollback does not wait for it.
        """
        state = self.slots[slot]
        pods, state.pods = state.pods, []
        if not pods:
            return
        for pod in pods:  # never restarted from now on, and listed as terminating, not as the slot's
            pod.terminate()
        self._terminating += pods
        self._sync()  # out of the routing table first: no new request reaches them
        upstreams = [u for u in self._upstreams_by_pod.values() if u.pod in {p.spec.name for p in pods}]
        await self.router.drain(upstreams, self.local.drain_timeout_s)
        for pod in pods:
            task = asyncio.get_running_loop().create_task(pod.stop(), name=f"terminate pod {pod.spec.name}")
            self._terminations[task] = pod
            task.add_done_callback(self._terminated)

    def _terminated(self, task: asyncio.Task[None]) -> None:
        pod = self._terminations.pop(task)
        self._terminating.remove(pod)
        if not task.cancelled() and task.exception() is not None:
            # Nobody awaits this task but shutdown: say it here, or the failure would only surface (if ever) there.
            print(f"releasegate: stopping pod {pod.spec.name} failed: {task.exception()!r}", file=sys.stderr,
                  flush=True)
        if self.status != "stopping":  # shutdown removes state.json; a late write must not bring it back
            self.write_state()

    def _pod_changed(self, pod: Pod) -> None:
        self._sync()

    def _sync(self) -> None:
        """Rebuild the router's pod table from the pods' current state (Prometheus reads them at each scrape)."""
        pods: dict[str, tuple[Upstream, ...]] = {}
        live_keys: set[tuple[str, int]] = set()
        for slot, state in self.slots.items():
            ready: list[Upstream] = []
            for pod in state.pods:
                if not (pod.ready and pod.port):
                    continue
                key = (pod.spec.name, pod.port)
                live_keys.add(key)
                upstream = self._upstreams_by_pod.get(key)
                if upstream is None:
                    upstream = Upstream(pod.spec.name, slot, pod.spec.version, pod.spec.host, pod.port)
                    self._upstreams_by_pod[key] = upstream
                ready.append(upstream)
            pods[slot] = tuple(ready)
        for key in list(self._upstreams_by_pod):
            if key not in live_keys and not self._upstreams_by_pod[key].in_flight:
                self._upstreams_by_pod.pop(key).close_idle()
        versions = {slot: s.version for slot, s in self.slots.items() if s.version}
        self.router.update(pods=pods, versions=versions)
        self.write_state()

    # -- traffic ------------------------------------------------------------------------------------
    def set_traffic(self, weights: dict[str, int], *, serve_nothing: bool = False) -> tuple[dict[str, int], float]:
        for slot, weight in weights.items():
            if slot not in self.slots:
                raise ValueError(f"unknown slot {slot!r}; slots are {', '.join(SLOTS)}")
            pods = self.slots[slot].pods
            ready = sum(p.ready for p in pods)
            # All traffic back to a slot that runs nothing, asked for as such, is the rollback of a first
            # deploy: the service serves nothing again, as before it. Anything else needs a ready pod.
            back_to_nothing = serve_nothing and weight == 100 and not pods and self.slots[slot].version is None
            if weight > 0 and ready == 0 and not back_to_nothing:
                raise ValueError(f"refusing to send {weight}% of traffic to slot {slot}: no pod is ready")
        if sum(weights.values()) != 100 or any(w < 0 for w in weights.values()):
            raise ValueError(f"weights must be >= 0 and add up to 100, got {weights}")
        started = time.perf_counter()
        previous = self.traffic
        self.traffic = {slot: w for slot, w in weights.items() if w > 0}
        self.router.update(weights=self.traffic)
        swap_ms = (time.perf_counter() - started) * 1000
        self.write_state()
        return previous, swap_ms

    # -- state --------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        live = [slot for slot, w in self.traffic.items() if w == 100]
        lease = self.lease
        return {
            "pid": os.getpid(), "status": self.status, "persistent": self.persistent,
            "app": self.config.app.name, "started_at": self.started_at,
            "service_url": self.urls.get("service"), "admin_url": self.urls.get("admin"),
            "previews": {slot: self.urls.get(f"preview-{slot}") for slot in SLOTS},
            "prometheus_url": self.urls.get("prometheus"),
            "prometheus_pid": self.prometheus.pid if self.prometheus else None,
            # How a release asks whether Prometheus scrapes a pod: its own Prometheus scrapes every pod through
            # one target and reports each as POD_UP_METRIC; an external one scrapes them as it is set up to.
            "pod_up_metric": POD_UP_METRIC if self.prometheus else "up",
            "traffic": self.traffic, "live_slot": live[0] if live else None,
            "slots": {slot: {"version": s.version, "replicas": s.replicas,
                             "ready_replicas": sum(p.ready for p in s.pods),
                             "pods": [p.to_dict() for p in s.pods]} for slot, s in self.slots.items()},
            # Out of their slot and of the routing table, their processes still ending: not pods of any slot.
            "terminating": [pod.to_dict() for pod in self._terminating],
            # Warm processes a deploy's pods may start from (spares.py): not pods, never routed to.
            "spares": self.spares.to_list() if self.spares is not None else [],
            "release_state": self.release_state,
            "lease": None if lease is None else lease.to_dict(),
            "run_dir": str(self.run_dir),
        }

    def write_state(self) -> None:
        write_atomically(self.run_dir / STATE_FILE, json.dumps(self.state(), indent=2, sort_keys=True))

    # -- admin API ----------------------------------------------------------------------------------
    def admin_app(self) -> Starlette:
        """The admin API; client.py speaks its wire format: JSON bodies in and out, errors as {"error": ...}."""

        def route(path: str, method: str, handler: Callable[[Request], Awaitable[Response]]) -> Route:
            return Route(path, self._authorized(handler), methods=[method])

        return Starlette(
            routes=[
                Route("/metrics", self._get_metrics, methods=["GET"]),  # OPEN_ADMIN_PATHS
                Route(PODS_METRICS_PATH, self._get_pods_metrics, methods=["GET"]),  # OPEN_ADMIN_PATHS
                route("/healthz", "GET", self._get_healthz),
                route("/state", "GET", self._get_state),
                Route("/slots/{slot}", self._authorized(self._slot), methods=["POST", "DELETE"]),
                route("/slots/{slot}/scale", "POST", self._scale_slot),
                route("/traffic", "POST", self._post_traffic),
                route("/release-state", "PUT", self._put_release_state),
                route("/lease/acquire", "POST", self._post_lease_acquire),
                route("/lease/renew", "POST", self._post_lease_renew),
                route("/lease/release", "POST", self._post_lease_release),
                route("/shutdown", "POST", self._post_shutdown),
            ],
            exception_handlers={HTTPException: _no_route, ValueError: _bad_request, KeyError: _bad_request,
                                TypeError: _bad_request},
        )

    def _authorized(self, handler: _Handler) -> _Handler:
        """`handler` behind the run directory's token: 401 without one, 403 with another; nothing runs then."""
        expected = f"Bearer {self.admin_token}".encode()

        async def checked(request: Request) -> Response:
            given = request.headers.get("authorization")
            if given is None:
                return json_response(401, {"error": f"the admin API needs the token in {ADMIN_TOKEN_FILE} of the "
                                                    "run directory (Authorization: Bearer ...)"},
                                     headers={"WWW-Authenticate": "Bearer"})
            if not secrets.compare_digest(given.encode(), expected):  # same time for every wrong guess
                return json_response(403, {"error": f"wrong admin token; the valid one is in {ADMIN_TOKEN_FILE} "
                                                    "of the cluster's run directory"})
            return await handler(request)

        return checked

    async def _get_metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def _get_pods_metrics(self, request: Request) -> Response:
        """Every pod's /metrics, fetched now side by side, as one exposition labelled by pod (pod_metrics.py).

        Every pod with a port is asked, ready or not: one that does not answer (starting, crashed) is
        `releasegate_pod_up` 0, as a target Prometheus cannot scrape is `up` 0. A stopped pod is left out,
        and Prometheus marks its series stale.
        """
        pods = [pod for state in self.slots.values() for pod in state.pods if pod.port]
        texts = await asyncio.gather(*(self._pod_metrics(pod) for pod in pods))
        scrapes = [PodScrape({"app": self.config.app.name, "slot": pod.spec.slot, "version": pod.spec.version,
                              "pod": pod.spec.name}, text) for pod, text in zip(pods, texts, strict=True)]
        return Response(merge_expositions(scrapes), media_type=METRICS_CONTENT_TYPE)

    async def _pod_metrics(self, pod: Pod) -> str | None:
        """The pod's /metrics text; None when it does not answer 200 in its share of the scrape timeout."""
        timeout = scrape_timeout_s(self.local.scrape_interval_s) * POD_SCRAPE_SHARE
        try:
            # The probes' client: a new connection each time, never one the pod is closing meanwhile.
            response = await self._probes.get(f"http://{pod.spec.host}:{pod.port}/metrics",
                                              headers=POD_SCRAPE_HEADERS, timeout=timeout)
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    async def _get_healthz(self, request: Request) -> Response:
        return json_response(200, {"status": self.status})

    async def _get_state(self, request: Request) -> Response:
        return json_response(200, self.state())

    async def _slot(self, request: Request) -> Response:
        slot = request.path_params["slot"]
        if slot not in self.slots:
            return _unknown_slot(slot)
        if request.method == "DELETE":
            if self.traffic.get(slot):
                return json_response(409, {"error": f"slot {slot} still takes {self.traffic[slot]}% "
                                                    "of traffic; move traffic away first"})
            await self.remove(slot)
            return json_response(200, {"removed": slot})
        body = await _json_body(request)
        await self.deploy(slot, str(body["version"]), int(body.get("replicas", self.local.replicas)))
        return json_response(202, self.state()["slots"][slot])

    async def _scale_slot(self, request: Request) -> Response:
        slot = request.path_params["slot"]
        if slot not in self.slots:
            return _unknown_slot(slot)
        body = await _json_body(request)
        await self.scale(slot, int(body["replicas"]))
        return json_response(200, self.state()["slots"][slot])

    async def _post_traffic(self, request: Request) -> Response:
        body = await _json_body(request)
        try:
            previous, swap_ms = self.set_traffic({k: int(v) for k, v in body["weights"].items()},
                                                 serve_nothing=bool(body.get("serve_nothing", False)))
        except ValueError as exc:
            return json_response(409, {"error": str(exc)})
        return json_response(200, {"traffic": self.traffic, "previous": previous, "swap_ms": swap_ms})

    async def _put_release_state(self, request: Request) -> Response:
        self.release_state = await _json_body(request)
        self.write_state()
        return json_response(200, self.release_state)

    async def _post_lease_acquire(self, request: Request) -> Response:
        return self._acquire_lease(await _json_body(request))

    async def _post_lease_renew(self, request: Request) -> Response:
        return self._renew_lease(await _json_body(request))

    async def _post_lease_release(self, request: Request) -> Response:
        holder = (await _json_body(request))["holder"]
        if self.lease is not None and self.lease.holder == holder:
            self.lease = None
            self.write_state()
        return json_response(200, {"released": holder})

    async def _post_shutdown(self, request: Request) -> Response:
        asyncio.get_running_loop().call_soon(self.request_stop)
        return json_response(202, {"status": "stopping"})

    def _acquire_lease(self, body: dict[str, Any]) -> Response:
        holder, ttl = str(body["holder"]), float(body["ttl_s"])
        now = time.time()
        lease = self.lease
        if lease is not None and lease.holder != holder and not lease.expired:
            return json_response(409, {"error": f"the lock is held by {lease.holder}", "lease": lease.to_dict(),
                                       "expires_in_s": lease.expires_at - now})
        taken_over = lease.holder if lease is not None and lease.holder != holder else None
        acquired = lease.acquired_at if lease is not None and lease.holder == holder else now
        pid = body.get("pid")
        self.lease = Lease(holder=holder, acquired_at=acquired, renewed_at=now, ttl_s=ttl,
                           version=str(body.get("version") or ""), host=str(body.get("host") or ""),
                           pid=None if pid is None else int(pid))
        self.write_state()
        return json_response(200, {"holder": holder, "taken_over_from": taken_over})

    def _renew_lease(self, body: dict[str, Any]) -> Response:
        """Extend the holder's lease; 409 when it is not the holder's any more (it never takes the lease)."""
        holder, ttl = str(body["holder"]), float(body["ttl_s"])
        lease = self.lease
        if lease is None or lease.holder != holder:
            return json_response(409, {"error": f"the lock is not held by {holder}", "lost": True,
                                       "lease": None if lease is None else lease.to_dict()})
        lease.renewed_at, lease.ttl_s = time.time(), ttl
        self.write_state()
        return json_response(200, lease.to_dict())


class _AdminServer(PromptExitServer):
    """uvicorn inside the cluster's event loop: SIGTERM and SIGINT stay the cluster's (run_cluster). Its shutdown
    starts as soon as the cluster's does (exit_now), not at uvicorn's next 0.1 s tick."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _SortedJSONResponse(JSONResponse):
    """The admin API's JSON as it always was: keys sorted (client.py and people read it)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, sort_keys=True).encode()


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return _SortedJSONResponse(payload, status_code=status, headers=headers)


async def _json_body(request: Request) -> Any:
    return json.loads(await request.body() or b"{}")


def _unknown_slot(slot: str) -> Response:
    return json_response(404, {"error": f"unknown slot {slot!r}; slots are {', '.join(SLOTS)}"})


async def _no_route(request: Request, exc: Exception) -> Response:
    # 404 and 405 alike: every answer of the admin API is JSON with an error, as client.py expects.
    return json_response(404, {"error": f"no admin route {request.method} {request.url.path}"})


async def _bad_request(request: Request, exc: Exception) -> Response:
    return json_response(400, {"error": str(exc)})


async def run_cluster(config: Config, run_dir: Path, *, persistent: bool,
                      head_start: HeadStart | None = None) -> int:
    cluster = LocalCluster(config, run_dir, persistent=persistent)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, cluster.request_stop)
    try:
        await cluster.start(head_start)
        await cluster.run_until_stopped()
    finally:
        await cluster.shutdown()
    return 0
