"""``core.headroom`` against real MariaDB and MySQL 9.7: a caught-up capture is ok, a capture
left behind in a closed binlog warns as the expiry nears, and a purge names the lost GTIDs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from cdc_pipeline.core.audit.headroom import HeadroomReport, headroom_for
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.staging import WalPaths
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


def executed(server: SourceServer) -> GtidSet:
    query = "SELECT @@gtid_binlog_pos" if server.flavor == "mariadb" else "SELECT @@gtid_executed"
    return GtidSet.parse(str(server.execute(query)[0][0]), server.flavor)  # type: ignore[arg-type]


def capture_all(settings: CaptureSettings) -> None:
    for _ in range(50):
        if capture_once(settings).manifest is None:
            return
    raise AssertionError("capture never caught up")


def headroom(settings: CaptureSettings, warn_seconds: float) -> HeadroomReport:
    paths = WalPaths(settings.staging_dir, settings.source_name)
    return headroom_for(paths, settings.source_url, warn_seconds)


def captured_rows(server: SourceServer, settings: CaptureSettings, table: str) -> None:
    """A table with rows, all captured: the WAL's last segment has a recent commit time."""
    server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(settings)  # fixes the origin at the current position
    server.execute(f"INSERT INTO {table} VALUES (1)", f"INSERT INTO {table} VALUES (2)")
    capture_all(settings)


def test_a_caught_up_capture_is_ok(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    captured_rows(source_server, capture_settings, f"`{source_schema}`.t")
    report = headroom(capture_settings, 21_600)
    assert report.state == "ok", report.summary()
    assert not report.problems and not report.lost_gtids and report.lost_count == 0
    assert report.captured_file == report.source_file
    assert report.seconds_left is None
    assert 0 <= report.bytes_behind <= report.source_pos and report.files_behind == 0
    assert report.bytes_before >= 0 and report.oldest_file


@contextlib.contextmanager
def expiry(server: SourceServer, seconds: int) -> Iterator[None]:
    """Set the server's binlog expiry for a moment, then restore it: the server is shared by the
    whole session. Servers purge expired files only at a rotation, so nothing may rotate while
    it is set (and every binlog of a test session is younger than an hour anyway)."""
    [(previous,)] = server.execute("SELECT @@global.binlog_expire_logs_seconds")
    server.execute(f"SET GLOBAL binlog_expire_logs_seconds = {seconds}")
    try:
        yield
    finally:
        server.execute(f"SET GLOBAL binlog_expire_logs_seconds = {int(str(previous))}")


def test_a_capture_behind_in_a_closed_binlog_warns_before_it_expires(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    table = f"`{source_schema}`.t"
    captured_rows(source_server, capture_settings, table)
    source_server.execute(f"INSERT INTO {table} VALUES (3)")  # not captured, in the current file
    with expiry(source_server, 3600):
        current = headroom(capture_settings, 7200)
    assert current.state == "ok", current.summary()  # the current file never expires
    assert current.seconds_left is None and current.bytes_behind > 0
    assert current.captured_file == current.source_file

    source_server.execute("FLUSH BINARY LOGS")  # the file holding row 3 closes
    source_server.execute(f"INSERT INTO {table} VALUES (4)")  # not captured, in the new file
    files_before = source_server.execute("SHOW BINARY LOGS")
    assert headroom(capture_settings, 7200).state == "ok"  # the servers' default expiry is long
    with expiry(source_server, 3600):
        warned = headroom(capture_settings, 7200)
        calm = headroom(capture_settings, 60)
    assert source_server.execute("SHOW BINARY LOGS")[0] == files_before[0], "nothing purged"

    assert warned.state == "warn", warned.summary()
    assert warned.seconds_left is not None and 3000 < warned.seconds_left < 3600
    assert warned.expire_seconds == 3600 and warned.bytes_behind > 0
    assert warned.captured_file != warned.source_file and warned.files_behind == 1
    [problem] = warned.problems
    assert warned.captured_file in problem and "binlog_expire_logs_seconds=3600" in problem
    assert f"{warned.bytes_behind:,} bytes" in problem

    assert calm.state == "ok" and not calm.problems
    assert calm.seconds_left is not None and calm.seconds_left < 3600


def test_a_purge_past_the_captured_position_is_lost_and_names_the_gtids(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    table = f"`{source_schema}`.t"
    captured_rows(source_server, capture_settings, table)
    before = executed(source_server)
    for key in range(10, 13):
        source_server.execute(f"INSERT INTO {table} VALUES ({key})")
    written = executed(source_server) - before
    assert written.count() == 3
    source_server.purge_binlogs()

    report = headroom(capture_settings, 60)
    assert report.state == "lost", report.summary()
    lost = GtidSet.parse(report.lost_gtids, source_server.flavor)  # type: ignore[arg-type]
    assert lost == written and report.lost_count == 3
    [problem] = report.problems
    assert written.describe() in problem and "3 transactions" in problem
    assert "cdc-pipeline snapshot" in problem
    assert report.metadata()["lost gtids"] == str(written)
    assert source_server.url not in report.summary() + str(report.metadata())
