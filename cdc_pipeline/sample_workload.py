"""A seeded, reproducible write workload on a source: for the demo, the tests and the benchmarks.

It keeps two tables busy (``customers`` with a single-column key and ``order_lines`` with a
composite key) with transactions of 1 to ``max_rows`` inserts, updates and deletes, in a thread,
until stopped. The same seed gives the same statements in the same order. Invariant: it only
counts a transaction after the server acknowledged its COMMIT.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Any

import pymysql

from cdc_pipeline.local_servers import SourceServer

SCHEMA_SQL = (
    "CREATE TABLE IF NOT EXISTS `{db}`.customers (id INT PRIMARY KEY, name VARCHAR(40),"
    " balance DECIMAL(12,2), updated DATETIME(6))",
    "CREATE TABLE IF NOT EXISTS `{db}`.order_lines (order_id INT, line INT, sku VARCHAR(20),"
    " qty INT, PRIMARY KEY (order_id, line))",
)


class Workload:
    """Writes seeded transactions into ``database`` on ``server`` from a background thread."""

    def __init__(
        self,
        server: SourceServer,
        database: str,
        seed: int,
        max_rows: int = 20,
        pause_seconds: float = 0.0,
    ):
        self.server = server
        self.database = database
        self.random = random.Random(seed)
        self.max_rows = max_rows
        self.pause_seconds = pause_seconds
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

    def run_transaction(self, connection: Any) -> None:
        statements = self._statements()
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
