"""``FakeKube``: a Kubernetes v1.32 API server fake on 127.0.0.1, for tests through the real client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from . import status
from .auth import DEFAULT_GROUPS, DEFAULT_TOKENS, Authorizer
from .clock import Clock, SystemClock
from .controllers import ControllerManager
from .faults import FaultInjector, FaultRule, RecordedRequest, RequestLog
from .registry import Registry, WriteOptions
from .resources import BY_KIND, resource_for
from .runtime import IpPool, PodRuntime, SimulatedRuntime
from .selectors import EVERY_FIELD, parse_label_selector
from .server import ApiServer, FakeKubeHTTPServer
from .store import Store

JsonObj = dict[str, Any]

BASE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class FakeKube:
    """A fake API server with controllers, started on a free port of 127.0.0.1.

    ``controllers="auto"`` runs the controllers in a background thread every ``tick_s``;
    ``controllers="manual"`` leaves them to ``step()``/``settle()`` (deterministic replays).
    """

    def __init__(
        self,
        *,
        tokens: Mapping[str, str] | None = None,
        groups: Mapping[str, list[str]] | None = None,
        rbac: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        pod_runtime: PodRuntime | None = None,
        controllers: str = "auto",
        tick_s: float = 0.01,
        seed: int = 0,
        namespaces: tuple[str, ...] = BASE_NAMESPACES,
    ) -> None:
        if controllers not in ("auto", "manual"):
            raise ValueError("controllers must be 'auto' or 'manual'")
        self.clock: Clock = clock or SystemClock()
        self.store = Store()
        self.registry = Registry(self.store, now=self.clock.now, seed=seed)
        self.ip_pool = IpPool()
        self.simulated_runtime = SimulatedRuntime(self.clock.monotonic, self.ip_pool)
        self.pod_runtime: PodRuntime = pod_runtime or self.simulated_runtime
        self.authorizer = Authorizer(
            tokens=dict(tokens if tokens is not None else DEFAULT_TOKENS),
            groups={k: list(v) for k, v in (groups if groups is not None else DEFAULT_GROUPS).items()},
        )
        self.authorizer.set_rbac(rbac)
        self.faults = FaultInjector()
        self._log = RequestLog()
        self._stopping = threading.Event()
        self.api = ApiServer(self.registry, self.authorizer, self.faults, self._log, self._stopping)
        self.controllers = ControllerManager(self.registry, self.pod_runtime, self.clock, tick_s=tick_s)
        self._mode = controllers
        self._server: FakeKubeHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self.url = ""
        for name in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> FakeKube:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = FakeKubeHTTPServer(self.api)
        host, port = str(self._server.server_address[0]), int(self._server.server_address[1])
        self.url = f"http://{host}:{port}"
        self.api.server_address = f"{host}:{port}"
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fakekube-http",
            daemon=True,
        )
        self._serve_thread.start()
        if self._mode == "auto":
            self.controllers.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection, stop controllers and pod runtimes (see ``errors``)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_all_connections()
            self._server.server_close()
            self._server = None
        if self._serve_thread is not None:
            self._serve_thread.join(timeout=10)
            self._serve_thread = None
        self.controllers.stop()

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def errors(self) -> list[str]:
        """Tracebacks of bugs inside the fake (controller or handler crashes); tests should see none."""
        return [*self.controllers.errors, *self.api.errors]

    # -- client configuration --------------------------------------------------------------------------------

    def write_kubeconfig(
        self,
        path: str | Path,
        *,
        context: str = "fake",
        namespace: str = "default",
        token: str = "admin-token",
    ) -> Path:
        target = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": f"{context}-user", "user": {"token": token}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": context, "user": f"{context}-user", "namespace": namespace},
                }
            ],
            "current-context": context,
        }
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        return target

    def client_configuration(self, token: str = "admin-token") -> Any:
        """A ``kubernetes.client.Configuration`` for this server (imported lazily: the server itself does
        not need the client)."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        config.api_key = {"authorization": token}
        config.api_key_prefix = {"authorization": "Bearer"}
        config.verify_ssl = False
        return config

    # -- request log and faults ------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._log.snapshot()

    def write_requests(self) -> list[RecordedRequest]:
        return [r for r in self._log.snapshot() if r.is_write]

    def clear_requests(self) -> None:
        self._log.clear()

    def inject_fault(
        self,
        *,
        method: str | None = None,
        path_regex: str | None = None,
        status: int | None = 500,
        times: int = 1,
        latency_s: float = 0.0,
        retry_after: int | None = None,
        message: str = "injected fault",
    ) -> FaultRule:
        """Answer the next ``times`` matching requests with ``status`` (None: only add ``latency_s``)."""
        return self.faults.add(FaultRule(method, path_regex, status, times, latency_s, retry_after, message))

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- behaviour knobs -------------------------------------------------------------------------------------

    def set_image_behaviour(self, image_or_tag_pattern: str, behaviour: str) -> None:
        """``ready`` (default), ``crashloop``, ``imagepull``, ``never-ready``, ``slow-ready:SECONDS``, or for
        run-to-completion pods ``complete:SECONDS`` / ``fail:SECONDS`` (runs that long, then exits 0 / 1)."""
        self.simulated_runtime.set_image_behaviour(image_or_tag_pattern, behaviour)

    def set_rbac(self, rbac: Mapping[str, Any] | None) -> None:
        """Switch to RBAC (subject -> Role/ClusterRole, ``rules`` list) or back to AlwaysAllow with None."""
        self.authorizer.set_rbac(rbac)

    def install_crd(self, name: str) -> None:
        """Install a CustomResourceDefinition the fake knows (``crds.py``: ``rollouts.argoproj.io``), as a
        ``kubectl apply`` of its manifest would: its group joins discovery and its objects are served (and,
        for Rollouts, moved by the Argo Rollouts controller of ``ctl_rollout.py``)."""
        from .crds import crd

        self.registry.crds.add(crd(name).key)

    def compact(self) -> int:
        """Forget the watch history: every resourceVersion seen so far becomes "too old" (410)."""
        return self.store.compact()

    # -- controllers -----------------------------------------------------------------------------------------

    def step(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            self.controllers.run_round()

    def settle(self, timeout: float = 10.0) -> int:
        """Run controller rounds until one changes nothing (works in both controller modes)."""
        return self.controllers.settle(timeout=timeout)

    def pause_controllers(self) -> None:
        self.controllers.pause()

    def resume_controllers(self) -> None:
        self.controllers.resume()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
        """Poll ``predicate`` until it returns something truthy; in manual mode each poll runs a round."""
        deadline = time.monotonic() + timeout
        while True:
            if self._mode == "manual" or not self.controllers.running:
                self.controllers.run_round()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)

    # -- object access (no HTTP, no auth, no request log) -------------------------------------------------

    @staticmethod
    def registry_res(kind_or_plural: str) -> Any:
        return resource_for(kind_or_plural)

    @staticmethod
    def write_options(manager: str = "fakekube") -> WriteOptions:
        return WriteOptions(manager=manager)

    def create(self, obj: Mapping[str, Any], *, manager: str = "fakekube") -> JsonObj:
        res = BY_KIND[str(obj["kind"])]
        namespace = str((obj.get("metadata") or {}).get("namespace") or ("default" if res.namespaced else ""))
        result = self.registry.create(res, namespace, dict(obj), WriteOptions(manager=manager))
        return result.obj

    def apply(self, obj: Mapping[str, Any], *, manager: str = "fakekube") -> JsonObj:
        """Create, or replace the existing object's content without a resourceVersion check."""
        res = BY_KIND[str(obj["kind"])]
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or ("default" if res.namespaced else ""))
        current = self.store.get(res.key, namespace if res.namespaced else "", str(meta["name"]))
        if current is None:
            return self.create(obj, manager=manager)
        return self.registry.commit_update(res, current, dict(obj), WriteOptions(manager=manager)).obj

    def get_object(self, resource: str, namespace: str, name: str) -> JsonObj | None:
        """The stored object as served (``resource`` may be a plural, a Kind or a short name), or None."""
        res = resource_for(resource)
        try:
            return self.registry.get(res, namespace, name)
        except status.ApiError:
            return None

    get = get_object

    def list_objects(self, resource: str, namespace: str | None = None, label_selector: str = "") -> list[JsonObj]:
        res = resource_for(resource)
        items, _ = self.registry.list(res, namespace, parse_label_selector(label_selector), EVERY_FIELD)
        return [self.registry._served(res, i) for i in items]

    def delete_object(self, resource: str, namespace: str, name: str, propagation: str | None = None) -> None:
        res = resource_for(resource)
        options = {"propagationPolicy": propagation} if propagation else {}
        self.registry.delete(res, namespace, name, options)

    # -- seeding ---------------------------------------------------------------------------------------------

    def seed_namespace(self, name: str) -> JsonObj:
        existing = self.get_object("namespaces", "", name)
        return existing or self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def seed_blue_green(
        self,
        *,
        namespace: str = "shop",
        app: str = "web",
        live_slot: str = "blue",
        blue_image: str = "shop/web:v1",
        green_image: str | None = None,
        replicas: int = 3,
        port: int = 8080,
        wait: bool = True,
        empty: bool = False,
    ) -> dict[str, JsonObj]:
        """Namespace + ``<app>-blue`` (and ``<app>-green`` if an image is given) + Services ``<app>``
        (live slot)
        and ``<app>-preview`` (the other slot), like the recorded layout. Waits for rollouts by default.
        With ``empty``, ``<app>-blue`` runs no version (0 replicas, ``releasegate.io/replicas`` = ``replicas``)."""
        from .seed import blue_green_objects

        self.seed_namespace(namespace)
        created: dict[str, JsonObj] = {}
        for obj in blue_green_objects(namespace, app, live_slot, blue_image, green_image, replicas, port, empty):
            created[f"{obj['kind']}/{obj['metadata']['name']}"] = self.create(obj)
        if wait:
            names = [k.split("/", 1)[1] for k in created if k.startswith("Deployment/")]
            self.wait_for(lambda: all(self.deployment_available(namespace, n) for n in names), timeout=10)
            self.wait_for(lambda: empty or self.endpoints_ready(namespace, app), timeout=10)
        return created

    def seed_canary(
        self,
        *,
        namespace: str = "shop",
        app: str = "web",
        image: str = "shop/web:v1",
        replicas: int = 3,
        port: int = 8080,
        pod_spec: JsonObj | None = None,
        ingress: bool = False,
        wait: bool = True,
        empty: bool = False,
    ) -> dict[str, JsonObj]:
        """Namespace + charts/canary-app's layout (``seed.canary_objects``): ``<app>-stable`` with ``replicas``,
        ``<app>-canary`` with none, the three Services, and with ``ingress`` the ALB Ingress. Waits for stable.
        With ``empty``, stable runs no version (0 replicas, ``releasegate.io/replicas`` = ``replicas``)."""
        from .seed import canary_objects

        self.seed_namespace(namespace)
        created: dict[str, JsonObj] = {}
        for obj in canary_objects(namespace, app, image, replicas, port, pod_spec, ingress, empty):
            created[f"{obj['kind']}/{obj['metadata']['name']}"] = self.create(obj)
        if wait:
            serving = 0 if empty else replicas
            self.wait_for(lambda: self.deployment_available(namespace, f"{app}-stable"), timeout=10)
            self.wait_for(lambda: len(self.endpoints_ready(namespace, app)) == serving, timeout=10)
        return created

    def deployment_available(self, namespace: str, name: str) -> bool:
        d = self.get_object("deployments", namespace, name)
        if d is None:
            return False
        st = d.get("status") or {}
        replicas = int(d["spec"].get("replicas", 0))
        return (
            int(st.get("observedGeneration", 0)) >= int(d["metadata"].get("generation", 0))
            and int(st.get("updatedReplicas", 0)) == replicas
            and int(st.get("availableReplicas", 0)) == replicas
            and int(st.get("replicas", 0)) == replicas
        )

    def endpoints_ready(self, namespace: str, service: str) -> list[str]:
        """Ready addresses of a Service's Endpoints (empty list if none)."""
        ep = self.get_object("endpoints", namespace, service)
        if ep is None:
            return []
        return [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
