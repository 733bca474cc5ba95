"""Talking to a local cluster from other processes: find it, start it, read its state, send changes."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError, NotReadyError, TargetError
from releasegate.core.processes import pid_alive, stop_pid
from releasegate.core.waiting import poll_until
from releasegate.targets.local.demo_profiles import check_demo_profiles
from releasegate.targets.local.pods import why_not_ready
from releasegate.targets.local.procs import die_with_parent, port_in_use, tail_lines
from releasegate.targets.local.prometheus import find_prometheus
from releasegate.targets.local.run_files import ADMIN_TOKEN_FILE, CONFIG_FILE, STATE_FILE

STARTUP_TIMEOUT_S = 60.0
POLL_S = 0.05


def run_dir_of(config: Config) -> Path:
    return config.resolve_state_dir(config.local.run_dir)


class LocalClusterClient:
    """A handle on a running local cluster, found through the state file in its run directory."""

    def __init__(self, run_dir: Path, *, timeout_s: float = 30.0) -> None:
        self.run_dir = run_dir
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=5.0), trust_env=False)

    @classmethod
    def find_running(cls, run_dir: Path) -> LocalClusterClient | None:
        """The cluster running in `run_dir`, or None (a state file left by a dead process is removed)."""
        state = read_state_file(run_dir)
        if state is None:
            return None
        if not pid_alive(int(state["pid"])):
            with contextlib.suppress(FileNotFoundError):
                (run_dir / STATE_FILE).unlink()
            return None
        return cls(run_dir) if state.get("status") == "running" else None

    def state(self) -> dict[str, Any]:
        state = read_state_file(self.run_dir)
        if state is None:
            raise TargetError(f"the local cluster in {self.run_dir} is not running (no {STATE_FILE})")
        return state

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One admin API call; a refusal (409) or an error becomes a TargetError with its reason."""
        url = self.state()["admin_url"] + path
        headers = {"Authorization": f"Bearer {self.admin_token()}"}
        try:
            response = self._http.request(method, url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TargetError(f"local cluster admin API {method} {path} failed: {exc!r}") from exc
        payload: dict[str, Any] = response.json()
        if response.status_code >= 400:
            raise TargetError(f"local cluster refused {method} {path}: {payload.get('error', payload)}")
        return payload

    def admin_token(self) -> str:
        """The token the cluster wrote at start; read for every call, so a restarted cluster's new one is used."""
        try:
            return (self.run_dir / ADMIN_TOKEN_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise TargetError(f"the local cluster in {self.run_dir} has no {ADMIN_TOKEN_FILE} file, so the cluster "
                              "is not running or was started by an older releasegate; restart it (down, then up)"
                              ) from None

    def wait_slot_ready(self, slot: str, timeout_s: float, *, min_ready_s: float = 1.0) -> dict[str, Any]:
        """Poll until every pod of `slot` has been ready for `min_ready_s`; else NotReadyError saying why.

        `min_ready_s` plays minReadySeconds: a pod that answers its probe and then crashes is not available.
        """
        started = time.monotonic()
        last: dict[str, Any] = {}

        def not_ready(crash_looping: list[dict[str, Any]]) -> NotReadyError:
            pods, now = last["pods"], time.time()
            reasons = "; ".join(filter(None, (why_not_ready(pod) for pod in crash_looping or pods)))
            ready = sum(pod["ready"] for pod in pods)
            if not pods:
                detail = f"{ready}/{len(pods)} pods ready; no pod was created"
            elif reasons:
                detail = f"{ready}/{len(pods)} pods ready; {reasons}"
            elif crash_looping:  # up again for now, but it keeps dying
                detail = f"{ready}/{len(pods)} pods ready, but " + ", ".join(
                    f"pod {pod['name']} restarted {pod['restarts']} times" for pod in crash_looping)
            else:  # every pod is ready, the deadline fell inside min_ready_s
                ready_for = now - max(pod["ready_since"] for pod in pods)
                detail = (f"{ready}/{len(pods)} pods ready but not yet for min_ready_s={min_ready_s:g}s "
                          f"(ready for {ready_for:.1f}s)")
            waited = min(timeout_s, time.monotonic() - started)
            return NotReadyError(f"slot {slot} ({last['version']}) not ready after {waited:.1f}s: {detail}")

        def available() -> dict[str, Any] | None:
            slot_state = self.state()["slots"][slot]
            last.update(slot_state)
            pods, now = slot_state["pods"], time.time()
            if pods and all(pod["ready"] and now - pod["ready_since"] >= min_ready_s for pod in pods):
                return dict(slot_state)
            crash_looping = [pod for pod in pods if pod["restarts"] >= CRASHLOOP_RESTARTS]
            if crash_looping:  # it will not get better by waiting out the deadline
                raise not_ready(crash_looping)
            return None

        ready = poll_until(available, timeout_s=timeout_s, interval_s=POLL_S)
        if ready is None:
            raise not_ready([])
        return ready

    def close(self) -> None:
        self._http.close()


# A pod that crashed this many times will not get better by waiting out the whole deadline.
CRASHLOOP_RESTARTS = 3


def read_state_file(run_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def check_startable(config: Config) -> None:
    """Everything that can be checked before a process starts; raises ConfigError."""
    if not config.prometheus.url:
        find_prometheus(config.local.prometheus_binary)
    if not config.local.command:
        check_demo_profiles(config)
    port = config.local.service_port
    if port and port_in_use(port):
        raise ConfigError(f"local.service_port: port {port} on 127.0.0.1 is already in use; stop what "
                          "listens there or set local.service_port = 0 to pick a free port")


def start_cluster(config: Config, *, persistent: bool) -> tuple[LocalClusterClient, subprocess.Popen[bytes]]:
    """Start a cluster process in the config's run directory and wait until its first version is ready.

    An ephemeral cluster (persistent=False) gets SIGTERM from the kernel if this process dies, so a
    crashed or killed test run leaves nothing behind. A persistent one (`up`) lives in its own session.
    """
    check_startable(config)
    run_dir = run_dir_of(config)
    if LocalClusterClient.find_running(run_dir) is not None:
        raise ConfigError(f"a local cluster already runs in {run_dir}; use it, or stop it with "
                          "`python -m releasegate.targets.local down`")
    write_cluster_config(config, run_dir)
    log_path = run_dir / "cluster.log"
    argv = [sys.executable, "-m", "releasegate.targets.local.daemon", "--run-dir", str(run_dir)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*argv, "--persistent"] if persistent else argv,
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(run_dir),
            # A session of its own either way: a CI runner's SIGTERM to the release's process group must reach
            # the release (which rolls back through this cluster), not kill the cluster under it. An ephemeral
            # cluster still dies with its parent (die_with_parent) once the release has cleaned up.
            start_new_session=True, preexec_fn=None if persistent else die_with_parent(),
        )
    client = LocalClusterClient(run_dir)
    try:
        _wait_started(process, run_dir, log_path)
        if config.local.initial_version:  # an empty cluster has nothing to wait for
            client.wait_slot_ready("blue", config.local.ready_timeout_s, min_ready_s=config.local.min_ready_s)
    except BaseException:
        stop_process(process.pid)
        client.close()
        raise
    return client, process


def write_cluster_config(config: Config, run_dir: Path) -> None:
    """The validated config, for the cluster process (targets/local/daemon.py) to read."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(json.dumps({
        "config": config.model_dump(mode="json"), "base_dir": str(config.base_dir),
        "project_root": str(config.project_root)}), encoding="utf-8")


def _wait_started(process: subprocess.Popen[bytes], run_dir: Path, log_path: Path) -> None:
    def running() -> bool | None:
        code = process.poll()
        if code is not None:
            lines = [line for line in tail_lines(log_path, 20) if line.startswith("releasegate: ")]
            message = lines[-1].removeprefix("releasegate: ") if lines else " | ".join(tail_lines(log_path, 3))
            raise (ConfigError if code == 4 else TargetError)(message)
        state = read_state_file(run_dir)
        return True if state is not None and state.get("pid") == process.pid and \
            state.get("status") == "running" else None

    if poll_until(running, timeout_s=STARTUP_TIMEOUT_S, interval_s=POLL_S) is not None:
        return
    raise TargetError(f"the local cluster did not start within {STARTUP_TIMEOUT_S:.0f}s; see {log_path}")


def stop_process(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM the cluster process (it stops its pods and Prometheus), SIGKILL if it hangs."""
    stop_pid(pid, grace_s=timeout_s)


def stop_cluster(run_dir: Path, timeout_s: float = 15.0) -> bool:
    """Stop the cluster running in `run_dir`; False when none runs."""
    state = read_state_file(run_dir)
    if state is None or not pid_alive(int(state["pid"])):
        return False
    stop_process(int(state["pid"]), timeout_s)
    return True
