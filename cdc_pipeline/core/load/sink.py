"""Apply one WAL segment to MongoDB: the change log, mirror collections, DDL effects, checkpoint.

Layout (../shared/CONTRACT.md): ``row_changes`` keyed by event id; one mirror collection per
table with a primary key, named ``<schema>.<table>``, ``_id`` = the key; ``cdc_ddl`` keyed by
GTID; ``cdc_checkpoints`` keyed by source name.

Invariants:
    * idempotent without transactions: every write sets a document, a collection or a key to the
      value the WAL dictates (replace-upserts with ``_id`` in the replacement, deletes, a
      TRUNCATE as delete-all, a DROP, a RENAME that replaces its target); replaying a segment
      from its start, after a crash at any point, ends in the same state;
    * within a segment, mirror writes are applied in phases separated by DDL statements that
      change mirrors, and within a phase only the last change per key is written (coalesced), so
      unordered bulk writes are safe;
    * the checkpoint is written only after every write of the segment succeeded.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from bson import json_util
from bson.decimal128 import Decimal128
from pymongo import DeleteOne, MongoClient, ReplaceOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, OperationFailure

from cdc_pipeline.core.errors import CdcError
from cdc_pipeline.core.load.retry import RetryPolicy, call_with_retries
from cdc_pipeline.core.load.write_pipeline import WritePipeline
from cdc_pipeline.core.mysql.ddl import changes_columns, classify_ddl
from cdc_pipeline.core.settings import MongoSettings
from cdc_pipeline.core.values import decode_document
from cdc_pipeline.core.wal.segment import Manifest

ROW_CHANGES = "row_changes"
CHECKPOINTS = "cdc_checkpoints"
MIRROR_STATUS = "cdc_mirror_status"
SCHEMA_VERSIONS = "cdc_schema_versions"
DDL_HISTORY = "cdc_ddl"
RESERVED_FIELDS = ("_id", "_cdc")
COLUMN_PREFIX = "_src"
BULK_CHUNK = 1_000
PHASE_KEYS = 5_000

T = TypeVar("T")


class SinkWriteError(CdcError):
    """MongoDB refused a write for a reason retrying cannot fix."""


MIRROR_NAME_STYLES = ("dotted", "underscore")


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


def mirror_document(
    identity: Any, values: Mapping[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    """A mirror document: ``_id`` first, the columns under their mirror field names, ``_cdc``."""
    document: dict[str, Any] = {"_id": identity}
    document.update((mirror_field(name), value) for name, value in values.items())
    document["_cdc"] = meta
    return document


def _insert_document(document: dict[str, Any]) -> ReplaceOne[Any]:
    return ReplaceOne(id_filter(document["_id"]), document, upsert=True)


Rebaseline = Callable[[str, str], "Iterable[tuple[Any, dict[str, Any]]] | None"]
"""Reads a source table now: ``(mirror _id, column values)`` per row, None if it is gone."""


def _decimals_to_strings(value: Any) -> Any:
    if isinstance(value, Decimal128):
        return str(value.to_decimal())
    if isinstance(value, dict):
        return {key: _decimals_to_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decimals_to_strings(item) for item in value]
    return value


def _key_text(value: Any) -> str:
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


@dataclass
class ApplyReport:
    """What applying one segment wrote."""

    partition_key: str
    row_changes: int = 0
    mirror_upserts: int = 0
    mirror_deletes: int = 0
    ddl_applied: list[str] = field(default_factory=list)
    tables_without_key: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class _Phase:
    """Mirror changes since the last mirror-changing DDL, coalesced to the last change per key."""

    actions: dict[tuple[str, str], tuple[str, Any, dict[str, Any] | None]] = field(
        default_factory=dict
    )

    def set(self, collection: str, key: Any, document: dict[str, Any] | None) -> None:
        identity = (collection, _key_text(key))
        self.actions.pop(identity, None)  # keep insertion order = order of last change
        self.actions[identity] = (collection, key, document)


class MongoSink:
    """Writes segments into one MongoDB database; every write is retried when transient."""

    def __init__(
        self,
        database: Database[Any],
        retry_policy: RetryPolicy | None = None,
        mirror_style: str = "dotted",
        rebaseline: Rebaseline | None = None,
        decimals_as_strings: bool = False,
    ):
        self.database = database
        self.retry_policy = retry_policy or RetryPolicy()
        self.mirror_style = mirror_style
        self.rebaseline = rebaseline
        self.decimals_as_strings = decimals_as_strings
        self.native_rename = not decimals_as_strings  # both are the nx-27017 profile
        self._writes: WritePipeline | None = None

    def decode(self, text: str | None) -> dict[str, Any] | None:
        """A WAL document (row image or key) as this server stores it: ``decode_document``,
        with Decimal128 as exact strings when ``decimals_as_strings``. Everything built from
        decoded images (change-log and mirror documents, mirror ids) is then storable as is."""
        return decode_document(text, decimals_as_strings=self.decimals_as_strings)

    def stored(self, value: Any) -> Any:
        """``value`` as this server can store it (Decimal128 as its exact string on servers
        without Decimal128, CDC_MONGO_COMPAT=nx-27017); keys and documents alike."""
        return _decimals_to_strings(value) if self.decimals_as_strings else value

    def mirror(self, schema: str, table: str) -> str:
        return mirror_collection(schema, table, self.mirror_style)

    def _retry(self, action: Callable[[], T]) -> T:
        return call_with_retries(action, self.retry_policy)

    # -- checkpoint ------------------------------------------------------------------------
    def read_checkpoint(self, source: str) -> Checkpoint | None:
        document = self._retry(lambda: self.database[CHECKPOINTS].find_one({"_id": source}))
        return Checkpoint.from_document(document) if document else None

    def write_checkpoint(self, manifest: Manifest) -> Checkpoint:
        checkpoint = Checkpoint(
            source=manifest.source,
            gtid=manifest.end_gtid,
            flavor=manifest.flavor,
            binlog_file=manifest.end_binlog_file,
            binlog_pos=manifest.end_binlog_pos,
            last_partition=manifest.partition_key,
            last_sequence=manifest.sequence,
            last_committed_at=manifest.last_committed_at,
            updated_at=None,
        )
        now = datetime.now(UTC)
        checkpoint.updated_at = str(now)
        document = {
            "_id": checkpoint.source,
            "gtid": checkpoint.gtid,
            "flavor": checkpoint.flavor,
            "binlog_file": checkpoint.binlog_file,
            "binlog_pos": checkpoint.binlog_pos,
            "last_partition": checkpoint.last_partition,
            "last_sequence": checkpoint.last_sequence,
            "last_committed_at": checkpoint.last_committed_at,
            "updated_at": now,
        }
        self._retry(
            lambda: self.database[CHECKPOINTS].replace_one(
                {"_id": checkpoint.source}, document, upsert=True
            )
        )
        return checkpoint

    # -- data ------------------------------------------------------------------------------
    def apply(self, rows: Iterable[Mapping[str, Any]], manifest: Manifest) -> ApplyReport:
        """Write every row change of a segment (in order) into the change log and mirrors.

        Bulk writes run on a ``WritePipeline`` thread while the next rows are prepared; it is
        drained before each DDL's effects and before returning, so the caller's checkpoint
        follows every write of the segment.
        """
        with WritePipeline() as writes:
            self._writes = writes
            try:
                if manifest.kind == "snapshot":
                    return self._apply_snapshot(rows, manifest)
                return self._apply_changes(rows, manifest)
            finally:
                self._writes = None

    def _submit_bulk(self, collection: str, operations: list[Any]) -> None:
        if self._writes is None:
            self._bulk(collection, operations)
        else:
            self._writes.submit(lambda: self._bulk(collection, operations))

    def _drain(self) -> None:
        if self._writes is not None:
            self._writes.drain()

    def _apply_changes(self, rows: Iterable[Mapping[str, Any]], manifest: Manifest) -> ApplyReport:
        batch = manifest.partition_key
        report = ApplyReport(batch)
        primary_keys = _primary_keys(manifest)
        changes: list[ReplaceOne[Any]] = []
        phase = _Phase()
        for row in rows:
            table = f"{row['schema']}.{row['table']}"
            per_table = report.counts.setdefault(table, {})
            per_table[row["op"]] = per_table.get(row["op"], 0) + 1
            if row["op"] == "ddl":
                self._flush_changes(changes, report)
                self._flush_phase(phase, report)
                self._drain()
                self._apply_ddl(row, batch, report)
                continue
            before = self.decode(row["before"])
            after = self.decode(row["after"])
            changes.append(
                ReplaceOne(
                    {"_id": row["event_id"]},
                    _change_document(row, self.decode(row["pk"]), before, after, batch),
                    upsert=True,
                )
            )
            if len(changes) >= BULK_CHUNK:
                self._flush_changes(changes, report)
            key_columns = primary_keys.get((table, row["schema_version"]), ())
            if not key_columns:
                report.tables_without_key[table] = report.tables_without_key.get(table, 0) + 1
                continue
            self._stage_mirror(phase, row, before, after, key_columns, batch)
            if len(phase.actions) >= PHASE_KEYS:
                self._flush_phase(phase, report)
        self._flush_changes(changes, report)
        self._flush_phase(phase, report)
        return report

    def _apply_snapshot(self, rows: Iterable[Mapping[str, Any]], manifest: Manifest) -> ApplyReport:
        """Write a snapshot segment: rows of a keyed table into its mirror, of a keyless one
        into the change log (op ``snapshot``), as ``core.snapshot`` describes.

        The first segment of a keyed table empties its mirror and marks it in
        ``cdc_mirror_status`` (verify reports it as not yet comparable); the table's last segment
        removes the mark. Replaying any of these steps gives the same state.
        """
        batch = manifest.partition_key
        report = ApplyReport(batch)
        info = manifest.snapshot or {}
        table_name = str(info.get("table", ""))
        schema, _, table = table_name.partition(".")
        collection = self.mirror(schema, table)
        keyed = bool(info.get("keyed"))
        if keyed and info.get("table_start"):
            status = {
                "_id": collection,
                "reason": f"snapshot {info.get('id')} is filling it",
                "stale_since_gtid": manifest.end_gtid,
                "snapshot": info.get("id"),
                "batch": batch,
            }
            self._retry(
                lambda: self.database[MIRROR_STATUS].replace_one(
                    {"_id": collection}, status, upsert=True
                )
            )
            self._retry(lambda: self.database[collection].delete_many({}))
        declared: dict[str, Any] = next(
            iter(manifest.schema_versions.get(table_name, {}).values()), {}
        )
        key_columns = tuple(declared.get("primary_key") or ())
        changes: list[ReplaceOne[Any]] = []
        phase = _Phase()
        for row in rows:
            per_table = report.counts.setdefault(table_name, {})
            per_table[row["op"]] = per_table.get(row["op"], 0) + 1
            after = self.decode(row["after"])
            if keyed:
                self._stage_mirror(phase, row, None, after, key_columns, batch)
                if len(phase.actions) >= PHASE_KEYS:
                    self._flush_phase(phase, report)
                continue
            report.tables_without_key[table_name] = report.tables_without_key.get(table_name, 0) + 1
            changes.append(
                ReplaceOne(
                    {"_id": row["event_id"]},
                    _change_document(row, self.decode(row["pk"]), None, after, batch),
                    upsert=True,
                )
            )
            if len(changes) >= BULK_CHUNK:
                self._flush_changes(changes, report)
        self._flush_changes(changes, report)
        self._flush_phase(phase, report)
        if keyed and info.get("table_done"):
            self._drain()
            self._retry(lambda: self.database[MIRROR_STATUS].delete_one({"_id": collection}))
        return report

    def _stage_mirror(
        self,
        phase: _Phase,
        row: Mapping[str, Any],
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        key_columns: tuple[str, ...],
        batch: str,
    ) -> None:
        collection = self.mirror(row["schema"], row["table"])
        meta = {
            "gtid": row["gtid"],
            "batch": batch,
            "schema_version": row["schema_version"],
            "committed_at": row["committed_at"],
        }
        old_key = {name: before[name] for name in key_columns} if before else None
        if after is None:
            phase.set(collection, mirror_id(old_key or {}), None)
            return
        new_key = {name: after[name] for name in key_columns}
        if old_key is not None and _key_text(old_key) != _key_text(new_key):
            phase.set(collection, mirror_id(old_key), None)  # a key update moves it
        identity = mirror_id(new_key)
        phase.set(collection, identity, mirror_document(identity, after, meta))

    def _flush_changes(self, changes: list[ReplaceOne[Any]], report: ApplyReport) -> None:
        if not changes:
            return
        pending = list(changes)
        self._submit_bulk(ROW_CHANGES, pending)
        report.row_changes += len(pending)
        changes.clear()

    def _flush_phase(self, phase: _Phase, report: ApplyReport) -> None:
        by_collection: dict[str, list[Any]] = {}
        for collection, key, document in phase.actions.values():
            if document is None:
                by_collection.setdefault(collection, []).append(DeleteOne(id_filter(key)))
                report.mirror_deletes += 1
            else:
                by_collection.setdefault(collection, []).append(
                    ReplaceOne(id_filter(key), document, upsert=True)
                )
                report.mirror_upserts += 1
        for collection, operations in by_collection.items():
            for start in range(0, len(operations), BULK_CHUNK):
                self._submit_bulk(collection, operations[start : start + BULK_CHUNK])
        phase.actions.clear()

    def _bulk(self, collection: str, operations: list[Any]) -> None:
        try:
            self._retry(lambda: self.database[collection].bulk_write(operations, ordered=False))
        except BulkWriteError as error:
            first = (error.details.get("writeErrors") or [{}])[0]
            raise SinkWriteError(
                f"MongoDB refused writes to {collection} (code {first.get('code')}); the"
                " segment stays in the WAL: fix the collection (validation rules, indexes) and"
                " re-run the load."
            ) from None

    def _apply_ddl(self, row: Mapping[str, Any], batch: str, report: ApplyReport) -> None:
        statement = classify_ddl(row["statement"] or "", row["schema"])
        history = {
            "_id": row["gtid"],
            "gtid": row["gtid"],
            "source": row["source"],
            "schema": row["schema"],
            "table": row["table"],
            "kind": statement.kind,
            "statement": row["statement"],
            "committed_at": row["committed_at"],
            "binlog_file": row["binlog_file"],
            "binlog_pos": row["binlog_pos"],
            "batch": batch,
        }
        self._retry(
            lambda: self.database[DDL_HISTORY].replace_one(
                {"_id": row["gtid"]}, history, upsert=True
            )
        )
        if statement.kind == "truncate":
            for schema, table in statement.targets:
                name = self.mirror(schema, table)
                self._retry(lambda name=name: self.database[name].delete_many({}))  # type: ignore[misc]
        elif statement.kind == "drop_table":
            for schema, table in statement.targets:
                name = self.mirror(schema, table)
                self._retry(lambda name=name: self.database.drop_collection(name))  # type: ignore[misc]
        elif statement.kind == "rename_table":
            for old, new in statement.renames:
                self._rename(self.mirror(*old), self.mirror(*new))
        elif statement.kind == "alter_table" and changes_columns(row["statement"] or ""):
            meta = {
                "gtid": row["gtid"],
                "batch": batch,
                "schema_version": None,
                "committed_at": row["committed_at"],
                "rebuilt_after_ddl": True,
            }
            for schema, table in statement.targets:
                report.ddl_applied.append(self._rebuild_mirror(schema, table, meta))
            return
        else:
            return
        report.ddl_applied.append(
            f"{statement.kind} {', '.join('.'.join(t) for t in statement.targets)}"
        )

    def _rename(self, old: str, new: str) -> None:
        """Rename ``old`` over ``new``; a missing ``old`` means the rename already happened.

        A server that acknowledges a rename without doing it, or refuses it without an error
        code, gets a copy instead: drop ``new``, copy every document, drop ``old``
        (replay-safe). With CDC_MONGO_COMPAT=nx-27017 the copy is used directly (that server's
        renames act on its admin database and can collide there).
        """

        def rename() -> None:
            if old not in self.database.list_collection_names():
                return
            if self.native_rename:
                try:
                    self.database[old].rename(new, dropTarget=True)
                except OperationFailure as error:
                    # 26: renamed by an earlier attempt; no code: a server that cannot rename
                    # this way (mongoeco): copy instead.
                    if error.code not in (26, None):
                        raise
            if old in self.database.list_collection_names():
                self._copy_collection(old, new)

        self._retry(rename)

    def _copy_collection(self, old: str, new: str) -> None:
        self.database.drop_collection(new)
        batch: list[dict[str, Any]] = []
        for document in self.database[old].find():
            batch.append(document)
            if len(batch) >= BULK_CHUNK:
                self.database[new].insert_many(batch, ordered=False)
                batch = []
        if batch:
            self.database[new].insert_many(batch, ordered=False)
        self.database.drop_collection(old)

    def _rebuild_mirror(self, schema: str, table: str, meta: dict[str, Any]) -> str:
        """Replace a mirror with the source table's current rows (after a column change).

        Builds ``<mirror>__cdc_rebuild`` then renames it over the mirror, so readers never see
        a half-built mirror on a real MongoDB. Returns what was done, for the report.
        """
        name = self.mirror(schema, table)
        if self.rebaseline is None:
            self._mark_stale(name, meta, "no source connection to re-read the table")
            return f"{name} marked stale (no source connection)"
        rows = self.rebaseline(schema, table)
        if rows is None:
            self._mark_stale(name, meta, "the table no longer exists on the source")
            return f"{name} marked stale (table gone from the source)"
        temporary = f"{name}__cdc_rebuild"
        self._retry(lambda: self.database.drop_collection(temporary))
        count = 0
        batch: list[Any] = []
        for identity, values in rows:
            document = mirror_document(self.stored(identity), values, meta)
            batch.append(_insert_document(self.stored(document)))
            count += 1
            if len(batch) >= BULK_CHUNK:
                self._bulk(temporary, batch)
                batch = []
        if batch:
            self._bulk(temporary, batch)
        if count:
            self._rename(temporary, name)
        else:
            self._retry(lambda: self.database.drop_collection(name))
        self._retry(lambda: self.database[MIRROR_STATUS].delete_one({"_id": name}))
        return f"{name} rebuilt from the source ({count} rows)"

    def _mark_stale(self, name: str, meta: dict[str, Any], reason: str) -> None:
        status = {"_id": name, "stale_since_gtid": meta["gtid"], "reason": reason, **meta}
        self._retry(
            lambda: self.database[MIRROR_STATUS].replace_one({"_id": name}, status, upsert=True)
        )


def _change_document(
    row: Mapping[str, Any],
    pk: dict[str, Any] | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    batch: str,
) -> dict[str, Any]:
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


def _primary_keys(manifest: Manifest) -> dict[tuple[str, str], tuple[str, ...]]:
    keys: dict[tuple[str, str], tuple[str, ...]] = {}
    for table, versions in manifest.schema_versions.items():
        for version, schema in versions.items():
            keys[(table, version)] = tuple(schema.get("primary_key") or ())
    return keys


def dumps_for_comparison(documents: Iterable[Mapping[str, Any]]) -> str:
    """A canonical text of documents (sorted by ``_id``), for dump-equality checks in tests."""
    texts = sorted(_key_text(dict(document)) for document in documents)
    return json.dumps(texts)


@contextlib.contextmanager
def open_sink(
    settings: MongoSettings,
    retry_policy: RetryPolicy | None = None,
    rebaseline: Rebaseline | None = None,
) -> Iterator[MongoSink]:
    """A ``MongoSink`` on ``settings``; the client is closed on exit. Fails fast (5 s) per try."""
    client: MongoClient[Any] = MongoClient(
        settings.uri, serverSelectionTimeoutMS=5_000, connectTimeoutMS=5_000, tz_aware=True
    )
    try:
        yield MongoSink(
            client[settings.database],
            retry_policy or RetryPolicy(deadline=settings.retry_seconds),
            settings.mirror_name_style,
            rebaseline,
            settings.decimals_as_strings,
        )
    finally:
        client.close()
