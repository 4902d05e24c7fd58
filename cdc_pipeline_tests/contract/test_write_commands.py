"""``load.write_commands`` against each backend: what it writes and what it raises is what
pymongo's ``bulk_write`` writes and raises for the same operations, side by side on two
collections of one database; the bulks it must not send are left to ``bulk_write``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import bson
import pymongo
import pytest
from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateOne
from pymongo.bulk_shared import _DELETE, _INSERT, _UPDATE, _merge_command, _Run
from pymongo.database import Database
from pymongo.errors import BulkWriteError
from pymongo.monitoring import CommandListener, CommandStartedEvent
from pymongo.write_concern import WriteConcern

from cdc_pipeline.core.load import write_commands
from cdc_pipeline.core.load.retry import is_transient
from cdc_pipeline.core.load.sink import DUPLICATE_KEY
from cdc_pipeline.core.load.write_commands import merge_reply, send_raw
from cdc_pipeline_tests.contract.conftest import ContractBackend


def _raw(document: dict[str, Any]) -> RawBSONDocument:
    return RawBSONDocument(bson.encode(document))


def _document(number: int, version: str = "first") -> dict[str, Any]:
    return {
        "_id": number,
        "text": "é" * (number % 7),
        "version": version,
        "big": 2**40 + number,
        "at": datetime(2026, 12, 4, 12, 0, tzinfo=UTC),
        "nested": {"list": [1, "two", {"three": None}], "flag": number % 2 == 0},
    }


def _stored(database: Database[Any], name: str) -> list[dict[str, Any]]:
    return list(database[name].find(sort=[("_id", 1)]))


def _bulk_error(action: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(BulkWriteError) as raised:
        action()
    return raised.value.details


def _comparable(details: dict[str, Any], collection: str) -> dict[str, Any]:
    """The details with each write error's op as its BSON (ours and pymongo's are equal
    documents, not the same objects) and the collection's name out of its message."""
    errors = [
        {
            **error,
            "op": bson.encode(error["op"]),
            "errmsg": error["errmsg"].replace(collection, "<collection>"),
        }
        for error in details["writeErrors"]
    ]
    return {**details, "writeErrors": errors}


def test_raw_inserts_write_what_bulk_write_writes(contract_db: Database[Any]) -> None:
    documents = [_document(number) for number in range(1, 301)]
    assert send_raw(contract_db, "ours", [InsertOne(_raw(d)) for d in documents]) is True
    contract_db["theirs"].bulk_write([InsertOne(_raw(d)) for d in documents], ordered=False)
    ours = _stored(contract_db, "ours")
    assert len(ours) == 300
    assert ours == _stored(contract_db, "theirs")


def _mixed_bulk() -> list[Any]:
    """Every kind of write the sink sends, each way it can end: keys 1-6 are there already,
    and ``big`` has a unique index."""

    def selector(number: int) -> RawBSONDocument:
        return _raw({"_id": number})

    return [
        InsertOne(_raw(_document(7))),
        ReplaceOne(selector(6), _raw(_document(6) | {"big": 2**40 + 1}), upsert=True),  # refused
        ReplaceOne(selector(2), _raw(_document(2, "second")), upsert=True),  # replaces
        DeleteOne(selector(4)),  # deletes
        InsertOne(_raw(_document(3))),  # a duplicate key
        ReplaceOne(selector(10), _raw(_document(10, "second")), upsert=True),  # inserts
        DeleteOne(selector(12)),  # nothing to delete
        InsertOne(_raw(_document(8))),
        ReplaceOne(selector(11), _raw(_document(11, "second"))),  # no upsert: nothing matches
        InsertOne(_raw(_document(7))),  # a duplicate of the bulk's own first insert
        ReplaceOne(selector(5), _raw(_document(5)), upsert=True),  # matches, changes nothing
    ]


def test_a_mixed_bulk_writes_and_fails_as_bulk_write_does(contract_db: Database[Any]) -> None:
    """Inserts, replacements and deletes in one bulk, with duplicate keys among the inserts
    and the replacements: the same details (write errors in operation order, across the
    commands, with their indexes, codes and ops; every count; the upserted ids with their
    indexes), the same documents stored, and the same answer from the transient-error test."""
    for name in ("ours", "theirs"):
        contract_db[name].insert_many([_document(number) for number in range(1, 7)])
        contract_db[name].create_index("big", unique=True)
    sent = _mixed_bulk()
    ours = _bulk_error(lambda: send_raw(contract_db, "ours", sent))
    theirs = _bulk_error(lambda: contract_db["theirs"].bulk_write(_mixed_bulk(), ordered=False))
    assert _comparable(ours, "ours") == _comparable(theirs, "theirs")
    assert [(error["index"], error["code"]) for error in ours["writeErrors"]] == [
        (1, DUPLICATE_KEY),  # sent after the inserts' errors, reported before them
        (4, DUPLICATE_KEY),
        (9, DUPLICATE_KEY),
    ]
    assert ours["writeErrors"][1]["op"] is sent[4]._doc
    assert [(item["index"], item["_id"]) for item in ours["upserted"]] == [(5, 10)]
    counts = ("nInserted", "nUpserted", "nMatched", "nRemoved")
    assert [ours[count] for count in counts] == [2, 1, 2, 1]
    assert not is_transient(BulkWriteError(ours)) and not is_transient(BulkWriteError(theirs))
    stored = _stored(contract_db, "ours")
    assert stored == _stored(contract_db, "theirs")
    assert sorted(document["_id"] for document in stored) == [1, 2, 3, 5, 6, 7, 8, 10]


def test_a_bulk_without_failures_writes_as_bulk_write_does(contract_db: Database[Any]) -> None:
    for name in ("ours", "theirs"):
        contract_db[name].insert_many([_document(number) for number in range(1, 7)])
    bulk = [
        operation
        for index, operation in enumerate(_mixed_bulk())
        if index not in (1, 4, 9)  # the refused ones
    ]
    assert send_raw(contract_db, "ours", bulk) is True
    contract_db["theirs"].bulk_write(bulk, ordered=False)
    assert _stored(contract_db, "ours") == _stored(contract_db, "theirs")


class _Statements(CommandListener):
    """The write statements of every insert, update and delete command a client sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bool, list[bytes]]] = []

    def started(self, event: CommandStartedEvent) -> None:
        fields = {"insert": "documents", "update": "updates", "delete": "deletes"}
        if event.command_name in fields:
            command = event.command
            statements = [bson.encode(item) for item in command[fields[event.command_name]]]
            self.sent.append((event.command_name, command["ordered"], statements))

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


def test_it_sends_the_statements_bulk_write_sends(
    contract_mongo: ContractBackend, contract_db: Database[Any]
) -> None:
    """On the wire (pymongo's command monitoring): the same commands, unordered, in the same
    order, with the same statements byte for byte."""
    listener = _Statements()
    client: Any = pymongo.MongoClient(
        contract_mongo.uri, serverSelectionTimeoutMS=5_000, event_listeners=[listener]
    )
    try:
        database = client[contract_db.name]
        database["ours"].insert_many([_document(number) for number in range(1, 7)])
        database["theirs"].insert_many([_document(number) for number in range(1, 7)])
        listener.sent.clear()
        bulk = [operation for index, operation in enumerate(_mixed_bulk()) if index not in (4, 9)]
        assert send_raw(database, "ours", bulk) is True
        ours, listener.sent = listener.sent, []
        database["theirs"].bulk_write(bulk, ordered=False)
        assert [name for name, _, _ in ours] == ["insert", "update", "delete"]
        assert ours == listener.sent
    finally:
        client.close()


@pytest.mark.parametrize(
    "case",
    [
        "an update among them",
        "a decoded insert",
        "a decoded selector",
        "a decoded replacement",
        "a hint",
        "too many bytes",
        "w=0",
    ],
)
def test_what_it_does_not_send_is_left_to_bulk_write(
    contract_db: Database[Any], case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    operations: list[Any] = [
        InsertOne(_raw(_document(1))),
        ReplaceOne(_raw({"_id": 2}), _raw(_document(2)), upsert=True),
        DeleteOne(_raw({"_id": 3})),
    ]
    database = contract_db
    if case == "an update among them":
        operations.append(UpdateOne(_raw({"_id": 4}), {"$set": {"v": 1}}, upsert=True))
    elif case == "a decoded insert":
        operations.append(InsertOne(_document(5)))
    elif case == "a decoded selector":
        operations.append(DeleteOne({"_id": 6}))
    elif case == "a decoded replacement":
        operations.append(ReplaceOne(_raw({"_id": 7}), _document(7), upsert=True))
    elif case == "a hint":
        operations.append(DeleteOne(_raw({"_id": 8}), hint="_id_"))
    elif case == "too many bytes":
        size = len(operations[0]._doc.raw) + len(operations[1]._filter.raw)
        size += len(operations[1]._doc.raw) + len(operations[2]._filter.raw)
        size += 2 * write_commands._STATEMENT_BYTES
        monkeypatch.setattr(write_commands, "COMMAND_BYTES", size - 1)
    else:
        database = contract_db.with_options(write_concern=WriteConcern(w=0))
    assert send_raw(database, "ours", operations) is False
    assert contract_db["ours"].count_documents({}) == 0
    if case == "too many bytes":  # one byte more room, and it sends them
        monkeypatch.setattr(write_commands, "COMMAND_BYTES", size)
        assert send_raw(database, "ours", operations) is True
        assert [document["_id"] for document in _stored(contract_db, "ours")] == [1, 2]


def _pymongo_merge(kind: int, statements: list[Any], indexes: list[int], reply: Any) -> Any:
    """What pymongo's bulk API makes of one command's reply (its own merge, then the sort it
    does before raising)."""
    run = _Run(kind)
    for index, statement in zip(indexes, statements, strict=True):
        run.add(index, statement)
    # pymongo's starting result (synchronous/bulk.py), written out here rather than taken from
    # the module under test, so that the oracle does not share its mistakes
    details: dict[str, Any] = {
        "writeErrors": [],
        "writeConcernErrors": [],
        "nInserted": 0,
        "nUpserted": 0,
        "nMatched": 0,
        "nModified": 0,
        "nRemoved": 0,
        "upserted": [],
    }
    _merge_command(run, details, 0, reply)
    details["writeErrors"].sort(key=lambda error: error["index"])
    return details


@pytest.mark.parametrize("name", ["insert", "update", "delete"])
def test_a_reply_reads_as_pymongo_merges_it(name: str) -> None:
    """``merge_reply`` of a reply with write errors out of order, upserted ids (an update's)
    and a write-concern error with labels equals what pymongo's bulk API makes of it."""
    kind = {"insert": _INSERT, "update": _UPDATE, "delete": _DELETE}[name]
    statements = [{"q": {"_id": number}, "limit": 1} for number in range(4)]
    indexes = [2, 5, 6, 9]  # their places among the bulk's operations

    def reply() -> dict[str, Any]:  # a fresh one each time: both merges renumber upserted ids
        return {
            "n": 3,
            "nModified": 1,
            "upserted": [{"index": 2, "_id": 12}],
            "ok": 1.0,
            "writeErrors": [
                {"index": 3, "code": DUPLICATE_KEY, "errmsg": "E11000 duplicate key"},
                {"index": 1, "code": 121, "errmsg": "Document failed validation"},
            ],
            "writeConcernError": {"code": 64, "errmsg": "waiting for replication timed out"},
            "errorLabels": ["RetryableWriteError"],
        }

    ours = write_commands._empty_details()
    merge_reply(ours, name, reply(), statements, indexes)
    ours["writeErrors"].sort(key=lambda error: error["index"])
    assert ours == _pymongo_merge(kind, statements, indexes, reply())
    assert [error["index"] for error in ours["writeErrors"]] == [5, 9]
    without_labels = {key: value for key, value in reply().items() if key != "errorLabels"}
    plain = write_commands._empty_details()
    merge_reply(plain, name, without_labels, statements, indexes)
    assert "errorLabels" not in plain["writeConcernErrors"][0]
