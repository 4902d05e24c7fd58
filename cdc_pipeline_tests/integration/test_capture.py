"""Capture against real MariaDB and MySQL 9.7: the WAL holds every committed change, in order.

Touches ``core.capture`` (with ``core.binlog`` and ``core.wal``) end to end: transactions across
tables, schema changes mid-stream, transactions larger than a tick, idle ticks, the staging lock
and the purge guard.
"""

from __future__ import annotations

import errno
import gc
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cdc_pipeline.core.capture import tick
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.errors import (
    BinlogPurgedError,
    CaptureLockedError,
    SourceHistoryError,
    StagingError,
)
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.images import decode_document
from cdc_pipeline.core.mysql.binlog import BinlogReader
from cdc_pipeline.core.mysql.source import connect, read_state
from cdc_pipeline.core.settings import CaptureSettings, SourceUrl
from cdc_pipeline.core.wal import writer as wal
from cdc_pipeline.core.wal.segment import read_rows, verify_segment
from cdc_pipeline.core.wal.staging import WalPaths, capture_lock, list_segments
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


def wal_rows(settings: CaptureSettings) -> list[dict[str, object]]:
    paths = WalPaths(settings.staging_dir, settings.source_name)
    rows: list[dict[str, object]] = []
    for segment in list_segments(paths):
        verify_segment(segment)
        rows.extend(read_rows(segment))
    return rows


def capture_all(settings: CaptureSettings, limit: int = 50) -> list[object]:
    """Tick until a tick finds nothing new; return the results that wrote segments."""
    results = []
    for _ in range(limit):
        result = capture_once(settings)
        if result.manifest is None:
            return results
        results.append(result)
    raise AssertionError("capture never caught up")


def test_multi_table_transaction_lands_whole_in_one_segment(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    db = source_schema
    source_server.execute(
        f"CREATE TABLE `{db}`.orders (id INT PRIMARY KEY, total DECIMAL(10,2))",
        f"CREATE TABLE `{db}`.lines (order_id INT, line INT, sku VARCHAR(10),"
        " PRIMARY KEY (order_id, line))",
    )
    first = capture_once(capture_settings)  # fixes the origin at the current position
    assert first.manifest is None
    with source_server.connect(autocommit=False) as connection, connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO `{db}`.orders VALUES (1, 10.50)")
        cursor.execute(f"INSERT INTO `{db}`.lines VALUES (1, 1, 'a'), (1, 2, 'b')")
        cursor.execute(f"UPDATE `{db}`.orders SET total = 11.00 WHERE id = 1")
        connection.commit()
    source_server.execute(f"DELETE FROM `{db}`.lines WHERE order_id = 1 AND line = 2")

    result = capture_once(capture_settings)
    assert result.manifest is not None and result.error is None
    assert result.transactions == 2 and result.rows == 5
    rows = wal_rows(capture_settings)
    assert [(r["table"], r["op"]) for r in rows] == [
        ("orders", "insert"),
        ("lines", "insert"),
        ("lines", "insert"),
        ("orders", "update"),
        ("lines", "delete"),
    ]
    first_gtid = rows[0]["gtid"]
    assert all(r["gtid"] == first_gtid for r in rows[:4]) and rows[4]["gtid"] != first_gtid
    assert [r["row_index"] for r in rows[:4]] == [0, 1, 2, 3]
    assert rows[0]["event_id"] == f"{first_gtid}#0"
    assert decode_document(rows[1]["pk"]) == {"order_id": 1, "line": 1}
    # Commit time comes from the binlog (MySQL: microseconds from the GTID event).
    committed_at = rows[0]["committed_at"]
    assert isinstance(committed_at, datetime)
    assert abs(datetime.now(UTC) - committed_at) < timedelta(minutes=5)
    assert decode_document(rows[3]["before"])["id"] == 1  # type: ignore[index]
    # every column of a row event in its place (the builder writes them by position)
    assert {(r["source"], r["schema"], r["statement"]) for r in rows} == {
        (capture_settings.source_name, db, None)
    }
    versions = result.manifest.schema_versions
    assert all(r["schema_version"] in versions[f"{db}.{r['table']}"] for r in rows)
    assert all(isinstance(r["binlog_file"], str) and r["binlog_file"] for r in rows)
    assert all(isinstance(r["binlog_pos"], int) and r["binlog_pos"] > 4 for r in rows)
    assert rows[1]["before"] is None
    assert decode_document(rows[1]["after"]) == {"order_id": 1, "line": 1, "sku": "a"}
    assert result.manifest.counts == {
        f"{db}.orders": {"insert": 1, "update": 1},
        f"{db}.lines": {"insert": 2, "delete": 1},
    }
    # The segment ends where the source was when the tick began.
    assert GtidSet.parse(result.end_gtid, source_server.flavor).issuperset(  # type: ignore[arg-type]
        GtidSet.parse(result.start_gtid, source_server.flavor)  # type: ignore[arg-type]
    )
    idle = capture_once(capture_settings)
    assert idle.manifest is None and idle.end_gtid == result.end_gtid


def test_a_tick_reads_the_binlog_with_older_objects_out_of_collections(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source_server.execute(f"CREATE TABLE `{source_schema}`.t (id INT PRIMARY KEY)")
    capture_once(capture_settings)
    source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES (1), (2)")
    frozen: list[int] = []
    read_segment = tick._read_segment

    def spied(*arguments: Any) -> Any:
        frozen.append(gc.get_freeze_count())
        return read_segment(*arguments)

    monkeypatch.setattr(tick, "_read_segment", spied)
    assert capture_once(capture_settings).rows == 2
    assert len(frozen) == 1 and frozen[0] > 0  # full collections skip them (core.heap)
    assert gc.get_freeze_count() == 0


def test_schema_changes_mid_stream_keep_each_rows_own_columns(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    table = f"`{source_schema}`.people"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(20), city TEXT)")
    capture_once(capture_settings)
    source_server.execute(
        f"INSERT INTO {table} VALUES (1, 'ann', 'oslo')",
        f"ALTER TABLE {table} ADD COLUMN email VARCHAR(40)",
        f"INSERT INTO {table} VALUES (2, 'bob', 'rome', 'b@x')",
        f"ALTER TABLE {table} DROP COLUMN city",
        f"INSERT INTO {table} VALUES (3, 'cy', 'c@x')",
        f"ALTER TABLE {table} RENAME COLUMN name TO full_name",
        f"INSERT INTO {table} VALUES (4, 'di', 'd@x')",
    )
    capture_all(capture_settings)
    rows = wal_rows(capture_settings)
    inserts = [r for r in rows if r["op"] == "insert"]
    assert [decode_document(r["after"]) for r in inserts] == [  # type: ignore[arg-type]
        {"id": 1, "name": "ann", "city": "oslo"},
        {"id": 2, "name": "bob", "city": "rome", "email": "b@x"},
        {"id": 3, "name": "cy", "email": "c@x"},
        {"id": 4, "full_name": "di", "email": "d@x"},
    ]
    assert len({r["schema_version"] for r in inserts}) == 4
    ddl = [r["statement"] for r in rows if r["op"] == "ddl"]
    assert len(ddl) == 3 and "RENAME COLUMN" in ddl[-1]


def test_a_transaction_larger_than_the_tick_bound_stays_whole(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    settings = replace(capture_settings, max_events_per_segment=1_000, row_group_size=500)
    table = f"`{source_schema}`.big"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, pad VARCHAR(50))")
    capture_once(settings)
    source_server.execute(
        f"INSERT INTO {table} VALUES " + ",".join(f"({i}, 'x{i}')" for i in range(5_000)),
        f"INSERT INTO {table} VALUES (100000, 'after')",
        f"INSERT INTO {table} VALUES (100001, 'after')",
    )
    results = capture_all(settings)
    # The 5,000-row transaction (5x the bound, 2.5x the in-memory spill limit) is one segment's
    # first transaction and is never cut; the tick stops right after it.
    first = results[0]
    assert first.transactions == 1 and first.rows == 5_000
    assert first.stopped_because == "event_bound"
    assert sum(r.rows for r in results) == 5_002
    rows = wal_rows(settings)
    assert [r["row_index"] for r in rows[:5_000]] == list(range(5_000))


def test_a_tick_that_stops_by_itself_leaves_no_binlog_dump_thread_behind(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    """A tick that stops at its event bound after the server has sent it everything left its
    dump thread "waiting for more updates" until the next heartbeat, and the next tick's
    connection (same server id) waited about 100 ms for the server to retire it. The tick now
    ends the thread itself; with a 30 s heartbeat nothing else ends it within the 5 s allowed."""
    settings = replace(capture_settings, heartbeat_seconds=30.0, max_events_per_segment=10)
    table = f"`{source_schema}`.dump_thread"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_all(settings)
    source_server.execute(
        *(
            f"INSERT INTO {table} VALUES " + ",".join(f"({10 * tx + i})" for i in range(10))
            for tx in range(3)
        )
    )
    first = capture_once(settings)
    assert (first.stopped_because, first.rows) == ("event_bound", 10)
    deadline = time.monotonic() + 5.0
    while source_server.execute(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'"
    ):
        assert time.monotonic() < deadline, "the tick's binlog dump thread outlived it"
        time.sleep(0.05)
    assert sum(result.rows for result in capture_all(settings)) == 20  # nothing lost


def test_ending_the_dump_thread_kills_only_a_binlog_dump_of_this_user(
    source_server: SourceServer, capture_settings: CaptureSettings
) -> None:
    """Behind a proxy the stream's thread id could name another session on the server the
    control connection reached: ``end_dump`` kills a thread only if it is a binlog dump of
    this user (here the id of a plain session, which stays alive, and so does the dump)."""
    url = capture_settings.source_url
    with connect(url) as connection:
        state = read_state(connection)
    bystander = source_server.connect()
    try:
        with BinlogReader(
            url, state.flavor, capture_settings.server_id, state.executed, lambda _s, _t: True
        ) as reader:
            reader._fetch()
            stream = reader._stream._stream_connection
            own = stream.thread_id()
            stream.thread_id = bystander.thread_id
            reader.end_dump()
            bystander.ping(reconnect=False)  # raises if it was killed
            dumps = source_server.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'"
            )
            assert (own,) in dumps
    finally:
        bystander.close()


def test_capture_refuses_to_skip_purged_binlogs_and_names_the_lost_gtids(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(capture_settings)
    before = GtidSet.parse(
        str(
            source_server.execute(
                "SELECT @@gtid_binlog_pos"
                if source_server.flavor == "mariadb"
                else "SELECT @@gtid_executed"
            )[0][0]
        ),
        source_server.flavor,  # type: ignore[arg-type]
    )
    source_server.execute(f"INSERT INTO {table} VALUES (1)", f"INSERT INTO {table} VALUES (2)")
    source_server.purge_binlogs()
    with pytest.raises(BinlogPurgedError) as raised:
        capture_once(capture_settings)
    message = str(raised.value)
    assert "purged" in message and "snapshot" in message
    lost = GtidSet.parse(raised.value.lost_text, source_server.flavor)  # type: ignore[arg-type]
    assert lost.count() >= 2  # at least our two inserts; any other test's writes since too
    for _source, first, last in lost.intervals():
        assert f"{first}" in message and f"{last}" in message
    assert not before.issuperset(lost)
    # Nothing was written: the WAL still ends where it did.
    assert list_segments(WalPaths(capture_settings.staging_dir, "default")) == []


def test_a_second_capture_process_is_refused_while_one_holds_the_lock(
    capture_settings: CaptureSettings,
) -> None:
    paths = WalPaths(capture_settings.staging_dir, capture_settings.source_name)
    with capture_lock(paths), pytest.raises(CaptureLockedError) as raised:
        capture_once(capture_settings)
    assert "another capture process" in str(raised.value)
    # Once released, capture runs.
    capture_once(capture_settings)
    assert json.loads(paths.origin.read_text())["start_position"] == "current"


def test_stale_temp_files_of_a_killed_capture_are_cleaned(
    capture_settings: CaptureSettings,
) -> None:
    paths = WalPaths(capture_settings.staging_dir, capture_settings.source_name)
    paths.ensure()
    stale = paths.segments / ".tmp-000000000001-999999.parquet"
    stale.write_bytes(b"half a parquet file")
    capture_once(capture_settings)
    assert not stale.exists()
    assert list_segments(paths) == []


def test_every_contract_type_round_trips_exactly_into_the_wal(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    from cdc_pipeline_tests.integration import test_type_mapping as types

    source_server.execute(f"USE `{source_schema}`", types.CREATE_EVERY_TYPE)
    capture_once(capture_settings)
    connection = source_server.connect(database=source_schema, charset="utf8mb4")
    with connection, connection.cursor() as cursor:
        cursor.execute("SET time_zone = '+00:00'")
        cursor.execute(types.ROW_TYPICAL)
        cursor.execute(types.ROW_EDGES)
        cursor.execute("SET sql_mode = ''")
        cursor.execute(types.ROW_ZEROS)
        cursor.execute(types.ROW_NULLS)
        cursor.execute("SELECT CONVERT(c_latin1_high USING utf8mb4) FROM every_type WHERE id = 1")
        (server_latin1,) = cursor.fetchone()
    capture_all(capture_settings)
    expected = types.expected_rows(source_server.flavor)
    expected[1]["c_latin1_high"] = server_latin1
    staged = [r for r in wal_rows(capture_settings) if r["op"] == "insert"]
    assert len(staged) == 4
    for row in staged:
        after = decode_document(row["after"])  # type: ignore[arg-type]
        assert after is not None
        assert list(after) == types.COLUMN_ORDER
        types._same(after, expected[after["id"]], f"{source_server.flavor} WAL row {after['id']}")


def test_an_explicit_start_position_captures_from_there(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    query = (
        "SELECT @@gtid_binlog_pos"
        if source_server.flavor == "mariadb"
        else "SELECT @@gtid_executed"
    )
    before = str(source_server.execute(query)[0][0])
    source_server.execute(f"INSERT INTO {table} VALUES (1)", f"INSERT INTO {table} VALUES (2)")
    settings = replace(capture_settings, start_position=before)
    capture_all(settings)
    ids = [decode_document(r["after"])["id"] for r in wal_rows(settings)]  # type: ignore[index]
    assert ids == [1, 2]


def test_a_different_server_is_refused_not_followed(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    from devtools.local_servers import MariaDBServer, MySQLServer, new_data_dir

    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(capture_settings)
    source_server.execute(f"INSERT INTO {table} VALUES (1)")
    capture_all(capture_settings)
    other = (
        MariaDBServer(new_data_dir("other-mariadb"))
        if source_server.flavor == "mariadb"
        else MySQLServer()
    )
    try:
        other.start()
        moved = replace(capture_settings, source_url=SourceUrl.parse(other.url))
        with pytest.raises(SourceHistoryError) as raised:
            capture_once(moved)
        assert "never executed" in str(raised.value)
    finally:
        other.cleanup()


def test_a_purge_between_the_check_and_the_connect_is_caught_from_the_stream(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(capture_settings)
    source_server.execute(f"INSERT INTO {table} VALUES (1)")
    source_server.purge_binlogs()
    # Pretend the pre-connect check ran before the purge: the server's 1236 must still stop us.
    monkeypatch.setattr(
        "cdc_pipeline.core.capture.tick._check_resumable", lambda start, state: None
    )
    with pytest.raises(BinlogPurgedError) as raised:
        capture_once(capture_settings)
    assert "1236" in str(raised.value)
    assert list_segments(WalPaths(capture_settings.staging_dir, "default")) == []


def test_a_full_disk_in_the_middle_of_a_segment_keeps_nothing_of_the_tick(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENOSPC while a row group is flushed, after transactions were committed to the segment:
    the tick fails with the staging error and writes no segment (it once committed an empty
    file whose manifest claimed the rows); the next tick captures everything."""
    settings = replace(capture_settings, row_group_size=4, max_events_per_segment=1_000)
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(settings)
    for key in range(20):
        source_server.execute(f"INSERT INTO {table} VALUES ({key})")
    flushes = {"count": 0}
    real_flush = wal.SegmentWriter._flush

    def flush_until_the_disk_is_full(self: wal.SegmentWriter) -> None:
        flushes["count"] += 1
        if flushes["count"] == 3:
            raise wal._staging_error(self.paths, OSError(errno.ENOSPC, "No space left"))
        real_flush(self)

    with monkeypatch.context() as patch:
        patch.setattr(wal.SegmentWriter, "_flush", flush_until_the_disk_is_full)
        with pytest.raises(StagingError, match="the staging disk is full"):
            capture_once(settings)
    paths = WalPaths(settings.staging_dir, settings.source_name)
    assert list_segments(paths) == [] and not list(paths.segments.glob(".tmp-*"))
    result = capture_once(settings)
    assert result.manifest is not None and result.manifest.row_count == 20
    assert len(read_rows(list_segments(paths)[0])) == 20
