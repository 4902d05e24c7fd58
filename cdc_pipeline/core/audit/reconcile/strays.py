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
from cdc_pipeline.core.load.documents import (
    table_of_collection,
)
from cdc_pipeline.core.load.sink import MongoSink
from cdc_pipeline.core.mysql.source import query_all
from cdc_pipeline.core.settings import table_included


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
