"""Rows set aside under ``CDC_ON_UNLOADABLE=dead-letter``: the ``cdc_dead_letters`` collection.

When MongoDB refuses a mirror write as a data error (a validation rule, a unique index an
operator added), the loader records the row here and loads the rest. Every later change of the
same key is recorded here too, not written to the mirror, so the key's changes keep their order:
one document per mirror key, holding the mirror document the key should have now (or ``None``
for a deleted row). ``retry`` writes those documents once the collection is fixed.

Document (``_id`` = ``<collection>|<key as canonical JSON>``): ``source``, ``schema``,
``table``, ``collection``, ``key`` (the mirror ``_id``), ``key_text``, ``reason`` (the server's
code; never a value), ``first_gtid``, ``gtid`` and ``batch`` of the latest change,
``changes`` (how many were set aside), ``set_aside_at``, ``updated_at``, ``document``.

Invariants: a key is set aside before the checkpoint of its segment is written; while it is
set aside, nothing of it reaches its mirror except through ``retry``; the change log
(``row_changes``) is never dead-lettered (a refusal there halts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import DeleteOne, ReplaceOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from cdc_pipeline.core.load.documents import DEAD_LETTERS, id_filter, key_label, key_text


def letter_id(collection: str, identity: Any) -> str:
    return f"{collection}|{key_text(identity)}"


@dataclass(frozen=True)
class Refusal:
    """One mirror write the server refused: where, which key, the document (None: a delete)."""

    collection: str
    schema: str
    table: str
    identity: Any
    document: dict[str, Any] | None
    reason: str


class DeadLetters:
    """The source's set-aside keys, kept in memory while a segment loads."""

    def __init__(
        self, database: Database[Any], retry: Callable[[Callable[[], Any]], Any], source: str
    ):
        self.collection = database[DEAD_LETTERS]
        self.retry = retry
        self.source = source
        self.held: set[str] = set()

    def load(self) -> None:
        found = self.retry(lambda: list(self.collection.find({"source": self.source}, {"_id": 1})))
        self.held = {str(document["_id"]) for document in found}

    def holds(self, collection: str, identity: Any) -> bool:
        return bool(self.held) and letter_id(collection, identity) in self.held

    def set_aside(self, refusal: Refusal, gtid: str | None, batch: str) -> None:
        """Record a refused write (the first of its key, or a later change of a held key)."""
        now = datetime.now(UTC)
        identity = letter_id(refusal.collection, refusal.identity)
        update = {
            "$setOnInsert": {
                "source": self.source,
                "schema": refusal.schema,
                "table": refusal.table,
                "collection": refusal.collection,
                "key": refusal.identity,
                "key_text": key_label(refusal.identity),
                "first_gtid": gtid,
                "set_aside_at": now,
            },
            "$set": {
                "document": refusal.document,
                "gtid": gtid,
                "batch": batch,
                "updated_at": now,
                **({"reason": refusal.reason} if refusal.reason else {}),
            },
            "$inc": {"changes": 1},
        }
        self.retry(lambda: self.collection.update_one({"_id": identity}, update, upsert=True))
        self.held.add(identity)

    def listed(self) -> list[dict[str, Any]]:
        """Every set-aside key of the source, oldest first (without the documents)."""
        return list(
            self.retry(
                lambda: list(
                    self.collection.find({"source": self.source}, {"document": 0}).sort(
                        "set_aside_at", 1
                    )
                )
            )
        )

    def retry_all(self, database: Database[Any]) -> Iterator[tuple[dict[str, Any], str | None]]:
        """Write each held key's document to its mirror (or delete it); yields each letter
        with ``None`` when written (and removed from here), else the server's refusal."""
        letters = self.retry(
            lambda: list(self.collection.find({"source": self.source}).sort("set_aside_at", 1))
        )
        for letter in letters:
            yield letter, self._retry_one(database, letter)

    def _retry_one(self, database: Database[Any], letter: dict[str, Any]) -> str | None:
        document = letter.get("document")
        operation: Any = (
            ReplaceOne(id_filter(letter["key"]), document, upsert=True)
            if document is not None
            else DeleteOne(id_filter(letter["key"]))
        )
        mirror = database[letter["collection"]]
        try:
            self.retry(lambda: mirror.bulk_write([operation], ordered=False))
        except BulkWriteError as error:
            first = (error.details.get("writeErrors") or [{}])[0]
            reason = f"code {first.get('code')}, {first.get('codeName') or 'refused'}"
            self.retry(
                lambda: self.collection.update_one(
                    {"_id": letter["_id"]}, {"$set": {"reason": reason}}
                )
            )
            return reason
        self.retry(lambda: self.collection.delete_one({"_id": letter["_id"]}))
        self.held.discard(str(letter["_id"]))
        return None


def held_keys(database: Database[Any], collection: str) -> set[str]:
    """The set-aside keys of a mirror, as ``key_label`` writes them (for reconciliation)."""
    return {
        key_label(letter["key"])
        for letter in database[DEAD_LETTERS].find({"collection": collection}, {"key": 1})
    }
