"""A warm locust process: it imports locust at once, then waits on stdin for the run it is to become.

`python -m releasegate.verifiers.locust_spare` is what verifiers.load starts ahead of a load test (a spare).
Importing locust (gevent's monkey-patching, requests, zmq) and what the collector needs (the load module)
costs 0.3 s of CPU on an idle machine, more on a busy one; a spare pays it while nothing is measured, beside
provisioning or between two loads. When a load starts, verifiers.load writes one JSON line to the spare's
stdin: locust's arguments, the environment, the working directory, the stderr file and the title. The spare
then becomes exactly the process `python -m locust <arguments>` would have been (same pid, its own session,
same exit code).

Where it can return to normal priority (core.processes.can_leave_idle_scheduling), a spare imports at
SCHED_IDLE: it may then be started while a load runs, on CPU time that the load, the pods and the router
leave idle, and it takes normal priority back when its run request arrives, before it loads anything. Such a
spare is handed a run only once it has imported (verifiers.load.LocustSpares), so no run waits on idle CPU.

It never outlives the process that started it: an idle spare blocks on stdin, and its parent's death (even
by SIGKILL) closes the pipe, so the read ends and the spare exits. Once it runs, the same pipe is the run's
lifeline, watched by the collector (verifiers.load.LIFELINE_ENV).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

READY = b"ready\n"
"""Written to stdout once locust is imported: the spare is warm."""


def _become(request: dict[str, Any]) -> None:
    """Take on the run's environment, files and title, exactly as a fresh `python -m locust` would have."""
    import setproctitle

    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in request["env"].items()})
    os.chdir(request["cwd"])
    sys.path[0] = request["cwd"]  # what `python -m` puts first: the working directory
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(stderr, 2)
    os.close(stderr)
    # As the cold start: stdout discarded, and stdin stays the pipe from the parent, now the run's lifeline
    # (verifiers.load.LIFELINE_ENV): the parent holds it open until the run ends, or dies.
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    # `ps` and /proc/<pid>/cmdline show the locust command line, as they would for `python -m locust`.
    setproctitle.setproctitle(str(request["title"]))
    sys.argv = ["locust", *[str(arg) for arg in request["argv"]]]


def main() -> None:
    import setproctitle

    # Now, while the process's environment is the one it started with: setproctitle finds the memory of the
    # command line through it, and could not once _become replaced the environment.
    setproctitle.setproctitle(f"{sys.executable} -m {__spec__.name if __spec__ else __name__} (idle spare)")
    from releasegate.core.processes import can_leave_idle_scheduling

    at_idle_priority = can_leave_idle_scheduling()
    if at_idle_priority:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    import locust.main  # the cost a spare is for: gevent patches this process here

    # What the collector imports when locust loads it (the load module and its thresholds).
    import releasegate.verifiers.load  # noqa: F401

    with contextlib.suppress(OSError):  # a parent that already handed over the run may have closed stdout
        os.write(1, READY)
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return  # the parent is gone (EOF) or let the spare go: nothing to run
    if at_idle_priority:  # before it loads anything: a run never measures at idle priority
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    _become(json.loads(line))
    locust.main.main()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
