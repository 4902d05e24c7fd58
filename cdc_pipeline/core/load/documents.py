"""Every MongoDB document shape the loader writes, and the names of the collections.

Layout (../shared/CONTRACT.md): ``row_changes`` keyed by event id; one mirror collection per
table with a primary key, named ``<schema>.<table>`` (``<schema>__<table>`` under
CDC_MONGO_COMPAT=nx-27017), ``_id`` = the key, the columns by field name, ``_cdc`` = where the
version came from; ``cdc_checkpoints`` keyed by source name; ``cdc_schema_versions``,
``cdc_ddl`` keyed by GTID, ``cdc_mirror_status`` for mirrors marked stale or being filled,
``cdc_rebuilds`` for the progress of a mirror rebuild (to resume it after a restart).

Invariants: ``mirror_field`` is one-to-one and never yields ``_id`` or ``_cdc``; a mirror
document always carries ``_id`` (the nx-27017 stand-in gives a replacement without one a new
ObjectId); ``table_of_collection`` inverts ``mirror_collection`` for every name it accepts.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bson
from bson import json_util
from pymongo import ReplaceOne

ROW_CHANGES = "row_changes"
CHECKPOINTS = "cdc_checkpoints"
MIRROR_STATUS = "cdc_mirror_status"
SCHEMA_VERSIONS = "cdc_schema_versions"
DDL_HISTORY = "cdc_ddl"
RESERVED_FIELDS = ("_id", "_cdc")
COLUMN_PREFIX = "_src"
MIRROR_NAME_STYLES = ("dotted", "underscore")
CATALOG = "cdc_collections"
LOAD_HALTS = "cdc_load_halts"
DEAD_LETTERS = "cdc_dead_letters"
LARGE_VALUES = "cdc_large_values"
REBUILDS = "cdc_rebuilds"
PIPELINE_COLLECTIONS = frozenset(
    {
        ROW_CHANGES,
        CHECKPOINTS,
        MIRROR_STATUS,
        SCHEMA_VERSIONS,
        DDL_HISTORY,
        CATALOG,
        DEAD_LETTERS,
        LOAD_HALTS,
        REBUILDS,
    }
)
MAX_NAMESPACE_BYTES = 255
"""MongoDB's limit on ``<database>.<collection>`` in bytes (4.4 and later)."""
_HASH_HEX = 20
# Schemas whose dotted mirror names would be MongoDB's own (system.*) or the GridFS bucket's.
_RESERVED_SCHEMAS = frozenset({"system", LARGE_VALUES})
_DOTTED_ESCAPED = frozenset("%.$\x00")
_FIELD_ESCAPED = frozenset("%.$\x00")
_LITERAL = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_PLAIN_PART = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


def _percent(text: str, escaped: frozenset[str]) -> str:
    return "".join(f"%{ord(char):02X}" if char in escaped else char for char in text)


def _dotted_part(text: str, *, schema: bool) -> str:
    """One side of a dotted name: ``%``, ``.``, ``$`` and NUL as ``%XX``; a reserved schema name
    gets its first letter escaped too (``system`` -> ``%73ystem``)."""
    encoded = _percent(text, _DOTTED_ESCAPED)
    if schema and text in _RESERVED_SCHEMAS:
        encoded = f"%{ord(text[0]):02X}" + encoded[1:]
    return encoded


def _underscore_part(text: str) -> str:
    """One side of an underscore name, for the nx-27017 stand-in: its names hold only
    ``[A-Za-z0-9_]``, may not start with a digit, and ignore letter case (SQLite tables).

    A name that starts with a lower-case letter and holds only lower-case letters, digits and
    single inner underscores stays as it is. Any other gets ``_x`` and then its characters,
    lower-case letters and digits as they are and every other UTF-8 byte as ``_`` + two hex
    digits (``c--d`` -> ``_xc_2d_2dd``, ``Orders`` -> ``_x_4frders``). So a name is all lower
    case (two tables differing only in case get two names), an encoded side never contains
    ``__`` nor ends with ``_``, and the first ``__`` of a name is always the separator.
    """
    if _PLAIN_PART.fullmatch(text):
        return text
    body = "".join(
        char if char in _LITERAL else "".join(f"_{byte:02x}" for byte in char.encode())
        for char in text
    )
    return "_x" + body


def _fits(name: str, database: str) -> bool:
    return len(database.encode()) + 1 + len(name.encode()) <= MAX_NAMESPACE_BYTES


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:_HASH_HEX]


def _shortened(name: str, marker: str, digest: str, database: str) -> str:
    """``name`` cut (on a character boundary) so that ``name + marker + digest`` fits."""
    room = MAX_NAMESPACE_BYTES - len(database.encode()) - 1 - len(marker) - len(digest)
    cut = name
    while len(cut.encode()) > room:
        cut = cut[:-1]
    return cut + marker + digest


def mirror_collection(schema: str, table: str, style: str = "dotted", database: str = "") -> str:
    """The mirror collection of a table; one-to-one: no two tables ever share a collection.

    ``dotted`` (CDC_MONGO_COMPAT=standard): ``<schema>.<table>``, with ``%``, ``.``, ``$`` and NUL
    written ``%XX`` (``shop.order_lines`` stays as it is; table ``a.b`` -> ``shop.a%2Eb``), and a
    schema named ``system`` or ``cdc_large_values`` escaped (``%73ystem.t``).
    ``underscore`` (CDC_MONGO_COMPAT=nx-27017): ``<schema>__<table>``, each side as
    ``_underscore_part`` writes it.
    A name that would not fit MongoDB's 255-byte namespace (with ``database``) is cut and given
    a hash of the table's name after a marker that no other name contains: ``%h`` (dotted) or a
    leading ``__h`` (underscore). ``cdc_collections`` records every name given; nothing parses
    one back.
    """
    if style == "underscore":
        name = f"{_underscore_part(schema)}__{_underscore_part(table)}"
        if _fits(name, database):
            return name
        prefix = f"__h{_digest(schema, table)}_"
        return prefix + _shortened(name, "", "", database + prefix)
    name = f"{_dotted_part(schema, schema=True)}.{_dotted_part(table, schema=False)}"
    if _fits(name, database):
        return name
    return _shortened(name, "%h", _digest(schema, table), database)


def rebuild_collection(mirror: str, style: str = "dotted") -> str:
    """The temporary collection a mirror is rebuilt in before it is renamed over the mirror.

    Named from a hash of the mirror's name after a marker no mirror name contains, so it is
    short and never another table's mirror: ``cdc_rebuild.%r<hash>`` or ``__r<hash>``.
    """
    digest = _digest(mirror)
    return f"__r{digest}" if style == "underscore" else f"cdc_rebuild.%r{digest}"


def is_rebuild_collection(name: str) -> bool:
    return name.startswith(("__r", "cdc_rebuild.%r"))


def mirror_field(column: str) -> str:
    """The field name of a source column in a mirror document (and in a composite ``_id``).

    A column that MongoDB cannot hold as a field (starting with ``$``, containing ``.`` or NUL)
    or that would clash with ``_id``, ``_cdc`` or this escape (starting with ``_src``) is stored
    as ``_src`` + the column with ``%``, ``.``, ``$`` and NUL written ``%XX``: ``_id`` ->
    ``_src_id``, ``$price`` -> ``_src%24price``, ``a.b`` -> ``_srca%2Eb``. Every other column
    keeps its name. One-to-one, and ``column_of_field`` reverses it.
    """
    if (
        column in RESERVED_FIELDS
        or column.startswith(COLUMN_PREFIX)
        or column.startswith("$")
        or "." in column
        or "\x00" in column
    ):
        return COLUMN_PREFIX + _percent(column, _FIELD_ESCAPED)
    return column


def column_of_field(field_name: str) -> str:
    """The source column a mirror field stands for (the inverse of ``mirror_field``)."""
    if not field_name.startswith(COLUMN_PREFIX):
        return field_name
    return urllib.parse.unquote(field_name[len(COLUMN_PREFIX) :])


def field_escapes(columns: Iterable[str]) -> dict[str, str]:
    """The columns stored under another field name, ``{column: field}``: what
    ``cdc_collections`` and ``cdc_schema_versions`` record."""
    return {column: mirror_field(column) for column in columns if mirror_field(column) != column}


def catalog_document(
    collection: str, source: str, schema: str, table: str, style: str, columns: Iterable[str]
) -> dict[str, Any]:
    """The ``cdc_collections`` entry of a mirror: which table it holds, the field escapes."""
    return {
        "_id": collection,
        "source": source,
        "schema": schema,
        "table": table,
        "style": style,
        "field_escapes": field_escapes(columns),
    }


def mirror_id(key: Mapping[str, Any]) -> Any:
    """``_id`` of a mirror document: the bare value of a one-column key, else the key document
    (its fields named as ``mirror_field`` names them, so ``id_filter`` can address each)."""
    if len(key) == 1:
        return next(iter(key.values()))
    return {mirror_field(name): value for name, value in key.items()}


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
    names = tuple(values)
    fields = _MIRROR_FIELDS.get(names, ())
    if fields == ():
        escaped = tuple(mirror_field(name) for name in names)
        fields = None if escaped == names else escaped
        if len(_MIRROR_FIELDS) >= 4096:  # a bound for a process that sees endless new tables
            _MIRROR_FIELDS.clear()
        _MIRROR_FIELDS[names] = fields
    if fields is None:  # no column needs escaping: the common case
        document.update(values)
    else:
        document.update(zip(fields, values.values(), strict=True))
    document["_cdc"] = meta
    return document


_MIRROR_FIELDS: dict[tuple[str, ...], tuple[str, ...] | None] = {}
"""Column names -> their mirror field names (None when all are unchanged), per name tuple."""


def key_label(value: Any) -> str:
    """A key as operators read it in messages: relaxed JSON (``2``, ``{"a": 1, "b": "x"}``)."""
    return json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS)


def key_text(value: Any) -> str:
    """A canonical text of a key (or any value): equal BSON values, equal texts."""
    return json_util.dumps(value, json_options=json_util.CANONICAL_JSON_OPTIONS)


def key_identity(value: Any) -> bytes:
    """The in-memory twin of ``key_text`` (equal BSON values, equal bytes; int32 and int64,
    and Decimal128 of different exponents, stay apart as in the text) at a tenth of its cost;
    never stored: stored keys use ``key_text``."""
    return bson.encode({"": value})


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
    governance: dict[str, Any] | None = None
    """The column rules the last applied segment was written under (its manifest's)."""

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
            governance=document.get("governance"),
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
            **({"governance": self.governance} if self.governance else {}),
        }


def change_document(
    row: Mapping[str, Any],
    pk: Mapping[str, Any] | None,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    batch: str,
) -> dict[str, Any]:
    """The ``row_changes`` document of one WAL row (``_id`` = its event id), images decoded
    (dicts) or raw (``RawBSONDocument``s of format 2's images, ``MongoSink._add_change_raw``)."""
    head, tail = change_fields(row, batch)
    return {**head, "pk": pk, "before": before, "after": after, **tail}


CHANGE_EVENT_FIELDS = ("gtid", "row_index")
"""A ``row_changes`` document's fields after its ``_id`` (the row's event id), in order."""
CHANGE_TABLE_FIELDS = ("source", "schema", "table", "op")
"""Its fields next, before the images: the same for every row of one table and operation."""
CHANGE_POSITION_FIELDS = ("schema_version", "binlog_file", "binlog_pos", "committed_at")
"""Its fields after the images, then ``batch``: the same for every row of one rows event."""


def change_fields(row: Mapping[str, Any], batch: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``row_changes`` document's fields before its images and after them, in order (the
    raw path, ``raw_documents.ChangeLogDocuments``, encodes the same groups of fields around
    the images' bytes)."""
    head = {"_id": row["event_id"]}
    for name in (*CHANGE_EVENT_FIELDS, *CHANGE_TABLE_FIELDS):
        head[name] = row[name]
    tail = {name: row[name] for name in CHANGE_POSITION_FIELDS}
    tail["batch"] = batch
    return head, tail
