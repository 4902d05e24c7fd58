"""Mirror collections without a source table: candidates for ``reconcile``'s stray report.

A candidate is a non-empty collection whose name is a mirror name (``<schema>.<table>``, or
``<schema>__<table>`` under CDC_MONGO_COMPAT=nx-27017) of a table in scope that has no primary
key on the source now, or does not exist. ``reconcile`` reports it as stray only if no
transaction after the checkpoint touched that name (a DROP or RENAME not loaded yet leaves a
legitimate mirror behind for a while).
"""

from __future__ import annotations

from typing import Any

from cdc_pipeline.core.audit.reconcile.report import StrayMirror
from cdc_pipeline.core.load.sink import (
    CHECKPOINTS,
    DDL_HISTORY,
    MIRROR_STATUS,
    ROW_CHANGES,
    SCHEMA_VERSIONS,
    MongoSink,
)
from cdc_pipeline.core.mysql.source import query_all
from cdc_pipeline.core.settings import table_included

PIPELINE_COLLECTIONS = frozenset(
    {ROW_CHANGES, CHECKPOINTS, MIRROR_STATUS, SCHEMA_VERSIONS, DDL_HISTORY}
)
REBUILD_SUFFIX = "__cdc_rebuild"


def table_of_collection(name: str, mirror_style: str) -> tuple[str, str] | None:
    """``(schema, table)`` a mirror collection name stands for, or None if it is no mirror name."""
    if name in PIPELINE_COLLECTIONS or name.startswith("system.") or name.endswith(REBUILD_SUFFIX):
        return None
    schema, found, table = name.partition("__" if mirror_style == "underscore" else ".")
    if not (found and schema and table):
        return None
    return schema, table


def find_stray_candidates(
    connection: Any, sink: MongoSink, patterns: tuple[str, ...]
) -> list[StrayMirror]:
    """Non-empty mirror collections in scope whose table has no primary key on the source now."""
    keyed = {
        sink.mirror(str(schema), str(table))
        for schema, table in query_all(
            connection,
            "SELECT DISTINCT TABLE_SCHEMA, TABLE_NAME FROM information_schema.STATISTICS"
            " WHERE INDEX_NAME = 'PRIMARY'",
        )
    }
    candidates = []
    for name in sorted(sink.database.list_collection_names()):
        parsed = table_of_collection(name, sink.mirror_style)
        if name in keyed or parsed is None or not table_included(*parsed, patterns):
            continue
        documents = sink.database[name].count_documents({})
        if documents:
            candidates.append(StrayMirror(name, parsed[0], parsed[1], documents))
    return candidates
