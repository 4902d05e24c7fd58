"""The recent loads of ``mongo_batch`` as one table in each materialization's metadata, so the
asset page answers "is it keeping up?" at a glance (Dagster also plots the numeric metadata
``lag at load (s)`` and ``rows per second`` on the asset's Plots tab).

The table is read from Dagster's own event log (the materializations of ``mongo_batch``), not
from a second ledger: it shows exactly what the UI already recorded, newest first.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg

HISTORY_LOADS = 20


def _number(metadata: Mapping[str, Any], name: str) -> float | None:
    value = metadata.get(name)
    raw = getattr(value, "value", value)
    return float(raw) if isinstance(raw, int | float) and raw >= 0 else None


def history_markdown(loads: Sequence[Mapping[str, Any]]) -> str:
    """``loads``: newest first, each with partition, at (datetime), rows, rows per second and
    lag at load (s) (None when unknown). Returns a summary line and a markdown table."""
    if not loads:
        return "no loads recorded yet"
    lags = [load["lag"] for load in loads if load["lag"] is not None]
    speeds = [load["speed"] for load in loads if load["speed"] is not None]
    summary = f"last {len(loads)} loads"
    if lags:
        summary += f": lag median {statistics.median(lags):,.1f} s, max {max(lags):,.1f} s"
    if speeds:
        summary += f"; median {statistics.median(speeds):,.0f} rows/s"
    lines = [
        summary,
        "",
        "| partition | loaded at (UTC) | rows | rows/s | lag at load (s) |",
        "|---|---|---:|---:|---:|",
    ]
    for load in loads:
        lag = "" if load["lag"] is None else f"{load['lag']:,.1f}"
        speed = "" if load["speed"] is None else f"{load['speed']:,.0f}"
        rows = "" if load["rows"] is None else f"{load['rows']:,.0f}"
        at = load["at"].strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"| {load['partition']} | {at} | {rows} | {speed} | {lag} |")
    return "\n".join(lines)


_MONGO_BATCH = dg.AssetKey("mongo_batch")


def recent_loads(
    instance: dg.DagsterInstance,
    newest: Mapping[str, Any] | None,
    batch_key: dg.AssetKey = _MONGO_BATCH,
) -> str:
    """The table for a materialization about to be recorded (``newest``: its metadata and
    partition, listed first), followed by the recorded ones."""
    loads: list[dict[str, Any]] = []
    if newest is not None:
        loads.append(
            {
                "partition": newest["partition"],
                "at": datetime.now(UTC),
                "rows": _number(newest, "rows"),
                "speed": _number(newest, "rows per second"),
                "lag": _number(newest, "lag at load (s)"),
            }
        )
    records = instance.fetch_materializations(batch_key, limit=HISTORY_LOADS)
    for record in records.records:
        materialization = record.asset_materialization
        if materialization is None or "rows" not in materialization.metadata:
            continue
        metadata = materialization.metadata
        loads.append(
            {
                "partition": materialization.partition or "",
                "at": datetime.fromtimestamp(record.timestamp, tz=UTC),
                "rows": _number(metadata, "rows"),
                "speed": _number(metadata, "rows per second"),
                "lag": _number(metadata, "lag at load (s)"),
            }
        )
    return history_markdown(loads[:HISTORY_LOADS])
