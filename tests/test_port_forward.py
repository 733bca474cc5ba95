"""`kubectl port-forward` in targets/kubernetes/access.py, with a fake `kubectl` first (and alone) on PATH.

The fake prints what kubectl prints: "Forwarding from 127.0.0.1:PORT -> 8080", then a line per connection
("Handling connection for 8080"), and it really forwards: it answers HTTP on PORT itself. What it does is
chosen by $FAKE_KUBECTL_MODE; it records its argv and pid in files next to it.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from releasegate.core.config import parse_config
from releasegate.core.errors import TargetError
from releasegate.core.types import LiveState, Role, TrafficSplit
from releasegate.targets.kubernetes import access
from releasegate.targets.kubernetes.access import EndpointResolver, PortForward
from releasegate.targets.kubernetes.layout import Layout
from tests.waiting import wait_until

FLOOD_LINES = 100_000  # ~2.8 MB of "Handling connection" lines: a pipe buffer holds 64 KiB

FAKE_KUBECTL = '''#!{python}
# A stand-in for `kubectl port-forward`; the mode comes from $FAKE_KUBECTL_MODE.
import http.server, json, os, pathlib, signal, sys

root = pathlib.Path({root!r})
(root / "argv.json").write_text(json.dumps(sys.argv[1:]))
(root / "pid").write_text(str(os.getpid()))
mode = os.environ["FAKE_KUBECTL_MODE"]

if mode == "error":
    sys.stderr.write('error: services "demo" not found\\n')
    sys.exit(1)

if mode == "silent":  # half a first line, then nothing: a blocking readline() would wait forever
    sys.stdout.write("Forwarding from 127.0.0.1:")
    sys.stdout.flush()
    signal.pause()

class Forwarded(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("Handling connection for 8080", flush=True)
        body = b"forwarded"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Forwarded)
port = server.server_address[1]
print(f"Forwarding from 127.0.0.1:{{port}} -> 8080", flush=True)
print(f"Forwarding from [::1]:{{port}} -> 8080", flush=True)
if mode == "flood":  # what thousands of connections print; blocks for good if nobody reads the pipe
    for _ in range({flood_lines}):
        sys.stdout.write("Handling connection for 8080\\n")
    sys.stdout.flush()
    (root / "flooded").write_text("yes")
server.serve_forever()
'''


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fake's folder; the fake alone on PATH. Any fake still running at the end is killed."""
    root = tmp_path / "kubectl"
    (root / "bin").mkdir(parents=True)
    script = root / "bin" / "kubectl"
    script.write_text(FAKE_KUBECTL.format(python=sys.executable, root=str(root), flood_lines=FLOOD_LINES))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(script.parent))
    monkeypatch.setenv("FAKE_KUBECTL_MODE", "forward")
    yield root
    if (root / "pid").exists() and pid_alive(int((root / "pid").read_text())):
        os.kill(int((root / "pid").read_text()), signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def resolver_for(tmp_path: Path, **kubernetes: Any) -> EndpointResolver:
    config = parse_config({"app": {"name": "demo"}, "kubernetes": {"access": "port-forward", **kubernetes}},
                          source="test config", base_dir=tmp_path, project_root=tmp_path)
    return EndpointResolver(config, Layout.from_config(config), service_port=lambda service: 80)


BLUE_LIVE = LiveState(app="demo", traffic=TrafficSplit.all_to("blue"), versions={"blue": "v1", "green": None})


def test_the_output_is_read_for_the_life_of_the_forward(tmp_path: Path, fake_kubectl: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KUBECTL_MODE", "flood")
    resolver = resolver_for(tmp_path, kubeconfig="/kube/config", context="kind-rg", namespace="shop")
    try:
        service = resolver.endpoints(BLUE_LIVE, None)[Role.SERVICE]
        assert service.url.startswith("http://127.0.0.1:")
        assert json.loads((fake_kubectl / "argv.json").read_text()) == [
            "port-forward", "svc/demo", ":80", "-n", "shop", "--kubeconfig", "/kube/config", "--context", "kind-rg"]
        # kubectl writes its 100,000 lines only if someone reads them: a full pipe would block it for good.
        wait_until(lambda: (fake_kubectl / "flooded").exists(), timeout_s=60,
                   what=f"the fake kubectl writing {FLOOD_LINES:,} lines into its pipe")
        with httpx.Client(timeout=10, trust_env=False) as client:
            for _ in range(3):  # and it still forwards, printing a line per connection
                assert client.get(f"{service.url}/healthz").text == "forwarded"
        assert resolver.endpoints(BLUE_LIVE, None)[Role.SERVICE].url == service.url  # one forward per service
        forward, _ = resolver._forwards["demo"]
        wait_until(lambda: forward.last_lines()[-3:] == ["Handling connection for 8080"] * 3
                   and len(forward.last_lines()) == PortForward.KEPT_LINES, timeout_s=10,
                   what="the reader keeping the last lines only")
    finally:
        resolver.close()
    pid = int((fake_kubectl / "pid").read_text())
    assert not pid_alive(pid)  # close() stopped and reaped it
    assert not forward._reader.is_alive()


def test_the_wait_for_the_first_line_ends_at_its_deadline(tmp_path: Path, fake_kubectl: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KUBECTL_MODE", "silent")
    monkeypatch.setattr(access, "PORT_FORWARD_TIMEOUT_S", 1.0)
    resolver = resolver_for(tmp_path)
    started = time.monotonic()
    with pytest.raises(TargetError) as caught:
        resolver.endpoints(BLUE_LIVE, None)
    waited = time.monotonic() - started
    assert 1.0 <= waited < 6, waited
    # The half line kubectl printed is in the message: the reader takes it once the process is stopped.
    assert str(caught.value) == ("kubectl port-forward to svc/demo did not start forwarding within 1s: "
                                 "Forwarding from 127.0.0.1:")
    assert not pid_alive(int((fake_kubectl / "pid").read_text()))


def test_kubectl_exiting_before_it_forwards_is_a_target_error_with_its_output(
        tmp_path: Path, fake_kubectl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KUBECTL_MODE", "error")
    resolver = resolver_for(tmp_path)
    started = time.monotonic()
    with pytest.raises(TargetError) as caught:
        resolver.endpoints(BLUE_LIVE, None)
    assert time.monotonic() - started < access.PORT_FORWARD_TIMEOUT_S / 2  # at once, not at the deadline
    assert str(caught.value) == ('kubectl port-forward to svc/demo exited with code 1 before forwarding: '
                                 'error: services "demo" not found')
