"""Retiring pods: a scale to 0, a remove or a redeploy answers once the old pods take no traffic, and their
processes end in the background (kubectl's Terminating); a cluster stopped meanwhile still leaves nothing.

The pods here run a small server that ignores SIGTERM until the test lets it go (a file named after the pod),
so "the call returned while the process still runs" is a fact of the test, not a race it hopes to win.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from releasegate.targets.local.target import LocalTarget
from tests.local_cluster import alive, cluster_pids, local_config, processes_mentioning
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

# Serves every path with 200 and its pod name in X-Pod; on SIGTERM it goes on serving until the file
# <release dir>/<pod> exists, then exits 0: a pod with a long, test-controlled termination.
SLOW_STOP_POD = textwrap.dedent('''
    import http.server, os, signal, sys, threading
    from pathlib import Path
    from releasegate.core.waiting import poll_until

    port, pod, released = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]) / sys.argv[2]

    def exit_once_released() -> None:
        poll_until(lambda: released.exists() or None, timeout_s=600, interval_s=0.02)
        os._exit(0)

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=exit_once_released, daemon=True).start())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("X-Pod", pod)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
''')


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("released")


def slow_stop_config(run_dir: Path, released: Path) -> Any:
    script = run_dir / "slow_stop_pod.py"
    script.write_text(SLOW_STOP_POD)
    return local_config(run_dir, replicas=1, min_ready_s=0,
                        command=[sys.executable, str(script), "{port}", "{pod}", str(released)])


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, released: Path) -> Iterator[LocalTarget]:
    target = LocalTarget.open(slow_stop_config(tmp_path_factory.mktemp("run"), released))
    try:
        yield target
    finally:
        for pod in target.client.state()["terminating"]:
            (released / pod["name"]).touch()
        target.close()


def green_pod(target: LocalTarget, version: str) -> dict[str, Any]:
    target.deploy("green", version)
    target.wait_ready("green", 20)
    [pod] = target.client.state()["slots"]["green"]["pods"]
    return dict(pod)


def terminating(target: LocalTarget) -> dict[str, dict[str, Any]]:
    return {pod["name"]: pod for pod in target.client.state()["terminating"]}


@pytest.mark.parametrize("retire", ["scale to 0", "remove", "redeploy"])
def test_a_retired_pod_takes_no_request_once_the_call_returns_and_its_process_ends_after(
        target: LocalTarget, released: Path, retire: str) -> None:
    old = green_pod(target, "v2")
    preview = target.client.state()["previews"]["green"]
    assert httpx.get(f"{preview}/", timeout=5).headers["x-pod"] == old["name"]

    if retire == "scale to 0":
        target.client.call("POST", "/slots/green/scale", {"replicas": 0})
    elif retire == "remove":
        target.client.call("DELETE", "/slots/green")
    else:
        target.client.call("POST", "/slots/green", {"version": "v3", "replicas": 1})

    # The call has returned, and the old process still runs (it ignores SIGTERM until released) ...
    assert alive([old["pid"]]) == [old["pid"]]
    state = target.client.state()
    assert old["name"] not in [pod["name"] for pod in state["slots"]["green"]["pods"]]
    assert terminating(target)[old["name"]]["pid"] == old["pid"]
    assert terminating(target)[old["name"]]["phase"] == "Terminating"
    # ... yet it is out of the routing table: no request reaches it (503 with no pod, or the new pod).
    for _ in range(20):
        answer = httpx.get(f"{preview}/", timeout=5)
        assert answer.headers.get("x-pod") != old["name"]
        assert answer.status_code == (200 if retire == "redeploy" and answer.headers.get("x-pod") else 503)

    (released / old["name"]).touch()
    wait_until(lambda: not alive([old["pid"]]), timeout_s=30, what="the old pod's process to end")
    wait_until(lambda: old["name"] not in terminating(target), timeout_s=30, what="state.json to forget it")
    if retire == "redeploy":
        target.wait_ready("green", 20)
        assert httpx.get(f"{preview}/", timeout=5).headers["x-pod"] != old["name"]


def test_a_cluster_stopped_while_a_pod_terminates_leaves_no_process(tmp_path: Path) -> None:
    never_released = tmp_path / "never"  # the pod ignores SIGTERM for good: the cluster's SIGKILL ends it
    never_released.mkdir()
    (tmp_path / "run").mkdir()
    target = LocalTarget.open(slow_stop_config(tmp_path / "run", never_released))
    try:
        old = green_pod(target, "v2")
        target.scale_down("green")
        state = target.client.state()
        assert [pod["pid"] for pod in state["terminating"]] == [old["pid"]]
        pids = [*cluster_pids(state), old["pid"]]
        assert alive(pids) == pids
    finally:
        target.close()
    assert alive(pids) == []
    assert processes_mentioning(str(tmp_path)) == []


def test_a_terminating_pod_shows_in_the_status_output_apart_from_the_slots(
        target: LocalTarget, released: Path) -> None:
    from releasegate.targets.local.__main__ import _describe

    old = green_pod(target, "v2")
    target.scale_down("green")
    text = _describe(target.client.state())
    try:
        assert f"  terminating {old['name']}" in text and f"pid={old['pid']}" in text
        green_line = next(line for line in text.splitlines() if line.startswith("  green "))
        assert " 0/0 ready" in green_line
    finally:
        (released / old["name"]).touch()
    wait_until(lambda: not terminating(target), timeout_s=30, what="the pod to end")
