"""A fake Kubernetes cluster whose pods are real processes: FakeKube + a process runtime + kube-proxy + Prometheus.

The API server is tests/fakekube (faithful to a v1.32 server). Its kubelet asks ProcessRuntime to run each
pod: the demo service on its own loopback address (127.0.X.N:8080, X per xdist worker), the version taken from the pod's
`version` label (or its image tag). A pod whose container runs `locust` (a Job's load workers) runs that command
instead, with this interpreter, the container's env and its configMap volumes as files.
KubeProxy plays kube-proxy plus an ingress: one loopback port per Service, routing to the ready endpoints of the
Service's EndpointSlices (the local target's router).
A real Prometheus scrapes every pod with the labels app/slot/version copied from the pod, as a
ServiceMonitor with relabelings does on a real cluster. So a release runs end to end: smoke, load and
Prometheus analysis against pods that the kubernetes target created through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from releasegate.targets.local.prometheus import PrometheusServer
from releasegate.targets.local.router import Router, RouterMetrics, Upstream
from tests.fakekube import FakeKube
from tests.fakekube.runtime import PodRuntimeStatus

POD_PORT = 8080
RUNNER_TOKEN = "runner-token"
RUNNER_USER = "system:serviceaccount:shop:releasegate-runner"
PROBE_INTERVAL_S = 0.2


@dataclass
class _Process:
    ip: str
    version: str
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    ready: bool = False
    message: str = "starting"
    # A command pod (locust): the argv to run once its configMap volumes are written, and its env (the container's
    # plain values, over this process's environment once the volumes are written).
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    volumes_ready: bool = False


ConfigMapSource = Callable[[str, str], "dict[str, Any] | None"]


def locust_command(pod: dict[str, Any]) -> list[str] | None:
    """The argv of a pod whose first container runs locust (`locust ...` or `python -m locust ...`), with this
    interpreter in place of the image's; None for every other pod (the demo service)."""
    container = (pod.get("spec") or {}).get("containers", [{}])[0]
    argv = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    if argv[:1] == ["locust"]:
        rest = argv[1:]
    elif len(argv) >= 3 and os.path.basename(argv[0]).startswith("python") and argv[1:3] == ["-m", "locust"]:
        rest = argv[3:]
    else:
        return None
    return [sys.executable, "-m", "locust", *rest]


def replace_mount_paths(argv: list[str], mounts: dict[str, Path]) -> list[str]:
    """Point every argument under a mountPath (`-f /mnt/locust/a.py,/mnt/locust/b.py`) at the pod's directory."""
    out = []
    for arg in argv:
        for mount_path in sorted(mounts, key=len, reverse=True):
            arg = re.sub(re.escape(mount_path.rstrip("/")) + r"(?=/|,|$)", str(mounts[mount_path]), arg)
        out.append(arg)
    return out


def _worker_octet() -> int:
    """Pods listen on a fixed port: each pytest-xdist worker takes its own 127.0.N.0/24 (0 when serial)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
    return int(worker[2:]) + 1 if worker.startswith("gw") else 0


class ProcessRuntime:
    """The fakekube PodRuntime protocol with real demo processes on 127.0.X.N:8080."""

    def __init__(self, workdir: Path, profiles: Path | None) -> None:
        self.workdir = workdir
        self.profiles = profiles
        self._pods: dict[str, _Process] = {}
        self._free_ips = [f"127.0.{_worker_octet()}.{n}" for n in range(200, 10, -1)]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._prober = threading.Thread(target=self._probe_loop, name="process-runtime-prober", daemon=True)
        self._prober.start()
        self._config_maps: ConfigMapSource = lambda namespace, name: None

    def read_config_maps_from(self, fake: FakeKube) -> None:
        """Where configMap volumes come from: the ConfigMaps stored in this fake API server."""
        self._config_maps = lambda namespace, name: fake.get_object("configmaps", namespace, name)

    @staticmethod
    def version(pod: dict[str, Any]) -> str:
        """The pod's version label, else its image tag (what version_of() in the target reads too)."""
        labels = pod["metadata"].get("labels") or {}
        if labels.get("version"):
            return str(labels["version"])
        image = pod["spec"]["containers"][0]["image"]
        return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"

    def _spawn(self, name: str, state: _Process) -> None:
        if state.command is not None:
            if state.volumes_ready:
                with state.log.open("ab") as log:
                    state.popen = subprocess.Popen(state.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                                   env=state.env, cwd=self.workdir)
            return
        env = dict(os.environ)
        if self.profiles is not None:
            env["RELEASEGATE_PROFILES"] = str(self.profiles)
        with state.log.open("ab") as log:
            state.popen = subprocess.Popen(
                [sys.executable, "-m", "releasegate.demo", "--host", state.ip, "--port", str(POD_PORT), "--version",
                 state.version, "--pod", name], stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        state.ready, state.message = False, "starting"

    def start(self, pod: dict[str, Any]) -> str:
        uid, name = pod["metadata"]["uid"], pod["metadata"]["name"]
        with self._lock:
            if uid in self._pods:
                return self._pods[uid].ip
            state = _Process(ip=self._take_free_ip(), version=self.version(pod),
                             log=self.workdir / f"{name}.log")
            self._pods[uid] = state
        command = locust_command(pod)
        if command is not None:
            container = pod["spec"]["containers"][0]
            state.env = {str(e["name"]): str(e["value"]) for e in container.get("env") or [] if "value" in e}
            state.command = command
            self._mount_volumes(pod, state)
        self._spawn(name, state)
        return state.ip

    def _mount_volumes(self, pod: dict[str, Any], state: _Process) -> None:
        """Write the pod's configMap volumes under <workdir>/<pod>/<volume>/ (a process cannot own /mnt/...) and
        point the command's arguments and env values there. A ConfigMap that does not exist (yet) keeps the pod in
        ContainerCreating, retried on every poll, as the kubelet retries a failed mount."""
        assert state.command is not None
        meta, spec = pod["metadata"], pod["spec"]
        pod_dir = self.workdir / meta["name"]
        directories: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            source = volume.get("configMap")
            if source is None:
                continue
            config_map = self._config_maps(meta["namespace"], source["name"])
            if config_map is None and not source.get("optional"):
                return
            data = {str(k): str(v) for k, v in ((config_map or {}).get("data") or {}).items()}
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            target = pod_dir / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
            for item in items:
                if item["key"] in data:
                    (target / item["path"]).parent.mkdir(parents=True, exist_ok=True)
                    (target / item["path"]).write_text(data[item["key"]])
            directories[volume["name"]] = target
        mounts = {str(m["mountPath"]): directories[m["name"]] / str(m.get("subPath", "")).strip("/")
                  for m in spec["containers"][0].get("volumeMounts") or [] if m["name"] in directories}
        state.command = replace_mount_paths(state.command, mounts)
        pod_env = {name: replace_mount_paths([value], mounts)[0] for name, value in state.env.items()}
        state.env = {**os.environ, **pod_env}
        state.volumes_ready = True

    def _take_free_ip(self) -> str:
        """The next loopback address whose pod port nobody listens on: another test run on this machine (or a
        process that outlived its run) may hold some, and a pod there would crash with "address in use"."""
        while True:
            ip = self._free_ips.pop()
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((ip, POD_PORT))
                except OSError:
                    continue
            return ip

    def restart(self, pod: dict[str, Any]) -> None:
        with self._lock:
            state = self._pods.get(pod["metadata"]["uid"])
        if state is not None:
            self._spawn(pod["metadata"]["name"], state)

    def poll(self, pod: dict[str, Any]) -> PodRuntimeStatus:
        with self._lock:
            state = self._pods.get(pod["metadata"]["uid"])
        if state is not None and state.command is not None and not state.volumes_ready:
            self._mount_volumes(pod, state)
            self._spawn(pod["metadata"]["name"], state)
        if state is None or state.popen is None:
            return PodRuntimeStatus(running=False, ready=False, reason="ContainerCreating")
        code = state.popen.poll()
        if code is not None:
            reason = "Completed" if code == 0 and state.command is not None else "Error"
            return PodRuntimeStatus(running=False, ready=False, exit_code=code, reason=reason)
        if state.command is not None:  # no readinessProbe: ready while it runs
            return PodRuntimeStatus(running=True, ready=True)
        message = None if state.ready else f"Readiness probe failed: {state.message}"
        return PodRuntimeStatus(running=True, ready=state.ready, message=message)

    def stop(self, pod: dict[str, Any]) -> None:
        with self._lock:
            state = self._pods.pop(pod["metadata"]["uid"], None)
        if state is None:
            return
        self._terminate(state)
        with self._lock:
            self._free_ips.insert(0, state.ip)

    @staticmethod
    def _terminate(state: _Process) -> None:
        if state.popen is not None and state.popen.poll() is None:
            state.popen.terminate()
            try:
                state.popen.wait(5)
            except subprocess.TimeoutExpired:
                state.popen.kill()
                state.popen.wait()

    def _probe_loop(self) -> None:
        with httpx.Client(timeout=0.5, trust_env=False) as client:
            while not self._stop.wait(PROBE_INTERVAL_S):
                with self._lock:
                    states = list(self._pods.values())
                for state in states:
                    if state.command is not None:
                        continue  # a command pod has no readiness endpoint
                    if state.popen is None or state.popen.poll() is not None:
                        state.ready = False
                        continue
                    try:
                        answer = client.get(f"http://{state.ip}:{POD_PORT}/readyz")
                        state.ready = answer.status_code == 200
                        state.message = f"HTTP probe failed with statuscode: {answer.status_code}"
                    except Exception as exc:
                        state.ready = False
                        state.message = f"Get \"http://{state.ip}:{POD_PORT}/readyz\": {type(exc).__name__}"

    def pods(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"ip": s.ip, "version": s.version, "alive": s.popen is not None and s.popen.poll() is None}
                    for s in self._pods.values()]

    def close(self) -> None:
        self._stop.set()
        self._prober.join(5)
        with self._lock:
            states = list(self._pods.values())
            self._pods.clear()
        for state in states:
            self._terminate(state)


class KubeProxy:
    """Loopback ports for Services (routing to ready EndpointSlice endpoints) and a Prometheus for the pods."""

    def __init__(self, fake: FakeKube, namespace: str, services: list[str], workdir: Path, app: str) -> None:
        self.fake = fake
        self.namespace = namespace
        self.app = app
        self.workdir = workdir
        self.metrics = RouterMetrics(app=app)
        self.routers = {name: Router(self.metrics) for name in services}
        self.urls: dict[str, str] = {}
        self.prometheus_url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-proxy", daemon=True)
        self._upstreams: dict[tuple[str, str], Upstream] = {}
        self._targets: str = ""
        self._prometheus: PrometheusServer | None = None
        self._sync_task: asyncio.Task[None] | None = None

    def start(self) -> KubeProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(60)
        return self

    async def _start(self) -> None:
        for name, router in self.routers.items():
            async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              router: Router = router, name: str = name) -> None:
                await router.serve(reader, writer, listener=name, slot=None)

            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            self.urls[name] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        metrics_server = await asyncio.start_server(self._serve_metrics, "127.0.0.1", 0)
        metrics_target = f"127.0.0.1:{metrics_server.sockets[0].getsockname()[1]}"
        self._prometheus = PrometheusServer("prometheus", self.workdir / "prometheus", app=self.app,
                                            scrape_interval_s=1.0, router_target=metrics_target)
        await self._prometheus.start()
        self.prometheus_url = self._prometheus.url
        self._sync_task = asyncio.get_running_loop().create_task(self._sync_forever())

    async def _serve_metrics(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            body = self.metrics.render().encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        writer.close()

    async def _sync_forever(self) -> None:
        while True:
            self._sync()
            await asyncio.sleep(0.05)

    def _sync(self) -> None:
        pods = {p["metadata"]["name"]: p for p in self.fake.list_objects("pods", self.namespace)}
        for name, router in self.routers.items():
            slices = self.fake.list_objects("endpointslices", self.namespace,
                                            label_selector=f"kubernetes.io/service-name={name}")
            upstreams = []
            for item in slices:
                port = next((p["port"] for p in item.get("ports") or []), POD_PORT)
                for endpoint in item.get("endpoints") or []:
                    if not (endpoint.get("conditions") or {}).get("ready"):
                        continue
                    pod_name = (endpoint.get("targetRef") or {}).get("name", "")
                    pod = pods.get(pod_name)
                    if pod is None:
                        continue
                    key = (name, endpoint["addresses"][0])
                    upstream = self._upstreams.get(key)
                    if upstream is None or upstream.pod != pod_name:
                        upstream = Upstream(pod_name, pod["metadata"]["labels"].get("slot", "?"),
                                            ProcessRuntime.version(pod), endpoint["addresses"][0], int(port))
                        self._upstreams[key] = upstream
                    upstreams.append(upstream)
            if tuple(upstreams) != router.table.pods.get("all"):
                router.update(weights={"all": 100}, pods={"all": tuple(upstreams)}, versions={"all": name})
        targets = [{"host": p["status"]["podIP"], "port": POD_PORT, "slot": p["metadata"]["labels"].get("slot"),
                    "version": ProcessRuntime.version(p), "name": p["metadata"]["name"]}
                   for p in pods.values() if (p.get("status") or {}).get("podIP") and locust_command(p) is None]
        rendered = json.dumps(targets, sort_keys=True)
        if rendered != self._targets and self._prometheus is not None:
            self._prometheus.update_targets(targets)
            self._targets = rendered

    def prometheus_scrapes(self, ips: set[str]) -> bool:
        answer = httpx.get(f"{self.prometheus_url}/api/v1/targets", params={"state": "active"}, timeout=5).json()
        up = {t["labels"]["instance"].split(":")[0] for t in answer["data"]["activeTargets"] if t["health"] == "up"}
        return ips <= up

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._sync_task is not None:
                self._sync_task.cancel()
            for router in self.routers.values():
                router.close_connections()
            if self._prometheus is not None:
                await self._prometheus.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class ProcessCluster:
    """Everything a `--target kubernetes` release needs, with the shop app seeded at v1 on blue."""

    fake: FakeKube
    runtime: ProcessRuntime
    proxy: KubeProxy
    kubeconfig: Path
    namespace: str
    app: str
    extra: dict[str, Any] = field(default_factory=dict)
    layout: str = "bluegreen"

    def config_toml(self) -> str:
        if self.layout == "canary":  # the candidate and the baseline through their own Services
            urls = (f'preview_url = "{self.proxy.urls[self.app + "-canary"]}"\n'
                    f'baseline_url = "{self.proxy.urls[self.app + "-stable"]}"\n')
        else:
            urls = f'preview_url = "{self.proxy.urls[self.app + "-preview"]}"\n'
        return (f'[app]\nname = "{self.app}"\n\n[release]\ntarget = "kubernetes"\nkeep_warm_s = 0.5\n\n'
                f'[prometheus]\nurl = "{self.proxy.prometheus_url}"\n\n'
                f'[kubernetes]\nkubeconfig = "{self.kubeconfig}"\nnamespace = "{self.namespace}"\n'
                f'access = "url"\nservice_url = "{self.proxy.urls[self.app]}"\n' + urls +
                # Deadlines that only stop a hang: a crash loop is given up on at its third restart, long before.
                "ready_timeout_s = 60\nendpoints_timeout_s = 30\nmin_ready_s = 2\n")


@contextlib.contextmanager
def process_cluster(workdir: Path, *, profiles: Path | None, namespace: str = "shop", app: str = "demo",
                    replicas: int = 2, runner_rules: list[dict[str, Any]] | None = None,
                    layout: str = "bluegreen", empty: bool = False) -> Iterator[ProcessCluster]:
    """Seed `<app>` at v1 on blue (`layout="canary"`: charts/canary-app's layout, v1 on `<app>-stable`). With
    `runner_rules`, the kubeconfig's user gets only those RBAC rules. With `empty`, no version runs: the live
    Deployment is empty as the charts install it with firstDeploy=true (0 replicas, `releasegate.io/replicas` =
    `replicas`), so the next release is a first deploy."""
    workdir.mkdir(parents=True, exist_ok=True)
    runtime = ProcessRuntime(workdir, profiles)
    fake = FakeKube(pod_runtime=runtime, tokens={"admin-token": "admin", RUNNER_TOKEN: RUNNER_USER}).start()
    runtime.read_config_maps_from(fake)
    proxy: KubeProxy | None = None
    try:
        if layout == "canary":
            fake.seed_canary(namespace=namespace, app=app, image=f"shop/{app}:v1", replicas=replicas, wait=False,
                             empty=empty)
            live, services = f"{app}-stable", [app, f"{app}-stable", f"{app}-canary"]
        else:
            # The seeded pods carry no version label (the chart's would); the image tag says v1 instead.
            fake.seed_blue_green(namespace=namespace, app=app, blue_image=f"shop/{app}:v1", replicas=replicas,
                                 wait=False, empty=empty)
            live, services = f"{app}-blue", [app, f"{app}-preview"]
        fake.wait_for(lambda: fake.deployment_available(namespace, live)
                      and len(fake.endpoints_ready(namespace, app)) == (0 if empty else replicas), timeout=30)
        proxy = KubeProxy(fake, namespace, services, workdir, app).start()
        if runner_rules is not None:
            fake.set_rbac({RUNNER_USER: runner_rules})
        kubeconfig = Path(fake.write_kubeconfig(workdir / "kubeconfig", namespace=namespace,
                                                token=RUNNER_TOKEN if runner_rules is not None else "admin-token"))
        ips = {p["ip"] for p in runtime.pods() if p["alive"]}
        deadline = time.monotonic() + 30
        while not proxy.prometheus_scrapes(ips):
            assert time.monotonic() < deadline, "Prometheus did not scrape the seeded pods"
            time.sleep(0.2)
        yield ProcessCluster(fake, runtime, proxy, kubeconfig, namespace, app, layout=layout)
    finally:
        if proxy is not None:
            proxy.stop()
        fake.stop()
        runtime.close()
