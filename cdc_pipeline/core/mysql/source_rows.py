"""A source table's rows read with SQL, as the documents the binlog path makes of them.

This is the independent side of every comparison with a mirror collection (tests, ``verify``,
``snapshot``): it never touches the binlog, yet it gives each row exactly the BSON-ready
document that ``core.values`` gives the binlog image of that row.

Invariants:
    * ``row_documents`` yields ``{column: value}`` in column order, each value equal, and of the
      same type, to what ``values.convert_row`` makes of the row's binlog image; every
      conversion goes through ``core.values`` (``to_bson_value`` and its helpers), the SQL only
      fetches each value in a form that holds it exactly (see ``_Reader``);
    * memory stays bounded by ``batch_size``: a table with a primary key is read in key order
      by keyset pages (resumable from any key, the connection free between documents); a table
      without one in a single ordered scan through a server-side cursor;
    * nothing changes the session (no ``SET``): TIMESTAMPs are read as epoch values, which do
      not depend on ``time_zone``. Run it inside ``START TRANSACTION WITH CONSISTENT SNAPSHOT``
      when the pages must all see one moment.

Where SQL text loses information, each value is read another way:
    * FLOAT prints with 6 digits: read ``col + 0e0``, the stored float32 widened to a double;
    * MySQL's JSON text cannot tell DECIMAL (or DATE) from DOUBLE (or a string): a recursive
      walk of the document in the same statement lists the paths of every scalar whose type the
      text hides (``JSON_WALK``); DATE becomes ``"YYYY-MM-DD 00:00:00.000000"`` and TIME and
      other opaque values raise ``ValueConversionError``, as on the binlog path.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pymysql
from bson.decimal128 import Decimal128
from pymysqlreplication.constants import FIELD_TYPE

from cdc_pipeline.core.errors import ValueConversionError
from cdc_pipeline.core.gtid import Flavor
from cdc_pipeline.core.images import encode_document
from cdc_pipeline.core.mysql.catalog import SourceTable
from cdc_pipeline.core.mysql.json_values import JSON_WALK, mysql_json
from cdc_pipeline.core.mysql.source import detect_flavor
from cdc_pipeline.core.schema import ColumnSpec
from cdc_pipeline.core.values import time_text, to_bson_value


def row_hash(document: Mapping[str, Any]) -> str:
    """sha256 (hex) of the document's canonical Extended JSON: equal documents, equal hashes
    (field order included, and int32 vs int64, so compare documents built the same way)."""
    text = encode_document(document)
    assert text is not None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


PAGE = 5000
"""Rows per keyset page of ``row_documents`` (and per fetch from a server-side cursor)."""


def row_documents(
    connection: Any,
    table: SourceTable,
    batch_size: int = PAGE,
    after_key: tuple[Any, ...] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every row of ``table`` as a BSON-ready document, in primary-key order.

    Args:
        connection: a pymysql connection with character set utf8mb4 and default converters.
        batch_size: rows per keyset page (or per fetch from the server-side cursor).
        after_key: resume after this key, given as the document values of the key columns in
            key order (``SourceTable.key_of``); only for a table with a primary key.

    Raises:
        ValueConversionError: a column type outside the CONTRACT (e.g. VECTOR, UUID), or a value
            the binlog path could not convert either.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if not str(getattr(connection, "charset", "")).startswith("utf8mb4"):
        raise ValueError("row_documents needs a connection with charset utf8mb4")
    flavor = detect_flavor(connection)
    readers = [_reader(name, table.column_types[name], flavor) for name in table.columns]
    source = f"{_ident(table.schema)}.{_ident(table.table)}"
    select = ", ".join(expression for reader in readers for expression in reader.select)
    if table.primary_key:
        yield from _keyset_pages(connection, table, readers, select, source, batch_size, after_key)
        return
    if after_key is not None:
        raise ValueError(f"{table.schema}.{table.table} has no primary key to resume after.")
    order = ", ".join(_ident(name) for name in table.columns)
    with connection.cursor(pymysql.cursors.SSCursor) as cursor:
        cursor.execute(f"SELECT {select} FROM {source} AS src ORDER BY {order}", ())
        while rows := cursor.fetchmany(batch_size):
            for row in rows:
                yield _document(readers, row)


def _keyset_pages(
    connection: Any,
    table: SourceTable,
    readers: list[_Reader],
    select: str,
    source: str,
    batch_size: int,
    after_key: tuple[Any, ...] | None,
) -> Iterator[dict[str, Any]]:
    by_name = {reader.name: reader for reader in readers}
    keys = [by_name[name] for name in table.primary_key]
    if after_key is not None and len(after_key) != len(keys):
        raise ValueError(f"after_key needs {len(keys)} values, one per key column")
    # k1 > ? OR (k1 = ? AND k2 > ?) ...: both servers scan a range for this form, not for the
    # row constructor (k1, k2) > (?, ?).
    terms = [
        "("
        + " AND ".join([f"{k.key_expression} = %s" for k in keys[:n]])
        + (" AND " if n else "")
        + f"{keys[n].key_expression} > %s)"
        for n in range(len(keys))
    ]
    after = " OR ".join(terms)
    order = ", ".join(_ident(name) for name in table.primary_key)
    last = after_key
    while True:
        sql, params = f"SELECT {select} FROM {source} AS src", ()
        if last is not None:
            values = [key.key_parameter(value) for key, value in zip(keys, last, strict=True)]
            sql += f" WHERE {after}"
            params = tuple(value for n in range(len(keys)) for value in values[: n + 1])
        with connection.cursor() as cursor:
            cursor.execute(f"{sql} ORDER BY {order} LIMIT {batch_size}", params)
            rows = cursor.fetchall()
        document: dict[str, Any] = {}
        for row in rows:
            document = _document(readers, row)
            yield document
        if len(rows) < batch_size:
            return
        key = tuple(document[name] for name in table.primary_key)
        if key == last:
            raise ValueConversionError(
                f"keyset paging of {table.schema}.{table.table} did not advance past {key!r}:"
                " a key value does not convert back to SQL exactly"
            )
        last = key


def _ident(name: str) -> str:
    """A quoted identifier, ``%`` doubled: every query here goes through pymysql's % format."""
    return "`" + name.replace("`", "``").replace("%", "%%") + "`"


def _document(readers: list[_Reader], row: tuple[Any, ...]) -> dict[str, Any]:
    document, position = {}, 0
    for reader in readers:
        width = len(reader.select)
        document[reader.name] = reader.convert(*row[position : position + width])
        position += width
    return document


# --- one reader per column type -----------------------------------------------------------------


@dataclass(frozen=True)
class _Reader:
    """How one column is selected (one or more expressions), converted, and used as a key.

    ``key_expression`` orders like the column itself (ENUM and SET by number, TIMESTAMP by
    epoch) and compares with ``key_parameter(document value)``.
    """

    name: str
    select: tuple[str, ...]
    convert: Callable[..., Any]
    key_expression: str
    key_parameter: Callable[[Any], Any]


_INTEGERS = {
    "tinyint": FIELD_TYPE.TINY,
    "smallint": FIELD_TYPE.SHORT,
    "mediumint": FIELD_TYPE.INT24,
    "int": FIELD_TYPE.LONG,
    "integer": FIELD_TYPE.LONG,
    "bigint": FIELD_TYPE.LONGLONG,
}
_TEXTS = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext"}
_BINARIES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
SPATIAL_TYPES = {
    # the spatial COLUMN_TYPE names (also core.snapshot_schema)
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
    "geomcollection",
}
_LABEL = re.compile(r"'((?:[^']|'')*)'")
_DATETIME_TEXT = re.compile(r"(\d{4})-(\d\d)-(\d\d)(?: (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?)?")
_TIME_TEXT = re.compile(r"(-?)(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?")
_EPOCH = dt.datetime(1970, 1, 1)


def _reader(name: str, column_type: str, flavor: Flavor) -> _Reader:
    base = column_type.split("(")[0].split(" ")[0]
    length = re.match(r"\w+\((\d+)", column_type)
    size = int(length.group(1)) if length else None
    column = _ident(name)

    def spec(code: int, **details: Any) -> ColumnSpec:
        return ColumnSpec(name=name, type_name=column_type, type_code=code, **details)

    def reader(
        select: str | tuple[str, ...],
        convert: Callable[..., Any],
        key_expression: str = column,
        key_parameter: Callable[[Any], Any] = lambda value: value,
    ) -> _Reader:
        expressions = (select,) if isinstance(select, str) else select
        return _Reader(name, expressions, _null_is_none(convert), key_expression, key_parameter)

    def via_values(column_spec: ColumnSpec) -> Callable[[Any], Any]:
        return lambda value: to_bson_value(value, column_spec)

    if base in _INTEGERS:
        return reader(column, via_values(spec(_INTEGERS[base])), key_parameter=_integer_key)
    if base in ("decimal", "numeric"):
        convert = via_values(spec(FIELD_TYPE.NEWDECIMAL))
        return reader(
            f"CAST({column} AS CHAR)",
            lambda text: convert(decimal.Decimal(text)),
            key_parameter=_decimal_key,
        )
    if base == "float":
        # Plain FLOAT prints 6 digits; + 0e0 gives the stored float32 as a double, as the
        # library reads it, and single_precision then picks the same shortest decimal.
        convert = via_values(spec(FIELD_TYPE.FLOAT))
        return reader(f"{column} + 0e0", convert, key_parameter=_float32)
    if base in ("double", "real"):
        return reader(column, via_values(spec(FIELD_TYPE.DOUBLE)))
    if column_type == "json" and flavor == "mariadb":
        # LONGTEXT; values parses text columns named json, as schema.with_json_columns marks them.
        return reader(column, via_values(spec(FIELD_TYPE.BLOB, charset="utf8mb4")))
    if base in _TEXTS:
        return reader(column, via_values(spec(FIELD_TYPE.VARCHAR, charset="utf8mb4")))
    if base in _BINARIES:
        code = FIELD_TYPE.STRING if base == "binary" else FIELD_TYPE.BLOB
        return reader(column, via_values(spec(code, max_length=size)))
    if base == "date":
        convert = via_values(spec(FIELD_TYPE.DATE))
        return reader(
            f"CAST({column} AS CHAR)",
            lambda text: _none_or(_datetime_text(text, name), lambda d: convert(d.date())),
            key_parameter=_date_key,
        )
    if base == "datetime":
        convert = via_values(spec(FIELD_TYPE.DATETIME2, fsp=size or 0))
        return reader(
            f"CAST({column} AS CHAR)",
            lambda text: _none_or(_datetime_text(text, name), convert),
            key_parameter=_datetime_key,
        )
    if base == "timestamp":
        # The epoch value is the stored one whatever the session's time_zone (binlog: UTC).
        convert = via_values(spec(FIELD_TYPE.TIMESTAMP2, fsp=size or 0))
        return reader(
            f"UNIX_TIMESTAMP({column})",
            lambda epoch: convert(_EPOCH + dt.timedelta(microseconds=_micros(epoch))),
            key_expression=f"UNIX_TIMESTAMP({column})",
            key_parameter=_epoch_key,
        )
    if base == "time":
        return reader(f"CAST({column} AS CHAR)", lambda text: _time(text, size or 0, name))
    if base == "year":
        return reader(f"CAST({column} AS UNSIGNED)", via_values(spec(FIELD_TYPE.YEAR)))
    if base == "json":
        return reader(
            (f"CAST({column} AS CHAR)", JSON_WALK.format(column=column)),
            lambda text, typed: mysql_json(text, typed, name),
            key_parameter=_unsupported_key(name, column_type),
        )
    if base in ("enum", "set"):
        labels = tuple(label.replace("''", "'") for label in _LABEL.findall(column_type))
        number = f"CAST({column} AS UNSIGNED)"
        if base == "enum":
            convert = via_values(spec(FIELD_TYPE.ENUM, members=labels))
            return reader(column, convert, number, lambda label: _enum_number(labels, label))
        convert = via_values(spec(FIELD_TYPE.SET, members=labels))
        return reader(
            f"CAST({column} AS CHAR)",
            lambda text: convert(set(text.split(",")) if text else set()),
            number,
            lambda members: sum(1 << labels.index(member) for member in members),
        )
    if base == "bit":
        # values takes BIT as the library's text of binary digits.
        convert = via_values(spec(FIELD_TYPE.BIT))
        return reader(f"CAST({column} AS UNSIGNED)", lambda number: convert(format(number, "b")))
    if base in SPATIAL_TYPES:
        # The raw column is the storage format the binlog carries: SRID + WKB.
        convert = via_values(spec(FIELD_TYPE.GEOMETRY))
        return reader(column, convert, key_parameter=_unsupported_key(name, column_type))
    raise ValueConversionError(
        f"column {name} ({column_type}): the type is not in the CONTRACT's type mapping"
    )


def _null_is_none(convert: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *raw: None if raw[0] is None else convert(*raw)


def _none_or(value: Any, convert: Callable[[Any], Any]) -> Any:
    return None if value is None else convert(value)


def _datetime_text(text: str, name: str) -> dt.datetime | None:
    """A DATE/DATETIME as the server prints it; None for zero dates, dates with a zero part and
    days past their month's end (ALLOW_INVALID_DATES): the binlog path gives None for them too."""
    match = _DATETIME_TEXT.fullmatch(text)
    if match is None:
        raise ValueConversionError(f"column {name}: unexpected date text {text!r}")
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups()[:6])
    if not (year and month and day):
        return None
    try:
        return dt.datetime(
            year, month, day, hour, minute, second, int((match.group(7) or "").ljust(6, "0"))
        )
    except ValueError:
        return None


def _micros(epoch: Any) -> int:
    return int(decimal.Decimal(epoch).scaleb(6))


def _time(text: str, fsp: int, name: str) -> str:
    """``time_text`` takes the library's decoding of a TIME, which is wrong for negative values
    with a fraction; the magnitude of a value is always decoded right, so format that."""
    match = _TIME_TEXT.fullmatch(text)
    if match is None:
        raise ValueConversionError(f"column {name}: unexpected TIME text {text!r}")
    sign, hours, minutes, seconds, fraction = match.groups()
    magnitude = dt.timedelta(
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds),
        microseconds=int((fraction or "").ljust(6, "0")),
    )
    try:
        return sign + time_text(magnitude, fsp)
    except ValueError as error:
        raise ValueConversionError(f"column {name}: {error}") from None


# --- key values back to SQL parameters -----------------------------------------------------------


def _integer_key(value: Any) -> int:
    return int(value.to_decimal()) if isinstance(value, Decimal128) else int(value)


def _decimal_key(value: Any) -> decimal.Decimal:
    return value.to_decimal() if isinstance(value, Decimal128) else decimal.Decimal(value)


def _float32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def _date_key(value: dt.datetime | None) -> Any:
    return "0000-00-00" if value is None else value.date()


def _datetime_key(value: dt.datetime | str | None) -> Any:
    if value is None:
        return "0000-00-00 00:00:00"
    if isinstance(value, str):
        return value.replace("T", " ")
    return value.replace(tzinfo=None)


def _epoch_key(value: dt.datetime | str | None) -> decimal.Decimal:
    if value is None:
        return decimal.Decimal(0)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    since = value.replace(tzinfo=None) - _EPOCH
    return decimal.Decimal(since // dt.timedelta(microseconds=1)).scaleb(-6)


def _enum_number(labels: tuple[str, ...], label: str) -> int:
    return labels.index(label) + 1 if label in labels else 0


def _unsupported_key(name: str, column_type: str) -> Callable[[Any], Any]:
    def refuse(value: Any) -> Any:
        raise ValueConversionError(f"column {name} ({column_type}) cannot serve as a keyset key")

    return refuse


# --- MySQL JSON ---------------------------------------------------------------------------------
