"""Is MongoDB far behind the source? The logic of the ``replication_lag`` check.

The figures come from ``core.status`` (the same ones ``cdc-pipeline status`` prints): seconds
since the oldest transaction the checkpoint lacks committed (exact once that transaction is in
the WAL, an upper bound before), and how many transactions the checkpoint lacks. This module
only judges them against thresholds.

Invariants: a lag that cannot be measured (source or MongoDB unreachable) is never reported
as healthy; a warning or error names the transactions not applied and the oldest pending batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cdc_pipeline.core.audit.status import Status
from cdc_pipeline.core.settings import LagThresholds

LagState = Literal["ok", "warn", "error"]


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
