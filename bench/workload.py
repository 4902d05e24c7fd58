"""The benchmark backlog: a fixed number of rows written to the source in 1,000-row transactions.

Measures nothing itself; it writes the data every figure is measured on, and records where in
the binlog that data starts and ends (GTID state, file and position), so capture, the bare
library loop and ``mariadb-binlog`` all read exactly the same range.

Two table shapes (``VARIANTS``):
    * ``mixed``: INT key, INT, VARCHAR(64), DATETIME(6), DECIMAL(12,2), JSON;
    * ``narrow``: INT key and one INT.

and one more backlog kind, ``ONE_TRANSACTION``: the mixed table with every row in a single
transaction, which capture must keep whole in one segment (the memory figure for a large
transaction).

Values come from a seeded ``random.Random``, so the same sizes and seed write the same bytes.
Only inserts are written: the rows per second of an insert-only backlog is the figure the
issue asks for, and every row event then maps to one change-log document and one mirror upsert.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cdc_pipeline.core.mysql.source import read_state
from devtools.local_servers import SourceServer

TRANSACTION_ROWS = 1_000

VARIANTS: dict[str, dict[str, str]] = {
    "mixed": {
        "columns": (
            "id INT NOT NULL PRIMARY KEY, qty INT NOT NULL, name VARCHAR(64) NOT NULL,"
            " created_at DATETIME(6) NOT NULL, amount DECIMAL(12,2) NOT NULL, attrs JSON"
        ),
        "insert": "INSERT INTO {table} (id, qty, name, created_at, amount, attrs) VALUES"
        " (%s, %s, %s, %s, %s, %s)",
    },
    "narrow": {
        "columns": "id INT NOT NULL PRIMARY KEY, v INT NOT NULL",
        "insert": "INSERT INTO {table} (id, v) VALUES (%s, %s)",
    },
}

ONE_TRANSACTION = "mixed1tx"
"""The mixed table, written as one transaction of all its rows (not in ``VARIANTS``: it is
measured once, at its own size, rather than at every backlog size)."""

_EPOCH = datetime(2026, 1, 1)
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


@dataclass(frozen=True)
class BinlogPoint:
    """Where the source's binlog stood at one moment."""

    gtid: str
    binlog_file: str
    binlog_pos: int


@dataclass(frozen=True)
class Backlog:
    """One written backlog: which table, how many rows, and its binlog range [start, end)."""

    source: str
    flavor: str
    variant: str
    schema: str
    table: str
    rows: int
    transactions: int
    start: BinlogPoint
    end: BinlogPoint
    binlog_files: tuple[str, ...]
    """The binlog files from ``start.binlog_file`` to ``end.binlog_file``, in order."""

    @property
    def include_pattern(self) -> str:
        return f"{self.schema}.{self.table}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mixed_row(index: int, rng: random.Random) -> tuple[Any, ...]:
    word = rng.choice(_WORDS)
    return (
        index,
        rng.randint(-1_000_000, 1_000_000),
        f"{word}-{index}-{rng.getrandbits(32):08x}",
        _EPOCH + timedelta(seconds=index, microseconds=rng.randint(0, 999_999)),
        Decimal(rng.randint(-(10**11), 10**11)) / 100,
        json.dumps({"k": index, "tag": word, "score": rng.random(), "list": [1, 2, index % 7]}),
    )


def _narrow_row(index: int, rng: random.Random) -> tuple[Any, ...]:
    return (index, rng.randint(-(2**31), 2**31 - 1))


def _point(server: SourceServer) -> tuple[BinlogPoint, list[str]]:
    with contextlib.closing(server.connect()) as connection:
        state = read_state(connection)
    files = [name for name, _size in state.binlog_files]
    return BinlogPoint(str(state.executed), state.binlog_file, state.binlog_pos), files


def write_backlog(server: SourceServer, variant: str, rows: int, seed: int = 2026) -> Backlog:
    """Create a fresh table and insert ``rows`` rows in 1,000-row transactions.

    ``variant`` is a key of ``VARIANTS`` or ``ONE_TRANSACTION`` (mixed rows, all in one
    transaction). The table is created (and its schema too) before the start point is read, so
    the backlog's range holds only the row transactions.
    """
    one_transaction = variant == ONE_TRANSACTION
    shape = "mixed" if one_transaction else variant
    spec = VARIANTS[shape]
    per_transaction = rows if one_transaction else TRANSACTION_ROWS
    schema = f"bench_{variant}_{rows}"
    table = "items"
    server.execute(
        f"DROP DATABASE IF EXISTS `{schema}`",
        f"CREATE DATABASE `{schema}`",
        f"CREATE TABLE `{schema}`.`{table}` ({spec['columns']})",
    )
    start, _ = _point(server)
    make_row = _mixed_row if shape == "mixed" else _narrow_row
    rng = random.Random(f"{seed}-{variant}")
    insert = spec["insert"].format(table=f"`{schema}`.`{table}`")
    transactions = 0
    with (
        contextlib.closing(server.connect(autocommit=False)) as connection,
        connection.cursor() as cursor,
    ):
        for first in range(1, rows + 1, per_transaction):
            last = min(first + per_transaction, rows + 1)
            cursor.executemany(insert, [make_row(i, rng) for i in range(first, last)])
            connection.commit()
            transactions += 1
    end, files = _point(server)
    in_range = files[files.index(start.binlog_file) : files.index(end.binlog_file) + 1]
    return Backlog(
        source=server.name,
        flavor=server.flavor,
        variant=variant,
        schema=schema,
        table=table,
        rows=rows,
        transactions=transactions,
        start=start,
        end=end,
        binlog_files=tuple(in_range),
    )


def drop_backlog(server: SourceServer, backlog: Backlog) -> None:
    """Drop the backlog's schema (its binlog stays; nothing reads past ``end`` again)."""
    server.execute(f"DROP DATABASE IF EXISTS `{backlog.schema}`")
