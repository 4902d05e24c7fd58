"""Mirror collections without a source table: candidates for ``reconcile``'s stray report.

A candidate is a non-empty mirror that ``cdc_collections`` records for a table in scope that has
no primary key on the source now, or does not exist. ``reconcile`` reports it as stray only if
no transaction after the checkpoint touched that table (a DROP or RENAME not loaded yet leaves a
legitimate mirror behind for a while). The catalog, not the collection's name, says which table
a mirror holds: names are escaped and may be shortened (``load.documents.mirror_collection``).
"""

from __future__ import annotations

from typing import Any

from cdc_pipeline.core.audit.reconcile.report import StrayMirror
from cdc_pipeline.core.load.documents import CATALOG
from cdc_pipeline.core.load.sink import MongoSink
from cdc_pipeline.core.mysql.source import query_all
from cdc_pipeline.core.settings import table_included


def find_stray_candidates(
    connection: Any, sink: MongoSink, patterns: tuple[str, ...]
) -> list[StrayMirror]:
    """Non-empty mirror collections in scope whose table has no primary key on the source now."""
    # No DISTINCT: information_schema compares names without letter case on MariaDB, so it
    # would fold the tables `Orders` and `orders` of a case-sensitive server into one.
    keyed = {
        (str(schema), str(table))
        for schema, table in query_all(
            connection,
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.STATISTICS"
            " WHERE INDEX_NAME = 'PRIMARY'",
        )
    }
    existing = set(sink.retry(lambda: sink.database.list_collection_names()))
    entries = sink.retry(lambda: list(sink.database[CATALOG].find({}).sort("_id", 1)))
    candidates = []
    for entry in entries:
        name, schema, table = str(entry["_id"]), str(entry["schema"]), str(entry["table"])
        if (schema, table) in keyed or name not in existing:
            continue
        if not table_included(schema, table, patterns):
            continue
        documents = sink.database[name].count_documents({})
        if documents:
            candidates.append(StrayMirror(name, schema, table, documents))
    return candidates
