"""Binlog row values -> BSON-ready values (CONTRACT "Type mapping"); their WAL text is ``images``.

Invariants:
    * lossless: a value is converted exactly or the conversion raises ``ValueConversionError``;
      an unknown column type, a value of an unexpected Python type or a library-made ``None``
      that hides data (MINIMAL row image, partial JSON) never passes silently;

Decisions (where the CONTRACT leaves room):
    * DECIMAL -> ``Decimal128`` when the exact value fits its 34 significant digits (trailing
      fractional zeros beyond that may be dropped: the value stays exact); a value that needs
      more digits (DECIMAL(65,30) holds 65) is stored as its exact plain decimal string, e.g.
      ``"12345678901234567890.123456789012345678901234567890"``.
    * BINARY(n) gets back the trailing zero bytes the binlog strips (padded to n); an empty
      binary value, which the library hands over as ``""``, is ``b""``.
    * BINARY/VARBINARY/BLOB and spatial values are Python ``bytes``, which pymongo writes as
      BSON binary subtype 0 and reads back as ``bytes`` (``bson.Binary(b, 0) != b`` in Python,
      so ``bytes`` is what keeps the WAL round trip exact).
    * DATETIME/TIMESTAMP with fsp 4-6 -> ``"YYYY-MM-DDTHH:MM:SS.ffffff"``: always six digits, no
      zone suffix for either type; both are UTC wall-clock times (the server converts TIMESTAMP
      to UTC in the binlog; DATETIME is taken as UTC, as the CONTRACT says), so strings of the
      two types compare and sort alike. fsp 0-3 -> tz-aware UTC ``datetime`` (milliseconds).
    * TIME -> ``"[-]HH:MM:SS"`` plus ``".ffffff"`` (six digits) when the column has fsp > 0.
    * YEAR 0000 -> 0. The library returns 1900 for it; 1900 is outside YEAR's range
      (1901-2155), so 1900 always means 0000.
    * Zero dates, and dates with a zero part (``'2020-00-00'``, ``'0000-01-01'``), -> None: the
      library returns None for all of them and BSON has no such dates. A TIMESTAMP at epoch 0
      is MySQL's zero TIMESTAMP (the smallest valid one is 1970-01-01 00:00:01 UTC) -> None.
    * Spatial -> WKB. MySQL/MariaDB store a 4-byte SRID before the WKB; SRID 0 gives the plain
      WKB (byte-identical to ``ST_AsWKB``); any other SRID gives EWKB (PostGIS's extended WKB:
      type flag 0x20000000 and the SRID after the type), so the SRID is not lost. Coordinates
      stay in storage order, x = longitude for geographic SRSs (MySQL's
      ``ST_AsWKB(g, 'axis-order=long-lat')``).
    * JSON (MySQL's binary JSON) -> document/array/scalar; integers beyond int64 ->
      ``Decimal128``; opaque DECIMAL -> as DECIMAL above; opaque DATE/DATETIME/TIMESTAMP ->
      ``"YYYY-MM-DD HH:MM:SS.ffffff"`` (the library cannot tell a DATE from a DATETIME at
      midnight); opaque TIME and other opaque values raise (the library drops TIME's sign and
      decodes other opaque bytes with errors ignored). MariaDB JSON is LONGTEXT in the binlog:
      columns marked with ``schema.with_json_columns`` are parsed, others stay strings.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from bson.decimal128 import Decimal128
from pymysqlreplication.constants import FIELD_TYPE, NONE_SOURCE

from cdc_pipeline.core.errors import SourceSettingError, ValueConversionError
from cdc_pipeline.core.images import TextedDecimal128
from cdc_pipeline.core.schema import ColumnSpec, TableSchema

if TYPE_CHECKING:
    pass

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
_UTC = dt.UTC
_ZERO_DATE_SOURCES = frozenset(
    {
        NONE_SOURCE.OUT_OF_DATE_RANGE,
        NONE_SOURCE.OUT_OF_DATETIME_RANGE,
        NONE_SOURCE.OUT_OF_DATETIME2_RANGE,
    }
)
_EWKB_SRID_FLAG = 0x20000000
_TIME_LIMIT_US = (838 * 3600 + 59 * 60 + 59) * 1_000_000


# --- scalar conversions -------------------------------------------------------------------------


def _fail(column: ColumnSpec, what: str) -> ValueConversionError:
    return ValueConversionError(f"column {column.name} ({column.type_name}): {what}")


def _expect(value: Any, kinds: type | tuple[type, ...], column: ColumnSpec) -> None:
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise _fail(column, f"unexpected value {value!r} of type {type(value).__name__}")


_DECIMAL128_DIGITS = 34
_DECIMAL128_EXPONENTS = range(-6176, 6111 + 1)  # where Decimal128 neither rounds nor clamps


def exact_decimal(value: decimal.Decimal) -> Decimal128 | str:
    """``Decimal128`` when it holds the value exactly, else the exact plain decimal string.

    A value Decimal128 stores digit for digit (at most 34 digits, exponent in range) comes as
    a ``TextedDecimal128`` whose ``text`` is ``str(value)``, equal to ``str(Decimal128(value))``
    (property-tested); one that needs rounding of trailing zeros is a plain ``Decimal128``.
    """
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite decimal")
    _sign, digits, exponent = value.as_tuple()
    if len(digits) <= _DECIMAL128_DIGITS and exponent in _DECIMAL128_EXPONENTS:
        return TextedDecimal128(value)
    try:
        return Decimal128(value)
    except decimal.Inexact:
        return format(value, "f")


def big_integer(value: int) -> int | Decimal128 | str:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    return exact_decimal(decimal.Decimal(value))


def single_precision(value: float) -> float:
    """The shortest decimal that rounds to the same float32 (the library widens FLOAT: 1.1 ->
    1.100000023841858; this gives 1.1 back). The float32 value is recoverable exactly."""
    if not math.isfinite(value):
        return value
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        try:
            if struct.unpack("<f", struct.pack("<f", candidate))[0] == value:
                return candidate
        except OverflowError:
            continue
    return value


def time_text(value: dt.timedelta, fsp: int) -> str:
    """``[-]HH:MM:SS[.ffffff]`` for a TIME value as the library decodes it.

    The library decodes a negative TIME with a fraction wrongly: it reads the stored integer
    part, which MySQL keeps one second further from zero (two's complement of the whole),
    and adds the stored fraction, which is then ``-(1 s - true fraction)``. So ``-W.F`` arrives
    as ``-(W + 1 - F)``: -00:00:00.01 as -0.99 s, -00:00:01.10 as -1.90 s. The inverse: for a
    negative value whose microseconds are not zero, magnitude ``W.G`` means ``W + (1 - G)``.
    Whole-second and positive values arrive correctly.
    """
    micros = value // dt.timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), 1_000_000)
    if micros < 0 and fraction:
        fraction = 1_000_000 - fraction
    if whole * 1_000_000 + fraction > _TIME_LIMIT_US:
        raise ValueError(f"TIME value {value} is outside -838:59:59..838:59:59")
    if fraction and not fsp:
        raise ValueError(f"TIME value {value} has a fraction but the column has fsp 0")
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return text + f".{fraction:06d}" if fsp else text


def _iso_micro(value: dt.datetime, separator: str) -> str:
    """``YYYY-MM-DD{separator}HH:MM:SS.ffffff``, fixed width even before year 1000 and with
    the microseconds even when they are 0 (``isoformat`` pads the year, unlike
    ``strftime("%Y")``); the binlog's datetimes are naive, an aware one loses its zone."""
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return value.isoformat(separator, "microseconds")


def _datetime(value: dt.datetime, column: ColumnSpec) -> dt.datetime | str:
    if (column.fsp or 0) > 3:
        return _iso_micro(value, "T")
    if value.microsecond % 1000:
        raise _fail(column, f"{value} has microseconds but the column keeps milliseconds")
    return value.replace(tzinfo=_UTC)


def _spatial(value: bytes, column: ColumnSpec) -> bytes:
    if len(value) < 9 or value[4] not in (0, 1):
        raise _fail(column, f"{value.hex()} is not an SRID followed by WKB")
    srid = int.from_bytes(value[:4], "little")
    wkb = value[4:]
    if srid == 0:
        return bytes(wkb)
    order: Literal["little", "big"] = "little" if wkb[0] == 1 else "big"
    geometry_type = int.from_bytes(wkb[1:5], order) | _EWKB_SRID_FLAG
    return wkb[:1] + geometry_type.to_bytes(4, order) + srid.to_bytes(4, order) + bytes(wkb[5:])


def _mysql_json(value: Any, column: ColumnSpec) -> Any:
    """MySQL binary JSON as the library parses it: keys and strings are UTF-8 bytes."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, int):
        return big_integer(value)
    if isinstance(value, dict):
        return {_json_key(key, column): _mysql_json(item, column) for key, item in value.items()}
    if isinstance(value, list):
        return [_mysql_json(item, column) for item in value]
    if isinstance(value, decimal.Decimal):
        return exact_decimal(value)
    if isinstance(value, dt.datetime):
        return _iso_micro(value, " ")
    if isinstance(value, str):
        raise _fail(column, "JSON holds an opaque MySQL value the library decodes lossily")
    raise _fail(
        column, f"JSON holds a {type(value).__name__} ({value!r}) the library decodes lossily"
    )


def _json_key(key: Any, column: ColumnSpec) -> str:
    if isinstance(key, bytes):
        return key.decode("utf-8")
    raise _fail(column, f"JSON object key {key!r} is not bytes")


def _json_integer(text: str) -> Any:
    """An integer of JSON text (``json.loads``' ``parse_int``): beyond int64 as a decimal."""
    return big_integer(int(text))


_JSON_TEXT = json.JSONDecoder(parse_int=_json_integer)
_PLAIN_JSON = json.JSONDecoder()
"""``json.loads(text, parse_int=_json_integer)`` without building a decoder per call."""


_LONG_DIGITS = re.compile(r"[0-9]{19}")
"""A run of 19 digits: without one, no integer in JSON text can be beyond int64."""


def _parse_json_text(text: str) -> Any:
    if text.startswith("\ufeff"):
        return json.loads(text, parse_int=_json_integer)  # raises json.loads' own error
    if _LONG_DIGITS.search(text) is None:
        return _PLAIN_JSON.decode(text)  # every integer fits int64: no per-integer call
    return _JSON_TEXT.decode(text)


def _text(value: Any, column: ColumnSpec) -> Any:
    if column.charset is None:
        if value == "":
            value = b""  # the library's bytes.decode("binary") skips the codec when empty
        _expect(value, bytes, column)
        if column.type_code == FIELD_TYPE.STRING and column.max_length:
            return bytes(value).ljust(column.max_length, b"\0")
        return bytes(value)
    if isinstance(value, bytes):
        raise _fail(column, f"character set {column.charset} cannot be decoded in Python")
    _expect(value, str, column)
    if column.type_name == "json":
        return _parse_json_text(value)
    return value


def _integer(value: Any, column: ColumnSpec) -> Any:
    _expect(value, int, column)
    return big_integer(value)


def _decimal(value: Any, column: ColumnSpec) -> Any:
    _expect(value, decimal.Decimal, column)
    return exact_decimal(value)


def _float(value: Any, column: ColumnSpec) -> float:
    _expect(value, float, column)
    return single_precision(value)


def _double(value: Any, column: ColumnSpec) -> float:
    _expect(value, float, column)
    return float(value)


def _date(value: Any, column: ColumnSpec) -> dt.datetime:
    _expect(value, dt.date, column)
    return dt.datetime(value.year, value.month, value.day, tzinfo=_UTC)


def _datetime_value(value: Any, column: ColumnSpec) -> dt.datetime | str:
    _expect(value, dt.datetime, column)
    return _datetime(value, column)


def _timestamp(value: Any, column: ColumnSpec) -> dt.datetime | str | None:
    _expect(value, dt.datetime, column)
    if value == dt.datetime(1970, 1, 1):
        return None
    return _datetime(value, column)


def _time(value: Any, column: ColumnSpec) -> str:
    _expect(value, dt.timedelta, column)
    try:
        return time_text(value, column.fsp or 0)
    except ValueError as error:
        raise _fail(column, str(error)) from None


def _year(value: Any, column: ColumnSpec) -> int:
    _expect(value, int, column)
    return 0 if value == 1900 else int(value)


def _enum(value: Any, column: ColumnSpec) -> str:
    _expect(value, str, column)
    return str(value)


def _set(value: Any, column: ColumnSpec) -> list[str]:
    _expect(value, (set, frozenset), column)
    unknown = set(value) - set(column.members)
    if unknown:
        raise _fail(column, f"members {sorted(unknown)} are not in the column's definition")
    return [member for member in column.members if member in value]


def _bit(value: Any, column: ColumnSpec) -> int | Decimal128 | str:
    """BIT -> int; a BIT(64) value beyond int64 -> Decimal128, as for BIGINT UNSIGNED."""
    _expect(value, str, column)
    return big_integer(int(value, 2))


def _geometry(value: Any, column: ColumnSpec) -> bytes:
    _expect(value, bytes, column)
    return _spatial(value, column)


_CONVERTERS: dict[int, Callable[[Any, ColumnSpec], Any]] = {
    FIELD_TYPE.TINY: _integer,
    FIELD_TYPE.SHORT: _integer,
    FIELD_TYPE.INT24: _integer,
    FIELD_TYPE.LONG: _integer,
    FIELD_TYPE.LONGLONG: _integer,
    FIELD_TYPE.NEWDECIMAL: _decimal,
    FIELD_TYPE.FLOAT: _float,
    FIELD_TYPE.DOUBLE: _double,
    FIELD_TYPE.VARCHAR: _text,
    FIELD_TYPE.VAR_STRING: _text,
    FIELD_TYPE.STRING: _text,
    FIELD_TYPE.BLOB: _text,
    FIELD_TYPE.DATE: _date,
    FIELD_TYPE.DATETIME: _datetime_value,
    FIELD_TYPE.DATETIME2: _datetime_value,
    FIELD_TYPE.TIMESTAMP: _timestamp,
    FIELD_TYPE.TIMESTAMP2: _timestamp,
    FIELD_TYPE.TIME2: _time,
    FIELD_TYPE.YEAR: _year,
    FIELD_TYPE.JSON: _mysql_json,
    FIELD_TYPE.ENUM: _enum,
    FIELD_TYPE.SET: _set,
    FIELD_TYPE.BIT: _bit,
    FIELD_TYPE.GEOMETRY: _geometry,
}


def _none_value(column: ColumnSpec, none_source: str | None) -> Any:
    if none_source in (None, NONE_SOURCE.NULL):
        return None
    if none_source == NONE_SOURCE.EMPTY_SET and column.type_code == FIELD_TYPE.SET:
        return []
    if none_source in _ZERO_DATE_SOURCES:
        return None
    if none_source == NONE_SOURCE.COLS_BITMAP:
        raise SourceSettingError(
            f"column {column.name} is missing from a row image (binlog_row_image is not FULL);"
            " set binlog_row_image=FULL on the source."
        )
    if none_source == NONE_SOURCE.JSON_PARTIAL_UPDATE:
        raise SourceSettingError(
            f"column {column.name} came as a partial JSON update; set"
            " binlog_row_value_options='' on the source."
        )
    raise _fail(column, f"the library gave None for an unknown reason ({none_source!r})")


def to_bson_value(value: Any, column: ColumnSpec, none_source: str | None = None) -> Any:
    """Convert one decoded binlog value of ``column`` per the CONTRACT type table.

    Raises:
        ValueConversionError: the type is unknown or the value cannot be converted exactly.
        SourceSettingError: the library's None stands for data the server did not send.
    """
    if value is None:
        return _none_value(column, none_source)
    converter = _CONVERTERS.get(column.type_code)
    if converter is None:
        raise _fail(column, f"binlog type code {column.type_code} is not supported")
    return converter(value, column)


RowConverter = Callable[[Mapping[str, Any], "Mapping[str, str] | None"], dict[str, Any]]


_INTEGER_TYPES = frozenset(
    {FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.INT24, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG}
)
_TEXT_TYPES = frozenset(
    {FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING, FIELD_TYPE.BLOB}
)


def _kept_as_is(column: ColumnSpec) -> type | None:
    """The Python type whose values the column's converter returns unchanged (so the compiled
    row converter skips the call for them), or None. An int is kept only within int64, which
    the loop checks; a bool is never an int here (``type(value) is int``)."""
    if column.type_code in _INTEGER_TYPES:
        return int
    if column.type_code == FIELD_TYPE.DOUBLE:
        return float
    if column.type_code in _TEXT_TYPES and column.charset is not None:
        return None if column.type_name == "json" else str
    if column.type_code == FIELD_TYPE.ENUM:
        return str
    return None


def row_converter(schema: TableSchema) -> RowConverter:
    """``convert_row`` for rows of one ``schema``, compiled once: each column's converter is
    looked up once, and values its converter would return unchanged (an int64, a double, the
    text of a character column) are kept without a call (the same result, property-tested)."""
    names = frozenset(schema.column_names)
    plan = [
        (column.name, column, _CONVERTERS.get(column.type_code), _kept_as_is(column))
        for column in schema.columns
    ]

    def convert(
        values: Mapping[str, Any], none_sources: Mapping[str, str] | None
    ) -> dict[str, Any]:
        if values.keys() != names:
            raise ValueConversionError(
                f"row of {schema.schema}.{schema.table} has columns {sorted(values)} but its"
                f" table map has {list(schema.column_names)}"
            )
        document: dict[str, Any] = {}
        for name, column, converter, kept in plan:
            value = values[name]
            if type(value) is kept and (
                kept is not int or INT64_MIN <= value <= INT64_MAX  # type: ignore[operator]
            ):
                document[name] = value
            elif value is None:
                document[name] = _none_value(column, (none_sources or {}).get(name))
            elif converter is None:
                raise _fail(column, f"binlog type code {column.type_code} is not supported")
            else:
                document[name] = converter(value, column)
        return document

    return convert


def convert_row(
    values: Mapping[str, Any], none_sources: Mapping[str, str] | None, schema: TableSchema
) -> dict[str, Any]:
    """One row image as a BSON-ready document, keys in the table's column order: each value
    through ``to_bson_value``; ValueConversionError if the columns are not the schema's."""
    return row_converter(schema)(values, none_sources)
