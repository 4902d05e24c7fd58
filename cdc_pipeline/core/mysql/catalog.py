"""The source's catalogue (``information_schema``): which tables exist, their columns and key.

Invariants: every answer describes the table *now*, not when a row was written (the binlog's
table map is the truth for rows; this is for SQL reads, reconciliation and mirror rebuilds);
the MariaDB ``json_valid`` CHECK constraints are read by ``json_columns`` only.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cdc_pipeline.core.mysql.source import connect, detect_flavor
from cdc_pipeline.core.settings import SourceUrl, table_included


@dataclass(frozen=True)
class SourceTable:
    """A source table as ``information_schema`` describes it now.

    ``column_types`` holds each ``COLUMN_TYPE``, lower-case, except that a MariaDB JSON column
    (LONGTEXT with a ``json_valid`` check) says ``json``, as the binlog path marks it.
    """

    schema: str
    table: str
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    column_types: dict[str, str]

    def key_of(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """The primary-key columns of a row, in key order (what a mirror ``_id`` is made of)."""
        if not self.primary_key:
            raise ValueError(f"{self.schema}.{self.table} has no primary key, hence no mirror.")
        return {name: document[name] for name in self.primary_key}


def describe_table(connection: Any, schema: str, table: str) -> SourceTable:
    """Columns in ordinal order and primary key in key order; ValueError if there is no table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        columns = [(str(name), str(kind).lower()) for name, kind in cursor.fetchall()]
        cursor.execute(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s"
            " AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (schema, table),
        )
        primary_key = tuple(str(row[0]) for row in cursor.fetchall())
    if not columns:
        raise ValueError(f"the source has no table {schema}.{table}.")
    json_names = (
        json_columns(connection, schema, table)
        if detect_flavor(connection) == "mariadb"
        else frozenset()
    )
    return SourceTable(
        schema=schema,
        table=table,
        columns=tuple(name for name, _ in columns),
        primary_key=primary_key,
        column_types={
            name: "json" if name in json_names and kind == "longtext" else kind
            for name, kind in columns
        },
    )


def list_tables(connection: Any, patterns: tuple[str, ...]) -> list[tuple[str, str]]:
    """Base tables ``(schema, table)``, sorted, that ``settings.table_included`` accepts."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES"
            " WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME"
        )
        names = [(str(schema), str(table)) for schema, table in cursor.fetchall()]
    return [(schema, table) for schema, table in names if table_included(schema, table, patterns)]


_JSON_VALID = re.compile(r"json_valid\(\s*`((?:[^`]|``)+)`\s*\)", re.I)


def json_columns(connection: Any, schema: str, table: str) -> frozenset[str]:
    """The columns of a MariaDB table that hold JSON: LONGTEXT with a ``json_valid`` CHECK
    constraint (MariaDB's binlog cannot tell them from LONGTEXT). Asks the server's catalogue."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
            " WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (schema, table),
        )
        clauses = [str(row[0]) for row in cursor.fetchall()]
    return frozenset(
        match.group(1).replace("``", "`")
        for clause in clauses
        for match in _JSON_VALID.finditer(clause)
    )


class MariadbJsonColumns:
    """Which LONGTEXT columns of a MariaDB table are JSON (a ``json_valid`` CHECK constraint).

    MariaDB's binlog cannot tell JSON from LONGTEXT, so this asks the server's catalogue. It
    reflects the table *now*, not when the row was written: a JSON column added and dropped
    again between two capture ticks is captured as text (docs/decisions.md).
    """

    def __init__(self, url: SourceUrl):
        self.url = url
        self._stack = contextlib.ExitStack()
        self._connection: Any = None

    def __call__(self, schema: str, table: str) -> frozenset[str]:
        if self._connection is None:
            self._connection = self._stack.enter_context(connect(self.url))
        return json_columns(self._connection, schema, table)

    def close(self) -> None:
        self._stack.close()
