"""Snapshot: the rows of source tables at one consistent point, written as WAL segments.

``cdc-pipeline snapshot`` and ``snapshot_job`` run ``run_snapshot``. Its segments (manifest
``kind="snapshot"``, rows with op ``snapshot``) go through the same validation and load path as
captured ones; streaming then goes on from the snapshot's GTID state.

Invariants:
    * every row of a snapshot segment was read in one read view, and the segment's ``end_gtid``
      is exactly the set of transactions that view saw (``core.snapshot_point``);
    * before the first row of a read view is written, the WAL's stream is brought exactly to
      that view's state (``capture_locked(stop_at=...)``): each transaction is then either in
      the stream (before the snapshot rows) or in neither; nothing is applied twice or skipped.
      When the binlog no longer holds the stream (purged), the first snapshot segment starts
      where the WAL ended instead and names the transactions it recovers (``recovered``, the
      purged part in ``lost``), so ``gtid_continuity`` reports the re-baselined gap;
    * a table with a primary key is read in key order; each segment holds one contiguous key
      range (after ``after_key``, through ``last_key``) and says how many rows of its table
      came before it. Progress is those manifests: a resumed snapshot (after kill -9, lost
      source, DDL) continues after the last committed key in a new read view, re-reading and
      re-writing nothing committed; only the segment being written when it stopped is lost;
    * a table without a primary key is written as one segment (all or nothing: it cannot be
      resumed part-way) and goes to the change log only (there is no mirror to fill);
    * memory holds one page of rows and one Parquet row group, whatever the table size;
    * the staging lock is held throughout, so no capture tick writes between its segments;
    * before anything is written (the plan included), the folder's record of who writes it is
      checked as for a capture tick (``capture.identity``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pymysql

from cdc_pipeline.core.capture.identity import check_capture_identity
from cdc_pipeline.core.capture.snapshot_plan import (
    SnapshotPlan,
    SnapshotProgress,
    SnapshotResult,
    TableProgress,
    load_plan,
    save_plan,
    table_progress,
)
from cdc_pipeline.core.capture.snapshot_point import SnapshotPoint, open_snapshot_point
from cdc_pipeline.core.capture.snapshot_session import SnapshotSession
from cdc_pipeline.core.capture.tick import capture_locked, check_source_settings
from cdc_pipeline.core.errors import SnapshotError, SourceHistoryError
from cdc_pipeline.core.gtid import GtidSet, lost_gtids
from cdc_pipeline.core.mysql.catalog import list_tables
from cdc_pipeline.core.mysql.source import connect, query_all, read_state
from cdc_pipeline.core.settings import CaptureSettings, table_label
from cdc_pipeline.core.wal.ledger import wal_end
from cdc_pipeline.core.wal.staging import (
    Origin,
    WalPaths,
    capture_lock,
    remove_stale_temp_files,
    write_origin,
)


def run_snapshot(
    settings: CaptureSettings,
    patterns: tuple[str, ...] = (),
    on_progress: Callable[[SnapshotProgress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SnapshotResult:
    """Take (or resume) a snapshot of the included tables matching ``patterns``.

    Raises:
        SnapshotError: a different snapshot is unfinished, a table changed under the read view
            (run again to resume), or no table matches.
        SourceSettingError / SourceUnavailableError / StagingError: as for capture.
    """
    started = clock()
    paths = WalPaths(settings.staging_dir, settings.source_name)
    with capture_lock(paths, purpose="snapshot"):
        remove_stale_temp_files(paths)
        with connect(settings.source_url) as connection:
            notice = check_capture_identity(
                settings, paths, connection, read_state(connection), "snapshot"
            )
        plan, resumed = _plan(settings, paths, patterns)
        progress = table_progress(paths, plan)
        with connect(settings.source_url, timeout=30.0) as connection:
            state = read_state(connection)
            check_source_settings(connection, state)
            _estimate(connection, progress, state.flavor)
            point = _open_point(connection)
            result = SnapshotResult(
                plan.snapshot_id,
                str(point.gtid),
                point.method,
                resumed,
                complete=False,
                tables=progress,
                rows_kept_from_before=sum(table.rows_done for table in progress.values()),
                notice=notice or "",
            )
            start = _bring_stream_to(settings, paths, point, result, clock)
            session = SnapshotSession(
                settings, paths, plan, point, start, result, on_progress, clock
            )
            session.started = started
            for table in progress.values():
                if not table.done:
                    session.snapshot_table(connection, table)
        plan.status, plan.completed_at = "complete", datetime.now(UTC).isoformat()
        save_plan(paths, plan)
        result.complete = True
        result.seconds = clock() - started
        return result


def _plan(
    settings: CaptureSettings, paths: WalPaths, patterns: tuple[str, ...]
) -> tuple[SnapshotPlan, bool]:
    plan = load_plan(paths)
    if plan is not None and plan.status == "running":
        if patterns and tuple(patterns) != tuple(plan.patterns):
            raise SnapshotError(
                f"snapshot {plan.snapshot_id} of {', '.join(plan.patterns) or 'every table'} is"
                " unfinished; run 'cdc-pipeline snapshot' without --tables to resume it first."
            )
        plan.sessions += 1
        save_plan(paths, plan)
        return plan, True
    with connect(settings.source_url) as connection:
        names = [
            table_label(schema, table)  # one name per table, also with dots in names
            for schema, table in list_tables(connection, patterns)
            if settings.includes(schema, table)
        ]
    if not names:
        raise SnapshotError(
            f"no source table matches {', '.join(patterns) or 'CDC_INCLUDE_TABLES'} among the"
            " captured tables; check --tables and CDC_INCLUDE_TABLES."
        )
    plan = SnapshotPlan(
        snapshot_id=datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ"),
        patterns=list(patterns),
        table_names=names,
        started_at=datetime.now(UTC).isoformat(),
    )
    save_plan(paths, plan)
    return plan, False


def _estimate(connection: Any, progress: dict[str, TableProgress], flavor: str) -> None:
    """Row estimates from ``information_schema`` (MySQL: not from its 24-hour stats cache)."""
    if flavor == "mysql":
        query_all(connection, "SET SESSION information_schema_stats_expiry = 0")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME), TABLE_ROWS"
            " FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'"
        )
        estimates = {str(name): int(rows or 0) for name, rows in cursor.fetchall()}
    for name, table in progress.items():
        table.estimate = max(estimates.get(name, 0), table.rows_done)


def _open_point(connection: Any) -> SnapshotPoint:
    try:
        return open_snapshot_point(connection)
    except pymysql.err.OperationalError as error:
        raise SnapshotError(
            f"the source refused to open a consistent read view ({error.args[0]}); check its"
            " log, then run the snapshot again: it resumes."
        ) from None


def _bring_stream_to(
    settings: CaptureSettings,
    paths: WalPaths,
    point: SnapshotPoint,
    result: SnapshotResult,
    clock: Callable[[], float],
) -> GtidSet:
    """Make the WAL end exactly at ``point`` (or record why it cannot); return where the first
    snapshot segment of this read view starts."""
    end = wal_end(paths)
    if end is None:
        origin = Origin(
            str(point.gtid),
            point.flavor,
            point.binlog_file,
            point.binlog_pos,
            f"snapshot {result.snapshot_id}",
        )
        write_origin(paths, origin)
        return point.gtid
    if end.gtid.flavor != point.flavor:
        raise SourceHistoryError(
            f"the WAL was captured from a {end.gtid.flavor} server but the source is"
            f" {point.flavor}; point CDC_MYSQL_URL at the right server or use a new"
            " CDC_SOURCE_NAME."
        )
    if not point.gtid.issuperset(end.gtid):
        raise SourceHistoryError(
            f"the WAL holds transactions the source's snapshot does not"
            f" ({(end.gtid - point.gtid).describe()}): this is not the server the WAL was"
            " captured from; point CDC_MYSQL_URL at the right server."
        )
    with connect(settings.source_url) as connection:
        purged = read_state(connection).purged
    lost = lost_gtids(end.gtid, purged)
    if lost:
        result.recovered = str(point.gtid - end.gtid)
        result.lost = str(lost)
        return end.gtid
    while True:
        current = wal_end(paths)
        assert current is not None
        if current.gtid == point.gtid:
            return point.gtid
        if not point.gtid.issuperset(current.gtid):
            raise SnapshotError(
                f"bringing the stream to the snapshot point overshot it (WAL at {current.gtid},"
                f" snapshot at {point.gtid}); run the snapshot again: it takes a new read view."
            )
        tick = capture_locked(settings, paths, clock, stop_at=point.gtid)
        if tick.manifest is None:
            raise SnapshotError(
                f"the stream stopped at {current.gtid} short of the snapshot point"
                f" {point.gtid} ({tick.error or tick.stopped_because}); run the snapshot again."
            )
        result.stream_segments += 1
