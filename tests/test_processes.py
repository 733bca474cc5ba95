"""core.processes.stop_child: a Popen child is stopped and its own exit status is kept."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from releasegate.core.processes import stop_child
from tests.waiting import wait_until


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_child_that_ended_by_itself_keeps_its_exit_status() -> None:
    # kubectl port-forward exiting with 1 just as it is stopped: its 1 must not become Popen's ECHILD "0".
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    wait_until(lambda: _zombie(child.pid), timeout_s=30, what="the child to exit")
    assert stop_child(child, grace_s=5) == 3
    assert child.returncode == 3


def test_a_running_child_is_terminated() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    assert stop_child(child, grace_s=5) == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
                              "time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    assert stop_child(child, grace_s=0.2) == -signal.SIGKILL
    child.stdout.close()
