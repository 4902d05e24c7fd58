"""Compare one source table with its mirror collection, streaming, one digest pair per key.

Pure logic (no I/O): ``reconcile`` feeds it the source rows (as the mirror documents the loader
would write for them, see ``expected_document``) and then the mirror's documents.

Invariants:
    * memory: one 16-byte key digest and one 16-byte row digest per *source* row (about 150
      bytes each in CPython), plus at most ``cap`` mirror documents kept to name the fields of
      differing keys; the key texts of missing rows are recovered by a second pass over the
      source (``resolve``), only when something is missing or differs;
    * values never leave this module: a result holds counts, key texts and field names only;
    * documents compare field by field whatever their field order; ``_cdc`` is ignored; integer
      width (int32 vs int64) counts unless ``exact_int_width`` is False (the nx-27017 stand-in
      widens int32 to int64). Everything else is type-strict: ``1`` is not ``1.0`` nor ``"1"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import json_util
from bson.int64 import Int64

from cdc_pipeline.core.load.documents import mirror_field, mirror_id
from cdc_pipeline.core.mysql.catalog import SourceTable

META_FIELD = "_cdc"


def expected_document(
    table: SourceTable, row: Mapping[str, Any], stored: Callable[[Any], Any]
) -> dict[str, Any]:
    """The mirror document the loader writes for a source row (without ``_cdc``).

    ``stored`` is ``MongoSink.stored`` (Decimal128 as exact strings on the nx-27017 stand-in).
    """
    document: dict[str, Any] = {"_id": stored(mirror_id(table.key_of(row)))}
    document.update((mirror_field(name), value) for name, value in stored(dict(row)).items())
    return document


def _text(value: Any, exact_int_width: bool) -> str:
    """Extended JSON of a value, to compare two fields (names of differing fields only)."""
    options = (
        json_util.CANONICAL_JSON_OPTIONS if exact_int_width else json_util.RELAXED_JSON_OPTIONS
    )
    return json_util.dumps(value, json_options=options)


def key_text(identity: Any) -> str:
    """How a key is shown: relaxed Extended JSON, e.g. ``7``, ``"k1"``, ``{"b": "k1", "a": 3}``."""
    return json_util.dumps(identity, json_options=json_util.RELAXED_JSON_OPTIONS)


def _narrow(value: Any) -> Any:
    """int64 values as plain ints (BSON then picks the width by value), for the stand-in."""
    if isinstance(value, Int64):
        return int(value)
    if isinstance(value, dict):
        return {key: _narrow(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_narrow(item) for item in value]
    return value


def _digest(value: Any, exact_int_width: bool) -> bytes:
    """blake2b-128 of the value's BSON bytes: type-exact (int32/int64, Decimal128, binary,
    datetime to the millisecond as stored) and fast (the encoder is C)."""
    data = bson.encode({"v": value if exact_int_width else _narrow(value)})
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass
class Comparison:
    """What differs between one table and its mirror: counts, and the first ``cap`` keys.

    ``differing_keys`` pairs each key with the names of the mirror fields whose values differ
    (a field present on one side only counts), never the values.
    """

    source_rows: int = 0
    mirror_rows: int = 0
    missing: int = 0
    extra: int = 0
    differing: int = 0
    missing_keys: list[str] = field(default_factory=list)
    extra_keys: list[str] = field(default_factory=list)
    differing_keys: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.differing)


class TableComparison:
    """Feed ``add_expected`` for every source row, then ``add_mirror`` for every mirror
    document, then ``finish``; if ``needs_second_pass``, ``resolve`` with the source rows again
    (same snapshot) to name missing keys and the fields of differing ones."""

    def __init__(self, exact_int_width: bool = True, cap: int = 20):
        self.exact = exact_int_width
        self.cap = cap
        self.result = Comparison()
        self._pending: dict[bytes, bytes] = {}
        self._kept_mirror: dict[bytes, tuple[str, dict[str, Any]]] = {}
        self._finished = False

    # -- digests ------------------------------------------------------------------------------
    def _key_digest(self, identity: Any) -> bytes:
        return _digest(identity, self.exact)

    def _row_digest(self, document: Mapping[str, Any]) -> bytes:
        body = {name: document[name] for name in sorted(document) if name not in ("_id", "_cdc")}
        return _digest(body, self.exact)

    # -- passes -------------------------------------------------------------------------------
    def add_expected(self, document: Mapping[str, Any]) -> None:
        """One source row, as ``expected_document`` makes it."""
        self.result.source_rows += 1
        self._pending[self._key_digest(document["_id"])] = self._row_digest(document)

    def add_mirror(self, document: Mapping[str, Any]) -> None:
        """One mirror document (``_cdc`` is ignored)."""
        result = self.result
        result.mirror_rows += 1
        key = self._key_digest(document["_id"])
        expected = self._pending.pop(key, None)
        if expected is None:
            result.extra += 1
            if len(result.extra_keys) < self.cap:
                result.extra_keys.append(key_text(document["_id"]))
        elif expected != self._row_digest(document):
            result.differing += 1
            if len(self._kept_mirror) < self.cap:
                self._kept_mirror[key] = (key_text(document["_id"]), dict(document))

    def finish(self) -> Comparison:
        """Counts are final from here; keys of missing rows wait for ``resolve``."""
        if not self._finished:
            self.result.missing = len(self._pending)
            self._finished = True
        return self.result

    @property
    def needs_second_pass(self) -> bool:
        return bool(self.finish().missing or self._kept_mirror)

    def resolve(self, expected_documents: Iterable[Mapping[str, Any]]) -> Comparison:
        """Second pass over the source rows: names the first ``cap`` missing keys (in source
        order) and the differing fields of the kept differing keys; stops once all are found."""
        result = self.finish()
        missing_wanted = min(result.missing, self.cap)
        found: dict[bytes, list[str]] = {}
        if missing_wanted or self._kept_mirror:
            for document in expected_documents:
                key = self._key_digest(document["_id"])
                if key in self._pending and len(result.missing_keys) < missing_wanted:
                    result.missing_keys.append(key_text(document["_id"]))
                elif key in self._kept_mirror and key not in found:
                    found[key] = differing_fields(document, self._kept_mirror[key][1], self.exact)
                if len(result.missing_keys) >= missing_wanted and len(found) == len(
                    self._kept_mirror
                ):
                    break
        result.differing_keys = [
            (text, found.get(key, ["?"])) for key, (text, _) in self._kept_mirror.items()
        ]
        self._pending.clear()
        self._kept_mirror.clear()
        return result


def differing_fields(
    expected: Mapping[str, Any], mirrored: Mapping[str, Any], exact_int_width: bool = True
) -> list[str]:
    """Names of the fields (other than ``_id`` and ``_cdc``) whose values differ, or that only
    one side has: the expected document's order first, then the mirror's extra fields."""
    skipped = ("_id", META_FIELD)
    names = [name for name in expected if name not in skipped]
    names += [name for name in mirrored if name not in expected and name not in skipped]
    return [
        name
        for name in names
        if name not in expected
        or name not in mirrored
        or _text(expected[name], exact_int_width) != _text(mirrored[name], exact_int_width)
    ]
