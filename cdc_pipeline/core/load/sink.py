"""Apply one WAL segment to MongoDB: the change log, the mirror collections, the checkpoint.

The documents' shapes and the collections' names are ``load.documents``; what a DDL statement
does to the mirrors (TRUNCATE, DROP, RENAME, a rebuild after a column change) is
``load.mirror_ddl``.

Invariants:
    * idempotent without transactions: every write sets a document, a collection or a key to the
      value the WAL dictates (replace-upserts with ``_id`` in the replacement, deletes, a
      TRUNCATE as delete-all, a DROP, a RENAME that replaces its target; the change log is
      inserted, and an insert refused as a duplicate key is sent again as a replace-upsert);
      replaying a segment from its start, after a crash at any point, ends in the same state;
    * within a segment, mirror writes are applied in phases separated by DDL statements that
      change mirrors, and within a phase only the last change per key is written (coalesced), so
      unordered bulk writes are safe;
    * the checkpoint is written only after every write of the segment succeeded;
    * no single bulk command is meant to hold the server for long: ``bulk`` sends its operations
      in pieces sized from how long the previous piece took (``next_bulk_size``), so a server
      that runs one command at a time still answers the driver's heartbeat between them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from bson.decimal128 import Decimal128
from bson.errors import InvalidDocument
from pymongo import DeleteOne, InsertOne, MongoClient, ReplaceOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from cdc_pipeline.core.errors import TableNameCollisionError, UnloadableRowError
from cdc_pipeline.core.governance import RulesInForce
from cdc_pipeline.core.images import decode_document, is_bson_image, raw_document
from cdc_pipeline.core.load.dead_letters import DeadLetters, Refusal
from cdc_pipeline.core.load.documents import (
    CATALOG,
    CHECKPOINTS,
    LOAD_HALTS,
    MIRROR_STATUS,
    ROW_CHANGES,
    SCHEMA_VERSIONS,
    Checkpoint,
    catalog_document,
    change_document,
    id_filter,
    key_identity,
    key_label,
    key_text,
    mirror_collection,
    mirror_document,
    mirror_id,
    mirror_meta,
    upsert_by_id,
)
from cdc_pipeline.core.load.large_values import LargeValues, may_not_fit, may_not_fit_values
from cdc_pipeline.core.load.mirror_ddl import apply_ddl, rebuild_plan
from cdc_pipeline.core.load.raw_documents import (
    CdcElements,
    ChangeLogDocuments,
    RawDocument,
    RawMirror,
    server_images,
)
from cdc_pipeline.core.load.rebuild import BULK_CHUNK, Rebaseline
from cdc_pipeline.core.load.retry import RetryPolicy, call_with_retries
from cdc_pipeline.core.load.row_runs import Images, RowRun, change_log_documents, mirror_writes
from cdc_pipeline.core.load.write_commands import send_raw
from cdc_pipeline.core.load.write_pipeline import WritePipeline
from cdc_pipeline.core.settings import MongoSettings, table_label
from cdc_pipeline.core.wal.segment import Manifest

PHASE_KEYS = 5_000
BULK_SECONDS = 1.0
"""How long one bulk write command should take at most (``next_bulk_size``)."""
MIN_BULK = 20
HEARTBEAT_TIMEOUT_MS = 20_000
"""connectTimeoutMS of the sink's client, which pymongo also uses as the socket timeout of its
heartbeat: a heartbeat that times out marks the server unknown and cancels every operation in
flight (``_OperationCancelled``). The driver's default; server selection stays at 5 s."""

T = TypeVar("T")


def _decimals_to_strings(value: Any) -> Any:
    if isinstance(value, Decimal128):
        return str(value.to_decimal())
    if isinstance(value, dict):
        return {key: _decimals_to_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decimals_to_strings(item) for item in value]
    return value


@dataclass
class ApplyReport:
    """What applying one segment wrote."""

    partition_key: str
    row_changes: int = 0
    mirror_upserts: int = 0
    mirror_deletes: int = 0
    ddl_applied: list[str] = field(default_factory=list)
    tables_without_key: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    tables: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Each table label of ``counts`` -> (schema, table), as the rows named it."""
    last_change: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Per table label: the GTID and commit time of its last change in the segment."""
    mirror_documents: dict[str, int] = field(default_factory=dict)
    """Per keyed table label: its mirror's document count after the segment (MongoDB's
    estimate from collection metadata: no scan)."""

    def count(self, table: str, schema: str, name: str, op: str, rows: int = 1) -> None:
        """``rows`` more rows of ``op`` on the table labelled ``table`` (``schema``.``name``)."""
        per_table = self.counts.get(table)
        if per_table is None:
            per_table = self.counts[table] = {}
            self.tables[table] = (schema, name)
        per_table[op] = per_table.get(op, 0) + rows


@dataclass
class _Phase:
    """Mirror changes since the last mirror-changing DDL, coalesced to the last change per key."""

    actions: dict[tuple[str, bytes], tuple[str, Any, Any, str, Any]] = field(default_factory=dict)

    def set(
        self,
        collection: str,
        key: Any,
        document: dict[str, Any] | None,
        gtid: str,
        insert: bool = False,
    ) -> None:
        """The key's last change: ``document`` (None: deleted), written as an insert when the
        row inserted it (``MongoSink._replace_existing`` covers a key already there), else as
        a replace-upsert."""
        operation = InsertOne(document) if insert and document is not None else None
        self.put(collection, key_identity(key), key, document, gtid, operation)

    def put(
        self,
        collection: str,
        identity: bytes,
        key: Any,
        document: Mapping[str, Any] | None,
        gtid: str,
        operation: Any,
    ) -> None:
        """``set`` with the key's identity given, and the write when already made (a
        ``load.raw_documents`` write: its key is not decoded, None)."""
        slot = (collection, identity)
        self.actions.pop(slot, None)  # keep insertion order = order of last change
        self.actions[slot] = (collection, key, document, gtid, operation)


class MongoSink:
    """Writes segments into one MongoDB database; every write is retried when transient."""

    def __init__(
        self,
        database: Database[Any],
        retry_policy: RetryPolicy | None = None,
        mirror_style: str = "dotted",
        rebaseline: Rebaseline | None = None,
        decimals_as_strings: bool = False,
        native_rename: bool = True,
        large_values: bool | None = None,
        on_unloadable: str = "halt",
        progress: Callable[[str], None] | None = None,
    ):
        """``mirror_style``, ``decimals_as_strings`` and ``native_rename`` describe what the
        server accepts (``MongoSettings`` derives them from CDC_MONGO_COMPAT): dotted collection
        names, Decimal128, and ``renameCollection`` within the database. ``large_values``:
        values a document cannot hold go to GridFS (``load.large_values``); by default in the
        dotted style only, since the nx-27017 stand-in has no size limit and refuses the
        bucket's dotted collection names. ``progress`` gets the lines a long operation (a
        mirror rebuild) reports as it goes, for the run log."""
        self.database = database
        self.progress: Callable[[str], None] = progress or (lambda _line: None)
        self.rules = RulesInForce()
        """The column rules of the segment being applied (``core.governance``)."""
        self.retry_policy = retry_policy or RetryPolicy()
        self.mirror_style = mirror_style
        self.rebaseline = rebaseline
        self.decimals_as_strings = decimals_as_strings
        self.raw_images = not decimals_as_strings
        """Change-log documents take WAL format 2's images as raw BSON; not where Decimal128
        must become strings, which needs every image decoded."""
        self.native_rename = native_rename
        self._writes: WritePipeline | None = None
        self._bulk_size = BULK_CHUNK
        self._names: dict[tuple[str, str], str] = {}
        self._registered: dict[str, str] = {}
        self._versions_seen: dict[tuple[str, str, Any], str] = {}
        self._raw_mirrors: dict[tuple[str, str, Any], RawMirror | None] = {}
        if large_values is None:
            large_values = mirror_style == "dotted"
        self.large = LargeValues(database, self.retry) if large_values else None
        self.on_unloadable = on_unloadable
        self.dead: DeadLetters | None = None
        self.source = ""
        self._batch = ""

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
        """The mirror collection of a table (``documents.mirror_collection``)."""
        name = self._names.get((schema, table))
        if name is None:
            name = mirror_collection(schema, table, self.mirror_style, self.database.name)
            self._names[(schema, table)] = name
        return name

    # -- cdc_collections -------------------------------------------------------------------
    def register(self, source: str, schema: str, table: str, columns: Iterable[str]) -> str:
        """Record in ``cdc_collections`` which table the mirror holds and its field escapes,
        before anything is written to it; returns the mirror's name.

        Written once per name and escapes in this sink's life. A name already recorded for
        another table stops the load (``TableNameCollisionError``): two tables never share a
        collection, even on a hash collision of shortened names.
        """
        name = self.mirror(schema, table)
        document = catalog_document(name, source, schema, table, self.mirror_style, columns)
        marker = key_text(document)
        if self._registered.get(name) == marker:
            return name
        catalog = self.database[CATALOG]
        existing = self.retry(lambda: catalog.find_one({"_id": name}))
        if existing and (existing.get("schema"), existing.get("table")) != (schema, table):
            raise TableNameCollisionError(
                f"tables {existing.get('schema')}.{existing.get('table')} and {schema}.{table}"
                f" both map to the collection {name!r}: the load stops rather than mix their"
                " rows; report this (docs/naming.md) and exclude one of the tables."
            )
        self.retry(lambda: catalog.replace_one({"_id": name}, document, upsert=True))
        self._registered[name] = marker
        return name

    def key_columns_ever(self, source: str, schema: str, table: str) -> set[str] | None:
        """Every column that was part of the table's key in any schema version the loader
        registered (``cdc_schema_versions``); None when it knows no version of the table."""
        versions = self.database[SCHEMA_VERSIONS]
        found = self.retry(
            lambda: list(
                versions.find({"source": source, "table": f"{schema}.{table}"}, {"primary_key": 1})
            )
        )
        if not found:
            return None
        return {str(column) for version in found for column in version.get("primary_key") or ()}

    def mirrors_of_schema(self, source: str, schema: str) -> list[str]:
        """The mirrors ``cdc_collections`` records for the tables of ``schema``."""
        catalog = self.database[CATALOG]
        found = self.retry(lambda: list(catalog.find({"source": source, "schema": schema})))
        return [str(entry["_id"]) for entry in found]

    def unregister(self, name: str) -> None:
        """Forget a dropped mirror in ``cdc_collections``."""
        self._registered.pop(name, None)
        self.retry(lambda: self.database[CATALOG].delete_one({"_id": name}))

    def moved(self, old: str, schema: str, table: str) -> None:
        """A mirror renamed to the one of ``schema.table``: its entry follows it."""
        catalog = self.database[CATALOG]
        entry = self.retry(lambda: catalog.find_one({"_id": old}))
        if entry is not None:
            columns = [*entry.get("field_escapes", {})]
            self.register(entry.get("source", ""), schema, table, columns)
        self.unregister(old)

    def retry(self, action: Callable[[], T]) -> T:
        return call_with_retries(action, self.retry_policy)

    # -- checkpoint ------------------------------------------------------------------------
    def read_checkpoint(self, source: str) -> Checkpoint | None:
        document = self.retry(lambda: self.database[CHECKPOINTS].find_one({"_id": source}))
        return Checkpoint.from_document(document) if document else None

    def write_checkpoint(self, manifest: Manifest) -> Checkpoint:
        now = datetime.now(UTC)
        checkpoint = Checkpoint(
            source=manifest.source,
            gtid=manifest.end_gtid,
            flavor=manifest.flavor,
            binlog_file=manifest.end_binlog_file,
            binlog_pos=manifest.end_binlog_pos,
            last_partition=manifest.partition_key,
            last_sequence=manifest.sequence,
            last_committed_at=manifest.last_committed_at,
            updated_at=str(now),
            governance=manifest.governance,
        )
        document = checkpoint.to_document(now)
        self.retry(
            lambda: self.database[CHECKPOINTS].replace_one(
                {"_id": checkpoint.source}, document, upsert=True
            )
        )
        # A segment loaded: a halt recorded at one of its rows is over.
        self.retry(lambda: self.database[LOAD_HALTS].delete_one({"_id": checkpoint.source}))
        return checkpoint

    def read_halt(self, source: str) -> dict[str, Any] | None:
        """Where loading of ``source`` stopped at a row MongoDB refuses, if it did."""
        return self.retry(lambda: self.database[LOAD_HALTS].find_one({"_id": source}))

    # -- data ------------------------------------------------------------------------------
    def apply(
        self,
        rows: Iterable[Mapping[str, Any] | RowRun],
        manifest: Manifest,
        ddl_rows: Iterable[Mapping[str, Any]] = (),
    ) -> ApplyReport:
        """Write every row change of a segment (in order) into the change log and mirrors.

        ``rows`` are the segment's rows as dicts, or as the loader gives them: runs of rows of
        one op and table (``load.row_runs.RowRun``) between single rows; a run's writes are
        the ones its rows would make one by one.

        ``ddl_rows`` are the segment's DDL rows, looked at ahead so that a table whose columns
        change several times in the segment is rebuilt once (``rebuild_plan``); without
        them every column change rebuilds.

        Bulk writes run on a ``WritePipeline`` thread while the next rows are prepared; it is
        drained before each DDL's effects and before returning, so the caller's checkpoint
        follows every write of the segment.
        """
        self.source = manifest.source
        self._batch = manifest.partition_key
        if self.on_unloadable == "dead-letter":
            self.dead = DeadLetters(self.database, self.retry, self.source)
            self.dead.load()
        with WritePipeline() as writes:
            self._writes = writes
            try:
                if manifest.kind == "snapshot":
                    return self._apply_snapshot(_rows_of(rows, lambda run: False), manifest)
                return self._apply_changes(rows, manifest, ddl_rows)
            finally:
                self._writes = None

    def _submit_bulk(self, collection: str, operations: list[Any]) -> None:
        if self._writes is None:
            self.bulk(collection, operations)
        else:
            self._writes.submit(lambda: self.bulk(collection, operations))

    def _drain(self) -> None:
        if self._writes is not None:
            self._writes.drain()

    def _apply_changes(
        self,
        rows: Iterable[Mapping[str, Any] | RowRun],
        manifest: Manifest,
        ddl_rows: Iterable[Mapping[str, Any]],
    ) -> ApplyReport:
        batch = manifest.partition_key
        mariadb = manifest.flavor == "mariadb"
        superseded, rereading = rebuild_plan(ddl_rows, mariadb=mariadb)
        report = ApplyReport(batch)
        primary_keys = _primary_keys(manifest)
        changes: list[InsertOne[Any]] = []
        phase = _Phase()
        cdc, change_log = CdcElements(batch), ChangeLogDocuments(batch)
        last_rows: dict[str, Mapping[str, Any]] = {}  # per table: its last row, for last_change

        def applied(run: RowRun) -> bool:
            return self._apply_run(
                run, manifest, primary_keys, changes, phase, (cdc, change_log), report, last_rows
            )

        for row in _rows_of(rows, applied):
            table = f"{row['schema']}.{row['table']}"
            report.count(table, row["schema"], row["table"], row["op"])
            last_rows[table] = row
            if row["op"] == "ddl":
                self._flush_changes(changes, report)
                self._flush_phase(phase, report)
                self._drain()
                done = apply_ddl(self, row, batch, superseded, mariadb=mariadb, rereading=rereading)
                report.ddl_applied.extend(done)
                continue
            key_columns = primary_keys.get((table, row["schema_version"]), ())
            if not self._apply_raw(
                row, table, key_columns, manifest, changes, phase, (cdc, change_log), report
            ):
                self._apply_decoded(row, key_columns, changes, phase, batch, report)
            if not key_columns:
                report.tables_without_key[table] = report.tables_without_key.get(table, 0) + 1
            elif len(phase.actions) >= PHASE_KEYS:
                self._flush_phase(phase, report)
        self._flush_changes(changes, report)
        self._flush_phase(phase, report)
        for table, row in last_rows.items():
            report.last_change[table] = (str(row["gtid"]), str(row["committed_at"] or ""))
        self._count_mirrors(report)
        return report

    def _apply_run(
        self,
        run: RowRun,
        manifest: Manifest,
        primary_keys: Mapping[tuple[str, str], tuple[str, ...]],
        changes: list[InsertOne[Any]],
        phase: _Phase,
        assemblers: tuple[CdcElements, ChangeLogDocuments],
        report: ApplyReport,
        last_rows: dict[str, Mapping[str, Any]],
    ) -> bool:
        """A run of inserts, updates or deletes (``load.row_runs``): its change-log documents
        and mirror writes assembled by Arrow's kernels, then written as ``_apply_raw`` writes
        each of its rows. False, with nothing done, when its rows take the row path: a table
        without a key or whose mirror ``RawMirror`` cannot assemble, dead-lettering, values
        that may not fit, images the decimal rewrite cannot read, a ``pk`` image that is not
        the key's, a ``before`` image without the key."""
        first = run.first_row
        table = f"{first['schema']}.{first['table']}"
        key_columns = primary_keys.get((table, first["schema_version"]), ())
        if not key_columns or self.dead is not None:
            return False
        mirror = self._raw_mirror(first, table, key_columns, manifest)
        if mirror is None:
            return False
        images = Images.of(run)
        if self.large is not None and images.may_not_fit():
            return False
        if self.decimals_as_strings:
            stored = images.as_stored()
            if stored is None:
                return False
            images = stored
        moved_from: list[bytes | None] = []
        if images.before is not None and images.after is not None:
            moved_from = list(map(mirror.key_of_image, images.before.to_pylist()))
            if None in moved_from:
                return False
        cdc, change_log = assemblers
        writes = mirror_writes(run, mirror.key, images, cdc)
        if writes is None:
            return False
        logged = change_log_documents(
            run, images, change_log.table_fields, change_log.position_fields
        )
        report.count(table, first["schema"], first["table"], run.op, run.batch.num_rows)
        last_rows[table] = run.last_row()
        gtids = run.batch.column("gtid").to_pylist()
        put = partial(phase.put, mirror.collection)
        op, documents = run.op, writes.documents or []
        keys, selectors = writes.keys or [], writes.selectors or []
        for number, (change, identity, gtid) in enumerate(
            zip(logged, writes.identities, gtids, strict=True)
        ):
            changes.append(InsertOne(RawDocument(change)))
            if len(changes) >= BULK_CHUNK:
                self._flush_changes(changes, report)
            if op == "insert":
                document = RawDocument(documents[number])
                put(identity, None, document, gtid, InsertOne(document))
            elif op == "update":
                old = moved_from[number]
                if old is not None and old != keys[number]:  # a key update moves the document
                    put(mirror.identity(old), None, None, gtid, mirror.delete(old))
                document = RawDocument(documents[number])
                selector = RawDocument(selectors[number])
                put(identity, None, document, gtid, ReplaceOne(selector, document, upsert=True))
            else:
                put(identity, None, None, gtid, DeleteOne(RawDocument(selectors[number])))
            if len(phase.actions) >= PHASE_KEYS:
                self._flush_phase(phase, report)
        return True

    def _apply_decoded(
        self,
        row: Mapping[str, Any],
        key_columns: tuple[str, ...],
        changes: list[InsertOne[Any]],
        phase: _Phase,
        batch: str,
        report: ApplyReport,
    ) -> None:
        """A row's change-log document and mirror change, from its decoded images."""
        if self.raw_images and _raw_images(row):
            # The change log takes the images' BSON as it is; only a mirror needs them
            # decoded (its key, its escaped field names).
            before = self.decode(row["before"]) if key_columns else None
            after = self.decode(row["after"]) if key_columns else None
            self._add_change_raw(changes, row, batch, report)
        else:
            before = self.decode(row["before"])
            after = self.decode(row["after"])
            self._add_change(changes, row, before, after, batch, report)
        if key_columns:
            self._stage_mirror(phase, row, before, after, key_columns, batch)

    def _apply_raw(
        self,
        row: Mapping[str, Any],
        table: str,
        key_columns: tuple[str, ...],
        manifest: Manifest,
        changes: list[InsertOne[Any]],
        phase: _Phase,
        assemblers: tuple[CdcElements, ChangeLogDocuments],
        report: ApplyReport,
    ) -> bool:
        """A row's change-log document and mirror change assembled from its images' bytes
        (``load.raw_documents``); False, with nothing done, when the row takes the decoded
        path: images held as text, values that may not fit, dead-lettering, a mirror whose
        documents cannot be assembled so (``RawMirror.of``), bytes the walk cannot read."""
        if not _raw_images(row) or (
            self.large is not None and may_not_fit(row["before"], row["after"])
        ):
            return False
        images = server_images(row, self.decimals_as_strings)
        if images is None:
            return False
        pk, before, after = images
        cdc, change_log = assemblers
        mirror = new = old = None
        if key_columns:
            if self.dead is not None or pk is None:
                return False
            mirror = self._raw_mirror(row, table, key_columns, manifest)
            if mirror is None or (new := mirror.key_of_pk(pk)) is None:
                return False
            if before is not None and after is not None:
                old = mirror.key_of_image(before)
                if old is None:
                    return False
        changes.append(InsertOne(change_log(row, pk, before, after)))
        if len(changes) >= BULK_CHUNK:
            self._flush_changes(changes, report)
        if mirror is None or new is None:
            return True
        collection, gtid = mirror.collection, row["gtid"]
        if after is None:
            phase.put(collection, mirror.identity(new), None, None, gtid, mirror.delete(new))
            return True
        if old is not None and old != new:  # a key update moves the document
            phase.put(collection, mirror.identity(old), None, None, gtid, mirror.delete(old))
        make = mirror.insert if row["op"] == "insert" else mirror.upsert
        mirror_document, write = make(new, after, cdc(row))
        phase.put(collection, mirror.identity(new), None, mirror_document, gtid, write)
        return True

    def _raw_mirror(
        self, row: Mapping[str, Any], table: str, key_columns: tuple[str, ...], manifest: Manifest
    ) -> RawMirror | None:
        """The table's ``RawMirror`` at the row's schema version (registered as
        ``_registered_mirror`` does), made once per sink."""
        seen = (row["schema"], row["table"], row["schema_version"])
        if seen in self._raw_mirrors:
            return self._raw_mirrors[seen]
        declared = manifest.schema_versions[table][row["schema_version"]]
        columns = [str(column["name"]) for column in declared["columns"]]
        mirror = RawMirror.of(self._registered_mirror(row, columns), columns, key_columns)
        self._raw_mirrors[seen] = mirror
        return mirror

    def _count_mirrors(self, report: ApplyReport) -> None:
        """``report.mirror_documents`` for the keyed tables the segment touched (after its
        writes: the write pipeline is drained first)."""
        self._drain()
        existing: set[str] | None = None
        for label, (schema, table) in report.tables.items():
            if label in report.tables_without_key or set(report.counts[label]) <= {"ddl"}:
                continue  # no mirror, or a statement only (a DROP TABLE: no mirror left)
            name = self.mirror(schema, table)
            if existing is None:
                existing = set(self.retry(self.database.list_collection_names))
            if name not in existing:
                continue  # renamed or dropped later in the segment (a count would create it)
            report.mirror_documents[label] = self.retry(
                lambda name=name: self.database[name].estimated_document_count()  # type: ignore[misc]
            )

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
        schema, table = _snapshot_table(info)
        keyed = bool(info.get("keyed"))
        declared: dict[str, Any] = next(
            iter(manifest.schema_versions.get(table_name, {}).values()), {}
        )
        columns = [str(column["name"]) for column in declared.get("columns", ())]
        collection = (
            self.register(manifest.source, schema, table, columns)
            if keyed
            else self.mirror(schema, table)
        )
        if keyed and info.get("table_start"):
            status = {
                "_id": collection,
                "reason": f"snapshot {info.get('id')} is filling it",
                "stale_since_gtid": manifest.end_gtid,
                "snapshot": info.get("id"),
                "batch": batch,
            }
            self.retry(
                lambda: self.database[MIRROR_STATUS].replace_one(
                    {"_id": collection}, status, upsert=True
                )
            )
            self.retry(lambda: self.database[collection].delete_many({}))
        key_columns = tuple(declared.get("primary_key") or ())
        changes: list[InsertOne[Any]] = []
        phase = _Phase()
        report.tables[table_name] = (schema, table)
        for row in rows:
            report.count(table_name, schema, table, row["op"])
            after = self.decode(row["after"])
            if keyed:
                self._stage_mirror(phase, row, None, after, key_columns, batch)
                if len(phase.actions) >= PHASE_KEYS:
                    self._flush_phase(phase, report)
                continue
            report.tables_without_key[table_name] = report.tables_without_key.get(table_name, 0) + 1
            self._add_change(changes, row, None, after, batch, report)
        self._flush_changes(changes, report)
        self._flush_phase(phase, report)
        if keyed and info.get("table_done"):
            self._drain()
            self.retry(lambda: self.database[MIRROR_STATUS].delete_one({"_id": collection}))
        if report.counts:
            self._count_mirrors(report)
        return report

    def _add_change(
        self,
        changes: list[InsertOne[Any]],
        row: Mapping[str, Any],
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        batch: str,
        report: ApplyReport,
    ) -> None:
        """Queue the row's change-log document; a full chunk goes to the write thread."""
        document = change_document(row, self.decode(row["pk"]), before, after, batch)
        if self.large is not None and may_not_fit(row["before"], row["after"]):
            moved: list[str] = []
            self.large.fit(document, ("before", "after"), moved)
            if moved:
                document["large_values"] = moved
        changes.append(InsertOne(document))
        if len(changes) >= BULK_CHUNK:
            self._flush_changes(changes, report)

    def _add_change_raw(
        self,
        changes: list[InsertOne[Any]],
        row: Mapping[str, Any],
        batch: str,
        report: ApplyReport,
    ) -> None:
        """``_add_change`` for a row of BSON images (``_raw_images``): they go into the
        change-log document as ``RawBSONDocument``s, which pymongo copies byte for byte; the
        same document as decoding and re-encoding them would give (contract-tested)."""
        if self.large is not None and may_not_fit(row["before"], row["after"]):
            before, after = self.decode(row["before"]), self.decode(row["after"])
            self._add_change(changes, row, before, after, batch, report)
            return
        document = change_document(
            row,
            raw_document(row["pk"]),
            raw_document(row["before"]),
            raw_document(row["after"]),
            batch,
        )
        changes.append(InsertOne(document))
        if len(changes) >= BULK_CHUNK:
            self._flush_changes(changes, report)

    def _stage_mirror(
        self,
        phase: _Phase,
        row: Mapping[str, Any],
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        key_columns: tuple[str, ...],
        batch: str,
    ) -> None:
        collection = self._registered_mirror(row, after or before or {})
        meta = mirror_meta(row["gtid"], batch, row["schema_version"], row["committed_at"])
        old_key = {name: before[name] for name in key_columns} if before else None
        if after is None:
            phase.set(collection, mirror_id(old_key or {}), None, row["gtid"])
            return
        new_key = {name: after[name] for name in key_columns}
        if old_key is not None and key_identity(old_key) != key_identity(new_key):
            phase.set(collection, mirror_id(old_key), None, row["gtid"])  # a key update moves it
        identity = mirror_id(new_key)
        document = mirror_document(identity, after, meta)
        if self.large is not None and may_not_fit(row["after"]):
            self.fit_mirror(document)
        phase.set(collection, identity, document, row["gtid"], insert=row["op"] == "insert")

    def fit_mirror(self, document: dict[str, Any], values: Mapping[str, Any] | None = None) -> None:
        """Move values of a mirror document out of line until it fits (``load.large_values``);
        ``values``, when given, are the row's columns, to skip rows that surely fit."""
        if self.large is None or (values is not None and not may_not_fit_values(values)):
            return
        moved: list[str] = []
        self.large.fit(document, (), moved)
        if moved:
            document["_cdc"] = {**document["_cdc"], "large_values": moved}

    def _registered_mirror(self, row: Mapping[str, Any], image: Iterable[str]) -> str:
        """The row's mirror, registered once per table and schema version (``image``: its
        column names, or an image whose keys they are)."""
        seen = (row["schema"], row["table"], row["schema_version"])
        name = self._versions_seen.get(seen)
        if name is None:
            name = self.register(row["source"], row["schema"], row["table"], image)
            self._versions_seen[seen] = name
        return name

    def _flush_changes(self, changes: list[InsertOne[Any]], report: ApplyReport) -> None:
        if not changes:
            return
        pending = list(changes)
        self._submit_bulk(ROW_CHANGES, pending)
        report.row_changes += len(pending)
        changes.clear()

    def _flush_phase(self, phase: _Phase, report: ApplyReport) -> None:
        by_collection: dict[str, list[Any]] = {}
        if self.dead is not None and phase.actions:
            self._drain()  # every earlier refusal is known: a later change of its key follows it
        for collection, key, document, gtid, operation in phase.actions.values():
            if self.dead is not None and self.dead.holds(collection, key):
                refusal = Refusal(collection, *self._table_of(collection), key, document, "")
                self.dead.set_aside(refusal, gtid, self._batch)
                report.dead_lettered += 1
                continue
            if document is None:
                operation = operation or DeleteOne(id_filter(key))
                report.mirror_deletes += 1
            else:
                operation = operation or upsert_by_id(document)
                report.mirror_upserts += 1
            by_collection.setdefault(collection, []).append(operation)
        for collection, operations in by_collection.items():
            for start in range(0, len(operations), BULK_CHUNK):
                self._submit_bulk(collection, operations[start : start + BULK_CHUNK])
        phase.actions.clear()

    def bulk(self, collection: str, operations: list[Any]) -> None:
        """Write ``operations`` unordered (each key at most once), in pieces of the current
        bulk size, each retried on its own; the size follows the time each piece took."""
        start = 0
        while start < len(operations):
            piece = operations[start : start + self._bulk_size]
            began = time.monotonic()
            self._bulk_write(collection, piece)
            elapsed = time.monotonic() - began
            self._bulk_size = next_bulk_size(self._bulk_size, len(piece), elapsed)
            start += len(piece)

    def _bulk_write(self, collection: str, operations: list[Any]) -> None:
        try:
            self.retry(lambda: self._write(collection, operations))
        except BulkWriteError as error:
            errors = error.details.get("writeErrors") or [{}]
            errors = self._replace_existing(collection, operations, errors)
            if not errors:
                return
            refused = [
                (operations[item["index"]] if isinstance(item.get("index"), int) else None, item)
                for item in errors
            ]
            if self._dead_letter(collection, refused):
                return
            operation, first = refused[0]
            reason = f"code {first.get('code')}, {first.get('codeName') or 'refused'}"
            raise self._halt(collection, operation, reason) from None
        except InvalidDocument as error:  # refused before sending (pymongo's own checks)
            raise self._halt(collection, None, type(error).__name__) from None

    def _write(self, collection: str, operations: list[Any]) -> None:
        """One unordered bulk write: raw writes as commands (``load.write_commands``),
        anything else through pymongo's ``bulk_write``."""
        if not send_raw(self.database, collection, operations):
            self.database[collection].bulk_write(operations, ordered=False)

    def _replace_existing(
        self, collection: str, operations: list[Any], errors: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Change-log documents, and the mirror documents of inserted rows, are inserted; one
        whose ``_id`` is already there (a segment loaded again after a kill, a retried bulk, a
        key deleted and inserted again within one phase) is replaced instead, so the
        collection ends as the last load wrote it, as with replace-upserts. Returns the other
        errors."""
        existing = [operations[item["index"]] for item in errors if _is_replaced(item, operations)]
        if existing:
            self._bulk_write(
                collection,
                [
                    ReplaceOne(id_filter(operation._doc["_id"]), operation._doc, upsert=True)
                    for operation in existing
                ],
            )
        return [item for item in errors if not _is_replaced(item, operations)]

    def _dead_letter(self, collection: str, refused: list[tuple[Any, dict[str, Any]]]) -> bool:
        """Under CDC_ON_UNLOADABLE=dead-letter, set each refused mirror write aside (the rest of
        the bulk was written: it is unordered); False when this is not such a case (the change
        log, a rebuild's temporary collection, or a write error without its operation)."""
        mirrors = {name for name in self._names.values()}
        if self.dead is None or collection not in mirrors:
            return False
        if any(operation is None for operation, _ in refused):
            return False
        for operation, item in refused:
            document = getattr(operation, "_doc", None)
            identity = (
                document["_id"]
                if document is not None
                else _id_of_filter(getattr(operation, "_filter", {}))
            )
            reason = f"code {item.get('code')}, {item.get('codeName') or 'refused'}"
            refusal = Refusal(collection, *self._table_of(collection), identity, document, reason)
            gtid = ((document or {}).get("_cdc") or {}).get("gtid")
            self.dead.set_aside(refusal, gtid, self._batch)
        return True

    def _table_of(self, collection: str) -> tuple[str, str]:
        for pair, name in self._names.items():
            if name == collection:
                return pair
        return "", collection

    def _halt(self, collection: str, operation: Any, reason: str) -> UnloadableRowError:
        """Record in ``cdc_load_halts`` that loading stopped at a row MongoDB refuses
        (``status`` and ``doctor`` report it; the next checkpoint clears it), and return the
        error that stops the load. Names the table and key, never the row's values."""
        table, key = self._row_of(collection, operation)
        halt = {
            "collection": collection,
            "table": table,
            "key": key,
            "reason": reason,
            "at": datetime.now(UTC),
        }
        if self.source:
            source = self.source
            self.retry(
                lambda: self.database[LOAD_HALTS].replace_one(
                    {"_id": source}, {"_id": source, **halt}, upsert=True
                )
            )
        return UnloadableRowError(halt_sentence(halt))

    def _row_of(self, collection: str, operation: Any) -> tuple[str, str]:
        """``(table, key text)`` of a refused write, as far as it can be told."""
        document = getattr(operation, "_doc", None) or {}
        if collection == ROW_CHANGES and document:
            table = table_label(str(document.get("schema")), str(document.get("table")))
            return table, key_label(document.get("pk"))
        names = {name: pair for pair, name in self._names.items()}
        table = table_label(*names[collection]) if collection in names else collection
        identity = document.get("_id") if document else None
        if identity is None:
            identity = (getattr(operation, "_filter", None) or {}).get("_id", "?")
        return table, key_label(identity)


DUPLICATE_KEY = 11000


def _is_replaced(item: Mapping[str, Any], operations: list[Any]) -> bool:
    """Whether a bulk write error is an insert's duplicate key, which ``_replace_existing``
    turns into a replacement."""
    index = item.get("index")
    return (
        item.get("code") == DUPLICATE_KEY
        and isinstance(index, int)
        and isinstance(operations[index], InsertOne)
    )


def _rows_of(
    items: Iterable[Mapping[str, Any] | RowRun], applied: Callable[[RowRun], bool]
) -> Iterator[Mapping[str, Any]]:
    """The rows of ``items`` that the row path applies: each ``RowRun`` is offered to
    ``applied`` first, when the rows before it are applied (the iteration is lazy), and its
    rows follow only if it was not."""
    for item in items:
        if isinstance(item, RowRun):
            if not applied(item):
                yield from item.rows()
        else:
            yield item


def _raw_images(row: Mapping[str, Any]) -> bool:
    """Whether every image of the row is BSON (format 2, not kept as text): raw-passable."""
    pk, before, after = row["pk"], row["before"], row["after"]
    if pk is None and before is None and after is None:
        return False
    return (
        (pk is None or is_bson_image(pk))
        and (before is None or is_bson_image(before))
        and (after is None or is_bson_image(after))
    )


def next_bulk_size(size: int, written: int, seconds: float) -> int:
    """The number of operations for the next bulk command, after ``written`` took ``seconds``.

    A piece slower than ``BULK_SECONDS`` shrinks the next one in proportion (at least
    ``MIN_BULK``); a full piece in under half of it doubles the next (at most ``BULK_CHUNK``).
    On MongoDB a bulk of ``BULK_CHUNK`` upserts by ``_id`` takes milliseconds, so the size stays
    at ``BULK_CHUNK``; on a server that cannot answer anything else while a command runs
    (mongoeco, whose upserts also cost time in proportion to the collection) long commands
    would starve the driver's heartbeat (``HEARTBEAT_TIMEOUT_MS``).
    """
    if seconds > BULK_SECONDS:
        return max(MIN_BULK, min(size, int(written * BULK_SECONDS / seconds)))
    if written >= size and seconds < BULK_SECONDS / 2:
        return min(BULK_CHUNK, size * 2)
    return size


def _id_of_filter(selector: Mapping[str, Any]) -> Any:
    """The ``_id`` an ``id_filter`` selects (a composite key's fields put back together)."""
    if "_id" in selector:
        return selector["_id"]
    return {name[len("_id.") :]: value for name, value in selector.items()}


def _snapshot_table(info: Mapping[str, Any]) -> tuple[str, str]:
    """``(schema, table)`` of a snapshot segment: its own fields, or (segments written before
    they existed) the joined name split at its first dot."""
    if "schema_name" in info and "table_name" in info:
        return str(info["schema_name"]), str(info["table_name"])
    schema, _, table = str(info.get("table", "")).partition(".")
    return schema, table


def _primary_keys(manifest: Manifest) -> dict[tuple[str, str], tuple[str, ...]]:
    keys: dict[tuple[str, str], tuple[str, ...]] = {}
    for table, versions in manifest.schema_versions.items():
        for version, schema in versions.items():
            keys[(table, version)] = tuple(schema.get("primary_key") or ())
    return keys


@contextlib.contextmanager
def open_sink(
    settings: MongoSettings,
    retry_policy: RetryPolicy | None = None,
    rebaseline: Rebaseline | None = None,
    progress: Callable[[str], None] | None = None,
) -> Iterator[MongoSink]:
    """A ``MongoSink`` on ``settings``; the client is closed on exit. Fails fast (5 s) per try
    when MongoDB is down; a server busy for seconds is waited for (``HEARTBEAT_TIMEOUT_MS``)."""
    client: MongoClient[Any] = MongoClient(
        settings.uri,
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=HEARTBEAT_TIMEOUT_MS,
        tz_aware=True,
    )
    try:
        yield MongoSink(
            client[settings.database],
            retry_policy or RetryPolicy(deadline=settings.retry_seconds),
            settings.mirror_name_style,
            rebaseline,
            settings.decimals_as_strings,
            settings.native_rename,
            on_unloadable=settings.on_unloadable,
            progress=progress,
        )
    finally:
        client.close()


def read_halt(settings: MongoSettings, source: str, deadline: float) -> dict[str, Any] | None:
    """``cdc_load_halts``' record for ``source`` (``MongoSink._halt``), retrying for at most
    ``deadline`` seconds."""
    with open_sink(settings, RetryPolicy(deadline=deadline)) as sink:
        return sink.read_halt(source)


def read_dead_letters(
    settings: MongoSettings, source: str, deadline: float
) -> list[dict[str, Any]]:
    """The rows of ``source`` set aside in ``cdc_dead_letters``, oldest first (no documents)."""
    with open_sink(settings, RetryPolicy(deadline=deadline)) as sink:
        return DeadLetters(sink.database, sink.retry, source).listed()


def dead_letters_sentence(letters: list[dict[str, Any]]) -> str:
    """The operator's sentence for rows set aside: how many, the first, what resolves it."""
    first = letters[0]
    more = f" and {len(letters) - 1} more" if len(letters) > 1 else ""
    return (
        f"{len(letters)} row{'s' * (len(letters) > 1)} set aside in cdc_dead_letters (the row"
        f" {first.get('key_text')} of {table_label(first['schema'], first['table'])}:"
        f" {first.get('reason')}{more}); their mirrors lack those changes until you fix the"
        " collection and run 'cdc-pipeline dead-letters retry' (docs/operations.md, 'A row"
        " MongoDB refuses')."
    )


def halt_sentence(halt: Mapping[str, Any]) -> str:
    """The operator's sentence for a halt: table, key, reason, and what resolves it."""
    return (
        f"loading stopped at the row {halt.get('key')} of {halt.get('table')}: MongoDB refuses"
        f" it ({halt.get('reason')}); fix the validation rules or indexes of the collection"
        f" {halt.get('collection')}, then run 'cdc-pipeline load --pending'"
        " (docs/operations.md, 'A row MongoDB refuses')."
    )


def read_checkpoint(settings: MongoSettings, source: str, deadline: float) -> Checkpoint | None:
    """MongoDB's checkpoint for ``source``, retrying transient errors for at most ``deadline``
    seconds (``SinkUnavailableError`` after): for readers that must not wait out an outage."""
    with open_sink(settings, RetryPolicy(deadline=deadline)) as sink:
        return sink.read_checkpoint(source)
