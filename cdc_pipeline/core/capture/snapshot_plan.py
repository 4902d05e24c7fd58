"""The snapshot plan: which tables a snapshot covers, how far each got, and what a run did.

Invariants: the plan (``snapshot.json``) is written atomically; progress in it is written after
the segment it describes is committed, so it may lag the manifests by one segment, never lead
them (``table_progress`` takes the further of the two). It outlives retention, which may delete
loaded snapshot segments before the snapshot finishes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from cdc_pipeline.core.errors import StagingError
from cdc_pipeline.core.images import decode_document, encode_document
from cdc_pipeline.core.wal.segment import read_manifest, snapshot_tag
from cdc_pipeline.core.wal.staging import (
    WalPaths,
    list_segments,
    write_json_atomically,
)


@dataclass
class SnapshotPlan:
    snapshot_id: str
    patterns: list[str]
    table_names: list[str]
    started_at: str
    status: str = "running"  # running | complete
    completed_at: str | None = None
    sessions: int = 1
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per table: ``rows_done``, ``segments``, ``last_key`` (encoded), ``done``."""


def load_plan(paths: WalPaths) -> SnapshotPlan | None:
    """The latest snapshot's plan, or None if this source never took one."""
    path = paths.snapshot_plan
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return SnapshotPlan(**{key: data[key] for key in SnapshotPlan.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StagingError(
            f"the snapshot plan {path} cannot be read ({type(error).__name__}); move it aside"
            " and run 'cdc-pipeline snapshot' again (finished segments stay in the WAL)."
        ) from None


def save_plan(paths: WalPaths, plan: SnapshotPlan) -> None:
    write_json_atomically(paths.snapshot_plan, asdict(plan))


def record_recovery(paths: WalPaths, entry: dict[str, Any]) -> None:
    """Add a recovered gap (a snapshot that re-baselined transactions the binlog no longer had)
    to ``recoveries.json``, which retention never deletes; one entry per segment sequence."""
    entries = {item["sequence"]: item for item in read_recoveries(paths)}
    entries[entry["sequence"]] = entry
    write_json_atomically(
        paths.recoveries, {"recoveries": [entries[key] for key in sorted(entries)]}
    )


def read_recoveries(paths: WalPaths) -> list[dict[str, Any]]:
    """Every recorded recovery, oldest first (empty when none, or the file is unreadable)."""
    try:
        data = json.loads(paths.recoveries.read_text())
        return list(data["recoveries"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def describe_recovery(entry: dict[str, Any]) -> str:
    return (
        f"segment {entry['sequence']}: snapshot {entry['snapshot_id']} at {entry['point_gtid']}"
        f" re-baselined the mirrors over transactions {entry['recovered']}, which are not in the"
        f" change log (purged from the binlog before capture read them: {entry['lost']})"
    )


SNAPSHOT_OP = "snapshot"


@dataclass
class TableProgress:
    """How far one table is, from the manifests of its committed segments."""

    name: str
    rows_done: int = 0
    segments: int = 0
    last_key: tuple[Any, ...] | None = None
    done: bool = False
    estimate: int = 0


def encode_key(key: tuple[Any, ...] | None) -> str | None:
    return encode_document({"key": list(key)}) if key is not None else None


def decode_key(text: str | None) -> tuple[Any, ...] | None:
    document = decode_document(text)
    return tuple(document["key"]) if document is not None else None


def table_progress(paths: WalPaths, plan: SnapshotPlan) -> dict[str, TableProgress]:
    """Each planned table's progress: the plan's record, or the manifests of this snapshot's
    segments on disk where they are further (the plan is written just after each segment)."""
    progress = {}
    for name in plan.table_names:
        record = plan.progress.get(name, {})
        progress[name] = TableProgress(
            name,
            rows_done=int(record.get("rows_done", 0)),
            segments=int(record.get("segments", 0)),
            last_key=decode_key(record.get("last_key")),
            done=bool(record.get("done", False)),
        )
    for path in list_segments(paths):
        manifest = read_manifest(path)
        info = manifest.snapshot
        if manifest.kind != SNAPSHOT_OP or not info or info.get("id") != plan.snapshot_id:
            continue
        table = progress.get(str(info.get("label", info["table"])))
        rows_done = int(info["rows_before"]) + manifest.row_count
        if table is None or (rows_done, bool(info.get("table_done"))) <= (
            table.rows_done,
            table.done,
        ):
            continue
        table.rows_done = rows_done
        table.segments = max(table.segments, int(info.get("table_segment", 0)) + 1)
        table.last_key = decode_key(info.get("last_key"))
        table.done = bool(info.get("table_done"))
    return progress


def record_progress(plan: SnapshotPlan, table: TableProgress) -> None:
    plan.progress[table.name] = {
        "rows_done": table.rows_done,
        "segments": table.segments,
        "last_key": encode_key(table.last_key),
        "done": table.done,
    }


@dataclass
class SnapshotProgress:
    """What a progress callback sees: rows committed so far out of the estimate."""

    snapshot_id: str
    table: str
    table_rows: int
    table_estimate: int
    rows_done: int
    rows_estimate: int
    segments: int
    seconds: float

    def line(self) -> str:
        share = f" ({100 * self.rows_done / self.rows_estimate:.0f}%)" if self.rows_estimate else ""
        rate = self.rows_done / self.seconds if self.seconds > 0 else 0.0
        return (
            f"snapshot {self.snapshot_id}: {self.table} {self.table_rows:,} of"
            f" ~{self.table_estimate:,} rows; all tables {self.rows_done:,} of"
            f" ~{self.rows_estimate:,}{share}, {self.segments} segments, {rate:,.0f} rows/s"
        )


@dataclass
class SnapshotResult:
    """What one ``run_snapshot`` call did (a resumed call counts only its own work)."""

    snapshot_id: str
    point_gtid: str
    method: str
    resumed: bool
    complete: bool
    rows_written: int = 0
    segments_written: int = 0
    rows_kept_from_before: int = 0
    stream_segments: int = 0
    recovered: str = ""
    lost: str = ""
    seconds: float = 0.0
    tables: dict[str, TableProgress] = field(default_factory=dict)
    notice: str = ""
    """A change the operator should see (a failover accepted by ``capture.identity``)."""

    def summary(self) -> str:
        text = (
            f"snapshot {self.snapshot_id} {'resumed' if self.resumed else 'taken'} at"
            f" {self.point_gtid or '(empty GTID state)'} ({self.method}): {self.rows_written:,}"
            f" rows in {self.segments_written} segments in {self.seconds:.1f} s"
        )
        if self.rows_kept_from_before:
            text += f"; {self.rows_kept_from_before:,} rows kept from the interrupted run"
        if self.stream_segments:
            text += f"; stream brought to the snapshot point in {self.stream_segments} segments"
        if self.recovered:
            text += (
                f"; re-baselines transactions {self.recovered} (lost from the binlog: {self.lost})"
            )
        if self.notice:
            text += f"; NOTE: {self.notice}"
        return text + ("" if self.complete else "; NOT complete")

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "point_gtid": self.point_gtid,
            "method": self.method,
            "resumed": self.resumed,
            "complete": self.complete,
            "rows_written": self.rows_written,
            "segments_written": self.segments_written,
            "rows_kept_from_before": self.rows_kept_from_before,
            "stream_segments": self.stream_segments,
            "recovered": self.recovered,
            "lost": self.lost,
            "notice": self.notice,
            "seconds": round(self.seconds, 3),
            "tables": {
                name: {
                    "rows": table.rows_done,
                    "estimate": table.estimate,
                    "segments": table.segments,
                    "done": table.done,
                }
                for name, table in self.tables.items()
            },
        }


def snapshot_event_id(snapshot_id: str, schema: str, table: str, ordinal: int) -> str:
    """The deterministic id of the ``ordinal``-th row of a table in a snapshot."""
    return f"{snapshot_gtid(snapshot_id, schema, table)}#{ordinal}"


def snapshot_gtid(snapshot_id: str, schema: str, table: str) -> str:
    """What a snapshot row carries in its ``gtid`` field: it was read, not replicated."""
    return snapshot_tag(snapshot_id, f"{schema}.{table}")
