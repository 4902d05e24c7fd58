"""A seeded, reproducible write workload on a source: for the demo, the tests and the benchmarks.

It keeps two tables busy (``customers`` with a single-column key and ``order_lines`` with a
composite key) with transactions of 1 to ``max_rows`` inserts, updates and deletes, in a thread,
until stopped. The same seed gives the same statements in the same order. Invariant: it only
counts a transaction after the server acknowledged its COMMIT.

With ``schema_change_every=N`` a third table, ``evolving``, gets a row in every transaction and,
every N transactions, the next step of a cycle of column changes: add a column, rename it, change
its type, drop it (then again with the next number), so rows of every schema version meet in
the binlog.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Any

import pymysql

from devtools.local_servers import SourceServer

SCHEMA_SQL = (
    "CREATE TABLE IF NOT EXISTS `{db}`.customers (id INT PRIMARY KEY, name VARCHAR(40),"
    " balance DECIMAL(12,2), updated DATETIME(6))",
    "CREATE TABLE IF NOT EXISTS `{db}`.order_lines (order_id INT, line INT, sku VARCHAR(20),"
    " qty INT, PRIMARY KEY (order_id, line))",
    "CREATE TABLE IF NOT EXISTS `{db}`.evolving (id INT PRIMARY KEY, v INT)",
)

SCHEMA_CHANGES = (
    "ALTER TABLE `{db}`.evolving ADD COLUMN note_{n} VARCHAR(20) DEFAULT 'n{n}'",
    "ALTER TABLE `{db}`.evolving RENAME COLUMN note_{n} TO memo_{n}",
    "ALTER TABLE `{db}`.evolving MODIFY COLUMN memo_{n} VARCHAR(40)",
    "ALTER TABLE `{db}`.evolving DROP COLUMN memo_{n}",
)

TABLE_FULL_OF_DROPPED_COLUMNS = {1118, 4092}
"""Row size too large (MariaDB), maximum row versions reached (MySQL): see _schema_change."""


class Workload:
    """Writes seeded transactions into ``database`` on ``server`` from a background thread."""

    def __init__(
        self,
        server: SourceServer,
        database: str,
        seed: int,
        max_rows: int = 20,
        pause_seconds: float = 0.0,
        schema_change_every: int = 0,
    ):
        self.server = server
        self.database = database
        self.random = random.Random(seed)
        self.max_rows = max_rows
        self.pause_seconds = pause_seconds
        self.schema_change_every = schema_change_every
        self.schema_changes = 0
        self.committed_transactions = 0
        self.failed_transactions = 0
        self._next_customer = 1
        self._next_order = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def create_tables(self) -> None:
        self.server.execute(*(sql.format(db=self.database) for sql in SCHEMA_SQL))

    def _statements(self) -> list[str]:
        db, pick = self.database, self.random
        statements = []
        for _ in range(pick.randint(1, self.max_rows)):
            choice = pick.random()
            if choice < 0.45 or self._next_customer < 5:
                key = self._next_customer
                self._next_customer += 1
                statements.append(
                    f"INSERT INTO `{db}`.customers VALUES ({key}, 'c{key}',"
                    f" {pick.randint(0, 99999) / 100}, NOW(6))"
                )
            elif choice < 0.75:
                key = pick.randrange(1, self._next_customer)
                statements.append(
                    f"UPDATE `{db}`.customers SET balance = balance + 1, updated = NOW(6)"
                    f" WHERE id = {key}"
                )
            elif choice < 0.85:
                key = pick.randrange(1, self._next_customer)
                statements.append(f"DELETE FROM `{db}`.customers WHERE id = {key}")
            else:
                order = self._next_order
                self._next_order += 1
                lines = ",".join(
                    f"({order}, {line}, 'sku{pick.randint(1, 500)}', {pick.randint(1, 9)})"
                    for line in range(1, pick.randint(2, 4))
                )
                statements.append(f"INSERT INTO `{db}`.order_lines VALUES {lines}")
        return statements

    def _schema_change(self, connection: Any) -> None:
        """The next column change of the cycle; DDL commits by itself (and is retried whole).

        InnoDB keeps columns dropped instantly in the table's metadata: after about 30 cycles
        MariaDB refuses the next ADD COLUMN (1118, row size too large) and MySQL can run out of
        row versions (4092). Then the table is rebuilt (``ALTER TABLE ... FORCE``, itself a
        DDL the pipeline must follow, as a DBA would run it) and the change is made again."""
        step = self.schema_changes
        sql = SCHEMA_CHANGES[step % len(SCHEMA_CHANGES)]
        with connection.cursor() as cursor:
            try:
                cursor.execute(sql.format(db=self.database, n=step // len(SCHEMA_CHANGES)))
            except pymysql.err.MySQLError as error:
                if error.args[0] not in TABLE_FULL_OF_DROPPED_COLUMNS:
                    raise
                cursor.execute(f"ALTER TABLE `{self.database}`.evolving FORCE")
                cursor.execute(sql.format(db=self.database, n=step // len(SCHEMA_CHANGES)))
        self.schema_changes += 1

    def run_transaction(self, connection: Any) -> None:
        every = self.schema_change_every
        if every and self.schema_changes < self.committed_transactions // every:
            self._schema_change(connection)
        statements = self._statements()
        if every:
            key = self.committed_transactions + 1
            statements.append(
                f"INSERT INTO `{self.database}`.evolving (id, v) VALUES ({key}, {key})"
                f" ON DUPLICATE KEY UPDATE v = v + 1"
            )
            statements.append(
                f"UPDATE `{self.database}`.evolving SET v = v + 1"
                f" WHERE id = {self.random.randint(1, key)}"
            )
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        connection.commit()
        self.committed_transactions += 1

    def _loop(self) -> None:
        connection: Any = None
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = self.server.connect(autocommit=False)
                self.run_transaction(connection)
            except pymysql.err.MySQLError:
                # The source is down or restarting (fault tests): retry with a new connection.
                self.failed_transactions += 1
                with contextlib.suppress(Exception):
                    connection.close()
                connection = None
                time.sleep(0.2)
            if self.pause_seconds:
                time.sleep(self.pause_seconds)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def start(self) -> Workload:
        self._thread = threading.Thread(target=self._loop, name="workload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
