"""GTID states as the real servers print them parse, print back identically, and do the right sums.

Touches: ``core/gtid.py`` against real MariaDB (``@@gtid_binlog_pos``, ``@@gtid_current_pos``,
``BINLOG_GTID_POS``) and real MySQL 9.7 (``@@gtid_executed``, ``@@gtid_purged``, tagged GTIDs),
including a real binlog purge and the lost-GTID computation that capture relies on.
"""

from __future__ import annotations

import pytest

from cdc_pipeline.core.gtid import GtidSet, lost_gtids, unknown_to_server
from cdc_pipeline_tests.conftest import SOURCE_FLAVORS
from devtools.local_servers import MySQLServer, SourceServer

pytestmark = pytest.mark.integration


def executed(server: SourceServer) -> GtidSet:
    query = "SELECT @@gtid_binlog_pos" if server.flavor == "mariadb" else "SELECT @@gtid_executed"
    return GtidSet.parse(str(server.execute(query)[0][0]), server.flavor)  # type: ignore[arg-type]


def purged_boundary(server: SourceServer) -> GtidSet:
    """What the server no longer has: @@gtid_purged, or the state before the oldest binlog."""
    if server.flavor == "mysql":
        return GtidSet.parse(str(server.execute("SELECT @@gtid_purged")[0][0]), "mysql")
    oldest = server.execute("SHOW BINARY LOGS")[0][0]
    boundary = server.execute(f"SELECT BINLOG_GTID_POS('{oldest}', 4)")[0][0]
    return GtidSet.parse(str(boundary or ""), "mariadb")


def normalized_server_text(text: str) -> str:
    return text.replace("\n", "").replace(" ", "").lower()


def test_server_states_round_trip_to_the_servers_own_text(
    source_server: SourceServer, source_schema: str
) -> None:
    source_server.execute(f"CREATE TABLE `{source_schema}`.t (id INT PRIMARY KEY)")
    queries = (
        ["@@gtid_binlog_pos", "@@gtid_current_pos", "@@gtid_binlog_state"]
        if source_server.flavor == "mariadb"
        else ["@@gtid_executed", "@@gtid_purged"]
    )
    for query in queries:
        text = str(source_server.execute(f"SELECT {query}")[0][0] or "")
        parsed = GtidSet.parse(text, source_server.flavor)  # type: ignore[arg-type]
        assert str(parsed) == normalized_server_text(text), query
        assert GtidSet.parse(str(parsed), source_server.flavor) == parsed  # type: ignore[arg-type]


def test_each_commit_adds_exactly_one_gtid(source_server: SourceServer, source_schema: str) -> None:
    source_server.execute(f"CREATE TABLE `{source_schema}`.t (id INT PRIMARY KEY)")
    before = executed(source_server)
    for key in range(5):
        source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES ({key})")
    after = executed(source_server)

    new = after - before
    assert new.count() == 5
    assert after.issuperset(before) and not before.issuperset(after)
    assert (before | new) == after
    assert not unknown_to_server(before, after)
    assert unknown_to_server(after, before).count() == 5


def test_mysql_tagged_gtids_parse_as_the_server_prints_them() -> None:
    """On a throwaway MySQL: once a server holds tagged GTIDs, mysql-replication 1.0.17 cannot
    resume from its state (see docs/decisions.md), so the shared test server must never get one."""
    if "mysql" not in SOURCE_FLAVORS:
        pytest.skip("CDC_TEST_SOURCES excludes mysql")
    server = MySQLServer()
    try:
        server.start()
        with server.connect() as connection, connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE tagged_check")
            cursor.execute("SET gtid_next = 'AUTOMATIC:cdc_tag'")
            cursor.execute("CREATE TABLE tagged_check.t (id INT PRIMARY KEY)")
            cursor.execute("SET gtid_next = 'AUTOMATIC'")
        text = str(server.execute("SELECT @@gtid_executed")[0][0])
    finally:
        server.cleanup()
    parsed = GtidSet.parse(text, "mysql")
    assert ":cdc_tag:" in str(parsed)
    assert str(parsed) == normalized_server_text(text)
    assert any(source.endswith(":cdc_tag") for source, _, _ in parsed.intervals())


def test_purged_binlog_names_the_lost_gtids(
    source_server: SourceServer, source_schema: str
) -> None:
    source_server.execute(f"CREATE TABLE `{source_schema}`.t (id INT PRIMARY KEY)")
    saved = executed(source_server)
    assert not lost_gtids(saved, purged_boundary(source_server)), "nothing purged yet"

    for key in range(3):
        source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES ({key})")
    written = executed(source_server) - saved
    source_server.purge_binlogs()

    lost = lost_gtids(saved, purged_boundary(source_server))
    # Exactly the three inserts we had not applied are gone; anything older we had applied.
    assert lost == written
    assert lost.count() == 3
    for source, first, last in lost.intervals():
        assert source in lost.describe()
        assert str(first) in lost.describe() and str(last) in lost.describe()
    # A reader that had applied everything loses nothing.
    assert not lost_gtids(executed(source_server), purged_boundary(source_server))
