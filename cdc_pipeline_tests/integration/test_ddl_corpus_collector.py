"""Collects the DDL corpus from a real server: runs each scene, reads back its binlog, and takes
the truth from information_schema (no tests here; ``test_ddl_corpus_live`` and
``scripts/collect_ddl_corpus.py`` call ``collect``).

For every statement of ``test_ddl_corpus_scenes`` that is recorded (not a ``~`` setup step):

* ``before`` / ``after``: every base table of the corpus schemas, as
  ``[schema, table, columns, rows, checksum]``, read from the server around the statement.
  ``columns`` is a short hash of the sorted ``(name, COLUMN_TYPE, CHARACTER_SET_NAME, position
  in the primary key)`` of the table's columns; ``rows`` is ``COUNT(*)``; ``checksum`` combines
  the sum and the XOR of each row's CRC32 over the hex of its column values (0 when empty);
* ``binlog``: the Query events the statement wrote, as capture reads them
  (``core.mysql.binlog.BinlogReader``: the statement text, the session's default schema, the
  ANSI_QUOTES bit of its sql_mode), in binlog order; none if the server logged nothing. The one
  edit: the salted password hash MySQL writes for ``CREATE USER`` (new on every run) is
  ``'<hash>'``;
* ``row_events``: ``[schema, table, inserts]`` for the tables that got row events in the
  statement's transactions (``CREATE TABLE … SELECT``);
* ``truth``: what happened, derived from ``before`` and ``after`` alone, for people to read:
  tables ``created``, ``dropped``, ``renamed`` (a table gone and one new with the same columns
  and rows), ``emptied``, ``changed`` (columns or rows differ).

Invariant: nothing here calls the classifier; the file holds only what the server said.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql

from cdc_pipeline.core.gtid import GtidSet, parse_gtid
from cdc_pipeline.core.mysql.binlog import BinlogReader, Ddl, Idle, RowImages, TxBegin, TxCommit
from cdc_pipeline.core.mysql.source import read_state
from cdc_pipeline.core.settings import SourceUrl
from cdc_pipeline_tests.integration.test_ddl_corpus_scenes import SCENES, SCHEMAS, Scene
from devtools.local_servers import SourceServer

Table = list[Any]
"""``[schema, table, columns hash, rows, checksum]``."""

CORPUS_FILE = Path(__file__).parents[1] / "core" / "mysql" / "ddl_corpus.json"
_PASSWORD_HASH = re.compile(r"(IDENTIFIED WITH '[^']*' AS )'(?:[^'\\]|\\.|'')*'", re.S)


def write_corpus(cases: list[dict[str, Any]], path: Path = CORPUS_FILE) -> None:
    """Write the corpus: a JSON list, one case per line (diffs stay readable)."""
    lines = [json.dumps(case, ensure_ascii=False, separators=(",", ":")) for case in cases]
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def snapshot(cursor: Any) -> list[Table]:
    """Every base table of the corpus schemas: its columns, row count and checksum.

    Retried when MariaDB loses the temporary file of an information_schema query (error 6:
    servers in other sandboxes share /tmp, and their temporary file names can collide)."""
    for attempt in range(5):
        try:
            return _snapshot(cursor)
        except pymysql.err.InternalError as error:
            if error.args[0] != 6 or attempt == 4:
                raise
    raise AssertionError("unreachable")


def _snapshot(cursor: Any) -> list[Table]:
    # Three plain queries joined here: MariaDB 10.11 crashed (signal 11) on their SQL join.
    schemas = ", ".join(_sql_string(name) for name in SCHEMAS)
    where = f"WHERE TABLE_SCHEMA IN ({schemas})"
    cursor.execute(
        f"SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES {where}"
        " AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')"
    )
    tables = {(schema, table) for schema, table in cursor.fetchall() if schema in SCHEMAS}
    cursor.execute(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, SEQ_IN_INDEX"
        f" FROM information_schema.STATISTICS {where} AND INDEX_NAME = 'PRIMARY'"
    )
    key = {(schema, table, column): seq for schema, table, column, seq in cursor.fetchall()}
    cursor.execute(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME"
        f" FROM information_schema.COLUMNS {where}"
    )
    columns: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    for schema, table, column, column_type, charset in cursor.fetchall():
        if (schema, table) in tables:
            seq = key.get((schema, table, column))
            columns.setdefault((schema, table), []).append(
                (column, column_type, str(charset), str(seq))
            )
    names = sorted(columns)
    if not names:
        return []
    # Not CHECKSUM TABLE: it also reads MariaDB's hidden row_start/row_end (time of the run).
    queries = []
    for index, (schema, table) in enumerate(names):
        values = ", ".join(
            f"IFNULL(HEX({_quoted(column[0])}), 'N')" for column in sorted(columns[(schema, table)])
        )
        row = f"CRC32(CONCAT_WS('|', {values}))"
        queries.append(
            f"SELECT {index}, COUNT(*), IFNULL(SUM({row}), 0), IFNULL(BIT_XOR({row}), 0)"
            f" FROM {_quoted(schema)}.{_quoted(table)}"
        )
    cursor.execute(" UNION ALL ".join(queries))
    contents = {
        int(index): (int(count), int(total) << 32 | int(xor))
        for index, count, total, xor in cursor.fetchall()
    }
    return [
        [schema, table, _columns_hash(columns[(schema, table)]), *contents[index]]
        for index, (schema, table) in enumerate(names)
    ]


def _columns_hash(columns: list[tuple[str, ...]]) -> str:
    text = json.dumps(sorted(columns), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _executed(cursor: Any, flavor: str) -> GtidSet:
    query = "SELECT @@global.gtid_binlog_pos" if flavor == "mariadb" else "SELECT @@gtid_executed"
    cursor.execute(query)
    return GtidSet.parse(str(cursor.fetchone()[0] or ""), flavor)  # type: ignore[arg-type]


def _steps(scene: Scene, flavor: str) -> Iterator[tuple[bool, str]]:
    """``(recorded, statement)`` of a scene on one flavor."""
    for line in scene.statements:
        recorded = not line.startswith("~ ")
        text = line if recorded else line[2:]
        for prefix in ("mariadb: ", "mysql: "):
            if text.startswith(prefix):
                if prefix[:-2] != flavor:
                    break
                text = text[len(prefix) :]
        else:
            yield recorded, text


def _fresh_schemas(cursor: Any) -> None:
    for name in SCHEMAS:
        cursor.execute(f"DROP DATABASE IF EXISTS {_quoted(name)}")
    for name in SCHEMAS:
        cursor.execute(f"CREATE DATABASE {_quoted(name)}")


def collect(server: SourceServer) -> list[dict[str, Any]]:
    """Run every scene on ``server``; return its corpus cases (see the module docstring)."""
    flavor = server.flavor
    url = SourceUrl.parse(server.url)
    with contextlib.closing(server.connect(charset="utf8mb4", read_timeout=30)) as admin:
        start = read_state(admin)
        cases: list[dict[str, Any]] = []
        spans: list[GtidSet] = []
        refused: list[str] = []
        with admin.cursor() as observer:
            observer.execute("SET SESSION lock_wait_timeout = 10")
            for scene in SCENES:
                _fresh_schemas(observer)
                _run_scene(server, scene, flavor, observer, cases, spans, refused)
            for name in SCHEMAS:
                observer.execute(f"DROP DATABASE IF EXISTS {_quoted(name)}")
            end = _executed(observer, flavor)
    assert not refused, "\n".join(refused)
    transactions = _read_binlog(url, flavor, start, end)
    for case, span in zip(cases, spans, strict=True):
        binlog: list[dict[str, Any]] = []
        row_events: dict[tuple[str, str], int] = {}
        for gtid, (ddl, rows) in transactions.items():
            if gtid in span:
                binlog.extend(ddl)
                for table, count in rows.items():
                    row_events[table] = row_events.get(table, 0) + count
        case["binlog"] = binlog
        case["row_events"] = [[*table, count] for table, count in sorted(row_events.items())]
        case["truth"] = truth(case["before"], case["after"])
    return cases


def _run_scene(
    server: SourceServer,
    scene: Scene,
    flavor: str,
    observer: Any,
    cases: list[dict[str, Any]],
    spans: list[GtidSet],
    refused: list[str],
) -> None:
    options: dict[str, Any] = {"charset": "utf8mb4", "read_timeout": 30}
    if scene.database is not None:
        options["database"] = scene.database
    with contextlib.closing(server.connect(**options)) as session, session.cursor() as cursor:
        before: list[Table] | None = None
        for recorded, statement in _steps(scene, flavor):
            if not recorded:
                cursor.execute(statement)
                before = None
                continue
            if before is None:
                before = snapshot(observer)
            executed = _executed(observer, flavor)
            try:
                cursor.execute(statement)
            except pymysql.err.MySQLError as error:
                refused.append(f"{flavor} refused {statement!r}: {error}")
                continue
            with contextlib.suppress(pymysql.err.ProgrammingError):
                cursor.fetchall()
            after = snapshot(observer)
            spans.append(_executed(observer, flavor) - executed)
            cases.append(
                {
                    "flavor": flavor,
                    "scene": scene.name,
                    "sent": statement,
                    "before": before,
                    "after": after,
                }
            )
            before = after


def truth(before: list[Table], after: list[Table]) -> dict[str, list[Any]]:
    """What a statement did to the corpus schemas' tables, from the snapshots around it."""
    old = {(schema, table): tuple(rest) for schema, table, *rest in before}
    new = {(schema, table): tuple(rest) for schema, table, *rest in after}
    gone = [name for name in old if name not in new]
    created = [name for name in new if name not in old]
    renamed = []
    for name in list(gone):
        twin = next((other for other in created if new[other] == old[name]), None)
        if twin is not None:
            renamed.append([list(name), list(twin)])
            gone.remove(name)
            created.remove(twin)
    kept = [name for name in old if name in new and old[name] != new[name]]
    return {
        "created": [list(name) for name in created],
        "dropped": [list(name) for name in gone],
        "renamed": renamed,
        "emptied": [list(name) for name in kept if new[name][1] == 0 and old[name][1]],
        "changed": [list(name) for name in kept if new[name][1] or not old[name][1]],
    }


def _read_binlog(
    url: SourceUrl, flavor: str, start: Any, end: GtidSet
) -> dict[str, tuple[list[dict[str, Any]], dict[tuple[str, str], int]]]:
    """Every transaction from ``start.executed`` to ``end``: its Query events and the tables
    of the corpus schemas with row events, read by capture's own binlog reader."""
    remaining = end - start.executed
    transactions: dict[str, tuple[list[dict[str, Any]], dict[tuple[str, str], int]]] = {}
    current: tuple[list[dict[str, Any]], dict[tuple[str, str], int]] | None = None
    deadline = time.monotonic() + 60
    with BinlogReader(
        url,
        flavor,  # type: ignore[arg-type]
        random.randint(100_000, 2**31 - 1),
        start.executed,
        lambda schema, table: schema in SCHEMAS,
        0.5,
        start.oldest_binlog_file,
    ) as reader:
        for item in reader.items():
            if isinstance(item, TxBegin):
                current = transactions.setdefault(item.gtid, ([], {}))
                remaining = remaining - GtidSet.of([parse_gtid(item.gtid)])
            elif isinstance(item, Ddl) and current is not None:
                current[0].append(
                    {
                        "statement": _PASSWORD_HASH.sub(r"\1'<hash>'", item.statement),
                        "default_schema": item.schema,
                        "ansi_quotes": item.ansi_quotes,
                    }
                )
            elif isinstance(item, RowImages) and current is not None:
                name = (item.schema, item.table)
                inserted = len(item.images) if item.op == "insert" else 0
                current[1][name] = current[1].get(name, 0) + inserted
            elif isinstance(item, TxCommit) and not remaining:
                break
            elif isinstance(item, Idle):
                assert time.monotonic() < deadline, f"the binlog ended before {remaining}"
    return transactions
