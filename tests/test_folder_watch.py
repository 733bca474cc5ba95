"""core.folder_watch: a wait that ends when a record lands, and the stage barrier that uses it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from releasegate.core import folder_watch
from releasegate.core.files import write_atomically
from releasegate.core.folder_watch import FolderWatch
from releasegate.plugins import gates
from releasegate.plugins.gates import wait_for_turn
from releasegate.plugins.ledger import ItemRecord, Ledger, Outcome, ReleaseContext

LONG_S = 120.0  # never reached when the watch works; a bound on a broken one, not a timing


def test_a_file_renamed_into_the_folder_by_another_thread_ends_the_wait(tmp_path: Path) -> None:
    with FolderWatch(tmp_path) as watch:
        assert watch.event_driven  # Linux, where CI runs
        writer = threading.Thread(target=write_atomically, args=(tmp_path / "0.json", "{}"))
        writer.start()
        assert watch.wait(LONG_S)
        writer.join()


def test_a_change_before_the_wait_is_not_lost_and_is_counted_once(tmp_path: Path) -> None:
    with FolderWatch(tmp_path) as watch:
        (tmp_path / "created").write_text("x")  # between a look at the files and the sleep
        assert watch.wait(LONG_S)
        assert not watch.wait(0.01)  # drained: nothing new since


def test_every_watched_folder_wakes_the_wait(tmp_path: Path) -> None:
    items, root = tmp_path / "items", tmp_path
    items.mkdir()
    with FolderWatch(items, root) as watch:
        write_atomically(root / "abort.json", "{}")
        assert watch.wait(LONG_S)


def test_without_inotify_the_wait_is_the_plain_poll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder_watch, "_open_inotify", lambda folders: None)
    with FolderWatch(tmp_path) as watch:
        assert not watch.event_driven
        (tmp_path / "created").write_text("x")
        assert not watch.wait(0.01)  # slept its interval: the caller looks again then


def test_a_closed_watch_no_longer_holds_its_descriptor(tmp_path: Path) -> None:
    watch = FolderWatch(tmp_path)
    watch.close()
    assert not watch.event_driven
    watch.close()  # twice is harmless


def test_a_stage_barrier_opens_on_the_record_itself_not_on_the_next_poll(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(tmp_path / "run")
    ledger.start(ReleaseContext(run_id="r", version="v2", strategy="blue-green", target="local", dry_run=False))
    monkeypatch.setattr(gates, "POLL_S", LONG_S)  # a poll alone would sleep the whole bound
    now = time.time()
    record = ItemRecord(index=0, nodeid="suites/smoke/test_a.py::test_a", stage="smoke", outcome=Outcome.PASSED,
                        message="", started=now, finished=now)
    writer = threading.Thread(target=ledger.item_finished, args=(record,))
    wakes: list[bool] = []
    wait = FolderWatch.wait

    def wait_and_record(self: FolderWatch, seconds: float) -> bool:
        if not writer.is_alive() and not wakes:  # the item before finishes while this one sleeps
            writer.start()
        woke = wait(self, seconds)
        wakes.append(woke)
        return woke

    monkeypatch.setattr(FolderWatch, "wait", wait_and_record)
    turn = wait_for_turn(ledger, before=1, timeout_s=LONG_S * 2)
    writer.join()
    assert turn.failures == [] and turn.aborted is None
    assert wakes and all(wakes)  # it slept, and every sleep ended on a file landing: none ran out
