"""What a DDL statement does to the mirror collections: TRUNCATE, DROP, RENAME, column changes.

Every statement is recorded in ``cdc_ddl`` (keyed by GTID). TRUNCATE empties the target mirrors,
DROP TABLE drops them, RENAME TABLE renames them, and an ALTER TABLE that changes columns or the
key rebuilds the mirror from the source table (the binlog carries no row events for the rows
such a statement rewrites).

Invariants: every effect is replay-safe: a rename whose old name is gone already happened; a
rebuild is written to a temporary collection and renamed over the mirror, so readers never
see a half-built mirror on a real MongoDB; a mirror that cannot be rebuilt (no source
connection, table gone) is marked stale in ``cdc_mirror_status``, never silently left wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from pymongo.database import Database
from pymongo.errors import OperationFailure

from cdc_pipeline.core.errors import SourceTableChangedError
from cdc_pipeline.core.load.documents import (
    DDL_HISTORY,
    MIRROR_STATUS,
    mirror_document,
    mirror_meta,
    rebuild_collection,
    upsert_by_id,
)
from cdc_pipeline.core.mysql.ddl import classify_row

T = TypeVar("T")
Rebaseline = Callable[[str, str], "Iterable[tuple[Any, dict[str, Any]]] | None"]
"""Reads a source table now: ``(mirror _id, column values)`` per row, None if it is gone."""
BULK_CHUNK = 1_000
REBUILD_READS = 5
"""Reads of a source table per rebuild when DDL keeps landing mid-read; then the load fails
(and its next run tries again)."""
_ALREADY_RENAMED = 26  # NamespaceNotFound: an earlier attempt renamed it


class MirrorWriter(Protocol):
    """What the effects need of ``load.sink.MongoSink``."""

    database: Database[Any]
    rebaseline: Rebaseline | None
    native_rename: bool
    mirror_style: str

    def retry(self, action: Callable[[], T]) -> T: ...

    def bulk(self, collection: str, operations: list[Any]) -> None: ...

    def mirror(self, schema: str, table: str) -> str: ...

    def stored(self, value: Any) -> Any: ...

    def register(self, source: str, schema: str, table: str, columns: Iterable[str]) -> str: ...

    def unregister(self, name: str) -> None: ...

    def moved(self, old: str, schema: str, table: str) -> None: ...

    def mirrors_of_schema(self, source: str, schema: str) -> list[str]: ...

    def fit_mirror(
        self, document: dict[str, Any], values: Mapping[str, Any] | None = None
    ) -> None: ...


def superseded_rebuilds(
    ddl_rows: Iterable[Mapping[str, Any]], *, mariadb: bool = True
) -> frozenset[str]:
    """GTIDs of the column changes in one batch whose mirror rebuild a later one makes useless.

    A rebuild reads the source table as it is now, so of two column changes of one table in a
    batch the second's rebuild gives the same mirror with or without the first's: each key ends
    at its last change in the WAL, or at the value read. That holds only while nothing between
    the two acts on the table's mirror otherwise: a TRUNCATE, DROP or RENAME naming the table
    (as source or target) keeps the first rebuild, and so does any statement not recognised
    (it might). A statement naming the table in another letter case also keeps it (the server
    may fold case), but only the exact same name supersedes it (it may not: ``t`` and ``T``
    can be two tables).
    """
    pending: dict[tuple[str, str], tuple[tuple[str, str], str]] = {}
    superseded: set[str] = set()
    for row in ddl_rows:
        statement = classify_row(row, mariadb=mariadb)
        if statement.kind in ("other", "drop_database"):
            pending.clear()
            continue
        named = {*statement.targets, *(new for _, new in statement.renames)}
        # Only a plain column change of one table can leave its rebuild to a later one.
        alone = statement.kind == "alter_table" and statement.rebuilds == statement.targets
        for name in named:
            folded = (name[0].casefold(), name[1].casefold())
            earlier = pending.pop(folded, None)
            if alone and earlier is not None and earlier[0] == name:
                superseded.add(earlier[1])
            if alone and len(named) == 1:
                pending[folded] = (name, row["gtid"])
    return frozenset(superseded)


def apply_ddl(
    sink: MirrorWriter,
    row: Mapping[str, Any],
    batch: str,
    superseded: frozenset[str] = frozenset(),
    *,
    mariadb: bool = True,
) -> list[str]:
    """Record one DDL row in ``cdc_ddl`` and apply its effect; returns what was done.

    A column change in ``superseded`` (``superseded_rebuilds``) is recorded but not rebuilt:
    a later one in the same batch rebuilds the same mirror.
    """
    statement = classify_row(row, mariadb=mariadb)
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
    database = sink.database
    sink.retry(
        lambda: database[DDL_HISTORY].replace_one({"_id": row["gtid"]}, history, upsert=True)
    )
    done: list[str] = []
    if statement.kind == "truncate":
        for schema, table in statement.targets:
            name = sink.mirror(schema, table)
            sink.retry(lambda name=name: database[name].delete_many({}))  # type: ignore[misc]
    elif statement.kind in ("drop_table", "replace_table"):
        # CREATE OR REPLACE TABLE (MariaDB) drops the old table and its rows first.
        for schema, table in statement.targets:
            name = sink.mirror(schema, table)
            sink.retry(lambda name=name: database.drop_collection(name))  # type: ignore[misc]
            sink.unregister(name)
    elif statement.kind == "drop_database":
        # The statement names no table: the catalog knows which mirrors the schema has.
        for schema, _ in statement.targets:
            for name in sink.mirrors_of_schema(row["source"], schema):
                sink.retry(lambda name=name: database.drop_collection(name))  # type: ignore[misc]
                sink.unregister(name)
    elif statement.kind == "rename_table":
        for old, new in statement.renames:
            rename_collection(sink, sink.mirror(*old), sink.mirror(*new))
            sink.moved(sink.mirror(*old), *new)
    if statement.kind in (
        "truncate",
        "drop_table",
        "replace_table",
        "rename_table",
        "drop_database",
    ):
        done.append(f"{statement.kind} {', '.join('.'.join(t) for t in statement.targets)}")
    if statement.rebuilds and row["gtid"] in superseded:
        names = ", ".join(sink.mirror(*target) for target in statement.rebuilds)
        done.append(f"{names}: rebuild left to a later column change in this batch")
    elif statement.rebuilds:
        meta = mirror_meta(row["gtid"], batch, None, row["committed_at"], rebuilt_after_ddl=True)
        done.extend(
            rebuild_mirror(sink, schema, table, meta, row["source"])
            for schema, table in statement.rebuilds
        )
    return done


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


def rebuild_mirror(
    sink: MirrorWriter, schema: str, table: str, meta: dict[str, Any], source: str = ""
) -> str:
    """Replace a mirror with the source table's current rows (after a column change).

    Builds ``documents.rebuild_collection`` then renames it over the mirror, recorded in
    ``cdc_collections`` first. Returns what was done, for the run's report.
    """
    database = sink.database
    name = sink.mirror(schema, table)
    if sink.rebaseline is None:
        _mark_stale(sink, name, meta, "no source connection to re-read the table")
        return f"{name} marked stale (no source connection)"
    temporary = rebuild_collection(name, sink.mirror_style)
    for attempt in range(1, REBUILD_READS + 1):
        rows = sink.rebaseline(schema, table)
        if rows is None:
            _mark_stale(sink, name, meta, "the table no longer exists on the source")
            return f"{name} marked stale (table gone from the source)"
        sink.retry(lambda: database.drop_collection(temporary))
        try:
            count, columns = _fill(sink, temporary, rows, meta)
            break
        except SourceTableChangedError:
            # A later DDL landed mid-read; it is in the WAL after this one and rebuilds again,
            # so reading the table as it is now is still exact.
            if attempt == REBUILD_READS:
                raise
    if count:
        sink.register(source, schema, table, columns)
        rename_collection(sink, temporary, name)
    else:
        sink.retry(lambda: database.drop_collection(name))
    sink.retry(lambda: database[MIRROR_STATUS].delete_one({"_id": name}))
    return f"{name} rebuilt from the source ({count} rows)"


def _fill(
    sink: MirrorWriter, temporary: str, rows: Iterable[tuple[Any, dict[str, Any]]], meta: Any
) -> tuple[int, list[str]]:
    """Write the rows read into the rebuild's temporary collection; returns how many, and
    the columns of the table read."""
    count = 0
    columns: list[str] = []
    batch: list[Any] = []
    for identity, values in rows:
        if not count:
            columns = list(values)
        document = sink.stored(mirror_document(identity, values, meta))
        sink.fit_mirror(document, values)
        batch.append(upsert_by_id(document))
        count += 1
        if len(batch) >= BULK_CHUNK:
            sink.bulk(temporary, batch)
            batch = []
    if batch:
        sink.bulk(temporary, batch)
    return count, columns


def _mark_stale(sink: MirrorWriter, name: str, meta: dict[str, Any], reason: str) -> None:
    status = {"_id": name, "stale_since_gtid": meta["gtid"], "reason": reason, **meta}
    sink.retry(lambda: sink.database[MIRROR_STATUS].replace_one({"_id": name}, status, upsert=True))
