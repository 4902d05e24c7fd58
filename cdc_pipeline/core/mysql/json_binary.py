"""MySQL's binary JSON (a JSON column in a row event) read in place, to exactly what
mysql-replication 1.0.17's ``json_binary.parse_json`` gives: dicts with ``bytes`` keys, lists,
``bytes`` strings, ints, floats, booleans, None, and its own decoding of opaque values.

Why hand-written: the library copies the remaining bytes at every nested value (``data[n:]``)
and was over a quarter of capture's profile on MySQL with a small JSON column
(docs/profile.md). This reader walks offsets in the one buffer instead.

Invariant: for well-formed input the output equals the library's; anything unusual (a short
buffer, an offset past the end, an unknown type, a literal that is not one) raises ``Unusual``,
and the caller lets the library parse the same bytes, so its own result or error stands.
"""

from __future__ import annotations

import struct
import sys
from typing import Any

from pymysqlreplication import json_binary as library

_SMALL_OBJECT, _LARGE_OBJECT, _SMALL_ARRAY, _LARGE_ARRAY = 0x0, 0x1, 0x2, 0x3
_LITERAL, _INT16, _UINT16, _INT32, _UINT32 = 0x4, 0x5, 0x6, 0x7, 0x8
_INT64, _UINT64, _DOUBLE, _STRING, _OPAQUE = 0x9, 0xA, 0xB, 0xC, 0xF
_SCALARS = {
    _INT16: struct.Struct("<h"),
    _UINT16: struct.Struct("<H"),
    _INT32: struct.Struct("<i"),
    _UINT32: struct.Struct("<I"),
    _INT64: struct.Struct("<q"),
    _UINT64: struct.Struct("<Q"),
    _DOUBLE: struct.Struct("<d"),
}
_LITERALS = {0x0: None, 0x1: True, 0x2: False}
_U16, _U32 = struct.Struct("<H"), struct.Struct("<I")


class Unusual(Exception):
    """Input this reader does not decide about: the library parses it."""


def parse_json_value(blob: bytes) -> Any:
    """A JSON column's bytes (type byte, then the value) as the library parses them."""
    if not blob:
        raise Unusual
    try:
        return _value(blob, blob[0], 1)
    except (Unusual, struct.error, IndexError):
        return _library_parse(blob)


def _library_parse(blob: bytes) -> Any:
    """The library's own parse of a JSON column's bytes (its result, or its error)."""
    return library.parse_json(blob[0], blob[1:])


def _value(buf: bytes, kind: int, at: int) -> Any:
    if kind <= _LARGE_ARRAY:
        return _container(buf, at, kind in (_SMALL_OBJECT, _SMALL_ARRAY), kind <= _LARGE_OBJECT)
    scalar = _SCALARS.get(kind)
    if scalar is not None:
        if at + scalar.size > len(buf):
            raise Unusual
        return scalar.unpack_from(buf, at)[0]
    if kind == _STRING:
        return _string(buf, at)
    if kind == _LITERAL:
        if at >= len(buf) or buf[at] not in _LITERALS:
            raise Unusual
        return _LITERALS[buf[at]]
    if kind == _OPAQUE:
        return library.parse_opaque(buf[at:])
    raise Unusual


def _string(buf: bytes, at: int) -> bytes:
    length = shift = 0
    for used in range(1, 6):
        if at + used > len(buf):
            raise Unusual
        byte = buf[at + used - 1]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            end = at + used + length
            if length > sys.maxsize - 1 or end > len(buf):
                raise Unusual
            return buf[at + used : end]
    raise Unusual


def _container(buf: bytes, base: int, small: bool, is_object: bool) -> Any:
    offset = _U16 if small else _U32
    width = offset.size
    available = len(buf) - base
    if available < 2 * width:
        raise Unusual
    count = offset.unpack_from(buf, base)[0]
    size = offset.unpack_from(buf, base + width)[0]
    key_entry = 2 + width
    value_entry = 1 + width
    header = 2 * width + count * value_entry + (count * key_entry if is_object else 0)
    if available < size or header > size:
        raise Unusual
    keys = []
    if is_object:
        for index in range(count):
            entry = base + 2 * width + key_entry * index
            key_at = base + offset.unpack_from(buf, entry)[0]
            key_length = _U16.unpack_from(buf, entry + width)[0]
            if key_at + key_length > len(buf):
                raise Unusual
            keys.append(buf[key_at : key_at + key_length])
    values = []
    first = base + 2 * width + (key_entry * count if is_object else 0)
    for index in range(count):
        entry = first + value_entry * index
        kind = buf[entry]
        if kind in (_INT16, _UINT16, _LITERAL) or (kind in (_INT32, _UINT32) and not small):
            values.append(_value(buf, kind, entry + 1))
            continue
        value_at = offset.unpack_from(buf, entry + 1)[0]
        if value_at >= available:
            raise Unusual  # the library gives None for the whole container here
        values.append(_value(buf, kind, base + value_at))
    if not is_object:
        return values
    return dict(zip(keys, values, strict=True))
