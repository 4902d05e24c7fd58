"""One read view of a snapshot: each planned table's rows written into snapshot segments.

``capture.snapshot.run_snapshot`` opens the read view and brings the stream to it; a
``SnapshotSession`` then reads each table (in key order, resuming after its last committed key)
and commits segments of at most ``max_events_per_segment`` rows, recording progress after each.
The invariants are ``capture.snapshot``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymysql

from cdc_pipeline.core.capture.snapshot_plan import (
    SNAPSHOT_OP,
    SnapshotPlan,
    SnapshotProgress,
    SnapshotResult,
    TableProgress,
    encode_key,
    record_progress,
    record_recovery,
    save_plan,
    snapshot_event_id,
    snapshot_gtid,
)
from cdc_pipeline.core.capture.snapshot_point import SnapshotPoint
from cdc_pipeline.core.errors import SnapshotError
from cdc_pipeline.core.governance import Governance
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.images import encode_image
from cdc_pipeline.core.mysql.catalog import SourceTable, describe_table
from cdc_pipeline.core.mysql.source_rows import row_documents
from cdc_pipeline.core.mysql.table_schema import table_schema_from_source
from cdc_pipeline.core.settings import CaptureSettings, parse_table_label
from cdc_pipeline.core.wal.ledger import wal_end
from cdc_pipeline.core.wal.segment import Manifest
from cdc_pipeline.core.wal.staging import (
    WalPaths,
)
from cdc_pipeline.core.wal.writer import SegmentWriter

_TABLE_DEFINITION_CHANGED = 1412


@dataclass
class SnapshotSession:
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
    governance: Governance = field(init=False)

    def __post_init__(self) -> None:
        self.governance = Governance(self.settings.governance)

    def snapshot_table(self, connection: Any, progress: TableProgress) -> None:
        """Write ``progress``'s table from where it stopped to its end, in this read view."""
        schema, table = parse_table_label(progress.name)
        try:
            described = describe_table(connection, schema, table)
        except ValueError:  # dropped since the plan was made: recorded as done, 0 rows
            progress.done = True
            gone = SourceTable(schema, table, (), (), {})
            self._commit(self._writer(), gone, progress, 0, None, None)
            return
        # A table without a key, or whose key is masked (its raw values may be kept nowhere),
        # is read all or nothing, in one segment: it starts over.
        resumable = bool(described.primary_key) and not self.governance.key_masked(
            schema, table, described.columns, described.primary_key
        )
        if not resumable:
            progress.rows_done, progress.last_key = 0, None
        table_schema = table_schema_from_source(connection, schema, table)
        if table_schema.column_names != described.columns:
            hidden = sorted(set(table_schema.column_names) - set(described.columns))
            raise SnapshotError(
                f"{progress.name} has columns the binlog carries but SELECT cannot read"
                f" ({', '.join(hidden) or 'a different column order'}); leave it out with"
                " --tables (MariaDB's hidden DB_ROW_HASH columns of long UNIQUE keys are one case)."
            )
        schema_dict = self.governance.table_schema(table_schema).to_dict()
        self.versions[f"{schema}.{table}"] = schema_dict["version"]
        try:
            documents = row_documents(
                connection, described, self.settings.row_group_size, after_key=progress.last_key
            )
            self._write_table(described, schema_dict, progress, documents, resumable)
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
        resumable: bool,
    ) -> None:
        """Write the table's rows after ``progress.last_key`` in segments of at most
        ``max_events_per_segment`` rows (one segment when the read cannot resume)."""
        keyed = resumable
        limit = self.settings.max_events_per_segment if keyed else None
        writer, rows = self._writer(), 0
        pending: list[dict[str, Any]] = []
        last_key = progress.last_key
        for document in documents:
            if limit is not None and rows >= limit:  # more rows follow: this segment is full
                writer.append(pending)
                self._commit(writer, described, progress, rows, last_key, schema_dict)
                writer, rows, pending = self._writer(), 0, []
            row = self.governance.document(described.schema, described.table, document)
            pending.append(self._row(described, row or {}, progress.rows_done + rows))
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
            "pk": encode_image(key),
            "before": None,
            "after": encode_image(document),
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
            governance=self.governance.record(),
            snapshot={
                "id": self.plan.snapshot_id,
                "table": name,
                "label": progress.name,
                "schema_name": described.schema,
                "table_name": described.table,
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
        record_progress(self.plan, progress)
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
