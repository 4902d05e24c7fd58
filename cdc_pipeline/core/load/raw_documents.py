"""Mirror writes assembled from the WAL's BSON images as bytes, without decoding them.

A mirror document is ``{"_id": key, <the after image's fields>, "_cdc": meta}``
(``documents.mirror_document``). When the table has a one-column key and no column needs an
escaped field name, that document is the key's element, the after image's elements as they
are, and the ``_cdc`` element, joined: the loader sends it as a ``RawBSONDocument`` that
pymongo copies byte for byte. Decoding the image into a dict and encoding it again was most of
a load's client CPU. Any other table, and any row this module cannot read, takes the decoded
path; both give the same documents and the same writes (tested against each other).

Invariants:
    * ``server_image(image, True)`` is the BSON of ``decode_image(image,
      decimals_as_strings=True)``: what a server without Decimal128 (CDC_MONGO_COMPAT=nx-27017)
      stores; ``None`` when it cannot tell without decoding (property-tested);
    * ``RawMirror.identity`` gives the bytes ``documents.key_identity`` gives for the decoded
      key, so one segment's writes coalesce per key whichever path built them;
    * nothing here is a second reading of the images: the bytes come from a segment whose
      checksum and images' column names validation has already checked.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import bson
from bson.raw_bson import DEFAULT_RAW_BSON_OPTIONS, RawBSONDocument
from pymongo import DeleteOne, InsertOne, ReplaceOne

from cdc_pipeline.core.images import FIXED_VALUE_SIZES, bid_text
from cdc_pipeline.core.load.documents import (
    CHANGE_EVENT_FIELDS,
    CHANGE_POSITION_FIELDS,
    CHANGE_TABLE_FIELDS,
    field_escapes,
    mirror_meta,
)

_SIZE = struct.Struct("<i")
_pack_size = _SIZE.pack
_read_size = _SIZE.unpack_from
_DECIMAL = 0x13
_STRING = b"\x02"
_CDC_NAME = b"\x03_cdc\x00"
_ID_NAME = b"_id\x00"


def server_image(image: bytes, decimals_as_strings: bool) -> bytes | None:
    """A BSON image as the server stores it: unchanged, or under ``decimals_as_strings`` each
    top-level ``Decimal128`` element as a string element of its exact text (``bid_text``).

    Nested documents and arrays are walked the same way where they hold a byte 0x13 (without
    one, they hold no ``Decimal128``). ``None`` when the walk cannot tell: a type it does not
    know, bytes that do not add up. The caller then decodes the image instead.

    The walk is this module's hottest loop under nx-27017 (every element of every image): a
    nested value is searched for 0x13 in place before it is copied, and an image without a
    Decimal128 is returned as it is.
    """
    if not decimals_as_strings or b"\x13" not in image:
        return image
    parts: list[bytes] = []
    fixed = FIXED_VALUE_SIZES.get
    find = image.index
    try:
        start = position = 4
        end = len(image) - 1
        while position < end:
            kind = image[position]
            value = find(b"\x00", position + 1) + 1
            size = fixed(kind)
            if size is None:
                size = _variable_size(image, kind, value)
                if size is None:
                    return None
                if (kind == 0x03 or kind == 0x04) and image.find(b"\x13", value, value + size) >= 0:
                    inner = image[value : value + size]
                    stored = server_image(inner, True) if len(inner) == size else None
                    if stored is None:
                        return None
                    if stored != inner:
                        parts.append(image[start:value])
                        parts.append(stored)
                        start = value + size
            elif kind == _DECIMAL:
                text = bid_text(image[value : value + 16]).encode()
                parts.append(image[start:position])
                parts.append(_STRING + image[position + 1 : value] + _pack_size(len(text) + 1))
                parts.append(text + b"\x00")
                start = value + 16
            position = value + size
        if position != end:
            return None
    except (ValueError, IndexError, struct.error):
        return None
    if not parts:
        return image
    parts.append(image[start:end])
    body = b"".join(parts)
    return _pack_size(len(body) + 5) + body + b"\x00"


def server_images(
    row: Mapping[str, Any], decimals_as_strings: bool
) -> tuple[bytes | None, bytes | None, bytes | None] | None:
    """``server_image`` of the row's ``pk``, ``before`` and ``after`` (absent ones stay None);
    None when one of them cannot be told without decoding."""
    pk, before, after = row["pk"], row["before"], row["after"]
    if not decimals_as_strings:
        return pk, before, after
    if pk is not None and (pk := server_image(pk, True)) is None:
        return None
    if before is not None and (before := server_image(before, True)) is None:
        return None
    if after is not None and (after := server_image(after, True)) is None:
        return None
    return pk, before, after


class ChangeLogDocuments:
    """``documents.change_document`` of each row of one segment, with these images, as the
    BSON pymongo would send for it: the row's fields encoded by the C codec around the images'
    bytes, in the field groups ``documents`` defines (the same bytes, property-tested over row
    sequences).

    Rows come in segment order, and a row shares most of its fields with the row before it:
    its GTID, its table and operation, its rows event's position, its transaction's time.
    Those are encoded by the codec when they change (a call costs about a microsecond whatever
    the size). Each row's own fields, its event id (text) and index (an integer), are packed
    here as the codec packs them, which costs less than a call (decisions.md, "The change
    log's own fields packed by hand"); any other type goes to the codec.
    """

    def __init__(self, batch: str) -> None:
        self.batch = batch
        self._gtid: tuple[Any, bytes] = (None, b"")
        self._middle: tuple[Any, bytes] = (None, b"")
        self._tail: tuple[Any, bytes] = (None, b"")

    def __call__(
        self,
        row: Mapping[str, Any],
        pk: bytes | None,
        before: bytes | None,
        after: bytes | None,
    ) -> RawBSONDocument:
        middle_key = _table_fields(row)
        middle = self._middle
        if middle[0] != middle_key:
            self.table_fields(middle_key)
            middle = self._middle
        tail_key = _position_fields(row)
        tail = self._tail
        if tail[0] != tail_key:
            self.position_fields(tail_key)
            tail = self._tail
        return _raw(
            _document(
                self._head(row),
                middle[1],
                _PK_NULL if pk is None else _PK + pk,
                _BEFORE_NULL if before is None else _BEFORE + before,
                _AFTER_NULL if after is None else _AFTER + after,
                tail[1],
            )
        )

    def table_fields(self, values: tuple[Any, ...]) -> bytes:
        """The elements of ``CHANGE_TABLE_FIELDS`` with these values (kept for the next row)."""
        if self._middle[0] != values:
            fields = dict(zip(CHANGE_TABLE_FIELDS, values, strict=True))
            self._middle = (values, bson.encode(fields)[4:-1])
        return self._middle[1]

    def position_fields(self, values: tuple[Any, ...]) -> bytes:
        """The elements of ``CHANGE_POSITION_FIELDS`` with these values, then ``batch``."""
        if self._tail[0] != values:
            fields = dict(zip(CHANGE_POSITION_FIELDS, values, strict=True), batch=self.batch)
            self._tail = (values, bson.encode(fields)[4:-1])
        return self._tail[1]

    def _head(self, row: Mapping[str, Any]) -> bytes:
        """The elements ``_id`` (the event id), ``gtid`` and ``row_index``, as the codec
        encodes them."""
        event_id, gtid, index = fields = _head_fields(row)
        if not (
            type(event_id) is str
            and type(gtid) is str
            and type(index) is int
            and _INT64_MIN <= index <= _INT64_MAX
        ):
            return bson.encode(dict(zip(_HEAD_NAMES, fields, strict=True)))[4:-1]
        if _INT32_MIN <= index <= _INT32_MAX:
            index_element = _INDEX_INT32 + _pack_size(index)
        else:
            index_element = _INDEX_INT64 + _pack_long(index)
        known = self._gtid
        if known[0] != gtid:
            known = self._gtid = (gtid, bson.encode({_HEAD_NAMES[1]: gtid})[4:-1])
        text = event_id.encode()
        size = _pack_size(len(text) + 1)
        return b"".join((_ID_TEXT, size, text, b"\x00", known[1], index_element))


_HEAD_NAMES = ("_id", *CHANGE_EVENT_FIELDS)
_head_fields = itemgetter("event_id", *CHANGE_EVENT_FIELDS)
_ID_TEXT = b"\x02" + _HEAD_NAMES[0].encode() + b"\x00"  # a text element's type, its name
_INDEX_INT32 = b"\x10" + _HEAD_NAMES[2].encode() + b"\x00"  # an int32 element's
_INDEX_INT64 = b"\x12" + _HEAD_NAMES[2].encode() + b"\x00"  # an int64 element's
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_pack_long = struct.Struct("<q").pack
_table_fields = itemgetter(*CHANGE_TABLE_FIELDS)
_position_fields = itemgetter(*CHANGE_POSITION_FIELDS)
_PK, _PK_NULL = b"\x03pk\x00", b"\x0apk\x00"
_BEFORE, _BEFORE_NULL = b"\x03before\x00", b"\x0abefore\x00"
_AFTER, _AFTER_NULL = b"\x03after\x00", b"\x0aafter\x00"


def _variable_size(image: bytes, kind: int, value: int) -> int | None:
    """The bytes of a text, binary, document or array value starting at ``value``; None for
    another type or a length that cannot be."""
    if kind == 0x02:  # text: its length, the UTF-8 bytes, a NUL
        size = 4 + _read_size(image, value)[0]
    elif kind == 0x05:  # binary: its length, the subtype, the bytes
        size = 5 + _read_size(image, value)[0]
    elif kind in (0x03, 0x04):  # a document or an array: its length includes itself
        size = _read_size(image, value)[0]
    else:
        return None
    return size if size >= 5 else None


def element_of(image: bytes, name: bytes) -> bytes | None:
    """The type byte and value bytes of the top-level element ``name`` of a BSON image, found
    by skipping over the elements before it; None when the walk cannot tell."""
    try:
        position = 4
        end = len(image) - 1
        while position < end:
            kind = image[position]
            value = image.index(b"\x00", position + 1) + 1
            size = FIXED_VALUE_SIZES.get(kind)
            if size is None and (size := _variable_size(image, kind, value)) is None:
                return None
            if value + size > end:
                return None
            if image[position + 1 : value - 1] == name:
                return image[position : position + 1] + image[value : value + size]
            position = value + size
    except (ValueError, IndexError, struct.error):
        return None
    return None


class RawDocument(RawBSONDocument):
    """A ``RawBSONDocument`` whose truth value is read from its length bytes: pymongo tests a
    replacement with ``if replacement`` before sending it, and ``RawBSONDocument`` answers
    that by decoding every field (``__len__``), the very work raw documents are for.

    Made with the library's default raw options: a field read back from one is decoded with
    naive datetimes, which encode to the same BSON and print as the same relaxed JSON (the
    loader reads one only for ``id_filter`` and to name a refused row's table and key).

    Its constructor sets the base class's three fields and nothing else: every document here
    comes from ``_document``, whose length prefix and final NUL are right by construction, so
    the base class's checks of them and of the options (half of its constructor) are skipped.
    The fields are the base class's private ones (pymongo is pinned in requirements.lock); a
    renamed one fails the first construction with ``AttributeError``, and
    ``test_raw_documents`` compares the result with the base class's (decisions.md).
    """

    __slots__ = ()

    def __init__(self, document: bytes) -> None:
        self._RawBSONDocument__raw = document
        self._RawBSONDocument__inflated_doc = None
        self._RawBSONDocument__codec_options = DEFAULT_RAW_BSON_OPTIONS

    def __bool__(self) -> bool:
        return len(self.raw) > 5


def _raw(document: bytes) -> RawBSONDocument:
    return RawDocument(document)


def _document(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return _pack_size(len(body) + 5) + body + b"\x00"


@dataclass(frozen=True)
class RawMirror:
    """How the mirror writes of one table at one schema version are assembled as bytes."""

    collection: str
    key: bytes
    """The key column's name, UTF-8."""

    @staticmethod
    def of(collection: str, columns: list[str], key_columns: tuple[str, ...]) -> RawMirror | None:
        """The plan for a table with these columns and key; None when its documents need the
        decoded path: a key of several columns (its ``_id`` filter names each field), or a
        column whose field name is escaped."""
        if len(key_columns) != 1 or field_escapes(columns):
            return None
        return RawMirror(collection, key_columns[0].encode())

    def key_of_pk(self, pk: bytes) -> bytes | None:
        """The key element's type and value from the row's ``pk`` image (one element, the key
        column); None if the image is not that."""
        size = len(self.key)
        head = 5 + size
        if len(pk) < head + 2 or pk[5:head] != self.key or pk[head] != 0:
            return None
        return pk[4:5] + pk[head + 1 : -1]

    def key_of_image(self, image: bytes) -> bytes | None:
        """The key element's type and value from a row image."""
        return element_of(image, self.key)

    @staticmethod
    def identity(key: bytes) -> bytes:
        """``key_identity`` of the decoded key: the BSON of ``{"": value}``."""
        return _document(key[:1], b"\x00", key[1:])

    @staticmethod
    def delete(key: bytes) -> DeleteOne:
        """The mirror delete of ``key`` (``DeleteOne(id_filter(value))``)."""
        return DeleteOne(_raw(_document(key[:1], _ID_NAME, key[1:])))

    @staticmethod
    def insert(key: bytes, after: bytes, cdc: bytes) -> tuple[RawBSONDocument, InsertOne[Any]]:
        """The mirror document of an inserted row, and its write: an insert, which the sink
        sends again as ``upsert``'s replacement if the key is there already."""
        document = _raw(_document(key[:1], _ID_NAME, key[1:], after[4:-1], cdc))
        return document, InsertOne(document)

    @staticmethod
    def upsert(key: bytes, after: bytes, cdc: bytes) -> tuple[RawBSONDocument, ReplaceOne[Any]]:
        """The mirror document of ``after`` under ``key`` with the ``_cdc`` element ``cdc``, and
        its write (``upsert_by_id``)."""
        id_element = key[:1] + _ID_NAME + key[1:]
        document = _raw(_document(id_element, after[4:-1], cdc))
        selector = _raw(_document(id_element))
        return document, ReplaceOne(selector, document, upsert=True)


class CdcElements:
    """The ``_cdc`` element of mirror documents (``mirror_meta``) as BSON, made once per
    transaction and schema version: the rows of a transaction share it."""

    def __init__(self, batch: str) -> None:
        self.batch = batch
        self._last: tuple[Any, Any, bytes] = (None, None, b"")

    def __call__(self, row: Mapping[str, Any]) -> bytes:
        gtid, version = row["gtid"], row["schema_version"]
        last = self._last
        if last[0] == gtid and last[1] == version:
            return last[2]
        meta = mirror_meta(gtid, self.batch, version, row["committed_at"])
        element = _CDC_NAME + bson.encode(meta)
        self._last = (gtid, version, element)
        return element
