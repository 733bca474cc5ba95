"""Loaded INSIDE the locust subprocess that verifiers.load.run_load starts; never import it anywhere else.

Importing locust monkey-patches the process with gevent, which is why only the subprocess does it. This
file is passed to locust as a locustfile beside the user's one; it defines no User class, only listeners:
- every request is counted per (endpoint name, serving version from the version header);
- every second the counts so far (histograms, no raw samples) are written to the live file, where the
  calling process judges its checks sequentially, with one publication exactly at the minimum window;
- a stop file the calling process writes is looked for every 20 ms: it stops the run as soon as its checks
  decided;
- the run stops by itself `max_duration_s` after it started, whatever the caller does;
- on quitting, everything is written as JSON to the path in RELEASEGATE_LOAD_OUTPUT;
- when the process that started the run dies (even by SIGKILL: a CI runner killed mid-load), the pipe it held
  on locust's stdin closes, and the run ends its process group at once instead of loading the service
  for nobody until its maximum duration (RELEASEGATE_LOAD_LIFELINE_FD).

Distributed (`--processes N`, or `--master` with workers on other machines), the requests happen in the
workers, so the collector plays a part by where it runs:
- a worker counts its own requests and sends them to the master every second (cumulative histograms), and
  once more with its raw samples when it stops, before it tells the master it stopped;
- the master publishes and writes the merge of its workers' latest counts (the live file every second, the
  final JSON from their final counts), so the calling process sees one run whatever the spread. It waits
  `workers_timeout_s` for all its workers to connect, and a run that loses a worker is stopped as aborted:
  its counts would miss that worker's last requests.
Workers take their settings (the version header, the reservoir size) from the master, so a worker on
another machine needs no environment of its own: `locust --worker -f <this file>,<locustfile> ...`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.select
from locust import events
from locust.env import Environment
from locust.rpc import Message
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner, Runner, WorkerRunner

from releasegate.core.files import write_atomically
from releasegate.verifiers.load import (
    LIFELINE_ENV,
    LOOK_INTERVAL_S,
    OUTPUT_ENV,
    SETTINGS_ENV,
    UNKNOWN_VERSION,
    publication_times,
)
from releasegate.verifiers.stats import RESERVOIR_SIZE, LatencyRecorder, Stats

COUNTS_MESSAGE = "releasegate_counts"
"""Worker to master, every second: the worker's counts so far (histograms only)."""

FINAL_MESSAGE = "releasegate_final"
"""Worker to master, once, when its users stopped: its whole counts with raw samples."""

WORKER_SETTINGS_OPTION = "releasegate_worker_settings"
"""An attribute of the master's parsed options; locust forwards such custom options to every worker."""

WORKER_LOST_S = 10.0
"""A worker missing (no heartbeat) this long is lost, and the run stops as aborted. Not at once: on a busy
machine a worker may miss a few heartbeats and come back (locust's own liveness is 3 s)."""

STOP_POLL_S = 0.02
"""How often the run looks for the calling process's stop request (a stat call)."""

FINAL_WAIT_S = 5.0
"""How long the stopping master waits for its workers to stop and send their final counts: well within the
calling process's patience for live counts (verifiers.load.LIVE_STALL_S), which stop meanwhile."""


class Collector:
    def __init__(self, output: Path | None, settings: dict[str, Any]) -> None:
        self.output = output  # None: a worker started by hand, which writes nothing
        self.max_duration_s = float(settings.get("max_duration_s", 0.0))
        # The run's minimum window: one publication falls exactly on it, where a healthy run usually decides.
        self.min_duration_s = float(settings.get("min_duration_s", 0.0))
        self.live_path = Path(settings["live_path"]) if "live_path" in settings else None
        self.stop_path = Path(settings["stop_path"]) if "stop_path" in settings else None
        self.version_header = str(settings.get("version_header", ""))
        self.reservoir_size = int(settings.get("reservoir_size", RESERVOIR_SIZE))
        self.settings = settings
        self.role = "local"  # or "master", "worker": known once locust made its runner (on_init)
        self.rng = random.Random(0)  # reproducible reservoirs for the same sequence of requests
        self.cells: dict[tuple[str, str], LatencyRecorder] = {}
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.stopping = False
        self.abort_reason: str | None = None
        self.stop_note: str | None = None
        self.error: str | None = None  # the run did not happen (workers that never connected)
        # The master's view of its workers: the latest counts each sent, and the final ones.
        self.worker_counts: dict[str, list[dict[str, Any]]] = {}
        self.worker_finals: dict[str, list[dict[str, Any]]] = {}
        self.missing_since: dict[str, float] = {}  # worker -> when locust first marked it missing (monotonic)

    # -- every role -----------------------------------------------------------------------------------
    def on_init(self, environment: Environment, runner: Runner | None = None, **_: Any) -> None:
        lifeline = os.environ.get(LIFELINE_ENV, "")
        if lifeline.isdigit():
            gevent.spawn(_end_when_the_starter_dies, int(lifeline))
        if isinstance(runner, WorkerRunner):
            self.role = "worker"
        elif isinstance(runner, MasterRunner):
            self.role = "master"
            runner.register_message(COUNTS_MESSAGE, self._on_worker_counts)
            runner.register_message(FINAL_MESSAGE, self._on_worker_final)
            if environment.parsed_options is not None:
                vars(environment.parsed_options)[WORKER_SETTINGS_OPTION] = json.dumps(
                    {"version_header": self.version_header, "reservoir_size": self.reservoir_size})
            gevent.spawn(self._await_workers, environment)
        if self.role != "worker" and self.output is None:
            raise RuntimeError(f"{__file__} runs as a locust master or alone only under verifiers.load.run_load, "
                               f"which sets {OUTPUT_ENV} and {SETTINGS_ENV}")

    def on_request(self, request_type: str, name: str, response_time: float, response_length: int,
                   response: Any = None, exception: BaseException | None = None, **_: Any) -> None:
        status = int(getattr(response, "status_code", 0) or 0)
        cell = (name, _serving_version(response, self.version_header))
        recorder = self.cells.get(cell)
        if recorder is None:
            recorder = self.cells[cell] = LatencyRecorder(reservoir_size=self.reservoir_size, rng=self.rng)
        recorder.add(response_time / 1000.0, failed=exception is not None or status >= 500)

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        if self.started_at is not None:
            return
        self.started_at = time.time()
        if self.role == "worker":
            self._take_master_settings(environment)
            gevent.spawn(self._report_counts, environment)
            return
        gevent.spawn_later(self.max_duration_s, self._stop, environment)
        gevent.spawn(self._publish_live, environment)
        gevent.spawn(self._watch_stop_request, environment)

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        if self.started_at is None or (self.stopped_at is not None and self.role != "master"):
            return
        self.stopped_at = self.stopped_at or time.time()
        if self.role == "worker":
            # Before locust tells the master this worker stopped: the master has these when it sees that.
            _send(environment, FINAL_MESSAGE, {"cells": self._cells_json(keep_samples=True)})
        elif self.role == "master" and not self.stopping:  # locust stopped it: its last worker went missing
            gevent.spawn(self._stop, environment, "every locust worker went missing mid-run; what they "
                                                  "measured is incomplete")

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        if self.role != "worker":
            self._write_output(environment)

    # -- alone or master ------------------------------------------------------------------------------
    def _write_output(self, environment: Environment) -> None:
        runner = environment.runner
        exceptions = list(runner.exceptions.values()) if runner is not None else []
        now = time.time()
        data: dict[str, Any] = {
            "started_at": self.started_at or now,
            "stopped_at": self.stopped_at or now,
            "abort_reason": self.abort_reason,
            "stop_note": self.stop_note,
            "error": self.error,
            "task_errors": [f"{row['count']}x {row['msg']}" for row in exceptions],
        }
        if self.role == "master":
            silent = sorted(set(self.worker_counts) - set(self.worker_finals))
            if silent and not self.abort_reason and not self.error:
                data["abort_reason"] = (f"locust worker(s) {', '.join(silent)} sent no final counts (gone "
                                        "mid-run), so the merged counts miss their last requests")
            finals = {worker: self.worker_finals.get(worker, cells) for worker, cells in self.worker_counts.items()}
            data["cells"] = _merge(finals, keep_samples=True)
            data["worker_requests"] = {worker: sum(int(c["count"]) for c in cells) for worker, cells in finals.items()}
        else:
            data["cells"] = self._cells_json(keep_samples=True)
        assert self.output is not None
        write_atomically(self.output, json.dumps(data))  # the parent never reads half a file

    def _stop(self, environment: Environment, reason: str | None = None) -> None:
        runner = environment.runner
        # Once stopped, alone: locust quits by itself. A master whose workers all went missing still must.
        if self.stopping or runner is None or (self.stopped_at is not None and self.role != "master"):
            return
        self.stopping = True
        if reason is not None and self.abort_reason is None:
            self.abort_reason = reason
        if isinstance(runner, MasterRunner):
            # The run's window ends now, when the workers are told to stop, not when locust has waited (a
            # second or more) for all of them to say they did: that wait would count as time without requests.
            self.stopped_at = self.stopped_at or time.time()
            # Stop the workers' users first and wait for their final counts; quitting at once would race them.
            # Not locust's runner.stop(): it polls the workers' user counts once a second (a second lost per
            # run) and waits up to a minute; a worker that died must not hold the run (its missing final
            # counts make the run an abort).
            started = {worker.id for worker in runner.clients.all if worker.state in (STATE_SPAWNING, STATE_RUNNING)}
            expected = started | set(self.worker_counts)
            # The master stops dispatching first: a worker that stopped would otherwise have its users handed
            # to the others again (locust rebalances while the test runs), after their final counts.
            runner.stop(send_stop_to_client=False)
            for worker in expected:
                runner.send_message("stop", client_id=worker)
            deadline = time.monotonic() + FINAL_WAIT_S
            while expected - set(self.worker_finals) and time.monotonic() < deadline:
                gevent.sleep(0.02)
            self.worker_counts.update({w: [] for w in expected - set(self.worker_counts)})  # a silent one counts
            for worker in self.worker_counts:  # locust forgets a worker that stopped: it would not tell it to quit
                runner.send_message("quit", client_id=worker)
        runner.quit()

    def _publish_live(self, environment: Environment) -> None:
        for due in publication_times(self.min_duration_s, LOOK_INTERVAL_S):
            # Absolute times from the start, not a sleep per round: sleeps add up, and the publication meant
            # for the minimum window would come late, and with it the decision and the end of the run.
            while (left := due - self._elapsed()) > 0:  # a timer may fire a hair early; the minimum must be met
                gevent.sleep(left)
            if self.stopped_at is not None or self.stopping:
                return
            assert self.live_path is not None
            lost = self._lost_workers(environment)
            if lost:
                self._stop(environment, f"locust worker(s) {', '.join(lost)} stopped answering mid-run for "
                                        f"{WORKER_LOST_S:g}s; what they measured is lost, so the run is incomplete")
                return
            elapsed = self._elapsed()
            # Histograms only: quantiles within ~1% and exact counts, cheap to write every second.
            cells = (_merge(self.worker_counts, keep_samples=False) if self.role == "master"
                     else self._cells_json(keep_samples=False))
            write_atomically(self.live_path, json.dumps({"elapsed_s": elapsed, "cells": cells}))

    def _watch_stop_request(self, environment: Environment) -> None:
        """Stop as soon as the calling process asks: it decided; every moment after that loads for nothing.

        A stat every STOP_POLL_S rather than a look per publication, which left up to a second of extra load
        after each decision."""
        assert self.stop_path is not None
        while self.stopped_at is None and not self.stopping:
            if self.stop_path.is_file():
                request = json.loads(self.stop_path.read_text(encoding="utf-8"))
                self.stop_note = request.get("note")
                self._stop(environment, request.get("abort_reason"))
                return
            gevent.sleep(STOP_POLL_S)

    def _lost_workers(self, environment: Environment) -> list[str]:
        """Workers locust has marked missing (no heartbeat for 3 s) for WORKER_LOST_S in a row."""
        runner = environment.runner
        if self.role != "master" or not isinstance(runner, MasterRunner):
            return []
        now = time.monotonic()
        missing = {worker.id for worker in runner.clients.missing}
        self.missing_since = {worker: self.missing_since.get(worker, now) for worker in missing}
        return sorted(worker for worker, since in self.missing_since.items() if now - since >= WORKER_LOST_S)

    def _await_workers(self, environment: Environment) -> None:
        """Fail the run with one clear line when the workers have not all connected in time."""
        timeout_s = float(self.settings.get("workers_timeout_s", 30.0))
        deadline = time.monotonic() + timeout_s
        while self.started_at is None:  # the master starts the run once every expected worker is ready
            if time.monotonic() >= deadline:
                runner = environment.runner
                connected = len(runner.clients.ready) if isinstance(runner, MasterRunner) else 0
                self.error = (
                    f"only {connected} of {self.settings.get('workers')} locust processes (--processes) were ready "
                    f"within {timeout_s:g}s, so nothing was measured and the release does not go ahead; the "
                    "machine may be short of memory or CPU: use fewer processes") if self.settings.get(
                    "spread") == "processes" else (
                    f"only {connected} of {self.settings.get('workers')} locust workers connected to the master at "
                    f"{self.settings.get('master')} within {timeout_s:g}s, so nothing was measured and the release "
                    f"does not go ahead; start each worker as `{self.settings.get('worker_command')}` (with "
                    "this machine's paths replaced by the worker's) where it reaches that address, or fix the "
                    "master's host and port (firewall, a wrong address)")
                self._write_output(environment)
                if runner is not None:
                    runner.quit()  # tells the workers that did connect to quit
                sys.stderr.flush()
                os._exit(0)  # locust's own wait for workers has no way out; the error is in the output
            gevent.sleep(0.2)

    def _on_worker_counts(self, environment: Environment, msg: Message, **_: Any) -> None:
        if msg.node_id not in self.worker_finals:  # a report overtaken by the final one is older than it
            self.worker_counts[msg.node_id] = list(msg.data["cells"])

    def _on_worker_final(self, environment: Environment, msg: Message, **_: Any) -> None:
        self.worker_finals[msg.node_id] = list(msg.data["cells"])
        self.worker_counts.setdefault(msg.node_id, self.worker_finals[msg.node_id])

    # -- worker ---------------------------------------------------------------------------------------
    def _take_master_settings(self, environment: Environment) -> None:
        forwarded = getattr(environment.parsed_options, WORKER_SETTINGS_OPTION, None)
        if forwarded:
            settings = json.loads(forwarded)
            self.version_header = str(settings["version_header"])
            self.reservoir_size = int(settings["reservoir_size"])

    def _report_counts(self, environment: Environment) -> None:
        while self.stopped_at is None:
            gevent.sleep(LOOK_INTERVAL_S)
            if self.stopped_at is None:
                _send(environment, COUNTS_MESSAGE, {"cells": self._cells_json(keep_samples=False)})

    # -- helpers --------------------------------------------------------------------------------------
    def _cells_json(self, *, keep_samples: bool) -> list[dict[str, Any]]:
        return [{"endpoint": name, "version": version,
                 **recorder.snapshot(duration_s=0, keep_samples=keep_samples).to_json()}
                for (name, version), recorder in sorted(self.cells.items())]

    def _elapsed(self) -> float:
        return time.time() - self.started_at if self.started_at is not None else 0.0


def _merge(per_worker: dict[str, list[dict[str, Any]]], *, keep_samples: bool) -> list[dict[str, Any]]:
    """The workers' counts as one run's cells: counts and histograms add up, samples combine uniformly."""
    parts: dict[tuple[str, str], list[Stats]] = {}
    for worker in sorted(per_worker):  # a fixed order: the combined sample is reproducible
        for cell in per_worker[worker]:
            key = (str(cell["endpoint"]), str(cell["version"]))
            parts.setdefault(key, []).append(Stats.from_json(cell, duration_s=0))
    return [{"endpoint": name, "version": version,
             **Stats.combine(stats, duration_s=0, keep_samples=keep_samples).to_json()}
            for (name, version), stats in sorted(parts.items())]


def _send(environment: Environment, message: str, data: dict[str, Any]) -> None:
    if environment.runner is not None:
        environment.runner.send_message(message, data)


def _serving_version(response: Any, version_header: str) -> str:
    headers = getattr(response, "headers", None)
    version = headers.get(version_header) if headers and version_header else None
    return str(version) if version else UNKNOWN_VERSION


def _end_when_the_starter_dies(fd: int) -> None:
    """End this process group once `fd` reads end of file: the process that started the run, which held the
    pipe's other end, is gone. Nothing would read the counts or stop the run; no one should load a service."""
    while True:
        gevent.select.select([fd], [], [])
        try:
            if os.read(fd, 4096):
                continue  # nothing is ever sent; only the end matters
        except OSError:
            pass
        sys.stderr.write("releasegate: the process that started this load is gone (its pipe closed); "
                         "ending the run and its process group\n")
        sys.stderr.flush()
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _install() -> None:
    output, settings = os.environ.get(OUTPUT_ENV), os.environ.get(SETTINGS_ENV)
    if output and settings:
        collector = Collector(Path(output), json.loads(settings))
    elif "--worker" in sys.argv:  # a worker started on its own: its settings come from the master
        collector = Collector(None, {})
    else:
        raise RuntimeError(f"{__file__} is loaded by verifiers.load.run_load, which sets {OUTPUT_ENV} and "
                           f"{SETTINGS_ENV}, or by a locust worker (--worker) of such a run; run the load through it")
    events.init.add_listener(collector.on_init)  # type: ignore[no-untyped-call]
    events.request.add_listener(collector.on_request)  # type: ignore[no-untyped-call]
    events.test_start.add_listener(collector.on_test_start)  # type: ignore[no-untyped-call]
    events.test_stop.add_listener(collector.on_test_stop)  # type: ignore[no-untyped-call]
    events.quitting.add_listener(collector.on_quitting)  # type: ignore[no-untyped-call]


_install()
