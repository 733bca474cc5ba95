"""Locust failing mid-load: killed (SIGKILL) or hung (SIGSTOP). Either is a LoadError in one clear line, fast.

The locustfile signals its own process after a few requests: locust really dies or really stops while it
is generating load, at a moment that does not depend on the machine's speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from releasegate.verifiers.load import LoadError, LoadProfile, run_load
from tests.test_verifiers_load import processes_mentioning

SIGNALS_ITSELF = """
import json
import os
import signal

from locust import FastHttpUser, constant, task

SENT = []

class Shopper(FastHttpUser):
    wait_time = constant(0.01)

    @task
    def items(self):
        self.client.get("/api/items", name="/api/items")
        # After the collector published live counts at least once (it does every second).
        live = json.loads(os.environ["RELEASEGATE_LOAD_SETTINGS"])["live_path"]
        if not SENT and os.path.exists(live):
            SENT.append(True)
            os.kill(os.getpid(), signal.{signal})
"""


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.send_header("X-App-Version", "v2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def signalling_profile(tmp_path: Path, signal_name: str) -> LoadProfile:
    path = tmp_path / f"locustfile_{signal_name.lower()}.py"
    path.write_text(SIGNALS_ITSELF.replace("{signal}", signal_name), encoding="utf-8")
    return LoadProfile(path, users=2, spawn_rate=2, duration_s=60, min_requests=1)


def test_locust_killed_mid_load_is_a_load_error_naming_the_signal(service: str, tmp_path: Path) -> None:
    profile = signalling_profile(tmp_path, "SIGKILL")
    started = time.monotonic()
    with pytest.raises(LoadError) as error:
        run_load(profile, service)
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith("locust was killed by SIGKILL mid-run (locust ")
    assert "nothing was measured, so the release does not go ahead; rerun it" in first_line
    assert time.monotonic() - started < 20  # not the 60 s window, nor its 30 s grace
    assert not processes_mentioning(str(profile.locustfile))


def test_locust_hung_mid_load_is_killed_after_its_live_counts_stall(service: str, tmp_path: Path) -> None:
    profile = signalling_profile(tmp_path, "SIGSTOP")
    started = time.monotonic()
    with pytest.raises(LoadError) as error:
        run_load(profile, service, stall_s=2)
    elapsed = time.monotonic() - started
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith("locust hung: no new live counts for ")
    assert "(process stopped (T); locust " in first_line
    assert "its process group was killed and nothing was measured, so the release does not go ahead" in first_line
    # Stalled for 2 s after its last publication, then killed: well before the 60 s window and its 30 s grace.
    assert elapsed < 20, elapsed
    assert not processes_mentioning(str(profile.locustfile))
