"""Is MongoDB far behind the source? The logic of the ``replication_lag`` check.

The figures come from ``core.status`` (the same ones ``cdc-pipeline status`` prints): seconds
since the oldest transaction the checkpoint lacks committed (exact once that transaction is in
the WAL, an upper bound before), and how many transactions the checkpoint lacks. This module
only judges them against thresholds.

Invariants: a lag that cannot be measured (source or MongoDB unreachable) is never reported
as healthy; a warning or error names the transactions not applied and the oldest pending batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from cdc_pipeline.core.audit.status import Status
from cdc_pipeline.core.errors import ConfigError
from cdc_pipeline.core.settings import _int, seconds_from_env

LagState = Literal["ok", "warn", "error"]


@dataclass(frozen=True)
class LagThresholds:
    """``CDC_LAG_WARN_SECONDS`` (300), ``CDC_LAG_ERROR_SECONDS`` (3600) and
    ``CDC_LAG_WARN_TRANSACTIONS`` (100,000)."""

    warn_seconds: float = 300.0
    error_seconds: float = 3600.0
    warn_transactions: int = 100_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LagThresholds:
        warn = seconds_from_env(environ, "CDC_LAG_WARN_SECONDS", cls.warn_seconds)
        error = seconds_from_env(environ, "CDC_LAG_ERROR_SECONDS", cls.error_seconds)
        transactions = _int(environ, "CDC_LAG_WARN_TRANSACTIONS", cls.warn_transactions, low=0)
        if error < warn:
            raise ConfigError(
                f"CDC_LAG_ERROR_SECONDS ({error:g}) is below CDC_LAG_WARN_SECONDS ({warn:g});"
                " set the error threshold at or above the warning one."
            )
        return cls(warn, error, transactions)


@dataclass
class LagVerdict:
    state: LagState
    problems: list[str] = field(default_factory=list)


def judge_lag(status: Status, thresholds: LagThresholds) -> LagVerdict:
    """``error`` past ``error_seconds``; ``warn`` past the warning thresholds or when the lag
    cannot be measured; ``ok`` otherwise."""
    verdict = LagVerdict("ok")
    unreachable = [text for text in (status.source_error, status.sink_error) if text]
    if unreachable or status.lag_transactions is None:
        verdict.state = "warn"
        reason = "; ".join(unreachable) or "nothing has been captured or applied yet"
        verdict.problems.append(f"the lag cannot be measured: {reason}")
        return verdict
    behind = (
        f"MongoDB lacks {status.lag_transactions:,} transactions ({status.unapplied_gtids})"
        + (
            f"; {status.pending_segments} captured segments wait, the oldest"
            f" {status.oldest_pending}"
            if status.pending_segments
            else "; capture has not read them yet"
        )
    )
    seconds = status.lag_seconds
    if seconds is not None and seconds > thresholds.error_seconds:
        verdict.state = "error"
        verdict.problems.append(
            f"replication lag {seconds:,.0f} s exceeds {thresholds.error_seconds:g} s: {behind};"
            " check that the sensor and load runs are running (cdc-pipeline status)."
        )
    elif seconds is not None and seconds > thresholds.warn_seconds:
        verdict.state = "warn"
        verdict.problems.append(
            f"replication lag {seconds:,.0f} s exceeds {thresholds.warn_seconds:g} s: {behind}."
        )
    elif seconds is None and status.lag_transactions:
        verdict.state = "warn"
        verdict.problems.append(f"the age of the lag is unknown: {behind}.")
    if status.lag_transactions > thresholds.warn_transactions:
        if verdict.state == "ok":
            verdict.state = "warn"
        verdict.problems.append(
            f"{status.lag_transactions:,} transactions behind exceeds"
            f" {thresholds.warn_transactions:,}: {behind}."
        )
    return verdict
