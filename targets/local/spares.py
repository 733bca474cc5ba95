"""Warm spare pods for the demo command: processes that imported the demo service before a deploy needs it.

The local cluster keeps `local.replicas` spares (targets/local/demo_spare.py), so the next deploy's pods skip
the 0.3 s import. `take` gives a spare only once it said it finished importing, and only one started with
the environment the pod gets (what acts at interpreter start, or at the demo's import, must be the pod's);
otherwise the pod starts cold, at once: a spare never delays a pod. The same idea as verifiers.load's
LocustSpares, for asyncio children of the cluster rather than Popen children of a test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from releasegate.targets.local.demo_spare import ENV_ROOM_VARIABLE, READY, TITLE_ROOM_FLAG
from releasegate.targets.local.procs import die_with_parent

SPARE_MODULE = "releasegate.targets.local.demo_spare"
TITLE_ROOM = 1024
"""Bytes of room for the pod's command line (demo_spare.TITLE_ROOM_FLAG): ample for the demo's arguments."""
ENV_ROOM = 256
"""Characters of room for the pod's name in the spare's environment memory (demo_spare.ENV_ROOM_VARIABLE)."""
POD_ONLY_VARIABLES = frozenset({ENV_ROOM_VARIABLE})
"""Environment variables whose value is the pod's own: a spare has a filler there, which the demo never reads."""


@dataclass(eq=False)
class Spare:
    process: asyncio.subprocess.Process
    env: dict[str, str]
    started_at: float = field(default_factory=time.time)
    ready: bool = False  # it said READY: the demo service is imported
    watcher: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.process.pid, "ready": self.ready, "started_at": self.started_at}


class DemoSpares:
    """The cluster's idle spares. `replenish` starts them up to `size`; `take` hands one out (or None)."""

    def __init__(self, size: int, env: Mapping[str, str], log_path: Path,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.size = size
        self.on_change = on_change  # a spare got ready or went away: the cluster's state.json lists them
        self.env = {k: v for k, v in env.items() if k not in POD_ONLY_VARIABLES}  # the pods' but their own
        self.log_path = log_path
        self.idle: list[Spare] = []
        self._closed = False
        self._starting = asyncio.Lock()  # two deploys' replenish calls: `size` spares, not twice as many

    async def replenish(self) -> None:
        """Start spares until `size` idle ones live; each imports in the background and says when it is done."""
        async with self._starting:
            await self._start_missing()

    async def _start_missing(self) -> None:
        self.idle = [spare for spare in self.idle if spare.alive]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        while len(self.idle) < self.size and not self._closed:
            with self.log_path.open("ab") as log:  # what a spare says before it has a pod: only errors
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", SPARE_MODULE, TITLE_ROOM_FLAG, "x" * TITLE_ROOM,
                    env={**self.env, ENV_ROOM_VARIABLE: "x" * ENV_ROOM},
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                    preexec_fn=die_with_parent())
            spare = Spare(process, self.env)
            spare.watcher = asyncio.get_running_loop().create_task(self._watch(spare), name=f"spare {process.pid}")
            self.idle.append(spare)

    async def _watch(self, spare: Spare) -> None:
        """Mark the spare ready when it says so, then read on until EOF: its hand-over, or its death."""
        assert spare.process.stdout is not None
        with contextlib.suppress(OSError):
            if (await spare.process.stdout.readline()).startswith(READY.strip()):
                spare.ready = True
                self.on_change()
            await spare.process.stdout.read()  # EOF: its stdout is the pod's log now, or it died
        if spare in self.idle:  # EOF while nobody took it: it died (or never imported); reap it
            self.idle.remove(spare)
            await _discard(spare)
            self.on_change()

    def take(self, pod_env: Mapping[str, str]) -> Spare | None:
        """A ready spare started with `pod_env` (but for POD_ONLY_VARIABLES), out of the pool; None when none is.

        Never waits: a spare that is still importing stays for a later pod, and this one starts cold.
        """
        wanted = {k: v for k, v in pod_env.items() if k not in POD_ONLY_VARIABLES}
        for spare in list(self.idle):
            if spare.ready and spare.alive and spare.env == wanted:
                self.idle.remove(spare)
                return spare
        return None

    async def hand_over(self, spare: Spare, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> bool:
        """Give `spare` its pod; False if it died meanwhile (the pod then starts cold, and the spare is reaped)."""
        stdin = spare.process.stdin
        assert stdin is not None
        # Back to normal priority before it even reads its request: on a busy machine an idle-priority process
        # may wait long for a CPU. The spare does the same itself; here it is only sooner (no-op if not idle).
        with contextlib.suppress(OSError):
            os.sched_setscheduler(spare.process.pid, os.SCHED_OTHER, os.sched_param(0))
        request = {"argv": list(argv), "env": dict(env), "cwd": os.getcwd(), "log": str(log_path)}
        try:
            if not spare.alive:
                raise BrokenPipeError
            stdin.write(json.dumps(request).encode() + b"\n")
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            await _discard(spare)
            return False
        except BaseException:  # cancelled as it takes the pod (the pod was stopped): it may run it, for no one
            with contextlib.suppress(ProcessLookupError):
                spare.process.kill()
            raise
        stdin.close()  # one request per spare; asyncio's wait() also needs every pipe closed to see the end
        return True

    async def close(self) -> None:
        """Kill the idle spares (they serve nothing, so no grace period) and reap them."""
        self._closed = True
        idle, self.idle = self.idle, []
        await asyncio.gather(*(_discard(spare) for spare in idle))
        await asyncio.gather(*(spare.watcher for spare in idle if spare.watcher is not None), return_exceptions=True)

    def to_list(self) -> list[dict[str, Any]]:
        return [spare.to_dict() for spare in self.idle if spare.alive]


async def _discard(spare: Spare) -> None:
    """SIGKILL an idle spare and reap it (asyncio's wait() returns only once its pipes are closed too)."""
    if spare.process.stdin is not None:
        spare.process.stdin.close()
    with contextlib.suppress(ProcessLookupError):
        spare.process.kill()
    await spare.process.wait()
