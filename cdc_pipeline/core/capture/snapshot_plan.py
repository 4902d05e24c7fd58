"""The snapshot plan: which tables a snapshot covers and how far each got (``snapshot.json``).

Invariants: the plan is written atomically; progress in it is written after the segment it
describes is committed, so it may lag the manifests by one segment, never lead them (a reader
takes the further of the two, ``core.snapshot.table_progress``). It outlives retention, which
may delete loaded snapshot segments before the snapshot finishes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from cdc_pipeline.core.errors import StagingError
from cdc_pipeline.core.wal.staging import WalPaths, write_json_atomically


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
