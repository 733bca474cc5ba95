"""Watching a release: a live line while a load, a side-by-side comparison, a canary step's wait or the
post-switch watch runs, and a table of the phases and of the checks that did not pass at the end.

- In a terminal (stdout a TTY) the live line is redrawn in place once a second, on a line of its own below
  pytest's output, and removed before pytest writes anything (its result letters, a test id), so pytest's
  own lines stay as they would be without it.
- When stdout is not a TTY (CI logs) a plain line is written every PLAIN_INTERVAL_S instead: no carriage
  returns in a log file, and a log that still shows a long load is alive.
- `-q` (and `-qq`) turns both off; the decision lines of plugins/finish.py stay.

Where the snapshots come from: the verifiers call `on_progress(snapshot)` after each look (core.progress).
In a single pytest process the callback draws at once. Under pytest-xdist the load runs in a worker while the
terminal belongs to the controller, so the worker writes its latest snapshot to a small file in the run's
ledger directory (which every process of the run shares already) and a thread on the controller reads the
changed files once a second and draws them. The controller's own terminal writes for test results pause
the thread (`LiveBoard.paused`), so the two never interleave on one line.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from releasegate.core.files import write_atomically
from releasegate.core.progress import CheckState, ProgressCallback, ProgressSnapshot
from releasegate.plugins.items import ACTION_PREFIX, STAGE_KEY
from releasegate.plugins.run import ReleaseRun
from releasegate.verifiers.thresholds import format_count, format_fraction, format_seconds

PLAIN_INTERVAL_S = 10.0
"""How often a plain progress line is written when stdout is not a terminal."""

TAIL_INTERVAL_S = 1.0
"""How often the xdist controller reads the workers' progress files: as often as a load looks."""

STALE_S = 30.0
"""A snapshot not renewed for this long is not shown: its worker died, or it ended between two looks.
Longer than any look interval (the watch looks every release.watch_interval_s, 5 s on clusters)."""

PROGRESS_DIR = "progress"
"""The folder, in the run's ledger directory, where xdist workers leave their latest snapshot."""

PLUGIN_NAME = "releasegate-release-progress"

CLEAR_TO_END = "\x1b[K"
UP = "\x1b[A"
NAME_WIDTH = 32


# --- one line ---------------------------------------------------------------------------------------------


def format_line(label: str, snapshot: ProgressSnapshot, *, candidate_version: str | None) -> str:
    """`[load] test_checkout: load 12/15s | 48.1 req/s | p95 41ms | 579 req | errors 0 (0%) | v2 10% of traffic |
    error_rate<1%: pass | p(95)<300ms: 579 req, undecided` (the share only for requests the service split)."""
    parts = [f"{label}: {snapshot.activity}" if label else snapshot.activity]
    total = f"/{snapshot.total_s:g}s" if snapshot.total_s is not None else "s"
    short = snapshot.total_s is not None and snapshot.total_s < 10  # a window of seconds: tenths matter
    parts[0] += f" {snapshot.elapsed_s:.{1 if short else 0}f}{total}"
    if snapshot.rps is not None:
        parts.append(f"{snapshot.rps:.1f} req/s")
    if snapshot.p95_s is not None:
        baseline = f" (baseline {format_seconds(snapshot.baseline_p95_s)})" if snapshot.baseline_p95_s is not None \
            else ""
        parts.append(f"p95 {format_seconds(snapshot.p95_s)}{baseline}")
    if snapshot.requests or snapshot.rps is not None or snapshot.checks:  # not a wait, which counts nothing
        requests = f"{format_count(snapshot.requests)} req" + (" since the switch" if snapshot.activity == "watch"
                                                                 else "")
        errors = f"errors {format_count(snapshot.failures)}"
        if snapshot.requests:
            errors += f" ({format_fraction(snapshot.failures / snapshot.requests)})"
        parts += [requests, errors]
    if snapshot.through_service and candidate_version is not None and snapshot.requests:
        share = snapshot.versions.get(candidate_version, 0) / snapshot.requests
        parts.append(f"{candidate_version} {format_fraction(share)} of traffic")
    for check in snapshot.checks:
        state = f"{format_count(check.samples)} req, undecided" if check.state is CheckState.UNDECIDED \
            else check.state.value
        parts.append(f"{_compact(check.check)}: {state}")
    return " | ".join(parts)


def _compact(check: str) -> str:
    """`error_rate < 1% [v2]` -> `error_rate<1% v2`: the live line has little room."""
    expression, _, scope = check.partition(" [")
    return _AROUND_OPERATOR.sub(r"\1", expression) + (f" {scope.rstrip(']')}" if scope else "")


_AROUND_OPERATOR = re.compile(r"\s*([<>]=?|==)\s*")


def item_label(stage: str, test_name: str) -> str:
    """`[analysis[10%]] test_the_split_gives...`: the stage, and the test's name cut to NAME_WIDTH; an action
    (`shift[50%]`, `finalize`) is named like its stage, once."""
    if test_name == stage or not stage:
        return test_name
    name = test_name if len(test_name) <= NAME_WIDTH else test_name[:NAME_WIDTH - 3] + "..."
    return f"[{stage}] {name}"


# --- the live line ----------------------------------------------------------------------------------------


class Surface(Protocol):
    """Where the board draws: pytest's terminal, or a fake in tests."""

    def column(self) -> int:
        """How far pytest's cursor is into its current line."""
        ...

    def width(self) -> int:
        ...

    def write_raw(self, text: str) -> None:
        """Write without moving pytest's idea of the cursor (the live line is not pytest's output)."""
        ...

    def write_line(self, text: str) -> None:
        """A whole line of output, on a line of its own, flushed."""
        ...


@dataclass
class _Activity:
    nodeid: str
    label: str
    snapshot: ProgressSnapshot
    seen_at: float  # the last snapshot
    started_at: float  # the first one: the line keeps showing the same activity while others run beside it


class LiveBoard:
    """The running activities and the one line that shows them (the longest running; "+N more" for others).

    Thread-safe: under xdist a thread feeds it while the main thread writes test results (`paused`).
    """

    def __init__(self, surface: Surface, *, tty: bool, candidate_version: str | None,
                 clock: Callable[[], float] = time.monotonic, interval_s: float = PLAIN_INTERVAL_S,
                 stale_s: float = STALE_S) -> None:
        self._surface = surface
        self._tty = tty
        self._candidate_version = candidate_version
        self._clock = clock
        self._interval_s = interval_s
        self._stale_s = stale_s
        self._lock = threading.RLock()
        self._activities: dict[str, _Activity] = {}
        self._finished: set[str] = set()  # test ids: a snapshot that arrives after its test ended is old news
        self._open_column: int | None = None  # where pytest's cursor was when the live line opened
        self._next_plain_at: float | None = None

    def update(self, key: str, nodeid: str, label: str, snapshot: ProgressSnapshot) -> None:
        with self._lock:
            if nodeid in self._finished:
                return
            now = self._clock()
            known = self._activities.get(key)
            self._activities[key] = _Activity(nodeid, label, snapshot, now, known.started_at if known else now)
            self._show()

    def finish(self, nodeid: str) -> None:
        """The test ended: its activities go, and the line with them."""
        with self._lock:
            self._finished.add(nodeid)
            for key in [k for k, a in self._activities.items() if a.nodeid == nodeid]:
                del self._activities[key]
            if not self._activities:
                self._next_plain_at = None  # the next activity waits its own interval before its first line
            self._close()

    def tick(self) -> None:
        """Redraw (a stale activity disappears; the plain line's time may have come)."""
        with self._lock:
            self._show()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Around pytest's own terminal writes: the live line is removed first and not redrawn meanwhile."""
        with self._lock:
            self._close()
            yield

    def close(self) -> None:
        with self._lock:
            self._close()
            self._activities.clear()

    def text(self) -> str | None:
        """The line as it would be drawn now; None when nothing runs."""
        current = self._current()
        if not current:
            return None
        shown = current[0]
        line = format_line(shown.label, shown.snapshot, candidate_version=self._candidate_version)
        return line + (f" | +{len(current) - 1} more running" if len(current) > 1 else "")

    def _current(self) -> list[_Activity]:
        now = self._clock()
        fresh = [a for a in self._activities.values() if now - a.seen_at < self._stale_s]
        return sorted(fresh, key=lambda a: a.started_at)

    def _show(self) -> None:
        line = self.text()
        if line is None:
            self._close()
            self._next_plain_at = None  # the next activity waits its own interval before its first line
            return
        if self._tty:
            self._draw(line)
            return
        now = self._clock()
        if self._next_plain_at is None:
            self._next_plain_at = now + self._interval_s
        elif now >= self._next_plain_at:
            self._surface.write_line(line)
            self._next_plain_at = max(self._next_plain_at + self._interval_s, now)

    def _draw(self, line: str) -> None:
        width = max(self._surface.width() - 1, 20)  # the last column would wrap on some terminals
        if self._open_column is None:
            self._open_column = self._surface.column()
            if self._open_column:
                self._surface.write_raw("\n")  # a line of its own: pytest's current line stays as it is
        clipped = line if len(line) <= width else line[:width - 3] + "..."
        self._surface.write_raw("\r" + clipped + CLEAR_TO_END)

    def _close(self) -> None:
        column, self._open_column = self._open_column, None
        if column is None:
            return
        back = ""
        if 0 < column < self._surface.width():
            # Up to pytest's line and right to where its cursor was: its next letter lands where it would have.
            back = UP + f"\x1b[{column}C"
        self._surface.write_raw("\r" + CLEAR_TO_END + back)


class TerminalSurface:
    """pytest's terminal reporter as a Surface.

    pytest keeps its cursor's column in its terminal writer (`_tw`, the attribute pytest's own plugins and
    pytest-sugar use): the live line needs it to give pytest's line back exactly where it was. Inside a test's
    call, stdout is captured: writes go around the capture, as pytest's live logging does.
    """

    def __init__(self, reporter: Any, capture: Any = None) -> None:
        self._reporter = reporter
        self._capture = capture  # the capture manager; None on the xdist controller (nothing captured there)

    def column(self) -> int:
        writer = getattr(self._reporter, "_tw", None)
        return int(writer.width_of_current_line) if writer is not None else 0

    def width(self) -> int:
        writer = getattr(self._reporter, "_tw", None)
        return int(writer.fullwidth) if writer is not None else 80

    def write_raw(self, text: str) -> None:
        with self._uncaptured():
            self._reporter.write_raw(text, flush=True)

    def write_line(self, text: str) -> None:
        with self._uncaptured():
            self._reporter.ensure_newline()
            if self.column():
                self._reporter.write("\n")
            self._reporter.write_line(text)
            self._reporter.flush()  # a CI log is a pipe: unflushed, the line would come minutes late

    def _uncaptured(self) -> contextlib.AbstractContextManager[None]:
        if self._capture is None:
            return contextlib.nullcontext()
        return self._capture.global_and_fixture_disabled()  # type: ignore[no-any-return]


# --- from xdist workers to the controller ------------------------------------------------------------------


class ProgressFile:
    """A worker's latest snapshot, in the run's ledger directory: one small file per worker, replaced whole."""

    def __init__(self, directory: Path, worker: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{worker}.json"

    def write(self, key: str, nodeid: str, label: str, snapshot: ProgressSnapshot) -> None:
        write_atomically(self.path, json.dumps({"key": key, "nodeid": nodeid, "label": label,
                                                "snapshot": snapshot.to_json()}))


class ProgressTail:
    """On the xdist controller: the workers' progress files that changed since the last look, to the board."""

    def __init__(self, directory: Path, board: LiveBoard) -> None:
        self.directory = directory
        self.board = board
        self._seen: dict[Path, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        for path in sorted(self.directory.glob("*.json")):
            try:
                stat = path.stat()
                version = (stat.st_ino, stat.st_mtime_ns)  # replaced whole: a new inode each time
                if self._seen.get(path) == version:
                    continue
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # replaced or removed under us: the next look reads it
            self._seen[path] = version
            self.board.update(str(record["key"]), str(record["nodeid"]), str(record["label"]),
                              ProgressSnapshot.from_json(record["snapshot"]))
        self.board.tick()

    def start(self, interval_s: float = TAIL_INTERVAL_S) -> None:
        def run() -> None:
            while not self._stop.wait(interval_s):
                with contextlib.suppress(Exception):  # a view: a drawing problem must not end the tail
                    self.poll()

        self._thread = threading.Thread(target=run, name="releasegate-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


# --- the end of the run -----------------------------------------------------------------------------------

_OUTCOME_ORDER = ("error", "failed", "inconclusive", "passed", "skipped")


def phase_rows(summary: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(stage, outcome, time, tests) per phase in run order, from the release report's data."""
    tests_by_stage: dict[str, list[Mapping[str, Any]]] = {}
    for test in summary.get("tests") or []:
        tests_by_stage.setdefault(str(test["stage"]), []).append(test)
    rows = []
    for stage, seconds in (summary.get("phase_times_s") or {}).items():
        tests = tests_by_stage.get(stage, [])
        outcomes = [str(t["outcome"]) for t in tests]
        worst = min(outcomes, key=_OUTCOME_ORDER.index, default="passed")
        if tests and all(str(t["nodeid"]).startswith(ACTION_PREFIX) for t in tests):
            count = ""  # an action: one item, named like its stage
        else:
            skipped = outcomes.count("skipped")
            count = f"{len(tests)} test{'s' if len(tests) != 1 else ''}"
            count += f", {skipped} skipped" if skipped and worst != "skipped" else ""
        rows.append((stage, worst, f"{float(seconds):.2f}s", count))
    return rows


def failed_check_rows(summary: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(stage, verdict, `test: explanation`) for every check that did not pass, and every failed test that
    recorded none (a load that crashed, a fixture error): the explanation is the check's own line."""
    rows = []
    for test in summary.get("tests") or []:
        name = str(test["nodeid"]).rpartition("::")[2] or str(test["nodeid"])
        unpassed = [c for c in test.get("checks") or [] if c.get("verdict", "pass") != "pass"]
        for check in unpassed:
            rows.append((str(test["stage"]), str(check["verdict"]), f"{name}: {_explain(check)}"))
        if not unpassed and test["outcome"] in ("failed", "error", "inconclusive"):
            rows.append((str(test["stage"]), str(test["outcome"]), f"{name}: {test['message']}"))
    return rows


def _explain(check: Mapping[str, str]) -> str:
    """The check's one line when it recorded one; else what it measured against what it allowed."""
    if check.get("message"):
        return check["message"]
    samples = f" over {check['samples']} requests" if check.get("samples") not in (None, "", "-") else ""
    return (f"{check.get('check', '')}: {check.get('value', '-')} vs {check.get('threshold', '-')}{samples} on "
            f"{check.get('subject', '-')}")


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The end-of-run table: phases (stage, outcome, time, tests), then the checks that did not pass."""
    lines = _table(("stage", "outcome", "time", "tests"), phase_rows(summary), right_aligned={2})
    failed = failed_check_rows(summary)
    if failed:
        lines += ["", "checks that did not pass:"]
        lines += _table(("stage", "verdict", "explanation"), failed)
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right_aligned: frozenset[int] | set[int] = frozenset(),
           ) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.rjust(width) if index in right_aligned else cell.ljust(width)
                  for index, (cell, width) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded).rstrip()

    return [line(header), *(line(row) for row in rows)]


# --- the plugin ---------------------------------------------------------------------------------------------


class ReleaseProgress:
    """The live line and the end-of-run table of one release run (registered with the release plugin)."""

    def __init__(self, run: ReleaseRun) -> None:
        self.run = run
        self.quiet = run.config.get_verbosity() < 0  # -q keeps only the decision lines
        self.board: LiveBoard | None = None
        self.tail: ProgressTail | None = None
        self.file: ProgressFile | None = None
        self.summary: dict[str, Any] | None = None

    @property
    def directory(self) -> Path:
        return self.run.ledger.root / PROGRESS_DIR

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.quiet or self.run.config.option.collectonly:
            return
        config = self.run.config
        if self.run.is_worker:
            worker = str(getattr(config, "workerinput", {}).get("workerid", "worker"))
            self.file = ProgressFile(self.directory, worker)
            return
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        distributed = config.pluginmanager.hasplugin("dsession")
        capture = None if distributed else config.pluginmanager.get_plugin("capturemanager")
        self.board = LiveBoard(TerminalSurface(reporter, capture), tty=bool(reporter.isatty()),
                               candidate_version=self.run.options.version)
        if distributed:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.tail = ProgressTail(self.directory, self.board)
            self.tail.start()

    def callback_for(self, item: pytest.Item) -> ProgressCallback | None:
        """Where this item's verifiers send their snapshots; None when nothing is shown (-q)."""
        stage = item.stash.get(STAGE_KEY, None)
        label = item_label(stage.label if stage is not None else "", item.name)
        sink: Callable[[str, str, str, ProgressSnapshot], None] | None = (
            self.file.write if self.file is not None else self.board.update if self.board is not None else None)
        if sink is None:
            return None
        nodeid = item.nodeid

        def on_progress(snapshot: ProgressSnapshot) -> None:
            # A view of the run, never part of its verdict: a full disk or a closed terminal must not fail
            # the load that reports to it.
            with contextlib.suppress(OSError, ValueError):
                sink(f"{nodeid}::{snapshot.activity}", nodeid, label, snapshot)

        return on_progress

    # pytest's own terminal writes about tests: the live line steps aside first (see LiveBoard.paused).
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str) -> Generator[None, object, object]:
        with self._paused():
            return (yield)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Generator[None, object, object]:
        with self._paused():
            if self.board is not None and report.when in ("call", "teardown"):
                self.board.finish(report.nodeid)
            return (yield)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_logfinish(self, nodeid: str) -> Generator[None, object, object]:
        with self._paused():
            return (yield)

    def _paused(self) -> contextlib.AbstractContextManager[None]:
        return self.board.paused() if self.board is not None else contextlib.nullcontext()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        if self.tail is not None:
            self.tail.stop()
        if self.board is not None:
            self.board.close()

    def pytest_releasegate_decision(self, summary: dict[str, Any]) -> None:
        self.summary = summary

    @pytest.hookimpl(tryfirst=True)  # before plugins/finish.py's decision lines, which end the output
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.quiet or self.summary is None or not self.summary.get("phase_times_s"):
            return
        terminalreporter.write_sep("-", "release phases")
        for line in summary_lines(self.summary):
            terminalreporter.write_line(line)


def progress_callback(item: pytest.Item) -> ProgressCallback | None:
    """The `on_progress` callback for the verifiers one item runs (None outside a release, or with -q)."""
    plugin = item.config.pluginmanager.get_plugin(PLUGIN_NAME)
    return plugin.callback_for(item) if isinstance(plugin, ReleaseProgress) else None
