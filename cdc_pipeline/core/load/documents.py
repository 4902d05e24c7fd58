"""Every MongoDB document shape the loader writes, and the names of the collections.

Layout (../shared/CONTRACT.md): ``row_changes`` keyed by event id; one mirror collection per
table with a primary key, named ``<schema>.<table>`` (``<schema>__<table>`` under
CDC_MONGO_COMPAT=nx-27017), ``_id`` = the key, the columns by field name, ``_cdc`` = where the
version came from; ``cdc_checkpoints`` keyed by source name; ``cdc_schema_versions``,
``cdc_ddl`` keyed by GTID, ``cdc_mirror_status`` for mirrors marked stale or being filled.

Invariants: ``mirror_field`` is one-to-one and never yields ``_id`` or ``_cdc``; a mirror
document always carries ``_id`` (the nx-27017 stand-in gives a replacement without one a new
ObjectId); ``table_of_collection`` inverts ``mirror_collection`` for every name it accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import json_util
from pymongo import ReplaceOne

ROW_CHANGES = "row_changes"
CHECKPOINTS = "cdc_checkpoints"
MIRROR_STATUS = "cdc_mirror_status"
SCHEMA_VERSIONS = "cdc_schema_versions"
DDL_HISTORY = "cdc_ddl"
PIPELINE_COLLECTIONS = frozenset(
    {ROW_CHANGES, CHECKPOINTS, MIRROR_STATUS, SCHEMA_VERSIONS, DDL_HISTORY}
)
RESERVED_FIELDS = ("_id", "_cdc")
COLUMN_PREFIX = "_src"
MIRROR_NAME_STYLES = ("dotted", "underscore")
REBUILD_SUFFIX = "__cdc_rebuild"


def mirror_collection(schema: str, table: str, style: str = "dotted") -> str:
    """The mirror collection of a table: ``<schema>.<table>`` (the CONTRACT's name).

    ``style="underscore"`` gives ``<schema>__<table>`` instead, for MongoDB-compatible servers
    that refuse dots in collection names (the nx-27017 stand-in); see CDC_MONGO_COMPAT.
    """
    return f"{schema}__{table}" if style == "underscore" else f"{schema}.{table}"


def mirror_field(column: str) -> str:
    """The field name of a source column in a mirror document, never clashing with ``_id``/``_cdc``.

    A column named ``_id`` or ``_cdc``, or any name starting with ``_src``, gets the prefix
    ``_src``: ``_id`` -> ``_src_id``, ``_srcx`` -> ``_src_srcx``. The mapping is one-to-one.
    """
    if column in RESERVED_FIELDS or column.startswith(COLUMN_PREFIX):
        return COLUMN_PREFIX + column
    return column


def mirror_id(key: Mapping[str, Any]) -> Any:
    """``_id`` of a mirror document: the bare value of a one-column key, else the key document."""
    if len(key) == 1:
        return next(iter(key.values()))
    return dict(key)


def id_filter(identity: Any) -> dict[str, Any]:
    """The filter selecting one mirror document by ``_id``.

    A composite key is matched field by field (``{"_id.a": 1, "_id.b": "x"}``), not as one
    embedded document: equivalent here, since every ``_id`` of a mirror holds exactly its
    table's key columns, and it also works on the nx-27017 stand-in, which cannot compare a
    document-valued ``_id`` (docs/decisions.md).
    """
    if isinstance(identity, dict):
        return {f"_id.{name}": value for name, value in identity.items()}
    return {"_id": identity}


def upsert_by_id(document: dict[str, Any]) -> ReplaceOne[Any]:
    """The idempotent write of a mirror document: replace (or insert) it by its ``_id``."""
    return ReplaceOne(id_filter(document["_id"]), document, upsert=True)


def mirror_meta(
    gtid: str, batch: str, schema_version: str | None, committed_at: Any, **extra: Any
) -> dict[str, Any]:
    """The ``_cdc`` field of a mirror document: where its current version came from."""
    return {
        "gtid": gtid,
        "batch": batch,
        "schema_version": schema_version,
        "committed_at": committed_at,
        **extra,
    }


def mirror_document(
    identity: Any, values: Mapping[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    """A mirror document: ``_id`` first, the columns under their mirror field names, ``_cdc``."""
    document: dict[str, Any] = {"_id": identity}
    document.update((mirror_field(name), value) for name, value in values.items())
    document["_cdc"] = meta
    return document


def key_text(value: Any) -> str:
    """A canonical text of a key (or any value): equal BSON values, equal texts."""
    return json_util.dumps(value, json_options=json_util.CANONICAL_JSON_OPTIONS)


@dataclass
class Checkpoint:
    """What has been applied for one source: written after the data it covers."""

    source: str
    gtid: str
    flavor: str
    binlog_file: str
    binlog_pos: int
    last_partition: str
    last_sequence: int
    last_committed_at: str | None = None
    updated_at: str | None = None

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Checkpoint:
        return cls(
            source=document["_id"],
            gtid=document["gtid"],
            flavor=document.get("flavor", ""),
            binlog_file=document.get("binlog_file", ""),
            binlog_pos=int(document.get("binlog_pos", 0)),
            last_partition=document.get("last_partition", ""),
            last_sequence=int(document.get("last_sequence", 0)),
            last_committed_at=document.get("last_committed_at"),
            updated_at=str(document.get("updated_at")) if document.get("updated_at") else None,
        )

    def to_document(self, updated_at: datetime) -> dict[str, Any]:
        """The ``cdc_checkpoints`` document (``_id`` = source name)."""
        return {
            "_id": self.source,
            "gtid": self.gtid,
            "flavor": self.flavor,
            "binlog_file": self.binlog_file,
            "binlog_pos": self.binlog_pos,
            "last_partition": self.last_partition,
            "last_sequence": self.last_sequence,
            "last_committed_at": self.last_committed_at,
            "updated_at": updated_at,
        }


def change_document(
    row: Mapping[str, Any],
    pk: dict[str, Any] | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    batch: str,
) -> dict[str, Any]:
    """The ``row_changes`` document of one WAL row (``_id`` = its event id), images decoded."""
    return {
        "_id": row["event_id"],
        "gtid": row["gtid"],
        "row_index": row["row_index"],
        "source": row["source"],
        "schema": row["schema"],
        "table": row["table"],
        "op": row["op"],
        "pk": pk,
        "before": before,
        "after": after,
        "schema_version": row["schema_version"],
        "binlog_file": row["binlog_file"],
        "binlog_pos": row["binlog_pos"],
        "committed_at": row["committed_at"],
        "batch": batch,
    }


def table_of_collection(name: str, mirror_style: str) -> tuple[str, str] | None:
    """``(schema, table)`` a mirror collection name stands for, or None if it is no mirror name."""
    if name in PIPELINE_COLLECTIONS or name.startswith("system.") or name.endswith(REBUILD_SUFFIX):
        return None
    schema, found, table = name.partition("__" if mirror_style == "underscore" else ".")
    if not (found and schema and table):
        return None
    return schema, table


def rebuild_collection(mirror: str) -> str:
    """The temporary collection a mirror is rebuilt in before it is renamed over the mirror."""
    return mirror + REBUILD_SUFFIX
