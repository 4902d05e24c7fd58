"""Send a bulk of raw writes as ``insert``, ``update`` and ``delete`` commands instead of
through pymongo's ``bulk_write``.

pymongo's bulk API spends Python on every operation: it checks each document, sorts the
operations into runs, splits the runs into messages and merges the replies. On this machine an
inserted document cost 1.5-2.3 µs of client CPU through ``bulk_write`` and 1.1-1.4 sent in one
command (docs/decisions.md). Most of a load's writes are built as BSON
(``load.raw_documents``): every change-log document, and every mirror write of a table with a
one-column key (the inserted row's document, the updated row's replacement and its ``_id``
selector, the deleted row's selector). ``send_raw`` sends such a bulk itself, one command per
kind of write, in the order pymongo's unordered bulk sends them (inserts, updates, deletes).

Invariants:
    * the same outcome as ``collection.bulk_write(operations, ordered=False)``: the same
      writes, and a failure raised as the ``BulkWriteError`` pymongo raises for it, its details
      in pymongo's shape (``writeErrors`` in operation order, each with the index of its
      operation and what pymongo calls its op; ``writeConcernErrors`` with the reply's error
      labels; ``upserted`` with the operations' indexes; the counts), so everything downstream
      (duplicate keys replaced, dead letters, halts, the transient-error test) reads it
      unchanged (tested against ``bulk_write`` on the same operations);
    * it sends nothing and returns False unless every operation is an ``InsertOne`` of a
      ``RawBSONDocument``, a ``ReplaceOne`` or ``DeleteOne`` whose selector (and replacement)
      is one, without collation, hint or sort; the write concern is acknowledged; and the
      bytes fit in one command with room to spare (``COMMAND_BYTES``). The caller then uses
      ``bulk_write``, which splits a larger bulk; a command never reaches the size the server
      refuses;
    * a reply the server marks failed (``ok: 0``) raises what ``bulk_write`` raises for it
      (``Database.command`` applies pymongo's own check: a not-primary reply is a
      ``NotPrimaryError``), and a network failure pymongo's ``ConnectionFailure``, with the
      commands after it not sent. The caller retries the bulk whole, as it does a
      ``bulk_write``: an insert already written is then a duplicate key, which the sink
      replaces; replacements and deletes by ``_id`` are idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne, InsertOne, ReplaceOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

COMMAND_BYTES = 8 * 1024 * 1024
"""The most bytes of documents and selectors a bulk sent here carries: half of the 16 MiB a
command body may hold (documents travel inside the body here, not in the message's separate
document sequence that ``bulk_write`` uses, which may hold 48 MB), leaving room for each
statement's own fields."""

_STATEMENT_BYTES = 32
"""What an update or delete statement adds around its documents (field names, ``upsert`` or
``limit``, array index), rounded up."""

_KINDS = (("insert", "documents"), ("update", "updates"), ("delete", "deletes"))
"""Each command's name and the field of its statements, in pymongo's unordered order."""


def send_raw(database: Database[Any], collection: str, operations: list[Any]) -> bool:
    """Send ``operations`` as unordered commands; False, with nothing sent, when they are not
    a bulk this sends (the module's invariants): the caller uses ``bulk_write``."""
    if not operations or not database.write_concern.acknowledged:
        return False
    statements: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
    indexes: tuple[list[int], list[int], list[int]] = ([], [], [])
    size = 0
    for index, operation in enumerate(operations):
        kind = type(operation)
        if kind is InsertOne:
            statement: Any = operation._doc
            if not isinstance(statement, RawBSONDocument):
                return False
            size += len(statement.raw)
            slot = 0
        elif kind is ReplaceOne:
            selector, replacement = operation._filter, operation._doc
            if not (
                isinstance(selector, RawBSONDocument)
                and isinstance(replacement, RawBSONDocument)
                and operation._collation is None
                and operation._hint is None
                and operation._sort is None
            ):
                return False
            statement = {"q": selector, "u": replacement}
            if operation._upsert is not None:
                statement["upsert"] = operation._upsert
            size += len(selector.raw) + len(replacement.raw) + _STATEMENT_BYTES
            slot = 1
        elif kind is DeleteOne:
            selector = operation._filter
            if not (
                isinstance(selector, RawBSONDocument)
                and operation._collation is None
                and operation._hint is None
            ):
                return False
            statement = {"q": selector, "limit": 1}
            size += len(selector.raw) + _STATEMENT_BYTES
            slot = 2
        else:
            return False
        statements[slot].append(statement)
        indexes[slot].append(index)
    if size > COMMAND_BYTES:
        return False
    details = _empty_details()
    concern = database.write_concern
    for (name, field), sent, where in zip(_KINDS, statements, indexes, strict=True):
        if sent:
            command: dict[str, Any] = {name: collection, field: sent, "ordered": False}
            if not concern.is_server_default:
                command["writeConcern"] = concern.document
            merge_reply(details, name, database.command(command), sent, where)
    if details["writeErrors"] or details["writeConcernErrors"]:
        details["writeErrors"].sort(key=lambda item: item["index"])
        raise BulkWriteError(details)
    return True


def _empty_details() -> dict[str, Any]:
    return {
        "writeErrors": [],
        "writeConcernErrors": [],
        "nInserted": 0,
        "nUpserted": 0,
        "nMatched": 0,
        "nModified": 0,
        "nRemoved": 0,
        "upserted": [],
    }


def merge_reply(
    details: dict[str, Any],
    name: str,
    reply: Mapping[str, Any],
    statements: list[Any],
    indexes: list[int],
) -> None:
    """Add one command's reply to a bulk's ``details`` as pymongo's bulk API does
    (``bulk_shared._merge_command``): ``statements`` were sent, ``indexes`` are their
    operations' places in the bulk."""
    affected = reply.get("n", 0)
    if name == "insert":
        details["nInserted"] += affected
    elif name == "delete":
        details["nRemoved"] += affected
    else:
        upserted = reply.get("upserted")
        if upserted:
            for item in upserted:
                item["index"] = indexes[item["index"]]
            details["upserted"].extend(upserted)
            details["nUpserted"] += len(upserted)
            details["nMatched"] += affected - len(upserted)
        else:
            details["nMatched"] += affected
        details["nModified"] += reply["nModified"]
    for error in reply.get("writeErrors") or []:
        item = dict(error)
        item["index"] = indexes[error["index"]]
        item["op"] = statements[error["index"]]
        details["writeErrors"].append(item)
    concern = reply.get("writeConcernError")
    if concern:
        labels = reply.get("errorLabels")
        details["writeConcernErrors"].append(
            {**concern, "errorLabels": labels} if labels else concern
        )
