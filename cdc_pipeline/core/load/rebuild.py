"""Rebuilding a mirror from its source table after a column change that cannot be made in place.

The table is read in key order, a page at a time, into a temporary collection
(``documents.rebuild_collection``) that is then renamed over the mirror. After every write the
rebuild records in ``cdc_rebuilds`` how far it got (the last key written, as the WAL encodes
keys), so a load killed mid-rebuild resumes at that key on its next run instead of re-reading
the table; its progress goes to the run log.

Invariants:
- Exact whenever the rows are read (at once or across restarts): every change of a row after
  the column change is in the WAL after it and is applied after the rebuild, so each key ends
  at its last change or at the value read. Rows are never read under a lock.
- A rebuild resumes only its own work: the same DDL GTID, the same table shape (columns, types,
  key) and its temporary collection still there; otherwise it starts over.
- Readers never see a half-built mirror on a real MongoDB (the rename is the switch); a mirror
  that cannot be rebuilt (no source connection, table gone) is marked stale in
  ``cdc_mirror_status``, never silently left wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, Protocol, TypeVar

from pymongo.database import Database
from pymongo.errors import OperationFailure

from cdc_pipeline.core.errors import SourceTableChangedError
from cdc_pipeline.core.images import decode_document, encode_document
from cdc_pipeline.core.load.documents import (
    CATALOG,
    MIRROR_STATUS,
    REBUILDS,
    mirror_document,
    rebuild_collection,
    upsert_by_id,
)

T = TypeVar("T")
BULK_CHUNK = 1_000
"""Rows per write to the temporary collection, and between two progress records."""
REBUILD_READS = 5
"""Reads of a source table per rebuild when DDL keeps landing mid-read; then the load fails
(and its next run tries again)."""
PROGRESS_SECONDS = 10.0
"""At most one progress line in the run log per this many seconds of a rebuild."""
_ALREADY_RENAMED = 26  # NamespaceNotFound: an earlier attempt renamed it


@dataclass(frozen=True)
class TableRead:
    """A source table as a rebuild reads it, not read yet.

    ``shape`` names its columns, types and key (a rebuild resumes only over the same shape, ""
    if it cannot resume), ``key`` its key columns. Iterating reads every row in key order as
    ``(mirror _id, column values)``; ``after(key)`` only the rows after ``key`` (the values of
    ``key``'s columns, in order).
    """

    shape: str
    key: tuple[str, ...]
    read: Callable[[tuple[Any, ...] | None], Iterator[tuple[Any, dict[str, Any]]]]

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        return self.read(None)

    def after(self, key: tuple[Any, ...]) -> Iterator[tuple[Any, dict[str, Any]]]:
        return self.read(key)


Rebaseline = Callable[[str, str], "TableRead | Iterable[tuple[Any, dict[str, Any]]] | None"]
"""Reads a source table now (``TableRead``; any iterable of rows cannot resume); None if the
table is gone."""


class MirrorWriter(Protocol):
    """What the DDL effects need of ``load.sink.MongoSink``."""

    database: Database[Any]
    rebaseline: Rebaseline | None
    native_rename: bool
    mirror_style: str
    progress: Callable[[str], None]

    def retry(self, action: Callable[[], T]) -> T: ...

    def bulk(self, collection: str, operations: list[Any]) -> None: ...

    def mirror(self, schema: str, table: str) -> str: ...

    def stored(self, value: Any) -> Any: ...

    def register(self, source: str, schema: str, table: str, columns: Iterable[str]) -> str: ...

    def unregister(self, name: str) -> None: ...

    def moved(self, old: str, schema: str, table: str) -> None: ...

    def mirrors_of_schema(self, source: str, schema: str) -> list[str]: ...

    def key_columns_ever(self, source: str, schema: str, table: str) -> set[str] | None: ...

    def fit_mirror(
        self, document: dict[str, Any], values: Mapping[str, Any] | None = None
    ) -> None: ...


def rebuild_mirror(
    sink: MirrorWriter, schema: str, table: str, meta: dict[str, Any], source: str = ""
) -> str:
    """Replace a mirror with the source table's current rows (after a column change), resuming
    the work of an earlier run of the same change where it stopped. Returns what was done."""
    database = sink.database
    name = sink.mirror(schema, table)
    if sink.rebaseline is None:
        _mark_stale(sink, name, meta, "no source connection to re-read the table")
        return f"{name} marked stale (no source connection)"
    temporary = rebuild_collection(name, sink.mirror_style)
    for attempt in range(1, REBUILD_READS + 1):
        read = sink.rebaseline(schema, table)
        if read is None:
            _mark_stale(sink, name, meta, "the table no longer exists on the source")
            forget_rebuild(sink, name)
            return f"{name} marked stale (table gone from the source)"
        fill = _Fill(sink, name, temporary, meta, read)
        try:
            count, columns = fill.run(_resumable(sink, name, temporary, meta["gtid"], read))
            break
        except SourceTableChangedError:
            # A later DDL landed mid-read; it is in the WAL after this one and rebuilds again,
            # so reading the table as it is now is still exact.
            sink.retry(lambda: database[REBUILDS].delete_one({"_id": name}))
            if attempt == REBUILD_READS:
                raise
            sink.progress(f"{name}: the table changed during the read, reading it again")
    if count:
        sink.register(source, schema, table, columns)
        rename_collection(sink, temporary, name)
    else:
        sink.retry(lambda: database.drop_collection(name))
    sink.retry(lambda: database[REBUILDS].delete_one({"_id": name}))
    sink.retry(lambda: database[MIRROR_STATUS].delete_one({"_id": name}))
    return f"{name} rebuilt from the source ({count} rows{fill.resumed_note})"


def rebuild_for_rules(
    sink: MirrorWriter, source: str, tables: list[tuple[str, str]], meta: dict[str, Any]
) -> list[str]:
    """Rebuild every mirror of ``source`` whose table matches one of ``tables`` (``(schema
    glob, table glob)``: the tables a change of the column rules touches,
    ``governance.rules_differ_for``), under the rules now in force. Returns what was done."""
    if not tables:
        return []
    catalog = sink.database[CATALOG]
    entries = sink.retry(lambda: list(catalog.find({"source": source}, {"schema": 1, "table": 1})))
    done = []
    for entry in entries:
        schema, table = str(entry.get("schema")), str(entry.get("table"))
        if any(fnmatchcase(schema, s) and fnmatchcase(table, t) for s, t in tables):
            sink.progress(f"{entry['_id']}: the column rules changed, rebuilding the mirror")
            done.append(rebuild_mirror(sink, schema, table, meta, source))
    return done


def forget_rebuild(sink: MirrorWriter, name: str) -> None:
    """Drop what an unfinished rebuild of mirror ``name`` left (the mirror itself is gone)."""
    temporary = rebuild_collection(name, sink.mirror_style)
    sink.retry(lambda: sink.database.drop_collection(temporary))
    sink.retry(lambda: sink.database[REBUILDS].delete_one({"_id": name}))


def _resumable(
    sink: MirrorWriter, name: str, temporary: str, gtid: str, read: Any
) -> dict[str, Any] | None:
    """The progress record to resume from, or None to start over: it must be this change's
    (``gtid``), over the same table shape, with the temporary collection still there."""
    record: dict[str, Any] | None = sink.retry(
        lambda: sink.database[REBUILDS].find_one({"_id": name})
    )
    shape = getattr(read, "shape", "")
    if (
        record is None
        or not shape
        or record.get("gtid") != gtid
        or record.get("shape") != shape
        or record.get("temporary") != temporary
        or record.get("after") is None
        or temporary not in sink.retry(sink.database.list_collection_names)
    ):
        return None
    return record


class _Fill:
    """One read of the table into the temporary collection, recording progress as it goes."""

    def __init__(
        self, sink: MirrorWriter, name: str, temporary: str, meta: dict[str, Any], read: Any
    ):
        self.sink, self.name, self.temporary, self.meta, self.read = (
            sink,
            name,
            temporary,
            meta,
            read,
        )
        self.key: tuple[str, ...] = getattr(read, "key", ())
        self.shape: str = getattr(read, "shape", "")
        self.resumed_note = ""
        self.started = datetime.now(UTC)

    def run(self, resume: dict[str, Any] | None) -> tuple[int, list[str]]:
        sink, database = self.sink, self.sink.database
        if resume is None:
            sink.retry(lambda: database.drop_collection(self.temporary))
            count, columns = 0, []
            rows: Iterable[tuple[Any, dict[str, Any]]] = self.read
            sink.progress(f"{self.name}: rebuilding from the source table, read in key order")
        else:
            count, columns = int(resume["rows"]), list(resume["columns"])
            document = decode_document(resume["after"]) or {}
            rows = self.read.after(tuple(document["key"]))
            self.started = resume.get("started_at") or self.started
            self.resumed_note = f", resumed after {count} rows written by an earlier run"
            sink.progress(
                f"{self.name}: resuming the rebuild after {count} rows an earlier run wrote"
            )
        batch: list[Any] = []
        last: dict[str, Any] = {}
        reported = time.monotonic()
        for identity, values in rows:
            if not columns:
                columns = list(values)
            document = sink.stored(mirror_document(identity, values, self.meta))
            sink.fit_mirror(document, values)
            batch.append(upsert_by_id(document))
            last = values
            count += 1
            if len(batch) >= BULK_CHUNK:
                self._write(batch, count, columns, last)
                batch = []
                if time.monotonic() - reported >= PROGRESS_SECONDS:
                    reported = time.monotonic()
                    sink.progress(f"{self.name}: {count} rows rebuilt so far")
        if batch:
            self._write(batch, count, columns, last)
        return count, columns

    def _write(
        self, batch: list[Any], count: int, columns: list[str], last: dict[str, Any]
    ) -> None:
        """Write a chunk, then record that every row through its last key is written (a kill
        between the two rewrites the chunk on resume: the writes are upserts by ``_id``)."""
        self.sink.bulk(self.temporary, batch)
        if not self.shape:
            return
        record = {
            "_id": self.name,
            "gtid": self.meta["gtid"],
            "shape": self.shape,
            "temporary": self.temporary,
            "after": encode_document({"key": [last[column] for column in self.key]}),
            "rows": count,
            "columns": columns,
            "started_at": self.started,
            "updated_at": datetime.now(UTC),
        }
        collection = self.sink.database[REBUILDS]
        self.sink.retry(lambda: collection.replace_one({"_id": self.name}, record, upsert=True))


def rename_collection(sink: MirrorWriter, old: str, new: str) -> None:
    """Rename ``old`` over ``new``; a missing ``old`` means the rename already happened.

    A server that acknowledges a rename without doing it, or refuses it without an error code,
    gets a copy instead: drop ``new``, copy every document, drop ``old`` (replay-safe). Without
    ``sink.native_rename`` (CDC_MONGO_COMPAT=nx-27017, whose renames act on its admin database
    and can collide there) the copy is used directly.
    """
    database = sink.database

    def rename() -> None:
        if old not in database.list_collection_names():
            return
        if sink.native_rename:
            try:
                database[old].rename(new, dropTarget=True)
            except OperationFailure as error:
                # No code: a server that cannot rename this way (mongoeco): copy instead.
                if error.code not in (_ALREADY_RENAMED, None):
                    raise
        if old in database.list_collection_names():
            _copy_collection(sink, old, new)

    sink.retry(rename)


def _copy_collection(sink: MirrorWriter, old: str, new: str) -> None:
    """Copy ``old`` over ``new`` by ``_id`` upserts through ``sink.bulk`` (sized bulks, each
    retried on its own), then drop ``old``."""
    database = sink.database
    database.drop_collection(new)
    batch: list[Any] = []
    for document in database[old].find():
        batch.append(upsert_by_id(document))
        if len(batch) >= BULK_CHUNK:
            sink.bulk(new, batch)
            batch = []
    if batch:
        sink.bulk(new, batch)
    database.drop_collection(old)


def _mark_stale(sink: MirrorWriter, name: str, meta: dict[str, Any], reason: str) -> None:
    status = {"_id": name, "stale_since_gtid": meta["gtid"], "reason": reason, **meta}
    sink.retry(lambda: sink.database[MIRROR_STATUS].replace_one({"_id": name}, status, upsert=True))
