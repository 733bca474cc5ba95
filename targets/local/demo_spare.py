"""A warm demo pod: it imports the demo service at once, then waits on stdin for the pod it is to become.

`python -m releasegate.targets.local.demo_spare` is what the local cluster starts ahead of a deploy (a spare,
targets/local/spares.py). A demo pod spends 0.3 s from spawn to ready, nearly all of it importing FastAPI,
uvicorn, pydantic and prometheus_client; a spare pays that while no release waits. When a pod starts, the
cluster writes one JSON line to the spare's stdin: the pod's argv, environment, working directory and log
file. The spare then becomes exactly the process `python -m releasegate.demo <args>` would have been: same
environment, stdin /dev/null, stdout and stderr on the pod's log, the pod's command line in /proc/<pid>/cmdline,
and the demo's own main() (same exit codes, same SIGTERM handling, same readiness and profile clock, all of
which the demo reads in main(), after the hand-over, never at import).

Where it can return to normal priority (core.processes.can_leave_idle_scheduling), a spare imports at
SCHED_IDLE, on CPU time the pods and the router leave idle, and returns to SCHED_OTHER when it is handed its
pod, before it runs anything of it (the cluster already moves it back as it hands the pod over, so that a
busy machine cannot keep an idle-priority process from even reading its request).

It never outlives the cluster: an idle spare blocks on stdin and exits on EOF (its parent's death closes the
pipe), and the parent-death signal the cluster sets on every child kills it as it kills pods.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

READY = b"ready\n"
"""Written to stdout once the demo service is imported: the spare is warm."""

TITLE_ROOM_FLAG = "--title-room"
"""The spare's last argument, a filler as long as the longest pod command line it may have to show.

/proc/<pid>/cmdline is the memory of the process's original arguments: a spare can show its pod's arguments
there, NUL-separated as the cold pod's are (so `ps`, `pgrep -f` and anything splitting cmdline on NUL see a
demo pod), only within that memory. setproctitle can show more, but as one string with spaces, and it renames
the process (/proc/<pid>/comm) too; it is only the fallback for a command line longer than the room."""

ENV_ROOM_VARIABLE = "RELEASEGATE_POD"
"""Set, in a spare's environment, to a filler as long as any pod name: room for the pod's value there.

/proc/<pid>/environ is, like cmdline, the memory of the process's original environment: os.environ changes
do not show in it. A spare rewrites that memory with its pod's environment (show_environment), so what a
person or a tool reads there is the pod's, RELEASEGATE_POD included. The demo does not read the variable."""

# /proc/self/stat fields 48 to 51 (arg_start, arg_end, env_start, env_end), counted after the ")" of comm.
_STAT_ARG_START, _STAT_ENV_START = 45, 47


def show_command_line(argv: Sequence[str]) -> bool:
    """Make /proc/self/cmdline read `argv`, NUL-separated like any process's; False when it does not fit.

    Writes the original argument memory, padded with NULs: the kernel then shows it byte for byte, up to the
    end of that memory (trailing NULs included). CPython copied its arguments at start and never reads these
    bytes again.
    """
    return _rewrite(_STAT_ARG_START, [arg.encode() for arg in argv])


def show_environment(env: Mapping[str, str]) -> bool:
    """Make /proc/self/environ read `env`; False when it does not fit (it then shows the spare's own).

    The original environment memory is free to rewrite: os.environ and C's environ hold copies (putenv'd
    strings) from the moment os.environ is changed, which _become does first.
    """
    return _rewrite(_STAT_ENV_START, [f"{key}={value}".encode() for key, value in env.items()])


def _rewrite(start_field: int, items: Sequence[bytes]) -> bool:
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        start, end = int(fields[start_field]), int(fields[start_field + 1])
    except (OSError, IndexError, ValueError):
        return False
    text = b"".join(item + b"\0" for item in items)
    if start <= 0 or len(text) > end - start:
        return False
    ctypes.memmove(start, text.ljust(end - start, b"\0"), end - start)
    return True


def _become(request: dict[str, Any]) -> list[str]:
    """Take on the pod's environment, files and command line, as a fresh `python -m releasegate.demo` has them.

    Returns the argv for the demo's main().
    """
    argv = [str(arg) for arg in request["argv"]]
    env = {str(k): str(v) for k, v in request["env"].items()}
    shown = show_command_line(argv)
    if not shown:  # setproctitle needs the environment memory as it was: before os.environ changes it
        import setproctitle

        setproctitle.setproctitle(" ".join(argv))
    os.environ.clear()
    os.environ.update(env)
    if shown:  # (setproctitle took the environment memory for its title otherwise)
        show_environment(env)
    os.chdir(request["cwd"])
    sys.path[0] = request["cwd"]  # what `python -m` puts first: the working directory
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)  # closes the pipe the spare said READY on: the cluster sees EOF there
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)  # a cold pod's stdin; the pipe from the cluster is done with
    os.dup2(null, 0)
    os.close(null)
    from releasegate.demo import __main__ as demo_main

    sys.argv = [demo_main.__file__ or "releasegate.demo", *argv[argv.index("releasegate.demo") + 1:]]
    return sys.argv[1:]


def main() -> int:
    # Before anything else, while the filler still fills it: the idle spare shows its own short command line.
    show_command_line([sys.executable, "-m", __spec__.name if __spec__ else __name__])
    from releasegate.core.processes import can_leave_idle_scheduling

    at_idle_priority = can_leave_idle_scheduling()
    if at_idle_priority:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    # The cost a spare is for: what `python -m releasegate.demo` imports before it serves (demo/__main__.py
    # imports the app and uvicorn in main()), and what uvicorn imports when it loads its config.
    import uvicorn.lifespan.on
    import uvicorn.loops.auto
    import uvicorn.protocols.http.auto
    import uvicorn.protocols.websockets.auto  # noqa: F401

    import releasegate.demo.__main__
    import releasegate.demo.app
    import releasegate.demo.serving  # noqa: F401

    try:
        os.write(1, READY)
    except OSError:
        return 0  # the cluster is gone or let the spare go
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return 0  # EOF: the cluster is gone or let the spare go; nothing to run
    if at_idle_priority:  # before it runs anything of its pod: a pod never serves at idle priority
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    args = _become(json.loads(line))
    from releasegate.demo.__main__ import main as demo_main

    return demo_main(args)


if __name__ == "__main__":
    sys.exit(main())
