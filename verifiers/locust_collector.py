"""Loaded INSIDE the locust subprocess that verifiers.load.run_load starts; never import it anywhere else.

Importing locust monkey-patches the process with gevent, which is why only the subprocess does it. This
file is passed to locust as a locustfile beside the user's one; it defines no User class, only listeners:
- every request is counted per (endpoint name, serving version from the version header);
- every second the counts so far (histograms, no raw samples) are written to the live file, where the
  calling process judges its checks sequentially, and a stop file it writes is looked for: the calling
  process stops the run as soon as its checks decided;
- the run stops by itself `max_duration_s` after it started, whatever the caller does;
- on quitting, everything is written as JSON to the path in RELEASEGATE_LOAD_OUTPUT.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment

from releasegate.core.files import write_atomically
from releasegate.verifiers.load import LOOK_INTERVAL_S, OUTPUT_ENV, SETTINGS_ENV, UNKNOWN_VERSION
from releasegate.verifiers.stats import LatencyRecorder


class Collector:
    def __init__(self, output: Path, settings: dict[str, Any]) -> None:
        self.output = output
        self.max_duration_s = float(settings["max_duration_s"])
        self.live_path = Path(settings["live_path"])
        self.stop_path = Path(settings["stop_path"])
        self.version_header = str(settings["version_header"])
        self.reservoir_size = int(settings["reservoir_size"])
        self.rng = random.Random(0)  # reproducible reservoirs for the same sequence of requests
        self.cells: dict[tuple[str, str], LatencyRecorder] = {}
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.abort_reason: str | None = None
        self.stop_note: str | None = None

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
        gevent.spawn_later(self.max_duration_s, self._stop, environment)
        gevent.spawn(self._publish_live, environment)

    def on_test_stop(self, **_: Any) -> None:
        if self.started_at is not None and self.stopped_at is None:
            self.stopped_at = time.time()

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        runner = environment.runner
        exceptions = list(runner.exceptions.values()) if runner is not None else []
        now = time.time()
        data = {
            "started_at": self.started_at or now,
            "stopped_at": self.stopped_at or now,
            "abort_reason": self.abort_reason,
            "stop_note": self.stop_note,
            "task_errors": [f"{row['count']}x {row['msg']}" for row in exceptions],
            "cells": [{"endpoint": name, "version": version, **recorder.snapshot(duration_s=0).to_json()}
                      for (name, version), recorder in sorted(self.cells.items())],
        }
        # The parent never reads half a file.
        write_atomically(self.output, json.dumps(data))

    def _stop(self, environment: Environment, reason: str | None = None) -> None:
        if self.stopped_at is not None or environment.runner is None:
            return
        if reason is not None:
            self.abort_reason = reason
        environment.runner.quit()

    def _publish_live(self, environment: Environment) -> None:
        while self.stopped_at is None:
            gevent.sleep(LOOK_INTERVAL_S)
            if self.stop_path.is_file():
                request = json.loads(self.stop_path.read_text(encoding="utf-8"))
                self.stop_note = request.get("note")
                self._stop(environment, request.get("abort_reason"))
                return
            elapsed = self._elapsed()
            # Histograms only: quantiles within ~1% and exact counts, cheap to write every second.
            cells = [{"endpoint": name, "version": version,
                      **recorder.snapshot(duration_s=elapsed, keep_samples=False).to_json()}
                     for (name, version), recorder in sorted(self.cells.items())]
            write_atomically(self.live_path, json.dumps({"elapsed_s": elapsed, "cells": cells}))

    def _elapsed(self) -> float:
        return time.time() - self.started_at if self.started_at is not None else 0.0


def _serving_version(response: Any, version_header: str) -> str:
    headers = getattr(response, "headers", None)
    version = headers.get(version_header) if headers and version_header else None
    return str(version) if version else UNKNOWN_VERSION


def _install() -> None:
    output, settings = os.environ.get(OUTPUT_ENV), os.environ.get(SETTINGS_ENV)
    if not output or not settings:
        raise RuntimeError(f"{__file__} is loaded by verifiers.load.run_load, which sets {OUTPUT_ENV} and "
                           f"{SETTINGS_ENV}; run the load through it")
    collector = Collector(Path(output), json.loads(settings))
    events.request.add_listener(collector.on_request)  # type: ignore[no-untyped-call]
    events.test_start.add_listener(collector.on_test_start)  # type: ignore[no-untyped-call]
    events.test_stop.add_listener(collector.on_test_stop)  # type: ignore[no-untyped-call]
    events.quitting.add_listener(collector.on_quitting)  # type: ignore[no-untyped-call]


_install()
