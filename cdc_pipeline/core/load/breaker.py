"""A circuit breaker for the MongoDB sink, kept in a small JSON file shared by processes on a host.

The Dagster sensor reads it to decide whether to launch load runs; load runs write it. While the
breaker is open the sensor launches at most one probe run per ``probe_interval_seconds``; the
first success closes it and normal loading resumes.

Invariants:
    * a missing, unreadable or malformed file reads as closed (never raises, logs nothing);
    * every write is atomic (temp file, fsync, rename), so readers see a whole old or whole new
      state;
    * concurrency: read-modify-write without a lock, last writer wins. Within that,
      ``record_failure`` never moves the ``down_since`` of an open outage later, and
      ``record_success`` always closes, whatever it read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cdc_pipeline.core.errors import (
    StagingError,
)
from cdc_pipeline.core.problems import duration_text
from cdc_pipeline.core.wal.staging import (
    WalPaths,
    private_folder,
    write_json_atomically,
)


@dataclass
class BreakerState:
    """What the breaker file holds; timestamps are ISO 8601 in UTC.

    Attributes:
        state: ``"closed"`` (load freely) or ``"open"`` (probe only).
        down_since: first failure of the current outage; ``None`` when closed.
        last_failure_at: most recent recorded failure.
        last_probe_at: when the sensor last launched a probe run.
        consecutive_failures: failures since the last success.
        last_error: one sentence without secrets (a ``CdcError`` message).
    """

    state: Literal["closed", "open"] = "closed"
    down_since: str | None = None
    last_failure_at: str | None = None
    last_probe_at: str | None = None
    consecutive_failures: int = 0
    last_error: str | None = None


_TEXT_FIELDS = ("down_since", "last_failure_at", "last_probe_at", "last_error")
_TIME_FIELDS = ("down_since", "last_failure_at", "last_probe_at")


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _state_from_json(data: Any) -> BreakerState:
    """Builds a state from decoded JSON; raises ValueError on anything unexpected."""
    if not isinstance(data, dict):
        raise ValueError("not an object")
    known = {item.name for item in fields(BreakerState)}
    state = BreakerState(**{key: value for key, value in data.items() if key in known})
    if state.state not in ("closed", "open"):
        raise ValueError("bad state")
    count = state.consecutive_failures
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError("bad count")
    for name in _TEXT_FIELDS:
        if not isinstance(getattr(state, name), str | None):
            raise ValueError(f"bad {name}")
    for name in _TIME_FIELDS:
        value = getattr(state, name)
        if value is not None:
            _parse_time(value)
    if state.state == "open" and state.down_since is None:
        raise ValueError("open without down_since")
    return state


class SinkBreaker:
    """The sink's circuit breaker, stored at ``path``.

    Args:
        path: the JSON file (its folder is created on first write).
        probe_interval_seconds: least time between two probe runs while open.
        clock: current time (timezone-aware; naive values are taken as UTC).
    """

    def __init__(
        self,
        path: Path,
        probe_interval_seconds: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.path = path
        self.probe_interval = timedelta(seconds=probe_interval_seconds)
        self._clock = clock

    def _now(self) -> datetime:
        now = self._clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    def read(self) -> BreakerState:
        """The stored state; closed if the file is missing, unreadable or malformed."""
        try:
            return _state_from_json(json.loads(self.path.read_bytes()))
        except (OSError, ValueError, TypeError):
            return BreakerState()

    def _write(self, state: BreakerState) -> BreakerState:
        try:
            private_folder(self.path.parent)
            write_json_atomically(self.path, asdict(state))
        except OSError as error:
            raise StagingError(
                f"cannot write the sink breaker file {self.path} ({error.strerror}); make its"
                " folder writable and check free space."
            ) from None
        return state

    def record_failure(self, error: str) -> BreakerState:
        """Opens the breaker: a load run spent its whole retry budget.

        Keeps the ``down_since`` of an ongoing outage (the earlier one, should clocks disagree)
        and the ``last_probe_at``, so a failed probe does not trigger another one at once.
        """
        current = self.read()
        now = self._now()
        down_since = now
        if current.state == "open" and current.down_since is not None:
            down_since = min(now, _parse_time(current.down_since))
        return self._write(
            BreakerState(
                state="open",
                down_since=down_since.isoformat(),
                last_failure_at=now.isoformat(),
                last_probe_at=current.last_probe_at,
                consecutive_failures=current.consecutive_failures + 1,
                last_error=error,
            )
        )

    def record_success(self) -> BreakerState:
        """Closes the breaker and clears the outage, whatever the file held."""
        return self._write(BreakerState())

    def _next_probe_at(self, state: BreakerState) -> datetime | None:
        if state.last_probe_at is None:
            return None
        return _parse_time(state.last_probe_at) + self.probe_interval

    def allow_run(self) -> bool:
        """Whether the sensor may launch a run now.

        Closed: always. Open: only if no probe was launched within the probe interval; the
        caller then launches exactly one probe and calls ``record_probe``.
        """
        state = self.read()
        if state.state == "closed":
            return True
        next_probe = self._next_probe_at(state)
        return next_probe is None or self._now() >= next_probe

    def record_probe(self) -> None:
        """Notes that the sensor launched a probe run now (no effect while closed)."""
        current = self.read()
        if current.state == "open":
            current.last_probe_at = self._now().isoformat()
            self._write(current)

    def describe(self, pending_segments: int) -> str:
        """One line for an operator, e.g. ``MongoDB down since 12:03:07 UTC (4 min), ...``."""
        state = self.read()
        if state.state == "closed" or state.down_since is None:
            return "MongoDB reachable"
        now = self._now()
        since = _parse_time(state.down_since)
        clock_text = since.strftime("%H:%M:%S")
        if since.date() != now.date():
            clock_text = since.strftime("%Y-%m-%d %H:%M:%S")
        noun = "segment" if pending_segments == 1 else "segments"
        next_probe = self._next_probe_at(state)
        if next_probe is None or now >= next_probe:
            probe_text = "a probe is due"
        else:
            wait = math.ceil((next_probe - now).total_seconds())
            probe_text = f"next probe in {duration_text(wait)}"
        down_for = duration_text((now - since).total_seconds())
        return (
            f"MongoDB down since {clock_text} UTC ({down_for}),"
            f" {pending_segments} {noun} waiting; {probe_text}"
        )


def breaker_of(paths: WalPaths, probe_seconds: float = 60.0) -> SinkBreaker:
    """The MongoDB circuit breaker of a source (state in its staging folder)."""
    return SinkBreaker(paths.breaker, probe_seconds)
