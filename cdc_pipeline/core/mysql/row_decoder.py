"""A row decoder compiled once per table map: the rows of a binlog rows event, decoded to exactly
the values (and ``none_sources``) mysql-replication 1.0.17 gives, several times faster.

Why hand-written: the library decodes every value of every row through a chain of Python
method calls and a type dispatch (about three quarters of its time per row, FIELD-NOTES "Speed");
no maintained library decodes MySQL row images from Python for us. This module reads the same
bytes with one reader per column, chosen when the table map is seen.

Invariants:
    * the output equals the library's for every row it decodes: the same values of the same types
      and the same ``none_sources`` (``cdc_pipeline_tests/integration/test_row_decoder.py``
      compares both over every CONTRACT type on both servers);
    * where it is not sure, the library decodes: whole events it does not handle (partial JSON
      updates, row images without every column, missing column names, a buffered packet) and
      single columns of types it has no reader for (BIT, GEOMETRY, the
      pre-5.6 temporal types) go to the library's own code, and any error inside a fast read
      rewinds the event and lets the library decode it whole, so the library raises its own
      error for bad data;
    * the event's packet is left exactly where the library leaves it after reading the rows.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE, NONE_SOURCE
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    RowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from cdc_pipeline.core.mysql.json_binary import parse_json_value

Reader = Callable[[bytes, int], tuple[Any, int]]
"""Reads one non-NULL value at a position: (value, the position after it)."""

_NOT_FAST = object()
"""A column reader's stand-in for "the library reads this column" (see ``_library_reader``)."""

_EPOCH = dt.datetime(1970, 1, 1)
_DECIMAL_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_OUT_OF_RANGE = {
    FIELD_TYPE.DATE: NONE_SOURCE.OUT_OF_DATE_RANGE,
    FIELD_TYPE.DATETIME2: NONE_SOURCE.OUT_OF_DATETIME2_RANGE,
    FIELD_TYPE.SET: NONE_SOURCE.EMPTY_SET,
}
_EVENT_TYPES = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)


class _Rewind(Exception):
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
            raise _Rewind
        raw = data[start:end]
        if encoding is None:
            # Python decodes empty bytes to "" without looking the codec up, so the library
            # gives "" for an empty binary value and bytes for any other.
            return (raw if raw else ""), end
        return raw.decode(encoding, errors), end

    return read


def _text_encoding(column: Any) -> str | None:
    """The codec the library decodes a text column with, None to keep its bytes."""
    import codecs

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
    return dt.date(year, month, day), pos + 3


def _datetime2(fsp: int | None) -> Reader:
    size, micros = _fraction_reader(fsp)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        value = int.from_bytes(data[pos : pos + 5], "big")
        year_month = _slice(value, 1, 17, 40)
        try:
            moment = dt.datetime(
                int(year_month / 13),
                year_month % 13,
                _slice(value, 18, 5, 40),
                _slice(value, 23, 5, 40),
                _slice(value, 28, 6, 40),
                _slice(value, 34, 6, 40),
            )
        except ValueError:
            return None, pos + 5 + size
        return _with_fraction(moment, micros(data, pos + 5)), pos + 5 + size

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
            raise _Rewind
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
            raise _Rewind
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


class TableDecoder:
    """The readers of one table map's columns, and the rows of an event decoded with them."""

    def __init__(self, columns: list[Any], errors: str) -> None:
        self.names = [column.name for column in columns]
        self.columns = columns
        self.readers = [column_reader(column, errors) for column in columns]
        self.null_bytes = (len(columns) + 7) // 8
        self.none_reasons = [_OUT_OF_RANGE.get(column.type) for column in columns]
        self.everything = b"\xff" * self.null_bytes
        self.nothing = b"\x00" * self.null_bytes

    def image(
        self, event: Any, data: bytes, pos: int
    ) -> tuple[dict[str, Any], dict[str, str], int]:
        """One row image at ``pos``: (values, none_sources, the position after it)."""
        nulls = int.from_bytes(data[pos : pos + self.null_bytes], "little")
        pos += self.null_bytes
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for index, name in enumerate(self.names):
            if nulls >> index & 1:
                values[name] = None
                sources[name] = NONE_SOURCE.NULL
                continue
            read = self.readers[index]
            if read is None:
                value, pos = self._library_value(event, data, pos, index)
                if value is None:
                    sources[name] = _library_none_source(event, name)
            else:
                value, pos = read(data, pos)
                if value is None:
                    sources[name] = self.none_reasons[index] or NONE_SOURCE.NULL
            values[name] = value
        return values, sources, pos

    def _library_value(self, event: Any, data: bytes, pos: int, index: int) -> tuple[Any, int]:
        """One column read by the library's own code, its packet moved to ``pos`` and back."""
        inner = event.packet.packet
        inner._position = pos
        column = event.columns[index]
        value = event._RowsEvent__read_values_name(
            column, self.nothing, 0, False, self.everything, column.unsigned, index
        )
        if event.packet._BinLogPacketWrapper__data_buffer:
            raise _Rewind
        return value, inner._position


def _library_none_source(event: Any, name: str) -> str:
    return str(event._RowsEvent__none_sources.get(name, NONE_SOURCE.NULL))


_decoders: dict[tuple[Any, ...], TableDecoder] = {}


def table_map_signature(columns: list[Any]) -> tuple[Any, ...]:
    """Everything of a table map's columns that decoding or describing them reads: two table maps
    with the same signature decode and describe their rows alike."""
    return tuple(
        (
            column.name,
            column.type,
            column.unsigned,
            column.character_set_name,
            getattr(column, "collation_name", None),
            getattr(column, "max_length", None),
            getattr(column, "length_size", None),
            getattr(column, "fsp", None),
            getattr(column, "precision", None),
            getattr(column, "decimals", None),
            getattr(column, "size", None),
            getattr(column, "bits", None),
            tuple(column.enum_values or ()),
            tuple(column.set_values or ()),
        )
        for column in columns
    )


def table_decoder(event: Any) -> TableDecoder:
    """The decoder of an event's table map (compiled once per distinct table map)."""
    errors = "ignore" if event._ignore_decode_errors else "strict"
    key = (errors, table_map_signature(event.columns))
    decoder = _decoders.get(key)
    if decoder is None:
        if len(_decoders) > 4096:
            _decoders.clear()
        decoder = _decoders[key] = TableDecoder(event.columns, errors)
    return decoder


def fast_path_applies(event: Any) -> bool:
    """Whether ``decode_rows`` decodes this event itself: a plain write/update/delete event of
    full row images with every column name, its packet unbuffered."""
    if type(event) not in _EVENT_TYPES or not getattr(event, "complete", False):
        return False
    if event.packet._BinLogPacketWrapper__data_buffer:
        return False
    columns = event.columns
    if not columns or len(columns) != event.number_of_columns:
        return False
    if not all(column.name for column in columns):
        return False
    # Every column present (binlog_row_image=FULL); MySQL sets the unused high bits as well.
    every = (1 << len(columns)) - 1
    bitmaps = [event.columns_present_bitmap]
    if isinstance(event, UpdateRowsEvent):
        bitmaps.append(event.columns_present_bitmap2)
    return all(
        len(bitmap) == (len(columns) + 7) // 8 and int.from_bytes(bitmap, "little") & every == every
        for bitmap in bitmaps
    )


def decode_rows(event: Any, *, fallback: bool = True) -> list[dict[str, Any]]:
    """The rows of a write/update/delete rows event, as the library's ``event.rows`` gives them.

    Decodes with the compiled ``TableDecoder`` where it can, else (or on any surprise) with the
    library; the event's ``rows`` then hold the same list. ``fallback=False`` (tests) raises
    instead of falling back inside an event the fast path has taken.
    """
    if not fast_path_applies(event):
        return list(event.rows)
    wrapper = event.packet
    inner = wrapper.packet
    start_position, start_read = inner._position, wrapper.read_bytes
    data: bytes = inner._data
    end = start_position + (event.event_size - start_read)
    decoder = table_decoder(event)
    rows: list[dict[str, Any]] = []
    pos = start_position
    update = isinstance(event, UpdateRowsEvent)
    try:
        while pos < end:
            if update:
                before, before_sources, pos = decoder.image(event, data, pos)
                after, after_sources, pos = decoder.image(event, data, pos)
                rows.append(
                    {
                        "before_values": before,
                        "before_none_sources": before_sources,
                        "after_values": after,
                        "after_none_sources": after_sources,
                    }
                )
            else:
                values, sources, pos = decoder.image(event, data, pos)
                rows.append({"values": values, "none_sources": sources})
        if pos != end:
            raise _Rewind
    except Exception:
        if not fallback:
            raise
        inner._position, wrapper.read_bytes = start_position, start_read
        wrapper._BinLogPacketWrapper__data_buffer = b""
        event._RowsEvent__none_sources = {}
        return list(event.rows)
    inner._position, wrapper.read_bytes = end, start_read + (end - start_position)
    event._RowsEvent__rows = rows
    return rows
