"""How the runner reaches the app: URL templates (ingress hosts), cluster DNS, or kubectl port-forward."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError, TargetError
from releasegate.core.types import Endpoint, LiveState, Role, Slot
from releasegate.targets.kubernetes.layout import Layout

PORT_FORWARD_TIMEOUT_S = 20.0


class EndpointResolver:
    """Turns the live state into URLs for the candidate, the baseline and the public service."""

    def __init__(self, config: Config, layout: Layout,
                 service_port: Callable[[str], int] | None = None) -> None:
        self.kube = config.kubernetes
        self.layout = layout
        self.service_port = service_port
        self._forwards: dict[str, tuple[subprocess.Popen[str], str]] = {}

    def _values(self, slot: Slot | None) -> dict[str, str]:
        return {"app": self.layout.app, "namespace": self.layout.namespace, "service": self.layout.service,
                "preview_service": self.layout.preview_service, "slot": slot or ""}

    def _template(self, template: str, key: str, slot: Slot | None) -> str:
        try:
            return template.format(**self._values(slot)).rstrip("/")
        except KeyError as exc:
            raise ConfigError(f"kubernetes.{key} = {template!r} uses an unknown placeholder {exc}; use {{app}}, "
                              "{namespace}, {service}, {preview_service} or {slot}") from None

    def _url_for_service(self, service: str, key: str, template: str, slot: Slot | None) -> str:
        mode = self.kube.access
        if mode == "url":
            if not template:
                raise ConfigError(f"kubernetes.access = 'url' needs kubernetes.{key} (a URL template such as "
                                  "https://{app}.example.com)")
            return self._template(template, key, slot)
        port = self.service_port(service) if self.service_port else 80
        if mode == "cluster-dns":
            return f"http://{service}.{self.layout.namespace}.svc.{self.kube.cluster_domain}:{port}"
        return self._port_forward(service, port)

    def endpoints(self, state: LiveState, candidate_slot: Slot | None) -> dict[Role, Endpoint]:
        live_slot = state.live_slot
        service_url = self._url_for_service(self.layout.service, "service_url", self.kube.service_url, live_slot)
        result = {Role.SERVICE: Endpoint(Role.SERVICE, service_url, live_slot,
                                         state.versions.get(live_slot) if live_slot else None)}
        if candidate_slot is not None:
            url = self._url_for_service(self.layout.preview_service, "preview_url", self.kube.preview_url,
                                        candidate_slot)
            result[Role.CANDIDATE] = Endpoint(Role.CANDIDATE, url, candidate_slot, state.versions.get(candidate_slot))
        baseline_slot = live_slot if live_slot != candidate_slot else None
        if baseline_slot is not None:
            url = self._template(self.kube.baseline_url, "baseline_url", baseline_slot) \
                if self.kube.baseline_url else service_url
            result[Role.BASELINE] = Endpoint(Role.BASELINE, url, baseline_slot, state.versions.get(baseline_slot))
        return result

    def _port_forward(self, service: str, port: int) -> str:
        """`kubectl port-forward svc/<service>` on a free local port, kept for the target's life."""
        if service in self._forwards:
            return self._forwards[service][1]
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise ConfigError("kubernetes.access = 'port-forward' needs kubectl on PATH; install it or use "
                              "access = 'url' with the ingress hosts")
        argv = [kubectl, "port-forward", f"svc/{service}", f":{port}", "-n", self.layout.namespace]
        if self.kube.kubeconfig:
            argv += ["--kubeconfig", self.kube.kubeconfig]
        if self.kube.context:
            argv += ["--context", self.kube.context]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + PORT_FORWARD_TIMEOUT_S
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
            if match:
                url = f"http://127.0.0.1:{match.group(1)}"
                self._forwards[service] = (process, url)
                return url
            if not line and process.poll() is not None:
                break
        process.kill()
        raise TargetError(f"kubectl port-forward to svc/{service} did not start: {line.strip()}")

    def close(self) -> None:
        for process, _ in self._forwards.values():
            process.terminate()
            process.wait(10)
        self._forwards.clear()
