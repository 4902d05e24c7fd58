"""Insert a bulk of raw documents with one ``insert`` command instead of ``bulk_write``.

pymongo's bulk API spends Python on every operation: it checks each document, sorts the
operations into runs, splits the runs into messages and merges the replies, about a
microsecond of client CPU per operation on this machine, against under half of that for the
same documents sent in one ``insert`` command (docs/profile.md). Most of a load's writes are
inserts of documents the loader assembled as BSON (``load.raw_documents``): every change-log
document, and the mirror document of every inserted row. ``insert_raw`` sends such a bulk
itself.

Invariants:
    * the same outcome as ``collection.bulk_write(operations, ordered=False)``: the same
      documents written, and a failure raised as the ``BulkWriteError`` pymongo raises for it,
      its details in pymongo's shape (``writeErrors`` in operation order, each with the index
      of its operation and its document; ``writeConcernErrors`` with the reply's error
      labels; the counts), so everything downstream (duplicate keys replaced, dead letters,
      halts, the transient-error test) reads it unchanged (tested against ``bulk_write``);
    * it sends nothing and returns False unless every operation is an ``InsertOne`` of a
      ``RawBSONDocument``, the write concern is acknowledged, and the documents fit in one
      command with room to spare (``COMMAND_BYTES``): pymongo splits a bulk that is larger
      and the caller falls back to it; a command never reaches the size the server refuses;
    * a reply the server marks failed (``ok: 0``) raises what ``bulk_write`` raises for it
      (``Database.command`` applies pymongo's own check: a not-primary reply is a
      ``NotPrimaryError``); a network failure raises pymongo's ``ConnectionFailure``. The caller
      retries the bulk whole, as it does a ``bulk_write``: a document already written is then
      a duplicate key, which the sink replaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import InsertOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

COMMAND_BYTES = 8 * 1024 * 1024
"""The most document bytes one ``insert`` command carries: half of the 16 MiB a command body
may hold (documents travel inside the body here, not in the message's separate document
sequence that ``bulk_write`` uses, which may hold 48 MB), leaving room for each document's
array index and the command's own fields."""


def insert_raw(database: Database[Any], collection: str, operations: list[Any]) -> bool:
    """Send ``operations`` as one unordered ``insert`` command; False, with nothing sent, when
    they are not a bulk this sends (the module's invariants): the caller uses ``bulk_write``."""
    if not operations or not database.write_concern.acknowledged:
        return False
    documents = []
    size = 0
    for operation in operations:
        if type(operation) is not InsertOne:
            return False
        document = operation._doc
        if not isinstance(document, RawBSONDocument):
            return False
        size += len(document.raw)
        documents.append(document)
    if size > COMMAND_BYTES:
        return False
    command: dict[str, Any] = {"insert": collection, "documents": documents, "ordered": False}
    if not database.write_concern.is_server_default:
        command["writeConcern"] = database.write_concern.document
    reply = database.command(command)
    if reply.get("writeErrors") or reply.get("writeConcernError"):
        raise BulkWriteError(bulk_details(reply, operations))
    return True


def bulk_details(reply: Mapping[str, Any], operations: list[Any]) -> dict[str, Any]:
    """The details of the ``BulkWriteError`` pymongo raises for this reply to an unordered
    insert of ``operations`` sent in one command (``bulk_shared._merge_command`` and
    ``_raise_bulk_write_error``)."""
    write_errors = []
    for error in reply.get("writeErrors") or []:
        item = dict(error)
        item["op"] = operations[item["index"]]._doc  # as pymongo's: the document, not the InsertOne
        write_errors.append(item)
    write_errors.sort(key=lambda item: item["index"])
    concern_errors = []
    concern = reply.get("writeConcernError")
    if concern:
        labels = reply.get("errorLabels")
        concern_errors.append({**concern, "errorLabels": labels} if labels else concern)
    return {
        "writeErrors": write_errors,
        "writeConcernErrors": concern_errors,
        "nInserted": reply.get("n", 0),
        "nUpserted": 0,
        "nMatched": 0,
        "nModified": 0,
        "nRemoved": 0,
        "upserted": [],
    }
