"""A row decoder compiled once per table map: the rows of a binlog rows event, decoded to exactly
the values (and ``none_sources``) mysql-replication 1.0.17 gives, several times faster.

Why hand-written: the library decodes every value of every row through a chain of Python
method calls and a type dispatch (about three quarters of its time per row, FIELD-NOTES "Speed");
no maintained library decodes MySQL row images from Python for us. This module reads the same
bytes with one reader per column, chosen when the table map is seen.

Invariants:
    * the output equals the library's for every row it decodes: the same values of the same types
      and the same ``none_sources`` (``cdc_pipeline_tests/integration/test_row_decoder.py``
      compares both over every CONTRACT type on both servers). One deliberate exception: a DATE
      past its month's end (ALLOW_INVALID_DATES), where the library raises, is None with "out
      of date range", as the library gives for such a DATETIME (docs/decisions.md);
    * where it is not sure, the library decodes: whole events it does not handle (partial JSON
      updates, row images without every column, missing column names, a buffered packet) and
      single columns of types it has no reader for (BIT, GEOMETRY, the
      pre-5.6 temporal types) go to the library's own code, and any error inside a fast read
      rewinds the event and lets the library decode it whole, so the library raises its own
      error for bad data;
    * the event's packet is left exactly where the library leaves it after reading the rows.
"""

from __future__ import annotations

from typing import Any

from pymysqlreplication.constants import FIELD_TYPE, NONE_SOURCE
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from cdc_pipeline.core.mysql.column_readers import Rewind, column_reader

_OUT_OF_RANGE = {
    FIELD_TYPE.DATE: NONE_SOURCE.OUT_OF_DATE_RANGE,
    FIELD_TYPE.DATETIME2: NONE_SOURCE.OUT_OF_DATETIME2_RANGE,
    FIELD_TYPE.SET: NONE_SOURCE.EMPTY_SET,
}
_EVENT_TYPES = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)


class TableDecoder:
    """The readers of one table map's columns, and the rows of an event decoded with them."""

    def __init__(self, columns: list[Any], errors: str) -> None:
        self.names = [column.name for column in columns]
        self.columns = columns
        self.readers = [column_reader(column, errors) for column in columns]
        self.null_bytes = (len(columns) + 7) // 8
        self.null_mask = (1 << len(columns)) - 1
        self.none_reasons = [_OUT_OF_RANGE.get(column.type) for column in columns]
        self.everything = b"\xff" * self.null_bytes
        self.nothing = b"\x00" * self.null_bytes
        self.plan = [
            (name, read, reason or NONE_SOURCE.NULL)
            for name, read, reason in zip(self.names, self.readers, self.none_reasons, strict=True)
        ]
        """Per column: its name, its reader (None: the library reads it) and why a None it
        reads is None."""
        read_here = [(name, read, reason) for name, read, reason in self.plan if read is not None]
        self.read_plan = read_here if len(read_here) == len(self.plan) else None
        """The plan when every column has a reader here (else None)."""

    def image(
        self, event: Any, data: bytes, pos: int
    ) -> tuple[dict[str, Any], dict[str, str], int]:
        """One row image at ``pos``: (values, none_sources, the position after it)."""
        # The bits past the last column are not NULL flags (MariaDB sets them).
        nulls = int.from_bytes(data[pos : pos + self.null_bytes], "little") & self.null_mask
        pos += self.null_bytes
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        if not nulls and self.read_plan is not None:  # the common row: no NULL, all read here
            for name, read_value, reason in self.read_plan:
                value, pos = read_value(data, pos)
                values[name] = value
                if value is None:
                    sources[name] = reason
            return values, sources, pos
        for index, (name, read, reason) in enumerate(self.plan):
            if nulls >> index & 1:
                values[name] = None
                sources[name] = NONE_SOURCE.NULL
                continue
            if read is None:
                value, pos = self._library_value(event, data, pos, index)
                if value is None:
                    sources[name] = _library_none_source(event, name)
            else:
                value, pos = read(data, pos)
                if value is None:
                    sources[name] = reason
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
            raise Rewind
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
            raise Rewind
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
