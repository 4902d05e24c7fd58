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
    mirror_field,
    mirror_meta,
    rebuild_collection,
    upsert_by_id,
)
from cdc_pipeline.core.mysql.ddl import DdlStatement, classify_row

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

    def key_columns_ever(self, source: str, schema: str, table: str) -> set[str] | None: ...

    def fit_mirror(
        self, document: dict[str, Any], values: Mapping[str, Any] | None = None
    ) -> None: ...


def superseded_rebuilds(
    ddl_rows: Iterable[Mapping[str, Any]], *, mariadb: bool = True
) -> frozenset[str]:
    """GTIDs of the column changes in one batch whose mirror rebuild a later one makes useless
    (``rebuild_plan``'s first half)."""
    return rebuild_plan(ddl_rows, mariadb=mariadb)[0]


def rebuild_plan(
    ddl_rows: Iterable[Mapping[str, Any]], *, mariadb: bool = True
) -> tuple[frozenset[str], frozenset[str]]:
    """``(superseded, rereading)``: GTIDs of the column changes in one batch whose mirror
    rebuild a later one makes useless, and of those later ones: a change that could have been
    made in place must re-read the table once it stands in for an earlier rebuild.

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
    rereading: set[str] = set()
    for row in ddl_rows:
        statement = classify_row(row, mariadb=mariadb)
        if statement.kind in ("other", "drop_database"):
            pending.clear()
            continue
        named = {*statement.targets, *(new for _, new in statement.renames)}
        # Only a plain column change of one table can leave its rebuild to a later one. One
        # that may be made in place reads nothing: it leaves a rebuild to a later change only
        # if it stands in for an earlier rebuild itself (and then it re-reads).
        alone = statement.kind == "alter_table" and statement.rebuilds == statement.targets
        for name in named:
            folded = (name[0].casefold(), name[1].casefold())
            earlier = pending.pop(folded, None)
            took_over = alone and earlier is not None and earlier[0] == name
            if took_over:
                superseded.add(earlier[1])  # type: ignore[index]
                if statement.column_ops:
                    rereading.add(row["gtid"])
            if alone and len(named) == 1 and (took_over or not statement.column_ops):
                pending[folded] = (name, row["gtid"])
    return frozenset(superseded), frozenset(rereading)


def apply_ddl(
    sink: MirrorWriter,
    row: Mapping[str, Any],
    batch: str,
    superseded: frozenset[str] = frozenset(),
    *,
    mariadb: bool = True,
    rereading: frozenset[str] = frozenset(),
) -> list[str]:
    """Record one DDL row in ``cdc_ddl`` and apply its effect; returns what was done.

    A column change in ``superseded`` (``rebuild_plan``) is recorded but not rebuilt: a later
    one in the same batch rebuilds the same mirror. One in ``rereading`` stands in for such an
    earlier one, so it rebuilds even where it could have changed the mirror in place.
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
    elif (
        statement.rebuilds
        and row["gtid"] not in rereading
        and _in_place_exact(sink, row["source"], statement)
    ):
        done.append(change_in_place(sink, *statement.rebuilds[0], statement.column_ops))
    elif statement.rebuilds:
        meta = mirror_meta(row["gtid"], batch, None, row["committed_at"], rebuilt_after_ddl=True)
        done.extend(
            rebuild_mirror(sink, schema, table, meta, row["source"])
            for schema, table in statement.rebuilds
        )
    return done


def _in_place_exact(sink: MirrorWriter, source: str, statement: DdlStatement) -> bool:
    """Whether the statement's column changes can be applied to the mirror as they are: every
    clause is one of ``column_ops``, no column it names is or ever was part of the table's key
    (the key is the ``_id``), and the mirror is not marked stale (only a rebuild fixes that)."""
    if not statement.column_ops or len(statement.rebuilds) != 1:
        return False
    schema, table = statement.rebuilds[0]
    keys = sink.key_columns_ever(source, schema, table)
    named = {name for op in statement.column_ops for name in op[1:]}
    if keys is None or named & keys:
        return False
    name = sink.mirror(schema, table)
    return sink.retry(lambda: sink.database[MIRROR_STATUS].find_one({"_id": name})) is None


def change_in_place(
    sink: MirrorWriter, schema: str, table: str, ops: tuple[tuple[str, ...], ...]
) -> str:
    """Apply column changes to every document of a mirror: DROP COLUMN as ``$unset``, RENAME
    COLUMN as ``$rename``, a NULL column added as ``$set`` to null. Exact, because no value of
    another column changes and no key does; replay-safe, because each is idempotent and every
    later change of a row is applied after it again."""
    name = sink.mirror(schema, table)
    collection = sink.database[name]
    for op in ops:
        field = mirror_field(op[1])
        # Only documents that have the field (or lack it, for an ADD) are changed: a document
        # written by a rebuild that read the table after a later change already has the
        # result; and the nx-27017 stand-in's $rename sets the target to null where the field
        # is missing.
        if op[0] == "drop":
            selector: dict[str, Any] = {field: {"$exists": True}}
            update: dict[str, Any] = {"$unset": {field: ""}}
        elif op[0] == "rename":
            selector = {field: {"$exists": True}}
            update = {"$rename": {field: mirror_field(op[2])}}
        else:
            selector = {field: {"$exists": False}}
            update = {"$set": {field: None}}
        sink.retry(
            lambda selector=selector, update=update: collection.update_many(selector, update)  # type: ignore[misc]
        )
    changes = ", ".join(" ".join(op) for op in ops)
    return f"{name}: changed in place ({changes}), nothing re-read from the source"


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
