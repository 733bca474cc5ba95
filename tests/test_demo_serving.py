"""demo/serving.py: the demo's uvicorn server still shuts down gracefully, only without uvicorn's 0.1 s ticks."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from typing import Any

import httpx
import uvicorn

from releasegate.demo.serving import PromptExitServer
from tests.waiting import wait_until


class HeldRequests:
    """An ASGI app whose requests answer only once the test lets them (`release`)."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.arrived.set()
        while not self.release.is_set():  # held in flight, without blocking the server's loop
            await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"done"})


def test_a_request_in_flight_at_sigterm_is_answered_before_the_server_ends() -> None:
    app = HeldRequests()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = PromptExitServer(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    loop = asyncio.new_event_loop()
    serving = threading.Thread(target=lambda: loop.run_until_complete(server.serve(sockets=[sock])))
    serving.start()
    answers: list[httpx.Response] = []
    try:
        wait_until(lambda: server.started, timeout_s=30, what="the server to start")
        request = threading.Thread(target=lambda: answers.append(httpx.get(f"http://127.0.0.1:{port}/", timeout=30)))
        request.start()
        wait_until(app.arrived.is_set, timeout_s=30, what="the request to reach the app")

        loop.call_soon_threadsafe(server.handle_exit, signal.SIGTERM, None)  # what the signal handler does
        wait_until(lambda: not server.servers or all(not s.is_serving() for s in server.servers), timeout_s=30,
                   what="the server to stop accepting")
        assert serving.is_alive() and not answers  # shutting down, the request still in flight
        app.release.set()
        request.join(timeout=30)
        serving.join(timeout=30)
        assert not serving.is_alive()
        assert [(a.status_code, a.text) for a in answers] == [(200, "done")]
    finally:
        app.release.set()
        if serving.is_alive():
            loop.call_soon_threadsafe(setattr, server, "force_exit", True)
            serving.join(timeout=30)
        loop.close()


def test_a_signal_before_the_main_loop_runs_is_not_lost() -> None:
    server = PromptExitServer(uvicorn.Config(HeldRequests(), lifespan="off", log_level="warning"))
    server.handle_exit(signal.SIGTERM, None)  # as if SIGTERM came during startup
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    loop = asyncio.new_event_loop()
    # Off the main thread, as uvicorn then installs no handlers and re-raises no signal (pytest would get it).
    serving = threading.Thread(target=lambda: loop.run_until_complete(asyncio.wait_for(server.serve([sock]), 30)))
    try:
        serving.start()
        serving.join(timeout=60)
        assert not serving.is_alive() and server.should_exit
    finally:
        if not serving.is_alive():
            loop.close()


def test_exit_now_from_the_servers_own_loop_ends_it_without_waiting_for_a_tick(monkeypatch: Any) -> None:
    """The local cluster's admin API stops with the cluster (exit_now, called from the loop's own thread): its
    main loop wakes at once. With a tick of an hour, only that wake-up can end it within the test's deadline."""
    monkeypatch.setattr("releasegate.demo.serving.TICK_S", 3600.0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = PromptExitServer(uvicorn.Config(HeldRequests(), lifespan="off", log_level="warning", access_log=False))

    async def scenario() -> None:
        serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        server.exit_now()
        await asyncio.wait_for(serving, timeout=30)

    asyncio.run(scenario())
    assert server.should_exit
