"""The demo's uvicorn server, which shuts down gracefully as soon as SIGTERM arrives and no later.

uvicorn (0.55) looks at `should_exit` on a 0.1 s tick, and its shutdown sleeps 0.1 s after asking connections
to close, then polls them every 0.1 s: an idle pod took 0.15-0.19 s to end on SIGTERM, time a release's
finalize and every stop of a pod waited for nothing. Here the signal wakes the main loop at once, and the
shutdown polls the same conditions at a finer step. What it does is uvicorn's shutdown all the same: stop
accepting, let in-flight requests (and their connections) finish within timeout_graceful_shutdown, run the
lifespan shutdown; uvicorn then re-raises the signal, so the exit status is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn

TICK_S = 0.1  # uvicorn's: its once-a-second work (the Date header) counts ticks
SHUTDOWN_POLL_S = 0.005  # how often shutdown looks whether in-flight requests are done (uvicorn: 0.1 s)

logger = logging.getLogger("uvicorn.error")


class PromptExitServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit_requested: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit_requested = asyncio.Event()
        if self.should_exit:  # a signal before the loop was known
            self._exit_requested.set()
        exit_requested = self._loop.create_task(self._exit_requested.wait())
        try:
            counter = 0
            should_exit = await self.on_tick(counter)
            while not should_exit:
                counter = (counter + 1) % 864000
                # A tick as uvicorn's, cut short by a signal: on_tick then sees should_exit at once.
                await asyncio.wait({exit_requested}, timeout=TICK_S)
                should_exit = await self.on_tick(counter)
        finally:
            exit_requested.cancel()

    def exit_now(self) -> None:
        """Ask for the shutdown from the loop's own thread (a task of the program that embeds the server): the
        main loop wakes at once instead of at its next tick."""
        self.should_exit = True
        if self._exit_requested is not None:
            self._exit_requested.set()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # A signal handler runs between two bytecodes of the main thread, the loop's own thread, possibly while
        # the loop is inside epoll_wait: call_soon_threadsafe is what wakes it (it writes the loop's self-pipe).
        if self._loop is not None and self._exit_requested is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._exit_requested.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's Server.shutdown with its fixed 0.1 s sleep and 0.1 s polls replaced by a finer poll."""
        logger.info("Shutting down")
        for server in self.servers:  # stop accepting new connections
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):  # each closes once its response is sent
            connection.shutdown()
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while (self.server_state.connections or self.server_state.tasks) and not self.force_exit:
                    await asyncio.sleep(SHUTDOWN_POLL_S)
                for server in self.servers:
                    await server.wait_closed()
        except TimeoutError:
            logger.error("Cancel %s running task(s), timeout graceful shutdown exceeded", len(self.server_state.tasks))
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()
