"""Stopping a process: SIGTERM, a grace period to finish in-flight work, then SIGKILL. One way, everywhere.

Used for the local cluster, its pods and Prometheus, locust runs and kubectl port-forwards, so each of
them is stopped the same way and a hung one never outlives its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from releasegate.core.waiting import poll_until

KILL_WAIT_S = 5.0  # after SIGKILL the kernel frees the process; waiting longer would mean a stuck kernel task


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is dead for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def wait_pid_gone(pid: int, timeout_s: float) -> bool:
    """True once `pid` is gone (our own child is reaped on the way), False at the deadline."""
    def gone() -> bool | None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap our own child, or it stays a zombie
        return None if pid_alive(pid) else True

    return poll_until(gone, timeout_s=timeout_s, interval_s=0.02) is not None


def _signal(pid: int, sig: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_pid(pid: int, *, grace_s: float, group: bool = False) -> None:
    """SIGTERM `pid` (its whole process group with `group`, for a process started in a session of its
    own), wait up to `grace_s` for it to go, then SIGKILL."""
    _signal(pid, signal.SIGTERM, group=group)
    if not wait_pid_gone(pid, grace_s):
        _signal(pid, signal.SIGKILL, group=group)
        wait_pid_gone(pid, KILL_WAIT_S)


def stop_child(process: subprocess.Popen[Any], *, grace_s: float, group: bool = False) -> int | None:
    """stop_pid for a child started with subprocess.Popen, reaped by the Popen itself: its returncode stays
    the child's own (stop_pid's reaping would leave Popen nothing but ECHILD, which it reports as 0).
    Returns the returncode; None only if the child survived SIGKILL for KILL_WAIT_S."""
    if process.poll() is None:
        _signal(process.pid, signal.SIGTERM, group=group)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal(process.pid, signal.SIGKILL, group=group)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(KILL_WAIT_S)
    return process.returncode


async def astop_process(process: asyncio.subprocess.Process, *, grace_s: float) -> None:
    """stop_pid for a child of the running event loop: SIGTERM, `grace_s` to finish, then SIGKILL."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def can_leave_idle_scheduling() -> bool:
    """True when a thread of this process may go from SCHED_IDLE back to SCHED_OTHER.

    Work that must not compete with a measurement (a warm locust spare importing beside a running load) runs
    at SCHED_IDLE, on CPU time nothing else wants, but only where it can return to normal priority before it
    measures anything itself: that takes CAP_SYS_NICE or RLIMIT_NICE >= 20, which a container's root often
    lacks. Tried on a throwaway thread (the policy is per thread) rather than guessed from the user id.
    """
    if not hasattr(os, "SCHED_IDLE"):
        return False
    outcome: list[bool] = []

    def attempt() -> None:
        thread = threading.get_native_id()
        try:
            os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(thread, os.SCHED_OTHER, os.sched_param(0))
            outcome.append(True)
        except OSError:
            outcome.append(False)

    trial = threading.Thread(target=attempt, name="sched-idle-trial")
    trial.start()
    trial.join()
    return outcome == [True]
