"""What a DDL statement does to the mirror collections: TRUNCATE, DROP, RENAME, column changes.

Every statement is recorded in ``cdc_ddl`` (keyed by GTID). TRUNCATE empties the target mirrors,
DROP TABLE drops them, RENAME TABLE renames them, and an ALTER TABLE that changes columns or the
key changes the mirror in place where that is exact, else rebuilds it from the source table
(``load.rebuild``; the binlog carries no row events for the rows such a statement rewrites).

Invariants: every effect is replay-safe: a rename whose old name is gone already happened; an
in-place change touches only the documents it has not changed yet; a rebuild resumes or starts
over (``load.rebuild``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import UpdateOne
from pymongo.collection import Collection

from cdc_pipeline.core.load.documents import (
    DDL_HISTORY,
    MIRROR_STATUS,
    id_filter,
    mirror_field,
    mirror_meta,
)
from cdc_pipeline.core.load.rebuild import (
    BULK_CHUNK,
    MirrorWriter,
    forget_rebuild,
    rebuild_mirror,
    rename_collection,
)
from cdc_pipeline.core.mysql.ddl import DdlStatement, classify_row
from cdc_pipeline.core.values import big_integer


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
            forget_rebuild(sink, name)
            sink.unregister(name)
    elif statement.kind == "drop_database":
        # The statement names no table: the catalog knows which mirrors the schema has.
        for schema, _ in statement.targets:
            for name in sink.mirrors_of_schema(row["source"], schema):
                sink.retry(lambda name=name: database.drop_collection(name))  # type: ignore[misc]
                forget_rebuild(sink, name)
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
    named = {name for op in statement.column_ops for name in _columns_named(op)}
    if keys is None or named & keys:
        return False
    name = sink.mirror(schema, table)
    return sink.retry(lambda: sink.database[MIRROR_STATUS].find_one({"_id": name})) is None


def change_in_place(
    sink: MirrorWriter, schema: str, table: str, ops: tuple[tuple[str, ...], ...]
) -> str:
    """Apply column changes to every document of a mirror: DROP COLUMN as ``$unset``, RENAME
    COLUMN as ``$rename``, an added column as ``$set`` to null or to its constant default.
    Exact, because no value of another column changes and no key does; replay-safe, because
    each is idempotent and every later change of a row is applied after it again."""
    name = sink.mirror(schema, table)
    collection = sink.database[name]
    for op in ops:
        field = mirror_field(op[1])
        if op[0] == "drop":
            # $unset of a field a document lacks changes nothing, on every server.
            sink.retry(lambda field=field: collection.update_many({}, {"$unset": {field: ""}}))  # type: ignore[misc]
            continue
        # Only documents that have the field (a RENAME) or lack it (an ADD) are changed: a
        # document written by a rebuild that read the table after a later change already has
        # the result. Which those are is decided here, not by a ``$exists`` query, because the
        # nx-27017 stand-in's queries cannot tell a field holding null from a missing one (and
        # its $rename of a missing field sets the target to null): a MODIFY that drops a
        # column's default leaves such nulls in every row inserted after it.
        update: dict[str, Any] = (
            {"$rename": {field: mirror_field(op[2])}}
            if op[0] == "rename"
            else {"$set": {field: sink.stored(_added_value(op))}}
        )
        sink.retry(
            lambda field=field, update=update, present=op[0] == "rename": _update_where(  # type: ignore[misc]
                collection, field, present, update
            )
        )
    changes = ", ".join(" ".join(op) for op in ops)
    return f"{name}: changed in place ({changes}), nothing re-read from the source"


def _update_where(
    collection: Collection[Any], field: str, present: bool, update: Mapping[str, Any]
) -> None:
    """Apply ``update`` to every document of ``collection`` that has ``field`` (``present``) or
    lacks it, a chunk of ``_id`` values at a time. Safe to run again from the start after a
    failure: a document already changed is no longer selected."""
    chunk: list[Any] = []
    for document in collection.find({}, {field: True}):
        if (field in document) == present:
            chunk.append(document["_id"])
        if len(chunk) >= BULK_CHUNK:
            _update_ids(collection, chunk, update)
            chunk = []
    if chunk:
        _update_ids(collection, chunk, update)


def _update_ids(collection: Collection[Any], ids: list[Any], update: Mapping[str, Any]) -> None:
    """One command for a chunk: ``$in`` over plain ``_id`` values; a composite key's documents
    one by one through ``id_filter`` (the nx-27017 stand-in cannot compare document values)."""
    if any(isinstance(identity, dict) for identity in ids):
        operations = [UpdateOne(id_filter(identity), update) for identity in ids]
        collection.bulk_write(operations, ordered=False)
    else:
        collection.update_many({"_id": {"$in": ids}}, update)


def _columns_named(op: tuple[str, ...]) -> tuple[str, ...]:
    return op[1:] if op[0] == "rename" else op[1:2]


def _added_value(op: tuple[str, ...]) -> Any:
    """The value every existing row has in a column ``op`` adds: NULL, or its constant default
    as the loader writes that value of that type (``core.values``)."""
    if op[0] == "add_int":
        return big_integer(int(op[2]))
    if op[0] == "add_text":
        return op[2]
    return None
