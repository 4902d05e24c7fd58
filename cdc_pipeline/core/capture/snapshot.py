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
    * the staging lock is held throughout, so no capture tick writes between its segments.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymysql

from cdc_pipeline.core.capture.snapshot_plan import (
    SnapshotPlan,
    load_plan,
    record_recovery,
    save_plan,
)
from cdc_pipeline.core.capture.snapshot_point import SnapshotPoint, open_snapshot_point
from cdc_pipeline.core.capture.tick import capture_locked, check_source_settings
from cdc_pipeline.core.errors import SnapshotError, SourceHistoryError
from cdc_pipeline.core.gtid import GtidSet, lost_gtids
from cdc_pipeline.core.mysql.catalog import SourceTable, describe_table, list_tables
from cdc_pipeline.core.mysql.source import connect, query_all, read_state
from cdc_pipeline.core.mysql.source_rows import row_documents
from cdc_pipeline.core.mysql.table_schema import table_schema_from_source
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.values import decode_document, encode_document
from cdc_pipeline.core.wal.ledger import wal_end
from cdc_pipeline.core.wal.segment import Manifest, read_manifest, snapshot_tag
from cdc_pipeline.core.wal.staging import (
    Origin,
    WalPaths,
    capture_lock,
    list_segments,
    remove_stale_temp_files,
    write_origin,
)
from cdc_pipeline.core.wal.writer import SegmentWriter

SNAPSHOT_OP = "snapshot"
_TABLE_DEFINITION_CHANGED = 1412


@dataclass
class TableProgress:
    """How far one table is, from the manifests of its committed segments."""

    name: str
    rows_done: int = 0
    segments: int = 0
    last_key: tuple[Any, ...] | None = None
    done: bool = False
    estimate: int = 0


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
        table = progress.get(str(info["table"]))
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


def _record(plan: SnapshotPlan, table: TableProgress) -> None:
    plan.progress[table.name] = {
        "rows_done": table.rows_done,
        "segments": table.segments,
        "last_key": encode_key(table.last_key),
        "done": table.done,
    }


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
            )
            start = _bring_stream_to(settings, paths, point, result, clock)
            session = _Session(settings, paths, plan, point, start, result, on_progress, clock)
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
            f"{schema}.{table}"
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


@dataclass
class _Session:
    """Writes the remaining tables in one read view."""

    settings: CaptureSettings
    paths: WalPaths
    plan: SnapshotPlan
    point: SnapshotPoint
    start: GtidSet
    result: SnapshotResult
    on_progress: Callable[[SnapshotProgress], None] | None
    clock: Callable[[], float]
    started: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    def snapshot_table(self, connection: Any, progress: TableProgress) -> None:
        """Write ``progress``'s table from where it stopped to its end, in this read view."""
        schema, table = progress.name.split(".", 1)
        try:
            described = describe_table(connection, schema, table)
        except ValueError:  # dropped since the plan was made: recorded as done, 0 rows
            progress.done = True
            gone = SourceTable(schema, table, (), (), {})
            self._commit(self._writer(), gone, progress, 0, None, None)
            return
        if not described.primary_key:
            progress.rows_done, progress.last_key = 0, None  # all or nothing: starts over
        table_schema = table_schema_from_source(connection, schema, table)
        if table_schema.column_names != described.columns:
            hidden = sorted(set(table_schema.column_names) - set(described.columns))
            raise SnapshotError(
                f"{progress.name} has columns the binlog carries but SELECT cannot read"
                f" ({', '.join(hidden) or 'a different column order'}); leave it out with"
                " --tables (MariaDB's hidden DB_ROW_HASH columns of long UNIQUE keys are one case)."
            )
        schema_dict = table_schema.to_dict()
        self.versions[progress.name] = schema_dict["version"]
        try:
            documents = row_documents(
                connection, described, self.settings.row_group_size, after_key=progress.last_key
            )
            self._write_table(described, schema_dict, progress, documents)
        except pymysql.err.OperationalError as error:
            if error.args and error.args[0] == _TABLE_DEFINITION_CHANGED:
                raise SnapshotError(
                    f"{progress.name} was altered while the snapshot read it; run the snapshot"
                    " again: it resumes after the last finished chunk with the new columns."
                ) from None
            raise

    def _write_table(
        self,
        described: SourceTable,
        schema_dict: dict[str, Any] | None,
        progress: TableProgress,
        documents: Iterator[dict[str, Any]],
    ) -> None:
        """Write the table's rows after ``progress.last_key`` in segments of at most
        ``max_events_per_segment`` rows (one segment for a table without a key)."""
        keyed = bool(described.primary_key)
        limit = self.settings.max_events_per_segment if keyed else None
        writer, rows = self._writer(), 0
        pending: list[dict[str, Any]] = []
        last_key = progress.last_key
        for document in documents:
            if limit is not None and rows >= limit:  # more rows follow: this segment is full
                writer.append(pending)
                self._commit(writer, described, progress, rows, last_key, schema_dict)
                writer, rows, pending = self._writer(), 0, []
            pending.append(self._row(described, document, progress.rows_done + rows))
            rows += 1
            if keyed:
                last_key = tuple(document[name] for name in described.primary_key)
            if len(pending) >= self.settings.row_group_size:
                writer.append(pending)
                pending = []
        writer.append(pending)
        progress.done = True
        self._commit(writer, described, progress, rows, last_key, schema_dict)

    def _writer(self) -> SegmentWriter:
        end = wal_end(self.paths)
        sequence = end.sequence + 1 if end is not None else 1
        return SegmentWriter(self.paths, sequence, self.settings.row_group_size)

    def _row(
        self, described: SourceTable, document: dict[str, Any], ordinal: int
    ) -> dict[str, Any]:
        key = {name: document[name] for name in described.primary_key} or None
        schema, table = described.schema, described.table
        return {
            "event_id": snapshot_event_id(self.plan.snapshot_id, schema, table, ordinal),
            "gtid": snapshot_gtid(self.plan.snapshot_id, schema, table),
            "row_index": ordinal,
            "source": self.settings.source_name,
            "schema": schema,
            "table": table,
            "op": SNAPSHOT_OP,
            "pk": encode_document(key),
            "before": None,
            "after": encode_document(document),
            "schema_version": self.versions[f"{schema}.{table}"],
            "binlog_file": self.point.binlog_file,
            "binlog_pos": self.point.binlog_pos,
            "committed_at": self.point.taken_at,
            "statement": None,
        }

    def _commit(
        self,
        writer: SegmentWriter,
        described: SourceTable,
        progress: TableProgress,
        rows: int,
        last_key: tuple[Any, ...] | None,
        schema_dict: dict[str, Any] | None,
    ) -> None:
        """Commit one segment of ``described`` (``rows`` rows after ``progress.last_key``
        through ``last_key``), then record the progress in the plan."""
        end = wal_end(self.paths)
        first_of_view = self.result.segments_written == 0
        name = f"{described.schema}.{described.table}"
        taken_at = self.point.taken_at.isoformat()
        manifest = Manifest(
            source=self.settings.source_name,
            sequence=writer.sequence,
            flavor=self.point.flavor,
            start_gtid=str(end.gtid if end is not None else self.point.gtid),
            end_gtid=str(self.point.gtid),
            start_binlog_file=end.binlog_file if end is not None else self.point.binlog_file,
            start_binlog_pos=end.binlog_pos if end is not None else self.point.binlog_pos,
            end_binlog_file=self.point.binlog_file,
            end_binlog_pos=self.point.binlog_pos,
            row_count=rows,
            counts={name: {SNAPSHOT_OP: rows}} if rows else {},
            schema_versions={name: {schema_dict["version"]: schema_dict}} if schema_dict else {},
            first_committed_at=taken_at,
            last_committed_at=taken_at,
            kind=SNAPSHOT_OP,
            snapshot={
                "id": self.plan.snapshot_id,
                "table": name,
                "keyed": bool(described.primary_key),
                "after_key": encode_key(progress.last_key),
                "last_key": encode_key(last_key),
                "table_start": progress.rows_done == 0,
                "table_done": progress.done,
                "table_segment": progress.segments,
                "rows_before": progress.rows_done,
                "estimate": progress.estimate,
                "point": {
                    "gtid": str(self.point.gtid),
                    "binlog_file": self.point.binlog_file,
                    "binlog_pos": self.point.binlog_pos,
                    "taken_at": taken_at,
                    "method": self.point.method,
                },
                "recovered": self.result.recovered if first_of_view else "",
                "lost": self.result.lost if first_of_view else "",
            },
        )
        writer.commit(manifest)
        if first_of_view and self.result.recovered:
            record_recovery(
                self.paths,
                {
                    "sequence": writer.sequence,
                    "snapshot_id": self.plan.snapshot_id,
                    "from_gtid": manifest.start_gtid,
                    "point_gtid": manifest.end_gtid,
                    "recovered": self.result.recovered,
                    "lost": self.result.lost,
                    "recorded_at": datetime.now(UTC).isoformat(),
                },
            )
        progress.rows_done += rows
        progress.segments += 1
        progress.last_key = last_key
        self.result.rows_written += rows
        self.result.segments_written += 1
        _record(self.plan, progress)
        save_plan(self.paths, self.plan)
        if self.on_progress is not None:
            tables = self.result.tables.values()
            self.on_progress(
                SnapshotProgress(
                    snapshot_id=self.plan.snapshot_id,
                    table=name,
                    table_rows=progress.rows_done,
                    table_estimate=max(progress.estimate, progress.rows_done),
                    rows_done=sum(table.rows_done for table in tables),
                    rows_estimate=sum(max(t.estimate, t.rows_done) for t in tables),
                    segments=self.result.segments_written,
                    seconds=self.clock() - self.started,
                )
            )
