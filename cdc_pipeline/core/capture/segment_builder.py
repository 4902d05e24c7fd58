"""Builds one WAL segment from transaction items, never splitting a transaction.

Invariants: a transaction's rows reach the segment file only at its commit, unless it grows past
``spill_rows``, when they are streamed to the file early (``open_spilled``: such a transaction
cannot be dropped alone, the whole segment must be); counts and schema versions only ever
include committed transactions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdc_pipeline.core.governance import Governance
from cdc_pipeline.core.images import encode_image
from cdc_pipeline.core.mysql.binlog import Ddl, RowImage, TxBegin, TxCommit
from cdc_pipeline.core.mysql.ddl import classify_ddl, ddl_context, without_secrets
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.writer import SegmentWriter


@dataclass
class SegmentBuilder:
    """Accumulates one segment: rows of the open transaction stay in memory up to a limit."""

    settings: CaptureSettings
    writer: SegmentWriter
    spill_rows: int
    mariadb: bool = True
    governance: Governance = field(default_factory=Governance)
    """Excluded and masked columns, applied to each row image before it is written."""
    open_rows: list[dict[str, Any]] = field(default_factory=list)
    open_stats: list[tuple[str, str]] = field(default_factory=list)
    open_spilled: bool = False
    transaction: TxBegin | None = None
    row_index: int = 0
    rows: int = 0
    ddl: int = 0
    transactions: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    schema_versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_gtid: str | None = None
    last_gtid: str | None = None
    first_committed_at: datetime | None = None
    last_committed_at: datetime | None = None

    def begin(self, item: TxBegin) -> None:
        self.transaction, self.row_index = item, 0
        self.open_rows, self.open_stats, self.open_spilled = [], [], False

    def _row(self, **values: Any) -> dict[str, Any]:
        assert self.transaction is not None
        return {
            "gtid": self.transaction.gtid,
            "source": self.settings.source_name,
            "committed_at": self.transaction.committed_at,
            "pk": None,
            "before": None,
            "after": None,
            "schema_version": None,
            "table": None,
            "statement": None,
            **values,
        }

    def add_row(self, item: RowImage) -> None:
        transaction = self.transaction
        assert transaction is not None
        schema = item.table_schema
        if self.governance.active:
            schema = self.governance.table_schema(schema)
            before = self.governance.document(item.schema, item.table, item.before)
            after = self.governance.document(item.schema, item.table, item.after)
            item = item._replace(before=before, after=after)
        image = item.after if item.after is not None else item.before
        pk = (
            {name: image[name] for name in schema.primary_key}
            if schema.primary_key and image
            else None
        )
        # The columns of ROW_SCHEMA, built as one literal (one per row event: the hot path).
        self.open_rows.append(
            {
                "event_id": f"{transaction.gtid}#{self.row_index}",
                "gtid": transaction.gtid,
                "row_index": self.row_index,
                "source": self.settings.source_name,
                "schema": item.schema,
                "table": item.table,
                "op": item.op,
                "pk": encode_image(pk),
                "before": encode_image(item.before),
                "after": encode_image(item.after),
                "schema_version": schema.version,
                "binlog_file": item.binlog_file,
                "binlog_pos": item.binlog_pos,
                "committed_at": transaction.committed_at,
                "statement": None,
            }
        )
        self.row_index += 1
        table = f"{item.schema}.{item.table}"
        self.open_stats.append((table, item.op))
        versions = self.schema_versions.setdefault(table, {})
        if schema.version not in versions:
            versions[schema.version] = schema.to_dict()
        if len(self.open_rows) >= self.spill_rows:
            self.writer.append(self.open_rows)
            self.open_rows, self.open_spilled = [], True

    def add_ddl(self, item: Ddl) -> None:
        assert self.transaction is not None
        classified = classify_ddl(
            item.statement,
            item.schema,
            mariadb=self.mariadb,
            ansi_quotes=item.ansi_quotes,
            no_backslash_escapes=item.no_backslash_escapes,
        )
        includes = self.settings.includes
        # Every table the statement acts on counts, a rename's new name too (a table renamed
        # into the included ones must reach its mirror); a whole schema's drop counts when the
        # patterns name the schema at all.
        named = [
            *classified.targets,
            *(new for _, new in classified.renames),
            *classified.rebuilds,
        ]
        if classified.kind == "drop_database":
            wanted = self.settings.includes_schema(classified.targets[0][0])
        elif not classified.targets:
            wanted = includes(item.schema, "*")
        else:
            wanted = any(includes(schema, table) for schema, table in named)
        if not wanted:
            return
        # A table renamed from outside the included ones has no mirror to move: the loader
        # reads it from the source instead (``ddl_context``'s ``rebuild``).
        entering = [new for old, new in classified.renames if includes(*new) and not includes(*old)]
        table = classified.targets[0][1] if classified.targets else None
        self.open_rows.append(
            self._row(
                event_id=f"{self.transaction.gtid}#ddl",
                row_index=self.row_index,
                schema=classified.targets[0][0] if classified.targets else item.schema,
                table=table,
                op="ddl",
                statement=without_secrets(
                    item.statement, mariadb=self.mariadb, ansi_quotes=item.ansi_quotes
                ),
                after=ddl_context(
                    item.schema, item.ansi_quotes, entering, item.no_backslash_escapes
                ),
                binlog_file=item.binlog_file,
                binlog_pos=item.binlog_pos,
            )
        )
        schema = classified.targets[0][0] if classified.targets else item.schema
        self.open_stats.append((f"{schema}.{table or '*'}", "ddl"))

    def commit(self, item: TxCommit) -> None:
        assert self.transaction is not None
        for table, op in self.open_stats:
            if op == "ddl":
                self.ddl += 1
            else:
                self.rows += 1
            per_table = self.counts.setdefault(table, {})
            per_table[op] = per_table.get(op, 0) + 1
        self.writer.append(self.open_rows)
        self.open_rows, self.open_stats, self.open_spilled = [], [], False
        self.transactions += 1
        self.first_gtid = self.first_gtid or item.gtid
        self.last_gtid = item.gtid
        committed_at = self.transaction.committed_at
        self.first_committed_at = self.first_committed_at or committed_at
        self.last_committed_at = committed_at
        self.transaction = None
