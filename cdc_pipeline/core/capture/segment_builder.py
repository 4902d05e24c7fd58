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
from cdc_pipeline.core.images import encode_images
from cdc_pipeline.core.mysql.binlog import Ddl, RowImages, TxBegin, TxCommit
from cdc_pipeline.core.mysql.ddl import classify_ddl, ddl_context, without_secrets
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.writer import SegmentWriter, row_values


@dataclass
class SegmentBuilder:
    """Accumulates one segment: rows of the open transaction stay in memory up to a limit."""

    settings: CaptureSettings
    writer: SegmentWriter
    spill_rows: int
    mariadb: bool = True
    governance: Governance = field(default_factory=Governance)
    """Excluded and masked columns, applied to each row image before it is written."""
    open_rows: list[tuple[Any, ...]] = field(default_factory=list)
    """The open transaction's rows not yet handed to the writer, as ``row_values`` tuples."""
    open_stats: list[tuple[str, str, int]] = field(default_factory=list)
    """(table, operation, how many) of each rows event and DDL statement of the open transaction."""
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

    def _ddl_row(self, **values: Any) -> tuple[Any, ...]:
        assert self.transaction is not None
        return row_values(
            {
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
        )

    def add_rows(self, item: RowImages) -> None:
        """The rows of one rows event, as WAL rows of the open transaction. What the rows
        share (schema version, table, governance's rules) is looked up once per event."""
        transaction = self.transaction
        assert transaction is not None
        schema = item.table_schema
        images = item.images
        if self.governance.active:
            schema = self.governance.table_schema(schema)
            document = self.governance.document
            images = [
                (
                    document(item.schema, item.table, before),
                    document(item.schema, item.table, after),
                )
                for before, after in images
            ]
        table = f"{item.schema}.{item.table}"
        self.open_stats.append((table, item.op, len(images)))
        versions = self.schema_versions.setdefault(table, {})
        if schema.version not in versions:
            versions[schema.version] = schema.to_dict()
        key = schema.primary_key
        # A one-column key (the common case) as a literal, not a comprehension per row.
        one_key = key[0] if len(key) == 1 else None
        gtid, committed_at = transaction.gtid, transaction.committed_at
        source, version = self.settings.source_name, schema.version
        documents: list[dict[str, Any] | None] = []
        for before, after in images:
            image = after if after is not None else before
            if not key or not image:
                pk = None
            elif one_key is not None:
                pk = {one_key: image[one_key]}
            else:
                pk = {name: image[name] for name in key}
            documents += (pk, before, after)
        # All of the event's images in one call into the BSON encoder (``encode_images``).
        encoded = iter(encode_images(documents))
        rows, spill_rows, index = self.open_rows, self.spill_rows, self.row_index
        for pk_image, before_image, after_image in zip(encoded, encoded, encoded, strict=True):
            # The values of ROW_SCHEMA's columns in their order (``writer.row_values``), one
            # tuple per row event: the hot path.
            rows.append(
                (
                    f"{gtid}#{index}",  # event_id
                    gtid,
                    index,  # row_index
                    source,
                    item.schema,
                    item.table,
                    item.op,
                    pk_image,
                    before_image,
                    after_image,
                    version,  # schema_version
                    item.binlog_file,
                    item.binlog_pos,
                    committed_at,
                    None,  # statement
                )
            )
            index += 1
            if len(rows) >= spill_rows:
                self.writer.append_values(rows)
                rows = self.open_rows = []
                self.open_spilled = True
        self.row_index = index

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
            self._ddl_row(
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
        self.open_stats.append((f"{schema}.{table or '*'}", "ddl", 1))

    def commit(self, item: TxCommit) -> None:
        assert self.transaction is not None
        for table, op, count in self.open_stats:
            if op == "ddl":
                self.ddl += count
            else:
                self.rows += count
            per_table = self.counts.setdefault(table, {})
            per_table[op] = per_table.get(op, 0) + count
        self.writer.append_values(self.open_rows)
        self.open_rows, self.open_stats, self.open_spilled = [], [], False
        self.transactions += 1
        self.first_gtid = self.first_gtid or item.gtid
        self.last_gtid = item.gtid
        committed_at = self.transaction.committed_at
        self.first_committed_at = self.first_committed_at or committed_at
        self.last_committed_at = committed_at
        self.transaction = None
