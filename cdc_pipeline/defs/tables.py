"""One pair of assets per captured table: the source table (external, MySQL/MariaDB) and its
copy in MongoDB (the mirror collection, or for a table without a primary key its slice of the
change log), with lineage from one to the other and through ``mongo_batch``.

The tables come from ``tables.json`` in the source's staging folder (``core.wal.tables``: every
table the WAL has carried rows of, kept by capture) plus the include patterns that name one
table exactly, read when the code location loads: a table first captured after that appears on
the next reload (the UI's "Reload" on the code location, or a restart of ``dagster dev``). Its
materializations are recorded from its first load all the same, under the same key.

Each load run reports, for every table its segment touched, a materialization of the copy:
rows applied by operation, the mirror's document count, the table's last change (GTID and
commit time) and the lag at load. ``source_sink_reconciliation`` reports each table's result as
that copy's ``matches_source`` check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from cdc_pipeline.core.errors import ConfigError
from cdc_pipeline.core.load.loader import SegmentLoad
from cdc_pipeline.core.settings import (
    SYSTEM_SCHEMAS,
    exact_table,
    source_name_from_env,
    staging_dir_from_env,
    table_label,
    table_scope_from_env,
)
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline.core.wal.tables import seen_tables

TABLE_CHECK = "matches_source"


@dataclass(frozen=True)
class TableAsset:
    source: str
    schema: str
    table: str
    keyed: bool

    @property
    def label(self) -> str:
        """As reports name it (``table_label``)."""
        return table_label(self.schema, self.table)

    @property
    def source_key(self) -> dg.AssetKey:
        return source_table_key(self.source, self.schema, self.table)

    @property
    def copy_key(self) -> dg.AssetKey:
        return copy_key(self.source, self.schema, self.table)


def source_table_key(source: str, schema: str, table: str) -> dg.AssetKey:
    return dg.AssetKey([source, "source", schema, table])


def copy_key(source: str, schema: str, table: str) -> dg.AssetKey:
    return dg.AssetKey([source, "mongodb", schema, table])


def captured_tables(environ: Mapping[str, str] | None = None) -> list[TableAsset]:
    """The tables to show: those the WAL has carried (``tables.json``) and those the include
    patterns name exactly (keyed assumed until the WAL says otherwise)."""
    source = source_name_from_env(environ)
    paths = WalPaths(staging_dir_from_env(environ), source)
    try:
        seen = seen_tables(paths)
    except OSError:
        seen = []  # an unreadable staging folder: capture and status say so, loudly
    found = {
        (item.schema, item.table): TableAsset(source, item.schema, item.table, item.keyed)
        for item in seen
    }
    try:
        patterns = table_scope_from_env(environ).get("CDC_INCLUDE_TABLES", ())
    except ConfigError:
        patterns = ()  # a malformed pattern: capture refuses it with its sentence
    for pattern in patterns:
        named = exact_table(pattern)
        if named is not None and named[0].lower() not in SYSTEM_SCHEMAS and named not in found:
            found[named] = TableAsset(source, *named, keyed=True)
    return [found[key] for key in sorted(found)]


def table_specs(
    tables: Sequence[TableAsset], batch_key: dg.AssetKey, group_prefix: str = ""
) -> list[dg.AssetSpec]:
    """The source table and MongoDB copy of each table (groups ``source_tables`` and
    ``mongodb_tables``, each after ``group_prefix``)."""
    specs = []
    for table in tables:
        specs.append(
            dg.AssetSpec(
                table.source_key,
                group_name=f"{group_prefix}source_tables",
                kinds={"mysql"},
                description=f"The source table {table.label} (source {table.source}), read from"
                " the binlog by binlog_capture_sensor.",
            )
        )
        copy = (
            f"The mirror of {table.label}: one document per row, kept equal to the source table"
            " by the load runs (cdc_collections names its collection)."
            if table.keyed
            else f"{table.label} has no primary key, so it has no mirror: its changes are in"
            " row_changes only."
        )
        specs.append(
            dg.AssetSpec(
                table.copy_key,
                deps=[table.source_key, batch_key],
                group_name=f"{group_prefix}mongodb_tables",
                kinds={"mongodb"},
                description=copy,
                metadata={"source table": table.label, "keyed": table.keyed},
            )
        )
    return specs


def table_check_specs(tables: Sequence[TableAsset]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            TABLE_CHECK,
            asset=table.copy_key,
            description=f"The mirror equals the source table {table.label} row by row (a hash"
            " per row), as source_sink_reconciliation found it.",
        )
        for table in tables
        if table.keyed
    ]


def table_materializations(load: SegmentLoad, source: str) -> list[dg.AssetMaterialization]:
    """One materialization of the MongoDB copy of each table the loaded segment touched."""
    events = []
    report = load.apply
    for label, (schema, table) in sorted(report.tables.items()):
        if not schema or not table:
            continue  # a statement that names no table (CREATE DATABASE, ...)
        ops = report.counts.get(label, {})
        rows = sum(count for op, count in ops.items() if op != "ddl")
        gtid, committed_at = report.last_change.get(label, ("", ""))
        metadata: dict[str, Any] = {
            "rows applied": rows,
            "rows by op": dg.MetadataValue.json(dict(sorted(ops.items()))),
            "batch": load.partition_key,
            "last change gtid": gtid,
            "last change committed at": committed_at,
        }
        if label in report.mirror_documents:
            metadata["mirror documents"] = report.mirror_documents[label]
        lag = _lag_seconds(committed_at)
        if lag is not None:
            metadata["lag at load (s)"] = lag
        events.append(
            dg.AssetMaterialization(asset_key=copy_key(source, schema, table), metadata=metadata)
        )
    return events


def _lag_seconds(committed_at: str) -> float | None:
    try:
        moment = datetime.fromisoformat(committed_at)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round((datetime.now(UTC) - moment).total_seconds(), 1)
