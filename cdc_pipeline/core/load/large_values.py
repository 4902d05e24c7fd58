"""Values a MongoDB document cannot hold in line: stored in GridFS, referenced from the document.

MongoDB refuses a document over 16 MiB (BSON) or nested over 100 levels. A MySQL row can pass
both: a LONGBLOB of 20 MB, an UPDATE whose ``before`` and ``after`` images of a 9 MB value
together pass 16 MiB in ``row_changes``, or JSON at MySQL's own depth limit of 100 inside the
wrapping of a document. Neither stand-in server enforces those limits, so the loader enforces
them itself: before a document is written, ``fit`` moves its largest (or too deep) column values
to the GridFS bucket ``cdc_large_values`` and leaves a reference in their place.

Layout:
    * a file holds ``bson.encode({"v": value})``, so any value reads back exactly; its ``_id`` is
      the SHA-256 of those bytes (content-addressed: a replay writes nothing new, the change log
      and the mirror share one file);
    * the value's place holds ``{"gridfs": <file id>, "bytes": <file length>}``, and the field's
      path is listed in ``large_values`` (a change-log document, e.g. ``"after.payload"``) or
      ``_cdc.large_values`` (a mirror document, e.g. ``"payload"``): only listed fields are
      references, so a JSON value that looks like one is never mistaken for one;
    * ``resolve`` puts the values back (``verify`` does before comparing).

Invariants: a file is written (whole) before the document that references it; ``fit`` never
changes a document that fits; files are never rewritten or deleted by the loader (files no
document references any more are left for a sweep, docs/naming.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import bson
import gridfs
from pymongo.database import Database

from cdc_pipeline.core.images import TEXT_IMAGE_PREFIX, is_bson_image
from cdc_pipeline.core.load.documents import LARGE_VALUES

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""MongoDB's limit on one document (``maxBsonObjectSize``)."""
MAX_DEPTH = 100
"""MongoDB's limit on nesting: a document with a sub-document is 2 levels deep."""
HEADROOM = 64 * 1024
"""Room kept below the limit once a document had to be fitted (the update command's own
wrapping, and ``_cdc`` written later)."""
_SAFE_TEXT = 2 * 1024 * 1024
_SAFE_BSON = 8 * 1024 * 1024
_SAFE_BRACKETS = 80
_REFERENCE_BYTES = 128
_NESTING_BYTES = 7
"""The fewest bytes a nested document or array adds to a BSON document: its type byte, an
empty key's NUL, its own length (4) and its final NUL (an array's keys are longer)."""


def depth(value: Any) -> int:
    """Levels of nesting of ``value``: 0 for a scalar, 1 for a flat document or array."""
    if isinstance(value, Mapping):
        return 1 + max((depth(item) for item in value.values()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max((depth(item) for item in value), default=0)
    return 0


def may_not_fit(*images: str | bytes | None) -> bool:
    """A cheap test on the WAL's images: False means every document built from them fits.

    Text (format 1): under 2 MiB of canonical Extended JSON, BSON stays under about 12 MiB (its
    worst ratio to the text is an array of one-digit numbers: about 6 to 1), and under 80
    brackets nothing nests more than 80 levels. BSON (format 2): the bytes are the size, and
    every nested document or array costs one type byte 3 or 4, so under 80 such bytes (any
    byte of that value counts: an over-estimate) nothing nests more than 80 levels. Nor can it
    when the BSON images hold 560 bytes or fewer in all: each nested document or array takes at
    least 7 of them (``_NESTING_BYTES``), so the bytes are not counted (a mixed row's images
    are about 200 bytes).
    """
    size = 0
    binary = False
    bson_only = True  # every image present is BSON (format 2, not kept as text)
    for image in images:
        if image:
            size += len(image)
            binary = binary or isinstance(image, bytes)
            bson_only = bson_only and is_bson_image(image)
    if size <= (_SAFE_BRACKETS * _NESTING_BYTES if bson_only else _SAFE_BRACKETS):
        return False  # too few bytes to hold that many brackets or nested documents
    if size > (_SAFE_BSON if binary else _SAFE_TEXT):
        return True
    return sum(_openings(image) for image in images if image) > _SAFE_BRACKETS


def _openings(image: str | bytes) -> int:
    """At least the number of documents and arrays ``image`` holds (see ``may_not_fit``)."""
    if isinstance(image, str):
        return image.count("{") + image.count("[")
    if image[:4] == TEXT_IMAGE_PREFIX:  # a format-2 image kept as text (images.encode_image)
        return image.count(b"{") + image.count(b"[")
    return image.count(3) + image.count(4)


def may_not_fit_values(values: Mapping[str, Any]) -> bool:
    """The same test on a row read from the source (a rebuild): strings and bytes by length,
    documents and arrays by their BSON size and depth."""
    total = 0
    for value in values.values():
        if isinstance(value, str | bytes):
            total += len(value)
        elif isinstance(value, dict | list):
            if depth(value) > _SAFE_BRACKETS:
                return True
            total += len(bson.encode({"v": value}))
    return total > 4 * _SAFE_TEXT


class LargeValues:
    """Writes values out of line for one database; ``fit`` is what the sink calls."""

    def __init__(self, database: Database[Any], retry: Callable[[Callable[[], Any]], Any]):
        self.database = database
        self.retry = retry
        self.written = 0

    def fit(self, document: dict[str, Any], images: tuple[str, ...], listing: list[str]) -> None:
        """Move values of ``document`` out of line until it fits; ``images`` are the paths of
        the sub-documents whose columns may move (``()`` for the document's own columns,
        ``("before", "after")`` for a change), and moved paths are appended to ``listing``.
        """
        base = 1 + (1 if images else 0)  # the document, and the image holding the columns
        places: list[tuple[str, dict[str, Any]]] = []
        for name in images:
            if isinstance(document.get(name), dict):
                document[name] = dict(document[name])  # the image may be shared with a mirror
                places.append((name, document[name]))
        if not images:
            places.append(("", document))
        movable = [
            (prefix, holder, column)
            for prefix, holder in places
            for column in holder
            if column not in ("_id", "_cdc")
        ]
        for prefix, holder, column in movable:
            if base + depth(holder[column]) > MAX_DEPTH:
                self._move(prefix, holder, column, listing)
        size = len(bson.encode(document))
        if size <= MAX_DOCUMENT_BYTES - HEADROOM:
            return
        by_size = sorted(
            movable,
            key=lambda place: len(bson.encode({"v": place[1][place[2]]})),
            reverse=True,
        )
        for prefix, holder, column in by_size:
            if size <= MAX_DOCUMENT_BYTES - HEADROOM:
                return
            if _is_reference(holder[column]):
                continue
            before = len(bson.encode({"v": holder[column]}))
            self._move(prefix, holder, column, listing)
            size -= before - _REFERENCE_BYTES

    def _move(self, prefix: str, holder: dict[str, Any], column: str, listing: list[str]) -> None:
        content = bson.encode({"v": holder[column]})
        file_id = hashlib.sha256(content).hexdigest()
        self.retry(lambda: self._store(file_id, content))
        holder[column] = {"gridfs": file_id, "bytes": len(content)}
        listing.append(f"{prefix}.{column}" if prefix else column)

    def _store(self, file_id: str, content: bytes) -> None:
        """Write the file unless it is there whole; chunks of an interrupted upload go first."""
        if self.database[f"{LARGE_VALUES}.files"].find_one({"_id": file_id}, {"_id": 1}):
            return
        self.database[f"{LARGE_VALUES}.chunks"].delete_many({"files_id": file_id})
        bucket = gridfs.GridFSBucket(self.database, bucket_name=LARGE_VALUES)
        bucket.upload_from_stream_with_id(file_id, file_id, content)
        self.written += 1


def _is_reference(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"gridfs", "bytes"}


def resolve(database: Database[Any], document: dict[str, Any], listing: list[str]) -> None:
    """Replace each listed reference in ``document`` with the value its file holds."""
    bucket = gridfs.GridFSBucket(database, bucket_name=LARGE_VALUES)
    for path in listing:
        holder: Any = document
        *parents, column = path.split(".", 1) if "." in path else [path]
        for parent in parents:
            holder = holder[parent]
        reference = holder[column]
        content = bucket.open_download_stream(reference["gridfs"]).read()
        holder[column] = bson.decode(content)["v"]


def resolve_mirror_document(database: Database[Any], document: dict[str, Any]) -> dict[str, Any]:
    """A mirror document with its out-of-line values read back (the document, changed)."""
    meta = document.get("_cdc")
    if isinstance(meta, dict) and meta.get("large_values"):
        resolve(database, document, list(meta.pop("large_values")))
    return document
