"""``core.breaker``: the sink circuit breaker's states, probe pacing, persistence and texts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cdc_pipeline.core.errors import StagingError
from cdc_pipeline.core.load.breaker import BreakerState, SinkBreaker

START = datetime(2024, 5, 1, 12, 3, 7, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sink_breaker.json"


def breaker(path: Path, clock: FakeClock, interval: float = 60.0) -> SinkBreaker:
    return SinkBreaker(path, probe_interval_seconds=interval, clock=clock)


def test_closed_by_default(path: Path, clock: FakeClock) -> None:
    sink = breaker(path, clock)
    assert sink.read() == BreakerState()
    assert sink.allow_run()
    assert sink.describe(3) == "MongoDB reachable"
    assert not path.exists()


def test_failure_opens_with_down_since(path: Path, clock: FakeClock) -> None:
    state = breaker(path, clock).record_failure("MongoDB is unreachable (AutoReconnect).")
    assert state.state == "open"
    assert state.down_since == START.isoformat()
    assert state.last_failure_at == START.isoformat()
    assert state.consecutive_failures == 1
    assert state.last_error == "MongoDB is unreachable (AutoReconnect)."


def test_later_failures_keep_down_since(path: Path, clock: FakeClock) -> None:
    sink = breaker(path, clock)
    sink.record_failure("first")
    clock.advance(300)
    state = sink.record_failure("second")
    assert state.down_since == START.isoformat()
    assert state.last_failure_at == (START + timedelta(seconds=300)).isoformat()
    assert state.consecutive_failures == 2
    assert state.last_error == "second"


def test_a_clock_behind_the_outage_never_moves_down_since_later(
    path: Path, clock: FakeClock
) -> None:
    breaker(path, clock).record_failure("first")
    behind = FakeClock(START - timedelta(seconds=30))
    assert breaker(path, behind).record_failure("x").down_since == behind.now.isoformat()
    assert breaker(path, clock).record_failure("y").down_since == behind.now.isoformat()


def test_open_allows_one_probe_per_interval(path: Path, clock: FakeClock) -> None:
    sink = breaker(path, clock, interval=60)
    sink.record_failure("down")
    assert sink.allow_run()
    sink.record_probe()
    assert not sink.allow_run()
    clock.advance(59)
    assert not sink.allow_run()
    clock.advance(1)
    assert sink.allow_run()


def test_a_failed_probe_waits_for_the_interval_from_its_launch(
    path: Path, clock: FakeClock
) -> None:
    sink = breaker(path, clock, interval=60)
    sink.record_failure("down")
    sink.record_probe()
    clock.advance(40)
    sink.record_failure("probe failed")
    assert not sink.allow_run()
    clock.advance(20)
    assert sink.allow_run()


def test_success_closes_and_clears(path: Path, clock: FakeClock) -> None:
    sink = breaker(path, clock)
    sink.record_failure("down")
    sink.record_probe()
    assert sink.record_success() == BreakerState()
    assert sink.read() == BreakerState()
    assert sink.allow_run()
    clock.advance(10)
    assert sink.record_failure("again").down_since == clock.now.isoformat()


def test_record_probe_while_closed_changes_nothing(path: Path, clock: FakeClock) -> None:
    sink = breaker(path, clock)
    sink.record_probe()
    assert sink.read() == BreakerState()


def test_state_persists_across_instances(path: Path, clock: FakeClock) -> None:
    breaker(path, clock).record_failure("down")
    breaker(path, clock).record_probe()
    other = breaker(path, clock)
    assert other.read().state == "open"
    assert not other.allow_run()
    assert json.loads(path.read_text())["state"] == "open"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"state": "half-open"}',
        b'{"state": "open"}',
        b'{"state": "open", "down_since": "yesterday"}',
        b'{"state": "open", "down_since": "2024-05-01T12:00:00+00:00", '
        b'"consecutive_failures": "3"}',
        b'{"state": "closed", "last_error": 5}',
    ],
)
def test_a_corrupt_file_reads_as_closed(path: Path, clock: FakeClock, content: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    sink = breaker(path, clock)
    assert sink.read() == BreakerState()
    assert sink.allow_run()
    assert sink.record_failure("down").down_since == START.isoformat()


def test_unknown_keys_are_ignored(path: Path, clock: FakeClock) -> None:
    path.parent.mkdir(parents=True)
    path.write_text('{"state": "closed", "from_a_newer_version": 1}')
    assert breaker(path, clock).read() == BreakerState()


def test_describe_open(path: Path, clock: FakeClock) -> None:
    sink = breaker(path, clock, interval=60)
    sink.record_failure("down")
    assert sink.describe(1) == (
        "MongoDB down since 12:03:07 UTC (0 s), 1 segment waiting; a probe is due"
    )
    clock.advance(215)
    sink.record_probe()
    clock.advance(25)
    assert sink.describe(7) == (
        "MongoDB down since 12:03:07 UTC (4 min), 7 segments waiting; next probe in 35 s"
    )
    clock.advance(3 * 3600)
    assert sink.describe(0) == (
        "MongoDB down since 12:03:07 UTC (3 h 4 min), 0 segments waiting; a probe is due"
    )


def test_describe_names_the_date_of_an_outage_from_another_day(
    path: Path, clock: FakeClock
) -> None:
    sink = breaker(path, clock)
    sink.record_failure("down")
    clock.advance(2 * 86400 + 3600)
    assert sink.describe(2).startswith(
        "MongoDB down since 2024-05-01 12:03:07 UTC (2 d 1 h), 2 segments waiting"
    )


def test_unwritable_folder_is_a_staging_error(tmp_path: Path, clock: FakeClock) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    sink = breaker(blocker / "sink_breaker.json", clock)
    with pytest.raises(StagingError, match=r"cannot write the sink breaker file"):
        sink.record_failure("down")
    assert sink.read() == BreakerState()
