"""The schema version of a snapshot row, read from the source's ``information_schema``.

Snapshot rows are read with SELECT, so no binlog table map comes with them; this module describes
the table from the server's catalogue instead.

Invariant: ``table_schema_from_source(connection, schema, table)`` equals, field for field and so
with the same ``version``, the ``TableSchema`` capture gives a row written to that table now: its
table map through ``schema.table_schema_from_rows_event``, with capture's primary-key order and,
on MariaDB, ``schema.with_json_columns`` of its ``json_valid`` columns. It is guaranteed by
``cdc_pipeline_tests/integration/test_snapshot_schema.py``, which writes a row to tables of every
mapped type on real MariaDB and MySQL 9.7 and compares both descriptions of it.

How: each column becomes the attributes the binlog library's ``Column`` gets from the table map
(type code, byte length, fsp, precision, bits, collation id, ENUM/SET labels), which go through
the same ``schema.column_spec_from_library``. What the catalogue hides but the table map holds is
added back: MariaDB's ``DB_ROW_HASH_<n>`` column of each long (``USING HASH``) UNIQUE key, and the
key the server writes, which is PRIMARY (none if it has a prefix part) or, without PRIMARY, the
first UNIQUE key in the server's key order whose columns are all NOT NULL and unprefixed.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.row_event import find_charset

from cdc_pipeline.core.errors import ValueConversionError
from cdc_pipeline.core.mysql.catalog import json_columns
from cdc_pipeline.core.mysql.source import detect_flavor
from cdc_pipeline.core.mysql.source_rows import SPATIAL_TYPES
from cdc_pipeline.core.schema import (
    ColumnSpec,
    TableSchema,
    column_spec_from_library,
    with_json_columns,
)

_NUMBERS = {
    "tinyint": FIELD_TYPE.TINY,
    "smallint": FIELD_TYPE.SHORT,
    "mediumint": FIELD_TYPE.INT24,
    "int": FIELD_TYPE.LONG,
    "bigint": FIELD_TYPE.LONGLONG,
    "float": FIELD_TYPE.FLOAT,
    "double": FIELD_TYPE.DOUBLE,
    "decimal": FIELD_TYPE.NEWDECIMAL,
}
_TEMPORALS = {
    "datetime": FIELD_TYPE.DATETIME2,
    "timestamp": FIELD_TYPE.TIMESTAMP2,
    "time": FIELD_TYPE.TIME2,
}
_STRINGS = {
    "char": FIELD_TYPE.STRING,
    "binary": FIELD_TYPE.STRING,
    "varchar": FIELD_TYPE.VARCHAR,
    "varbinary": FIELD_TYPE.VARCHAR,
}
_BLOB_LENGTH_SIZES = {"tiny": 1, "": 2, "medium": 3, "long": 4}
_MARIADB_BINARY = {"inet6": 16, "uuid": 16, "inet4": 4}  # sent as BINARY(n)
_TEXT_CODES = {
    FIELD_TYPE.STRING,
    FIELD_TYPE.VARCHAR,
    FIELD_TYPE.BLOB,
    FIELD_TYPE.ENUM,
    FIELD_TYPE.SET,
}
_BINARY_COLLATION_ID = 63
_ESCAPES = {"0": "\0", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "Z": "\x1a"}
_COLUMNS_SQL = (
    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_OCTET_LENGTH, CHARACTER_MAXIMUM_LENGTH,"
    " DATETIME_PRECISION, NUMERIC_PRECISION, NUMERIC_SCALE, COLLATION_NAME, GENERATION_EXPRESSION"
    " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
    " ORDER BY ORDINAL_POSITION"
)
# SHOW INDEX lists keys in the server's key order, which decides the promoted key (MySQL's
# information_schema.STATISTICS does not: it lists them by name).
_KEY_FIELDS = (
    "Key_name",
    "Non_unique",
    "Seq_in_index",
    "Column_name",
    "Sub_part",
    "Null",
    "Index_type",
)


def _labels(column_type: str) -> list[str]:
    """The labels of ``enum('a','it''s',...)`` or ``set(...)``, unquoted as the server quotes."""
    text = column_type[column_type.index("(") + 1 : column_type.rindex(")")]
    labels: list[str] = []
    label: list[str] = []
    position = 1  # past the opening quote of the first label
    while position < len(text):
        character = text[position]
        if character == "\\":
            label.append(_ESCAPES.get(text[position + 1], text[position + 1]))
            position += 2
        elif character == "'" and text[position + 1 : position + 2] == "'":
            label.append("'")
            position += 2
        elif character == "'":
            labels.append("".join(label))
            label = []
            position += 3  # the closing quote, the comma and the next opening quote
        else:
            label.append(character)
            position += 1
    return labels


def _library_column(row: tuple[Any, ...], where: str, flavor: str) -> SimpleNamespace:
    """The attributes ``pymysqlreplication.column.Column`` gets from this column's table map."""
    name, data_type, column_type, octets, chars, fsp, precision, scale, collation_id = row
    kind = str(data_type).lower()
    words = str(column_type).lower().replace("(", " ").split()
    column = SimpleNamespace(
        name=str(name),
        unsigned=False,
        character_set_name=None,
        collation_name=None,
        enum_values=None,
        set_values=None,
    )
    if "mariadb-5.3" in str(column_type):
        raise ValueConversionError(
            f"column {where} is {column_type} (MariaDB 5.3's temporal format), which the binlog"
            " library cannot read; convert it with ALTER TABLE ... FORCE."
        )
    if kind in _NUMBERS:
        column.type = _NUMBERS[kind]
        column.unsigned = "unsigned" in words or "zerofill" in words
        if kind == "decimal":
            column.precision, column.decimals = int(precision), int(scale)
    elif kind == "year":
        column.type, column.unsigned = FIELD_TYPE.YEAR, True  # flagged so in the table map
    elif kind == "date":
        column.type = FIELD_TYPE.DATE
    elif kind in _TEMPORALS:
        column.type, column.fsp = _TEMPORALS[kind], int(fsp or 0)
    elif kind == "bit":
        column.type, column.bits = FIELD_TYPE.BIT, int(precision)
        column.bytes = (column.bits + 7) // 8
    elif kind in _STRINGS:
        column.type, column.max_length = _STRINGS[kind], int(octets)
    elif kind in _MARIADB_BINARY and flavor == "mariadb":
        column.type, column.max_length = FIELD_TYPE.STRING, _MARIADB_BINARY[kind]
    elif kind.endswith(("text", "blob")) and kind[:-4] in _BLOB_LENGTH_SIZES:
        column.type, column.length_size = FIELD_TYPE.BLOB, _BLOB_LENGTH_SIZES[kind[:-4]]
    elif kind in ("enum", "set"):
        labels = _labels(str(column_type))
        if "?" in "".join(labels) and chars and int(octets) // int(chars) >= 4:
            raise ValueConversionError(
                f"column {where} is {column_type} in a 4-byte character set, whose labels"
                " information_schema shows with '?' for characters beyond the BMP, so its exact"
                " labels cannot be read."
            )
        if kind == "enum":
            column.type, column.enum_values = FIELD_TYPE.ENUM, ["", *labels]
        else:
            column.type, column.set_values = FIELD_TYPE.SET, labels
    elif kind == "json" and flavor == "mysql":
        column.type, column.length_size = FIELD_TYPE.JSON, 4
    elif kind in SPATIAL_TYPES:
        column.type, column.length_size = FIELD_TYPE.GEOMETRY, 4
    else:
        raise ValueConversionError(
            f"column {where} is {column_type}, a type the binlog library (mysql-replication"
            " 1.0.17) cannot read, so its rows have no schema version to declare."
        )
    if column.type in _TEXT_CODES:
        number = _BINARY_COLLATION_ID if collation_id is None else collation_id
        encoding, collation, _ = find_charset(str(number), dbms=flavor)
        column.character_set_name, column.collation_name = encoding, collation
    return column


def _keys(rows: list[tuple[Any, ...]]) -> dict[str, list[tuple[Any, ...]]]:
    """SHOW INDEX rows by index, indexes in the server's key order, parts in key order."""
    indexes: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        indexes.setdefault(str(row[0]), []).append(row)
    for parts in indexes.values():
        parts.sort(key=lambda part: int(part[2]))
    return indexes


def _binlog_primary_key(
    indexes: dict[str, list[tuple[Any, ...]]], long_hash: set[str]
) -> tuple[str, ...]:
    """The key the table map carries (the library reads no key that has a prefix part)."""
    if "PRIMARY" in indexes:
        candidates = [indexes["PRIMARY"]]
    else:
        candidates = [parts for name, parts in indexes.items() if name not in long_hash]
    for parts in candidates:
        unique = int(parts[0][1]) == 0
        if unique and all(
            column is not None and sub_part is None and str(nullable or "").upper() != "YES"
            for _, _, _, column, sub_part, nullable, _ in parts
        ):
            return tuple(str(part[3]) for part in parts)
    return ()


def table_schema_from_source(connection: Any, schema: str, table: str) -> TableSchema:
    """The ``TableSchema`` the binlog gives a row written to ``schema.table`` now.

    Args:
        connection: a pymysql connection with character set utf8mb4 (names and ENUM/SET labels
            are read as text).

    Raises:
        ValueError: there is no table ``schema.table`` (or it is a view), or the connection's
            character set is not utf8mb4.
        ValueConversionError: a column cannot be described exactly: a type the binlog library
            cannot read either (MySQL's VECTOR, MariaDB 5.3 temporal columns), ENUM/SET labels
            beyond the BMP (information_schema shows them as '?'), or MariaDB's hidden
            row_start/row_end of implicit system versioning. It is the ``CdcError`` the binlog
            path raises for what it cannot convert exactly, so operators see one sentence.
    """
    charset = getattr(connection, "charset", "utf8mb4")
    if charset != "utf8mb4":
        raise ValueError(f"reading {schema}.{table} needs a utf8mb4 connection, not {charset}.")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_TYPE, ENGINE FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (schema, table),
        )
        found = cursor.fetchone()
        if found is None or str(found[0]).upper() == "VIEW":
            raise ValueError(f"the source has no table {schema}.{table}.")
        table_type, engine = str(found[0]).upper(), str(found[1] or "").upper()
        cursor.execute(_COLUMNS_SQL, (schema, table))
        columns = [tuple(row) for row in cursor.fetchall()]
        collations = sorted({str(row[8]) for row in columns if row[8] is not None})
        collation_ids: dict[str, int] = {}
        if collations:
            cursor.execute(
                "SELECT COLLATION_NAME, ID FROM information_schema.COLLATIONS"
                f" WHERE COLLATION_NAME IN ({', '.join(['%s'] * len(collations))})",
                collations,
            )
            collation_ids = {str(name): int(number) for name, number in cursor.fetchall()}
        quoted = ".".join("`" + name.replace("`", "``") + "`" for name in (schema, table))
        cursor.execute(f"SHOW INDEX FROM {quoted}")
        fields = [str(description[0]) for description in cursor.description]
        positions = [fields.index(field) for field in _KEY_FIELDS]
        indexes = _keys([tuple(row[i] for i in positions) for row in cursor.fetchall()])
    flavor = detect_flavor(connection)
    if table_type == "SYSTEM VERSIONED" and not any(row[9] == "ROW END" for row in columns):
        raise ValueConversionError(
            f"{schema}.{table} is system-versioned with implicit row_start/row_end columns,"
            " which information_schema does not list; declare them with PERIOD FOR SYSTEM_TIME."
        )
    specs: list[ColumnSpec] = []
    for row in columns:
        where = f"{row[0]} of {schema}.{table}"
        collation = None if row[8] is None else collation_ids.get(str(row[8]))
        if row[8] is not None and collation is None:
            raise ValueConversionError(
                f"column {where} has collation {row[8]}, which information_schema gives no id,"
                " so its character set in the binlog is unknown."
            )
        specs.append(
            column_spec_from_library(_library_column((*row[:8], collation), where, flavor))
        )
    # MariaDB keeps a long UNIQUE key (BLOB/TEXT, or USING HASH) as a hash in a hidden column.
    long_hash = {
        name
        for name, parts in indexes.items()
        if flavor == "mariadb"
        and engine != "MEMORY"
        and int(parts[0][1]) == 0
        and str(parts[0][6]).upper() == "HASH"
    }
    for number in range(1, len(long_hash) + 1):
        hidden = f"DB_ROW_HASH_{number}"  # BIGINT UNSIGNED, after every other column
        specs.append(
            column_spec_from_library(
                SimpleNamespace(name=hidden, type=FIELD_TYPE.LONGLONG, unsigned=True)
            )
        )
    result = TableSchema(schema, table, tuple(specs), _binlog_primary_key(indexes, long_hash))
    longtext = {spec.name for spec in specs if spec.type_name == "longtext"}
    if flavor != "mariadb" or not longtext:
        return result
    return with_json_columns(result, json_columns(connection, schema, table) & longtext)
