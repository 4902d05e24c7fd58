"""Open a read view of the source tied to the exact GTID state it reflects.

A snapshot is only useful if we know precisely which transactions its rows include: streaming
resumes from that state, so a transaction seen by both would be applied twice and one seen by
neither would be lost. Each flavor offers a different way to get that state:

* **MariaDB**: ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` makes the server record the binlog
  position matching the read view (``Binlog_snapshot_file`` / ``Binlog_snapshot_position``
  session status): MariaDB's group commit keeps InnoDB's commit order and the binlog's in step,
  and the position is taken under the same lock as the view. ``BINLOG_GTID_POS(file, pos)``
  turns that position into the GTID state. No lock on the server, no grant beyond SELECT and
  BINLOG MONITOR.
* **MySQL**: the server offers no position tied to a read view, so we do what ``mysqldump
  --single-transaction --source-data`` does: ``FLUSH TABLES WITH READ LOCK`` stops every commit,
  the read view is opened and ``@@global.gtid_executed`` read while nothing can commit, then the
  lock is released. Commits wait for a few milliseconds (longer if a long statement is running
  when the lock is asked for; ``lock_wait_timeout`` bounds it). It needs the RELOAD privilege.

Invariants: ``SnapshotPoint.gtid`` is exactly the set of transactions visible to the
connection's read view; the connection stays inside that transaction until ``close``d (every
later SELECT on it sees the same moment); no lock outlives ``open_snapshot_point``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pymysql

from cdc_pipeline.core.errors import SourceSettingError
from cdc_pipeline.core.gtid import Flavor, GtidSet
from cdc_pipeline.core.mysql.grants import PRIVILEGE_ERRORS
from cdc_pipeline.core.mysql.source import (
    current_binlog_position,
    detect_flavor,
    query_all,
    query_one,
)


@dataclass(frozen=True)
class SnapshotPoint:
    """Where a consistent read view sits in the binlog."""

    flavor: Flavor
    gtid: GtidSet
    binlog_file: str
    binlog_pos: int
    taken_at: datetime
    method: str


def open_snapshot_point(connection: Any) -> SnapshotPoint:
    """Start a consistent-snapshot transaction on ``connection`` and return its exact position.

    The connection must be fresh (no open transaction); it is left inside the transaction.

    Raises:
        SourceSettingError: the user lacks the privilege the flavor's method needs (named).
    """
    flavor = detect_flavor(connection)
    query_all(connection, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    if flavor == "mariadb":
        return _mariadb_point(connection)
    return _mysql_point(connection)


def _mariadb_point(connection: Any) -> SnapshotPoint:
    query_all(connection, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    taken_at = datetime.now(UTC)
    status = dict(
        (str(name).lower(), str(value))
        for name, value in query_all(connection, "SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
    )
    binlog_file = status.get("binlog_snapshot_file", "")
    binlog_pos = int(status.get("binlog_snapshot_position", "0") or 0)
    if not binlog_file:
        raise SourceSettingError(
            "the source reports no binlog position for the snapshot (binary logging is off?);"
            " start it with log_bin=ON and restart the server."
        )
    try:
        row = query_one(connection, f"SELECT BINLOG_GTID_POS('{binlog_file}', {binlog_pos})")
    except pymysql.err.OperationalError as error:
        raise _privilege_error(error, "BINLOG MONITOR", "MariaDB") from None
    gtid = GtidSet.parse(str((row or ("",))[0] or ""), "mariadb")
    return SnapshotPoint(
        "mariadb", gtid, binlog_file, binlog_pos, taken_at, "consistent snapshot position"
    )


def _mysql_point(connection: Any) -> SnapshotPoint:
    try:
        query_all(connection, "FLUSH TABLES WITH READ LOCK")
    except (pymysql.err.OperationalError, pymysql.err.ProgrammingError) as error:
        raise _privilege_error(error, "RELOAD", "MySQL") from None
    try:
        query_all(connection, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        taken_at = datetime.now(UTC)
        (executed,) = query_one(connection, "SELECT @@global.gtid_executed")  # type: ignore[misc]
        binlog_file, binlog_pos = current_binlog_position(connection, "mysql")
    finally:
        query_all(connection, "UNLOCK TABLES")
    gtid = GtidSet.parse(str(executed or ""), "mysql")
    return SnapshotPoint(
        "mysql", gtid, binlog_file, binlog_pos, taken_at, "global read lock while opening"
    )


def _privilege_error(error: Exception, privilege: str, flavor: str) -> Exception:
    code = error.args[0] if error.args else None
    if code in PRIVILEGE_ERRORS:
        return SourceSettingError(
            f"the source user may not fix a snapshot position on {flavor} (it needs the"
            f" {privilege} privilege); run GRANT {privilege} ON *.* TO the CDC user."
        )
    return error
