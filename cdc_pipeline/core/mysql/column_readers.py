"""One reader per table-map column, for ``row_decoder``: a value's bytes at a position, decoded
exactly as mysql-replication 1.0.17's ``RowsEvent.__read_values_name`` decodes them.

Every reader returns (value, the position after it) and raises ``Rewind`` where it cannot be sure,
so the row decoder lets the library decode the whole event.
"""

from __future__ import annotations

import codecs
import datetime as dt
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.row_event import RowsEvent

from cdc_pipeline.core.mysql.json_binary import parse_json_value

Reader = Callable[[bytes, int], tuple[Any, int]]
"""Reads one non-NULL value at a position: (value, the position after it)."""


_EPOCH = dt.datetime(1970, 1, 1)
_DECIMAL_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


class Rewind(Exception):
    """A fast read met something it does not decode like the library: the library decodes."""


def _fixed(fmt: str) -> Reader:
    unpack = struct.Struct(fmt).unpack_from
    size = struct.calcsize(fmt)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        return unpack(data, pos)[0], pos + size

    return read


def _int24(signed: bool) -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        return int.from_bytes(data[pos : pos + 3], "little", signed=signed), pos + 3

    return read


def _year(data: bytes, pos: int) -> tuple[Any, int]:
    return data[pos] + 1900, pos + 1


def _text(length_size: int, encoding: str | None, errors: str) -> Reader:
    """VARCHAR/CHAR/BLOB/TEXT: a little-endian length, then the bytes, decoded like the
    library's ``__read_string`` (kept as bytes when Python has no codec of that name)."""

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        start = pos + length_size
        end = start + int.from_bytes(data[pos:start], "little")
        if end > len(data):
            raise Rewind
        raw = data[start:end]
        if encoding is None:
            # Python decodes empty bytes to "" without looking the codec up, so the library
            # gives "" for an empty binary value and bytes for any other.
            return (raw if raw else ""), end
        return raw.decode(encoding, errors), end

    return read


def _text_encoding(column: Any) -> str | None:
    """The codec the library decodes a text column with, None to keep its bytes."""
    name = column.character_set_name
    encoding = RowsEvent.charset_to_encoding(name) if name is not None else "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        return None
    return str(encoding)


def _fraction_reader(fsp: int | None) -> tuple[int, Callable[[bytes, int], int]]:
    """(bytes, reader) of a temporal column's fractional seconds, as the library's
    ``__read_fsp`` computes them (a signed big-endian number, odd precisions cut by ten)."""
    size = {1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3}.get(fsp or 0, 0)
    if size == 0:
        return 0, lambda data, pos: 0
    assert fsp is not None
    scale = 10 ** (6 - fsp)
    odd = fsp % 2 == 1

    def micros(data: bytes, pos: int) -> int:
        value = int.from_bytes(data[pos : pos + size], "big", signed=True)
        if odd:
            value = int(value / 10)
        return int(value * scale)

    return size, micros


def _with_fraction(moment: dt.datetime, fraction: int) -> dt.datetime:
    """The library's ``__add_fsp_to_time``: a positive fraction replaces the microseconds."""
    return moment.replace(microsecond=fraction) if fraction > 0 else moment


def _slice(value: int, start: int, size: int, length: int) -> int:
    return (value >> (length - (start + size))) & ((1 << size) - 1)


def _date(data: bytes, pos: int) -> tuple[Any, int]:
    value = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
    if value == 0:
        return None, pos + 3
    year, month, day = (value & ((1 << 15) - 1) << 9) >> 9, (value & (15 << 5)) >> 5, value & 31
    if year == 0 or month == 0 or day == 0:
        return None, pos + 3
    try:
        return dt.date(year, month, day), pos + 3
    except ValueError:
        # A day past its month's end (ALLOW_INVALID_DATES): None, as the library gives for
        # such a DATETIME, where for a DATE it raises; conversion makes it null (decisions.md).
        return None, pos + 3


def _datetime2(fsp: int | None) -> Reader:
    size, micros = _fraction_reader(fsp)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        value = int.from_bytes(data[pos : pos + 5], "big")
        year_month = value >> 22 & 0x1FFFF  # bits 1-17 of 40: year * 13 + month
        fraction = micros(data, pos + 5)
        try:
            moment = dt.datetime(
                int(year_month / 13),
                year_month % 13,
                value >> 17 & 31,
                value >> 12 & 31,
                value >> 6 & 63,
                value & 63,
                # The library adds a positive fraction after building the datetime, where one
                # of a million or more raises instead of giving None: left to that path.
                fraction if 0 < fraction < 1_000_000 else 0,
            )
        except ValueError:
            return None, pos + 5 + size
        if fraction >= 1_000_000:
            moment = moment.replace(microsecond=fraction)  # raises, as the library does
        return moment, pos + 5 + size

    return read


def _timestamp2(fsp: int | None) -> Reader:
    size, micros = _fraction_reader(fsp)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        seconds = int.from_bytes(data[pos : pos + 4], "big", signed=True)
        moment = _EPOCH + dt.timedelta(seconds=seconds)
        return _with_fraction(moment, micros(data, pos + 4)), pos + 4 + size

    return read


def _time2(fsp: int | None) -> Reader:
    size, micros = _fraction_reader(fsp)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        value = int.from_bytes(data[pos : pos + 3], "big", signed=True)
        sign = 1 if _slice(value, 0, 1, 24) else -1
        if sign == -1:
            value = ~value + 1
        delta = dt.timedelta(
            hours=_slice(value, 2, 10, 24),
            minutes=_slice(value, 12, 6, 24),
            seconds=_slice(value, 18, 6, 24),
            microseconds=micros(data, pos + 3),
        )
        return delta * sign, pos + 3 + size

    return read


def _decimal(precision: int, decimals: int) -> Reader:
    """NEWDECIMAL: groups of nine digits in big-endian words, the sign in the top bit and
    negative numbers stored inverted (the library's ``__read_new_decimal``)."""
    integral = precision - decimals
    whole_int, whole_frac = integral // 9, decimals // 9
    rest_int, rest_frac = integral - whole_int * 9, decimals - whole_frac * 9
    head, tail = _DECIMAL_BYTES[rest_int], _DECIMAL_BYTES[rest_frac]
    size = head + 4 * (whole_int + whole_frac) + tail

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        raw = bytearray(data[pos : pos + size])
        if len(raw) != size:
            raise Rewind
        negative = not raw[0] & 0x80
        mask = -1 if negative else 0
        raw[0] ^= 0x80
        text = "-" if negative else ""
        at = 0
        if head:
            text += str(int.from_bytes(raw[:head], "big", signed=True) ^ mask)
            at = head
        for _ in range(whole_int):
            text += f"{int.from_bytes(raw[at : at + 4], 'big', signed=True) ^ mask:09d}"
            at += 4
        text += "."
        for _ in range(whole_frac):
            text += f"{int.from_bytes(raw[at : at + 4], 'big', signed=True) ^ mask:09d}"
            at += 4
        if tail:
            value = int.from_bytes(raw[at : at + tail], "big", signed=True) ^ mask
            text += f"{value:0{rest_frac}d}"
        return Decimal(text), pos + size

    return read


def _json(length_size: int) -> Reader:
    """MySQL's binary JSON: a little-endian length, then the value (``json_binary``)."""

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        start = pos + length_size
        length = int.from_bytes(data[pos:start], "little")
        if length == 0:
            return None, start  # the library's reading of an empty JSON value
        end = start + length
        if end > len(data):
            raise Rewind
        return parse_json_value(data[start:end]), end

    return read


def _enum(size: int, labels: list[str] | None) -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        index = int.from_bytes(data[pos : pos + size], "little")
        return (labels[index] if labels else None), pos + size

    return read


def _set(size: int, labels: list[str] | None) -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        mask = int.from_bytes(data[pos : pos + size], "little")
        members = {label for bit, label in enumerate(labels or ()) if mask & (1 << bit)}
        return (members or None), pos + size

    return read


_INTEGERS = {
    FIELD_TYPE.TINY: ("<b", "<B"),
    FIELD_TYPE.SHORT: ("<h", "<H"),
    FIELD_TYPE.LONG: ("<i", "<I"),
    FIELD_TYPE.LONGLONG: ("<q", "<Q"),
}


def column_reader(column: Any, errors: str = "strict") -> Reader | None:
    """The fast reader of one table-map column; None where the library reads it."""
    kind = column.type
    if kind in _INTEGERS:
        return _fixed(_INTEGERS[kind][1 if column.unsigned else 0])
    if kind == FIELD_TYPE.INT24:
        return _int24(signed=not column.unsigned)
    if kind == FIELD_TYPE.FLOAT:
        return _fixed("<f")
    if kind == FIELD_TYPE.DOUBLE:
        return _fixed("<d")
    if kind == FIELD_TYPE.YEAR:
        return _year
    if kind in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
        return _text(2 if column.max_length > 255 else 1, _text_encoding(column), errors)
    if kind == FIELD_TYPE.BLOB and column.length_size in (1, 2, 3, 4):
        return _text(column.length_size, _text_encoding(column), errors)
    if kind == FIELD_TYPE.NEWDECIMAL:
        return _decimal(column.precision, column.decimals)
    if kind == FIELD_TYPE.DATE:
        return _date
    if kind == FIELD_TYPE.DATETIME2:
        return _datetime2(column.fsp)
    if kind == FIELD_TYPE.TIMESTAMP2:
        return _timestamp2(column.fsp)
    if kind == FIELD_TYPE.TIME2:
        return _time2(column.fsp)
    if kind == FIELD_TYPE.JSON and column.length_size in (1, 2, 3, 4):
        return _json(column.length_size)
    if kind == FIELD_TYPE.ENUM and 1 <= column.size <= 8:
        return _enum(column.size, column.enum_values)
    if kind == FIELD_TYPE.SET and 1 <= column.size <= 8:
        return _set(column.size, column.set_values)
    return None
