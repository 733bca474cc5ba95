"""What the local cluster process sets up first, before its own imports: its service and admin sockets, and
its Prometheus server launched.

Why first: Prometheus 2.42 scrapes nothing until about 5 s after it starts (its discovery and scrape managers
hand targets over on a fixed 5-second tick, counted from its start), and an ephemeral cluster's release waits
for that first scrape of its candidate. The cluster's imports (uvicorn, starlette, pydantic, the router) take
about 0.2 s; Prometheus's tick runs during them instead of after them. This module imports only what that
needs, so the daemon (targets/local/daemon.py) can call it before importing the rest.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from releasegate.core.errors import ConfigError
from releasegate.targets.local.prometheus import PrometheusServer

HOST = "127.0.0.1"


@dataclass
class HeadStart:
    """The cluster's service and admin sockets, bound and listening, and its Prometheus (None: an external
    one, prometheus.url), launched and maybe not ready yet."""

    service: socket.socket
    admin: socket.socket
    prometheus: PrometheusServer | None

    async def close(self) -> None:
        """Undo it all, for a cluster that fails before it runs."""
        self.service.close()
        self.admin.close()
        if self.prometheus is not None:
            await self.prometheus.stop()


async def open_head_start(run_dir: Path, *, app: str, service_port: int, prometheus_binary: str | None,
                          scrape_interval_s: float) -> HeadStart:
    """Bind the service port (first: if it is taken, nothing else has started), then the admin port, then launch
    Prometheus scraping the admin API's routes (`prometheus_binary` None: an external Prometheus, none here)."""
    service = listen_on_loopback("service", service_port)
    try:
        admin = listen_on_loopback("admin", 0)
    except BaseException:
        service.close()
        raise
    head = HeadStart(service, admin, None)
    if prometheus_binary is None:
        return head
    try:
        admin_target = f"{HOST}:{admin.getsockname()[1]}"
        # The pods through one stable target: a new pod is in the next scrape, with no discovery wait.
        head.prometheus = PrometheusServer(
            prometheus_binary, run_dir / "prometheus", app=app, scrape_interval_s=scrape_interval_s,
            router_target=admin_target, pods_target=admin_target)
        await head.prometheus.launch()
    except BaseException:
        await head.close()
        raise
    return head


def listen_on_loopback(name: str, port: int) -> socket.socket:
    """A listening TCP socket on HOST:`port` (0: a free one); a ConfigError that names the port when it is taken."""
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say so (accepted ones inherit it),
    # and without it a server's separate head and body writes wait on Nagle's algorithm (40 ms per answer).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise cannot_listen(name, port, exc) from None
    bound = sock.getsockname()[0]
    if not ipaddress.ip_address(bound).is_loopback:  # HOST is loopback; this keeps it so
        sock.close()
        raise ConfigError(f"the {name} listener would be on {bound}, not on loopback; it must never be reachable "
                          "from another machine")
    return sock


def socket_url(sock: socket.socket) -> str:
    return f"http://{HOST}:{sock.getsockname()[1]}"


def cannot_listen(name: str, port: int, exc: OSError) -> ConfigError:
    key = "local.service_port" if name == "service" else f"the {name} listener"
    return ConfigError(f"{key}: cannot listen on {HOST}:{port} ({exc.strerror}); free that port or set "
                       "local.service_port = 0 to pick a free one")
