"""``load.insert_command`` against each backend: what it writes and what it raises is what
pymongo's ``bulk_write`` writes and raises for the same operations, side by side on two
collections of one database; the bulks it must not send are left to ``bulk_write``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from pymongo import InsertOne, ReplaceOne
from pymongo.bulk_shared import _INSERT, _merge_command, _Run
from pymongo.database import Database
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

from cdc_pipeline.core.load import insert_command
from cdc_pipeline.core.load.insert_command import bulk_details, insert_raw
from cdc_pipeline.core.load.retry import is_transient
from cdc_pipeline.core.load.sink import DUPLICATE_KEY


def _raw(document: dict[str, Any]) -> RawBSONDocument:
    return RawBSONDocument(bson.encode(document))


def _documents(first: int, count: int) -> list[dict[str, Any]]:
    at = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    return [
        {
            "_id": f"0-1-{number}#0",
            "text": "é" * (number % 7),
            "number": number,
            "big": 2**40 + number,
            "at": at,
            "nested": {"list": [1, "two", {"three": None}], "flag": number % 2 == 0},
        }
        for number in range(first, first + count)
    ]


def _stored(database: Database[Any], name: str) -> list[dict[str, Any]]:
    return list(database[name].find(sort=[("_id", 1)]))


def _bulk_error(action: Any) -> dict[str, Any]:
    with pytest.raises(BulkWriteError) as raised:
        action()
    return raised.value.details


def test_raw_inserts_write_what_bulk_write_writes(contract_db: Database[Any]) -> None:
    documents = _documents(1, 300)
    assert insert_raw(contract_db, "ours", [InsertOne(_raw(d)) for d in documents]) is True
    contract_db["theirs"].bulk_write([InsertOne(_raw(d)) for d in documents], ordered=False)
    ours = _stored(contract_db, "ours")
    assert len(ours) == 300
    assert ours == _stored(contract_db, "theirs")
    assert {document["_id"] for document in ours} == {document["_id"] for document in documents}


def test_duplicate_keys_fail_as_bulk_write_fails(contract_db: Database[Any]) -> None:
    """Keys already there and a key twice in the bulk: the same write errors (index, code, the
    operation's document), the same count written, the rest of the bulk written (unordered),
    and the same answer from the transient-error test."""
    for name in ("ours", "theirs"):
        contract_db[name].insert_many(_documents(3, 2))  # keys 3 and 4 are there already
    documents = _documents(1, 6) + _documents(2, 1)  # keys 1..6, then 2 again

    def operations() -> list[InsertOne[Any]]:
        return [InsertOne(_raw(document)) for document in documents]

    sent = operations()
    ours = _bulk_error(lambda: insert_raw(contract_db, "ours", sent))
    theirs = _bulk_error(lambda: contract_db["theirs"].bulk_write(operations(), ordered=False))

    def summary(details: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(e["index"], e["code"], bson.encode(e["op"])) for e in details["writeErrors"]]

    assert summary(ours) == summary(theirs)
    assert [error["index"] for error in ours["writeErrors"]] == [2, 3, 6]
    assert {error["code"] for error in ours["writeErrors"]} == {DUPLICATE_KEY}
    assert all(error["op"] is sent[error["index"]]._doc for error in ours["writeErrors"])
    assert ours["nInserted"] == theirs["nInserted"] == 4
    assert not is_transient(BulkWriteError(ours)) and not is_transient(BulkWriteError(theirs))
    assert _stored(contract_db, "ours") == _stored(contract_db, "theirs")


@pytest.mark.parametrize(
    "case",
    ["a replacement among the inserts", "a decoded document", "too many bytes", "w=0"],
)
def test_what_it_does_not_send_is_left_to_bulk_write(
    contract_db: Database[Any], case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    operations: list[Any] = [InsertOne(_raw(document)) for document in _documents(1, 3)]
    database = contract_db
    if case == "a replacement among the inserts":
        operations.append(ReplaceOne({"_id": "x"}, _raw({"_id": "x"}), upsert=True))
    elif case == "a decoded document":
        operations.append(InsertOne(_documents(9, 1)[0]))
    elif case == "too many bytes":
        size = sum(len(operation._doc.raw) for operation in operations)
        monkeypatch.setattr(insert_command, "COMMAND_BYTES", size - 1)
    else:
        database = contract_db.with_options(write_concern=WriteConcern(w=0))
    assert insert_raw(database, "ours", operations) is False
    assert contract_db["ours"].count_documents({}) == 0
    if case == "too many bytes":  # one byte more room, and it sends them
        monkeypatch.setattr(insert_command, "COMMAND_BYTES", size)
        assert insert_raw(database, "ours", operations) is True
        assert contract_db["ours"].count_documents({}) == 3


def test_a_reply_reads_as_pymongo_merges_it() -> None:
    """``bulk_details`` of a reply with write errors out of order and a write-concern error
    with labels equals what pymongo's bulk API makes of the same reply (its own merge, then
    the sort it does before raising)."""
    operations = [InsertOne(_raw(document)) for document in _documents(1, 4)]
    reply = {
        "n": 2,
        "ok": 1.0,
        "writeErrors": [
            {"index": 3, "code": DUPLICATE_KEY, "errmsg": "E11000 duplicate key"},
            {"index": 1, "code": 121, "errmsg": "Document failed validation"},
        ],
        "writeConcernError": {"code": 64, "errmsg": "waiting for replication timed out"},
        "errorLabels": ["RetryableWriteError"],
    }
    run = _Run(_INSERT)
    for index, operation in enumerate(operations):
        run.add(index, operation._doc)
    pymongo_details: dict[str, Any] = {
        "writeErrors": [],
        "writeConcernErrors": [],
        "nInserted": 0,
        "nUpserted": 0,
        "nMatched": 0,
        "nModified": 0,
        "nRemoved": 0,
        "upserted": [],
    }
    _merge_command(run, pymongo_details, 0, reply)
    pymongo_details["writeErrors"].sort(key=lambda error: error["index"])
    assert bulk_details(reply, operations) == pymongo_details
    assert [error["index"] for error in pymongo_details["writeErrors"]] == [1, 3]
    without_labels = {key: value for key, value in reply.items() if key != "errorLabels"}
    concern = bulk_details(without_labels, operations)["writeConcernErrors"][0]
    assert "errorLabels" not in concern
