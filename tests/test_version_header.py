"""`release.version_header` is read everywhere a version is told apart: smoke checks and load results.

An app that names its version in another header (`X-Build` here) must pass its smoke checks and have its
load results filed under its version, not under `unknown`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from releasegate.core.checks import CheckFailed, Verdict
from releasegate.core.types import Endpoint, Role
from releasegate.verifiers.http import smoke
from releasegate.verifiers.load import LoadProfile, run_load

LOCUSTFILE = """
from locust import FastHttpUser, constant, task

class Reader(FastHttpUser):
    wait_time = constant(0.01)

    @task
    def version(self):
        self.client.get("/version", name="/version")
"""


class _BuildHeaderHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("X-Build", "v7")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def build_header_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BuildHeaderHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_smoke_reads_the_configured_header(build_header_app: str) -> None:
    endpoint = Endpoint(Role.CANDIDATE, build_header_app, "green", "v7", version_header="X-Build")
    outcomes = smoke(endpoint, [("GET", "/version", 200)])
    assert [o.verdict for o in outcomes] == [Verdict.PASS]
    assert outcomes[0].threshold == "200, X-Build v7"


def test_smoke_with_the_default_header_names_the_missing_one(build_header_app: str) -> None:
    endpoint = Endpoint(Role.CANDIDATE, build_header_app, "green", "v7")
    with pytest.raises(CheckFailed, match="answered by a response without X-App-Version, expected version v7"):
        smoke(endpoint, [("GET", "/version", 200)])


def test_without_a_version_header_smoke_checks_the_status_only(build_header_app: str) -> None:
    endpoint = Endpoint(Role.CANDIDATE, build_header_app, "green", "v7", version_header="")
    assert smoke(endpoint, [("GET", "/version", 200)])[0].threshold == "200"


def test_load_results_are_filed_under_the_version_the_configured_header_names(build_header_app: str,
                                                                             tmp_path: Path) -> None:
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    endpoint = Endpoint(Role.CANDIDATE, build_header_app, "green", "v7", version_header="X-Build")
    result = run_load(LoadProfile(locustfile, users=1, spawn_rate=1, duration_s=1, min_requests=1), endpoint)
    assert result.requests > 0
    assert result.versions == {"v7": result.requests}
