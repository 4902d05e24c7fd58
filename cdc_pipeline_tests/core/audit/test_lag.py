"""``judge_lag``: the thresholds of the ``replication_lag`` check (pure logic)."""

from __future__ import annotations

import pytest

from cdc_pipeline.core.audit.lag import judge_lag
from cdc_pipeline.core.audit.status import Status
from cdc_pipeline.core.errors import ConfigError
from cdc_pipeline.core.settings import LagThresholds

THRESHOLDS = LagThresholds(warn_seconds=300, error_seconds=3600, warn_transactions=1000)


def status(seconds: float | None, transactions: int | None, pending: int = 0) -> Status:
    return Status(
        source="default",
        lag_seconds=seconds,
        lag_transactions=transactions,
        unapplied_gtids="uuid:5-9" if transactions else "",
        pending_segments=pending,
        oldest_pending="default-000000000004" if pending else None,
    )


@pytest.mark.parametrize(
    ("seconds", "transactions", "state"),
    [
        (0.0, 0, "ok"),
        (300.0, 5, "ok"),  # at the threshold: not past it
        (300.5, 5, "warn"),
        (3600.0, 5, "warn"),
        (3600.5, 5, "error"),
        (10.0, 1000, "ok"),
        (10.0, 1001, "warn"),
        (None, 3, "warn"),  # behind, but for how long is unknown
        (None, 0, "ok"),
    ],
)
def test_states_follow_the_thresholds(seconds: float | None, transactions: int, state: str) -> None:
    assert judge_lag(status(seconds, transactions), THRESHOLDS).state == state


def test_a_warning_names_what_is_behind() -> None:
    verdict = judge_lag(status(900.0, 5, pending=2), THRESHOLDS)
    assert verdict.state == "warn"
    [problem] = verdict.problems
    assert "uuid:5-9" in problem and "default-000000000004" in problem and "900 s" in problem


def test_an_unmeasurable_lag_is_never_healthy() -> None:
    down = Status(source="default", sink_error="MongoDB at 127.0.0.1:1 is unreachable")
    verdict = judge_lag(down, THRESHOLDS)
    assert verdict.state == "warn"
    assert "cannot be measured" in verdict.problems[0]
    assert "unreachable" in verdict.problems[0]


def test_thresholds_from_the_environment() -> None:
    assert LagThresholds.from_env({}) == LagThresholds()
    parsed = LagThresholds.from_env(
        {
            "CDC_LAG_WARN_SECONDS": "1.5",
            "CDC_LAG_ERROR_SECONDS": "2",
            "CDC_LAG_WARN_TRANSACTIONS": "7",
        }
    )
    assert parsed == LagThresholds(1.5, 2.0, 7)
    with pytest.raises(ConfigError, match="CDC_LAG_WARN_SECONDS"):
        LagThresholds.from_env({"CDC_LAG_WARN_SECONDS": "soon"})
    with pytest.raises(ConfigError, match="CDC_LAG_ERROR_SECONDS"):
        LagThresholds.from_env({"CDC_LAG_WARN_SECONDS": "10", "CDC_LAG_ERROR_SECONDS": "5"})
