"""Table schema versions, read from the binlog's own table map (``binlog_row_metadata=FULL``).

Every rows event carries the column names, types and key of its table as they were when the row
was written, so a ``TableSchema`` describes exactly the columns of the rows it came with, through
any later ALTER, RENAME or DROP.

Invariants:
    * ``TableSchema.version`` depends only on the ordered columns (name and every type detail)
      and the primary key: the same columns give the same id in every process and on every
      server; an added, dropped, renamed, reordered or retyped column gives a different id; the
      schema and table names are not part of it, so ``RENAME TABLE`` keeps the version;
    * ``ColumnSpec.charset`` is the MySQL character set name (``latin1``, ``utf8mb4``), never a
      Python codec name, so decoder fixes cannot change a version;
    * ``from_dict(to_dict(x)) == x`` for both classes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any

from pymysqlreplication.constants import CHARSET, FIELD_TYPE

from cdc_pipeline.core.errors import SourceSettingError

_INTEGER_NAMES = {
    FIELD_TYPE.TINY: "tinyint",
    FIELD_TYPE.SHORT: "smallint",
    FIELD_TYPE.INT24: "mediumint",
    FIELD_TYPE.LONG: "int",
    FIELD_TYPE.LONGLONG: "bigint",
}
_BLOB_PREFIXES = {1: "tiny", 2: "", 3: "medium", 4: "long"}
_TEXT_CODES = {
    FIELD_TYPE.VARCHAR,
    FIELD_TYPE.VAR_STRING,
    FIELD_TYPE.STRING,
    FIELD_TYPE.BLOB,
    FIELD_TYPE.ENUM,
    FIELD_TYPE.SET,
}
_CODEC_TO_CHARSET = {"utf8": "utf8mb4", "cp1252": "latin1", "mysql_latin1": "latin1"}
_UNKNOWN_COLUMN = re.compile(r"UNKNOWN_COL\d+")


def _charset_of_collation() -> dict[str, str]:
    names: dict[str, str] = {}
    for by_id in CHARSET.charsets._by_id.values():
        for charset in by_id.values():
            names.setdefault(charset.collation, charset.name)
    return names


_CHARSET_OF_COLLATION = _charset_of_collation()


@dataclass(frozen=True)
class ColumnSpec:
    """One column as the binlog's table map describes it.

    ``type_name`` is a readable SQL-like type (``int unsigned``, ``decimal(65,30)``,
    ``datetime(6)``, ``binary(4)``, ``enum('a','b')``); ``charset`` is None for binary and
    non-text columns; ``max_length`` is the byte length of CHAR/VARCHAR/BINARY/VARBINARY and the
    byte limit of the BLOB/TEXT family; ``members`` holds ENUM/SET labels in definition order.
    """

    name: str
    type_name: str
    type_code: int
    unsigned: bool = False
    charset: str | None = None
    fsp: int | None = None
    max_length: int | None = None
    members: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``ColumnSpec.from_dict`` reverses it exactly."""
        data = asdict(self)
        data["members"] = list(self.members)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        return cls(
            name=str(data["name"]),
            type_name=str(data["type_name"]),
            type_code=int(data["type_code"]),
            unsigned=bool(data.get("unsigned", False)),
            charset=data.get("charset"),
            fsp=data.get("fsp"),
            max_length=data.get("max_length"),
            members=tuple(data.get("members", ())),
        )

    def describe(self) -> str:
        """The type with every detail that tells two columns apart, e.g. for a diff."""
        text = self.type_name
        if self.type_code in (FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING) and (
            self.charset is not None
        ):
            text += f"({self.max_length} bytes)"
        if self.charset is not None:
            text += f" character set {self.charset}"
        return text


@dataclass(frozen=True)
class TableSchema:
    """The ordered columns and primary key of one table at one moment of the binlog."""

    schema: str
    table: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...] = ()

    @cached_property
    def version(self) -> str:
        """``v`` + 16 hex digits of sha256 over the canonical JSON of columns and primary key."""
        canonical = json.dumps(
            {
                "columns": [column.to_dict() for column in self.columns],
                "primary_key": list(self.primary_key),
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
        )
        return "v" + hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> ColumnSpec:
        """The column called ``name``; KeyError if the table has none."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, ``version`` included for readers (it is recomputed on load)."""
        return {
            "schema": self.schema,
            "table": self.table,
            "version": self.version,
            "columns": [column.to_dict() for column in self.columns],
            "primary_key": list(self.primary_key),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableSchema:
        """Load ``to_dict`` output; ValueError if a stored version does not match the columns."""
        schema = cls(
            schema=str(data["schema"]),
            table=str(data["table"]),
            columns=tuple(ColumnSpec.from_dict(column) for column in data["columns"]),
            primary_key=tuple(data.get("primary_key", ())),
        )
        stored = data.get("version")
        if stored is not None and stored != schema.version:
            raise ValueError(
                f"schema of {schema.schema}.{schema.table} says version {stored} but its columns"
                f" hash to {schema.version}: the stored schema was altered or is corrupt."
            )
        return schema


def _charset_name(column: Any) -> str | None:
    codec = getattr(column, "character_set_name", None)
    if codec is None or codec == "binary":
        return None
    collation = getattr(column, "collation_name", None)
    if collation in _CHARSET_OF_COLLATION:
        return _CHARSET_OF_COLLATION[collation]
    return str(_CODEC_TO_CHARSET.get(codec, codec))


def _quoted_members(members: Iterable[str]) -> str:
    return ",".join("'" + member.replace("'", "''") + "'" for member in members)


def _type_name(column: Any, charset: str | None) -> str:
    code = column.type
    unsigned = " unsigned" if getattr(column, "unsigned", False) else ""
    fsp = getattr(column, "fsp", 0) or 0
    with_fsp = f"({fsp})" if fsp else ""
    if code in _INTEGER_NAMES:
        return _INTEGER_NAMES[code] + unsigned
    simple = {
        FIELD_TYPE.FLOAT: "float" + unsigned,
        FIELD_TYPE.DOUBLE: "double" + unsigned,
        FIELD_TYPE.NEWDECIMAL: f"decimal({getattr(column, 'precision', '?')},"
        f"{getattr(column, 'decimals', '?')}){unsigned}",
        FIELD_TYPE.DATE: "date",
        FIELD_TYPE.YEAR: "year",
        FIELD_TYPE.DATETIME: "datetime",
        FIELD_TYPE.DATETIME2: "datetime" + with_fsp,
        FIELD_TYPE.TIMESTAMP: "timestamp",
        FIELD_TYPE.TIMESTAMP2: "timestamp" + with_fsp,
        FIELD_TYPE.TIME: "time",
        FIELD_TYPE.TIME2: "time" + with_fsp,
        FIELD_TYPE.JSON: "json",
        FIELD_TYPE.GEOMETRY: "geometry",
        FIELD_TYPE.BIT: f"bit({getattr(column, 'bits', '?')})",
        FIELD_TYPE.ENUM: f"enum({_quoted_members(column.enum_values[1:] or ())})"
        if column.enum_values
        else "enum",
        FIELD_TYPE.SET: f"set({_quoted_members(column.set_values or ())})",
    }
    if code in simple:
        return simple[code]
    if code in (FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING):
        return "varchar" if charset else f"varbinary({column.max_length})"
    if code == FIELD_TYPE.STRING:
        return "char" if charset else f"binary({column.max_length})"
    if code == FIELD_TYPE.BLOB:
        prefix = _BLOB_PREFIXES.get(getattr(column, "length_size", 2), "")
        return prefix + ("text" if charset else "blob")
    return f"unknown({code})"


def _max_length(column: Any) -> int | None:
    if column.type == FIELD_TYPE.BLOB:
        return int(2 ** (8 * column.length_size) - 1)
    length = getattr(column, "max_length", None)
    return int(length) if length is not None else None


def column_spec_from_library(column: Any) -> ColumnSpec:
    """Describe one ``pymysqlreplication.column.Column`` of a table map."""
    charset = _charset_name(column) if column.type in _TEXT_CODES else None
    if column.type == FIELD_TYPE.ENUM:
        members = tuple(column.enum_values[1:]) if column.enum_values else ()
    elif column.type == FIELD_TYPE.SET:
        members = tuple(column.set_values or ())
    else:
        members = ()
    fsp = getattr(column, "fsp", None)
    return ColumnSpec(
        name=str(column.name),
        type_name=_type_name(column, charset),
        type_code=int(column.type),
        unsigned=bool(getattr(column, "unsigned", False)),
        charset=charset,
        fsp=int(fsp) if fsp is not None else None,
        max_length=_max_length(column),
        members=members,
    )


def table_schema_from_rows_event(event: Any) -> TableSchema:
    """The schema of the rows in a Write/Update/DeleteRowsEvent, from its table map.

    Raises:
        SourceSettingError: the table map carries no column names (``binlog_row_metadata`` is
            not FULL), so neither names nor types can be trusted.
    """
    names = [column.name for column in event.columns]
    if any(name is None or _UNKNOWN_COLUMN.fullmatch(str(name)) for name in names):
        raise SourceSettingError(
            f"the binlog has no column names for {event.schema}.{event.table} (its rows were"
            " written with binlog_row_metadata=MINIMAL); set binlog_row_metadata=FULL on the"
            " source (SET PERSIST binlog_row_metadata='FULL' on MySQL, binlog_row_metadata=FULL"
            " in the MariaDB config) and take a snapshot for the rows written before."
        )
    key = event.primary_key
    if not key:
        primary_key: tuple[str, ...] = ()
    elif isinstance(key, str):
        primary_key = (key,)
    else:
        primary_key = tuple(str(name) for name in key)
    return TableSchema(
        schema=str(event.schema),
        table=str(event.table),
        columns=tuple(column_spec_from_library(column) for column in event.columns),
        primary_key=primary_key,
    )


def with_json_columns(schema: TableSchema, names: Iterable[str]) -> TableSchema:
    """Mark MariaDB JSON columns, which the binlog cannot tell from LONGTEXT, as ``json``.

    MariaDB's JSON is LONGTEXT with a ``json_valid`` check; its table map says ``longtext``.
    The caller learns the names elsewhere (``information_schema.CHECK_CONSTRAINTS``). A marked
    column has ``type_name == "json"`` (so a different version) and its text is parsed.

    Raises:
        ValueError: a name is not a LONGTEXT column of this schema.
    """
    wanted = set(names)
    columns = []
    for column in schema.columns:
        if column.name in wanted:
            if column.type_name not in ("longtext", "json"):
                raise ValueError(
                    f"column {column.name} of {schema.schema}.{schema.table} is"
                    f" {column.type_name}, not a MariaDB JSON (longtext) column."
                )
            column = replace(column, type_name="json")
            wanted.discard(column.name)
        columns.append(column)
    if wanted:
        raise ValueError(f"{schema.schema}.{schema.table} has no columns {sorted(wanted)}.")
    return replace(schema, columns=tuple(columns))


def schema_diff(previous: TableSchema | None, current: TableSchema) -> dict[str, list[Any]]:
    """What changed between two versions of a table, in column order.

    Keys: ``added`` and ``dropped`` (names), ``renamed`` (``[old, new]``: a dropped and an added
    column at the same position with the same type), ``retyped`` (``[name, old, new]`` with
    ``ColumnSpec.describe()`` texts), ``reordered`` (names of kept columns that moved) and
    ``primary_key`` (``[old, new]`` when the key changed, else empty). A rename combined with a
    type change shows as a drop and an add. ``previous=None``: every column is ``added``.
    """
    diff: dict[str, list[Any]] = {
        "added": [],
        "dropped": [],
        "renamed": [],
        "retyped": [],
        "reordered": [],
        "primary_key": [],
    }
    if previous is None:
        diff["added"] = list(current.column_names)
        return diff
    before = {column.name: column for column in previous.columns}
    after = {column.name: column for column in current.columns}
    dropped = [name for name in previous.column_names if name not in after]
    added = [name for name in current.column_names if name not in before]
    for position, old in enumerate(previous.columns):
        if old.name not in dropped or position >= len(current.columns):
            continue
        new = current.columns[position]
        if new.name in added and new.describe() == old.describe():
            diff["renamed"].append([old.name, new.name])
            dropped.remove(old.name)
            added.remove(new.name)
    diff["added"], diff["dropped"] = added, dropped
    for name in current.column_names:
        if name in before and before[name].describe() != after[name].describe():
            diff["retyped"].append([name, before[name].describe(), after[name].describe()])
    renamed = {old: new for old, new in diff["renamed"]}
    kept_before = [renamed.get(name, name) for name in previous.column_names if name not in dropped]
    kept_after = [name for name in current.column_names if name not in added]
    diff["reordered"] = [
        name for index, name in enumerate(kept_after) if kept_before[index] != name
    ]
    if previous.primary_key != current.primary_key:
        diff["primary_key"] = [list(previous.primary_key), list(current.primary_key)]
    return diff
