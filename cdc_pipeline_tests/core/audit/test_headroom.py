"""``core.headroom``: the headroom decisions and arithmetic on hand-made server states, the
warning setting, and the empty-WAL case (no server)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_pipeline.core.audit.headroom import (
    HeadroomReport,
    assess_headroom,
    expiry_from_variables,
    headroom_for,
)
from cdc_pipeline.core.errors import ConfigError
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.mysql.source import SourceState
from cdc_pipeline.core.settings import (
    DEFAULT_WARN_SECONDS,
    SourceUrl,
    retention_warn_seconds_from_env,
)
from cdc_pipeline.core.wal.ledger import WalEnd
from cdc_pipeline.core.wal.staging import WalPaths

UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FILES = (("binlog.000007", 1_000), ("binlog.000008", 2_000), ("binlog.000009", 3_000))
HOUR = "binlog_expire_logs_seconds=3600"


def my(last: int, first: int = 1) -> GtidSet:
    return GtidSet.parse(f"{UUID}:{first}-{last}", "mysql")


def source(
    executed: int = 100,
    purged: int = 10,
    files: tuple[tuple[str, int], ...] = FILES,
    head_pos: int | None = None,
) -> SourceState:
    """A MySQL source whose head is the end of the last file unless ``head_pos`` says."""
    return SourceState(
        flavor="mysql",
        version="9.7.4",
        server_uuid=UUID,
        executed=my(executed),
        purged=my(purged),
        binlog_file=files[-1][0],
        binlog_pos=files[-1][1] if head_pos is None else head_pos,
        oldest_binlog_file=files[0][0],
        binlog_files=files,
    )


def assess(
    state: SourceState,
    end: WalEnd,
    expire: int = 3600,
    committed_minutes_ago: float | None = 15,
    warn: float = 600,
) -> HeadroomReport:
    committed = (
        None if committed_minutes_ago is None else NOW - timedelta(minutes=committed_minutes_ago)
    )
    setting = f"binlog_expire_logs_seconds={expire}"
    return assess_headroom(state, end, expire, setting, committed, NOW, warn)


def test_bytes_are_summed_across_files_from_the_captured_position_to_the_head() -> None:
    # The head moved on after SHOW BINARY LOGS listed the current file at 3,000 bytes.
    report = assess(source(head_pos=3_500), WalEnd(3, my(90), "binlog.000008", 1_200))
    assert report.bytes_before == 1_000  # binlog.000007 only
    assert report.bytes_behind == (2_000 - 1_200) + 3_500
    assert report.files_behind == 1
    assert (report.captured_file, report.source_file, report.oldest_file) == (
        "binlog.000008",
        "binlog.000009",
        "binlog.000007",
    )


def test_a_position_in_the_current_file_has_no_time_limit() -> None:
    report = assess(source(), WalEnd(3, my(90), "binlog.000009", 2_000), committed_minutes_ago=999)
    assert report.state == "ok" and report.seconds_left is None
    assert "not expirable while current" in report.note
    assert report.bytes_behind == 1_000 and report.files_behind == 0
    assert report.bytes_before == 3_000


def test_seconds_left_counts_down_from_the_last_captured_commit() -> None:
    report = assess(source(), WalEnd(3, my(90), "binlog.000008", 1_200))
    assert report.seconds_left == pytest.approx(3600 - 15 * 60)
    assert report.state == "ok" and not report.problems
    assert "binlog.000008" in report.note and "about 45 min at the earliest" in report.note


def test_the_warning_starts_strictly_below_warn_seconds() -> None:
    end = WalEnd(3, my(90), "binlog.000008", 1_200)
    assert assess(source(), end, warn=2700).state == "ok"  # exactly 2,700 s left
    warned = assess(source(), end, warn=2700.5)
    assert warned.state == "warn" and warned.seconds_left == pytest.approx(2700)
    [problem] = warned.problems
    assert "binlog.000008" in problem and "about 45 min" in problem and HOUR in problem
    assert f"{warned.bytes_behind:,} bytes" in problem and "catch up" in problem


def test_a_file_past_its_expiry_warns_that_the_next_rotation_purges_it() -> None:
    report = assess(source(), WalEnd(3, my(90), "binlog.000008", 1_200), committed_minutes_ago=90)
    assert report.state == "warn" and report.seconds_left == pytest.approx(-1800)
    assert "next binlog rotation" in report.problems[0]


def test_no_expiry_means_no_time_limit() -> None:
    report = assess(source(), WalEnd(3, my(90), "binlog.000008", 1_200), expire=0)
    assert report.state == "ok" and report.seconds_left is None
    assert "does not expire" in report.note


def test_an_unknown_commit_time_on_an_expiring_closed_file_warns() -> None:
    end = WalEnd(0, my(90), "binlog.000008", 1_200)
    report = assess(source(), end, committed_minutes_ago=None)
    assert report.state == "warn" and report.seconds_left is None
    assert "cannot be bounded" in report.problems[0]


def test_caught_up_capture_is_ok_even_in_an_old_or_purged_file() -> None:
    old = assess(source(), WalEnd(3, my(100), "binlog.000008", 1_900), committed_minutes_ago=600)
    assert old.state == "ok" and old.seconds_left is None and "caught up" in old.note
    gone = assess(source(purged=100), WalEnd(3, my(100), "binlog.000002", 500))
    assert gone.state == "ok" and not gone.lost_gtids


def test_a_purged_file_without_lost_gtids_measures_from_the_oldest_file() -> None:
    report = assess(source(purged=90), WalEnd(3, my(90), "binlog.000005", 700))
    assert report.state == "ok" and report.bytes_before == 0
    assert report.bytes_behind == 6_000 and report.files_behind == 2


def test_purged_transactions_are_lost_and_named_even_from_the_current_file() -> None:
    report = assess(source(purged=95), WalEnd(3, my(90), "binlog.000009", 100), expire=0)
    assert report.state == "lost"
    assert report.lost_gtids == f"{UUID}:91-95" and report.lost_count == 5
    [problem] = report.problems
    assert f"{UUID}:91-95" in problem and "5 transactions" in problem
    assert "cdc-pipeline snapshot" in problem


def test_mariadb_lost_gtids_are_named_per_domain() -> None:
    state = replace(
        source(),
        flavor="mariadb",
        executed=GtidSet.parse("0-1-100", "mariadb"),
        purged=GtidSet.parse("0-1-60", "mariadb"),
    )
    report = assess(state, WalEnd(3, GtidSet.parse("0-1-50", "mariadb"), "bin.000001", 4))
    assert report.state == "lost" and report.lost_gtids == "0-1-51:60"
    assert "0-1-51..0-1-60" in report.problems[0]


def test_a_wal_from_another_server_is_not_ok() -> None:
    unknown = assess(source(executed=100), WalEnd(3, my(120), "binlog.000009", 10))
    assert unknown.state == "lost" and "never executed" in unknown.problems[0]
    other = assess(source(), WalEnd(3, GtidSet.parse("0-1-5", "mariadb"), "bin.000003", 4))
    assert other.state == "lost" and "mariadb server" in other.problems[0]


@given(
    captured=st.integers(1, 200),
    purged=st.integers(1, 200),
    minutes=st.floats(0, 10_000),
    warn=st.floats(0, 1e6),
)
def test_never_ok_when_the_source_purged_what_capture_lacks(
    captured: int, purged: int, minutes: float, warn: float
) -> None:
    state = source(executed=200, purged=purged)
    report = assess(state, WalEnd(1, my(captured), "binlog.000008", 4), 3600, minutes, warn)
    assert (report.state == "lost") == (purged > captured)
    assert report.lost_count == max(purged - captured, 0)


@given(closed_after=st.floats(0, 1e5), minutes=st.floats(0, 1e4), expire=st.integers(1, 10**6))
def test_seconds_left_never_exceeds_the_real_time_to_expiry(
    closed_after: float, minutes: float, expire: int
) -> None:
    """The file closed ``closed_after`` s after the last captured commit; it goes ``expire`` s
    after closing: the reported time is never more than what really remains."""
    report = assess(source(), WalEnd(1, my(90), "binlog.000008", 4), expire, minutes)
    committed = NOW - timedelta(minutes=minutes)
    real = (committed + timedelta(seconds=closed_after + expire) - NOW).total_seconds()
    assert report.seconds_left is not None and report.seconds_left <= real + 1e-6


def test_metadata_is_flat_json_and_summary_one_line() -> None:
    report = assess(source(purged=95), WalEnd(3, my(90), "binlog.000008", 1_200))
    metadata = report.metadata()
    json.dumps(metadata)
    assert all(not isinstance(value, dict) for value in metadata.values())
    assert metadata["lost gtids"] == f"{UUID}:91-95" and metadata["state"] == "lost"
    line = report.summary()
    assert "\n" not in line and line.startswith("lost: ") and "binlog.000008:1200" in line


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        # MySQL 9.7 defaults, and with automatic purging off.
        (
            {"binlog_expire_logs_auto_purge": "ON", "binlog_expire_logs_seconds": "2592000"},
            (2_592_000, "binlog_expire_logs_seconds=2592000"),
        ),
        (
            {"binlog_expire_logs_auto_purge": "OFF", "binlog_expire_logs_seconds": "2592000"},
            (0, "binlog_expire_logs_auto_purge=OFF"),
        ),
        # MariaDB 10.11: the two variables move together; 0 means never.
        (
            {"binlog_expire_logs_seconds": "3600", "expire_logs_days": "0.041667"},
            (3600, "binlog_expire_logs_seconds=3600"),
        ),
        (
            {"binlog_expire_logs_seconds": "0", "expire_logs_days": "0.000000"},
            (0, "binlog_expire_logs_seconds=0"),
        ),
        # MariaDB 10.5 has only days; MySQL 8.0 falls back to days when seconds are 0.
        ({"expire_logs_days": "2"}, (172_800, "expire_logs_days=2")),
        ({"expire_logs_days": "0"}, (0, "expire_logs_days=0")),
        (
            {"binlog_expire_logs_seconds": "0", "expire_logs_days": "1"},
            (86_400, "expire_logs_days=1"),
        ),
    ],
)
def test_the_expiry_setting_of_each_server(
    variables: dict[str, str], expected: tuple[int, str]
) -> None:
    assert expiry_from_variables(variables) == expected


def test_warn_seconds_from_the_environment() -> None:
    assert retention_warn_seconds_from_env({}) == DEFAULT_WARN_SECONDS == 21_600
    assert retention_warn_seconds_from_env({"CDC_RETENTION_WARN_SECONDS": " 90.5 "}) == 90.5
    assert retention_warn_seconds_from_env({"CDC_RETENTION_WARN_SECONDS": "0"}) == 0
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(ConfigError, match="CDC_RETENTION_WARN_SECONDS") as raised:
            retention_warn_seconds_from_env({"CDC_RETENTION_WARN_SECONDS": bad})
        assert f"'{bad}'" in str(raised.value)


def test_an_empty_wal_is_ok_without_asking_the_server(tmp_path: Path) -> None:
    unreachable = SourceUrl.parse("mysql://cdc:secret@127.0.0.1:1")
    report = headroom_for(WalPaths(tmp_path, "default"), unreachable, 600)
    assert report.state == "ok" and report.note == "nothing captured yet"
    assert "secret" not in json.dumps(report.metadata())
