"""How the runner reaches the app: URL templates (ingress hosts), cluster DNS, or kubectl port-forward."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError, TargetError
from releasegate.core.processes import stop_child
from releasegate.core.redact import redact
from releasegate.core.types import Endpoint, LiveState, Role, Slot
from releasegate.targets.kubernetes.layout import Layout

PORT_FORWARD_TIMEOUT_S = 20.0
_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")


class PortForward:
    """A running `kubectl port-forward`, its output read by a thread for the whole life of the process.

    kubectl prints a line per connection ("Handling connection for 8080"). A pipe that nobody reads fills
    after some thousand connections, and kubectl then blocks on its next write and forwards nothing more.
    The thread reads until the process ends and keeps the last lines, for error messages.
    """

    KEPT_LINES = 20

    def __init__(self, argv: list[str], *, what: str) -> None:
        self.what = what
        # errors="replace": a byte that is not UTF-8 must not kill the reader (and so stall the pipe again).
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, errors="replace")
        self.url: str | None = None
        self._lines: deque[str] = deque(maxlen=self.KEPT_LINES)
        self._lock = threading.Lock()
        self._started_or_ended = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"reader of {what}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                with self._lock:
                    self._lines.append(line.rstrip())
                if self.url is None and (match := _FORWARDING.search(line)):
                    self.url = f"http://127.0.0.1:{match.group(1)}"
                    self._started_or_ended.set()
        self._started_or_ended.set()  # end of output: the process ended (the waiter then reads its code)

    def last_lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def wait_started(self, timeout_s: float) -> str:
        """The local URL once kubectl forwards; else stop it and raise TargetError: it exited, or timed out."""
        if self._started_or_ended.wait(timeout_s) and self.url is not None:
            return self.url
        timed_out = self.process.poll() is None and not self._started_or_ended.is_set()
        self.close()  # also lets the reader take a last line that had no newline
        # kubectl's own words, which may quote a kubeconfig's credentials (an exec plugin's error, say).
        output = redact(" / ".join(self.last_lines()[-5:])) or "no output"
        if timed_out:
            raise TargetError(f"{self.what} did not start forwarding within {timeout_s:g}s: {output}")
        raise TargetError(f"{self.what} exited with code {self.process.returncode} before forwarding: {output}")

    def close(self) -> None:
        stop_child(self.process, grace_s=10)  # keeps the exit status of a kubectl that ended by itself
        self._reader.join(10)


class EndpointResolver:
    """Turns the live state into URLs for the candidate, the baseline and the public service."""

    def __init__(self, config: Config, layout: Layout,
                 service_port: Callable[[str], int] | None = None,
                 slot_service: Callable[[Slot], str] | None = None) -> None:
        """`slot_service`: the Service that reaches one slot alone (canary layout: `<app>-<slot>`); without it
        the candidate is reached through the preview Service and the baseline through the service (blue-green)."""
        self.kube = config.kubernetes
        self.layout = layout
        self.service_port = service_port
        self.slot_service = slot_service
        self._forwards: dict[str, tuple[PortForward, str]] = {}

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

    def endpoints(self, state: LiveState, candidate_slot: Slot | None,
                  baseline_slot: Slot | None = None) -> dict[Role, Endpoint]:
        """`baseline_slot`: the slot the candidate is compared with (default: the live slot, when it is not the
        candidate); during a canary split no slot is live, and the caller names the stable one."""
        live_slot = state.live_slot
        service_url = self._url_for_service(self.layout.service, "service_url", self.kube.service_url, live_slot)
        result = {Role.SERVICE: Endpoint(Role.SERVICE, service_url, live_slot,
                                         state.versions.get(live_slot) if live_slot else None)}
        if candidate_slot is not None:
            service = self.slot_service(candidate_slot) if self.slot_service else self.layout.preview_service
            url = self._url_for_service(service, "preview_url", self.kube.preview_url, candidate_slot)
            result[Role.CANDIDATE] = Endpoint(Role.CANDIDATE, url, candidate_slot, state.versions.get(candidate_slot))
        if baseline_slot is None:
            baseline_slot = live_slot if live_slot != candidate_slot else None
        # A first deploy has no baseline: the live slot runs no version, there is nothing to compare with.
        if baseline_slot is not None and state.versions.get(baseline_slot) is not None:
            if self.kube.baseline_url:
                url = self._template(self.kube.baseline_url, "baseline_url", baseline_slot)
            elif self.slot_service:
                url = self._url_for_service(self.slot_service(baseline_slot), "baseline_url", "", baseline_slot)
            else:
                url = service_url
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
        forward = PortForward(argv, what=f"kubectl port-forward to svc/{service}")
        url = forward.wait_started(PORT_FORWARD_TIMEOUT_S)
        self._forwards[service] = (forward, url)
        return url

    def close(self) -> None:
        for forward, _ in self._forwards.values():
            forward.close()
        self._forwards.clear()
