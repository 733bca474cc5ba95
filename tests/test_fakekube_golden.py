"""Golden replay: every exchange recorded from a real v1.32 API server, replayed against FakeKube.

One test per exchange (the id names it). The replay itself lives in ``tests/fakekube/golden_replay.py``;
it runs lazily and in recorded order, so each test only replays up to its own exchange and works the same
in file order, on its own (``-k``) or under xdist (each worker replays the prefix it needs).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakekube.golden_replay import Exchange, Replayer, golden_dir, load_exchanges

GOLDEN = golden_dir()
EXCHANGES: list[Exchange] = load_exchanges(GOLDEN)


@pytest.fixture(scope="module")
def replayer() -> Iterator[Replayer]:
    replay = Replayer(EXCHANGES)
    try:
        yield replay
    finally:
        replay.close()
        assert not replay.fake.errors, "\n".join(replay.fake.errors)


@pytest.mark.parametrize("exchange", EXCHANGES, ids=[e.id for e in EXCHANGES])
def test_golden_exchange(replayer: Replayer, exchange: Exchange) -> None:
    outcome = replayer.outcome(exchange.index)
    if outcome.error is not None:
        raise outcome.error


def test_golden_recordings_found() -> None:
    """The replay must not silently vanish: the recordings are part of the repository."""
    assert len(EXCHANGES) == 119
