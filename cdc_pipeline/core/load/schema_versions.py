"""``cdc_schema_versions``: one document per table schema version, with its difference from the
previous version and the columns stored under escaped field names (``documents.mirror_field``).

Invariant: ``register_schema_versions`` only inserts (``$setOnInsert``): a version's first
record wins, so re-running a load never rewrites history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from cdc_pipeline.core.load.documents import SCHEMA_VERSIONS, field_escapes
from cdc_pipeline.core.schema import TableSchema, schema_diff
from cdc_pipeline.core.wal.segment import Manifest


def register_schema_versions(
    database: Database[Any], manifest: Manifest, first_gtids: Mapping[tuple[str, str], str]
) -> list[dict[str, Any]]:
    """Record the segment's schema versions in ``cdc_schema_versions``; return the new ones.

    Each new version carries its difference from the table's latest earlier version.
    """
    collection = database[SCHEMA_VERSIONS]
    created: list[dict[str, Any]] = []
    for table, versions in sorted(manifest.schema_versions.items()):
        known = {
            document["version"]: document
            for document in collection.find({"source": manifest.source, "table": table})
        }
        previous_docs = sorted(known.values(), key=lambda d: (d["first_sequence"], d["order"]))
        previous = TableSchema.from_dict(previous_docs[-1]["schema"]) if previous_docs else None
        for order, (version, data) in enumerate(versions.items()):
            if version in known:
                previous = TableSchema.from_dict(known[version]["schema"])
                continue
            current = TableSchema.from_dict(data)
            diff = schema_diff(previous, current)
            document = {
                "_id": f"{manifest.source}:{table}:{version}",
                "source": manifest.source,
                "table": table,
                "version": version,
                "columns": [
                    {"name": column.name, "type": column.describe()} for column in current.columns
                ],
                "primary_key": list(current.primary_key),
                "field_escapes": field_escapes(column.name for column in current.columns),
                "schema": data,
                "first_gtid": first_gtids.get((table, version)),
                "first_sequence": manifest.sequence,
                "first_batch": manifest.partition_key,
                "order": order,
                "diff_from_previous": diff,
            }
            identity = document.pop("_id")
            collection.bulk_write(
                [UpdateOne({"_id": identity}, {"$setOnInsert": document}, upsert=True)]
            )
            created.append({"table": table, "version": version, "diff": diff})
            previous = current
    return created
