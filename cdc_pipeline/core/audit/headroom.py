"""How far the position capture has reached is from being purged on the source.

The logic of the ``binlog_retention_headroom`` check (its Dagster wiring lives in ``defs``).
``assess_headroom`` is pure; ``measure_headroom`` reads the server; ``headroom_for`` reads the WAL.

The file at risk is the binlog file capture resumes in: the WAL end's ``binlog_file``, or the
oldest file on the server when that one is gone or unknown. The source never expires its
current (active) file, and nothing is at risk once capture has every transaction the source
executed, whatever file its position names.

Invariants:
    * never reports ``ok`` or ``warn`` when the source purged transactions the WAL lacks:
      the state is ``lost`` and ``lost_gtids`` names them (also ``lost`` when the WAL holds
      transactions this server never executed: it is not the server capture read);
    * ``seconds_left`` is a lower bound: the file at risk was last written no earlier than the
      last captured commit (it holds that commit or follows it), and the server expires a file
      ``expire_seconds`` after its last write, at a rotation; ``now`` defaults to the server's
      clock, the clock its commit times come from;
    * the WAL end is read before the server's state, so the server is at or past it;
    * no connection URL or password appears in a report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cdc_pipeline.core.gtid import lost_gtids, unknown_to_server
from cdc_pipeline.core.mysql.source import SourceState, connect, query_all, query_one, read_state
from cdc_pipeline.core.problems import duration_text
from cdc_pipeline.core.settings import SourceUrl
from cdc_pipeline.core.wal.ledger import WalEnd, wal_end
from cdc_pipeline.core.wal.segment import read_manifest
from cdc_pipeline.core.wal.staging import WalPaths


@dataclass
class HeadroomReport:
    """Where capture stands against the source's binlog retention (see the module invariants).

    ``state`` is ``ok``, ``warn`` or ``lost``; ``problems`` holds one sentence per finding
    (what happened and what to do); ``note`` says why an ``ok`` needs no time bound.
    """

    state: str = "ok"
    problems: list[str] = field(default_factory=list)
    note: str = ""
    lost_gtids: str = ""
    lost_count: int = 0
    bytes_before: int = 0
    """Bytes of binlog files older than the file at risk: what a size or manual purge removes
    before it reaches ours."""
    bytes_behind: int = 0
    """Binlog bytes between the captured position and the source's head, over all files."""
    files_behind: int = 0
    captured_file: str = ""
    captured_pos: int = 0
    source_file: str = ""
    source_pos: int = 0
    oldest_file: str = ""
    expire_seconds: int = 0
    expire_setting: str = ""
    last_committed_at: str | None = None
    seconds_left: float | None = None

    def metadata(self) -> dict[str, Any]:
        """Flat JSON-able values for the check's metadata."""
        return {
            "state": self.state,
            "problems": list(self.problems),
            "note": self.note,
            "lost gtids": self.lost_gtids,
            "lost transactions": self.lost_count,
            "captured position": f"{self.captured_file}:{self.captured_pos}",
            "source position": f"{self.source_file}:{self.source_pos}",
            "oldest binlog": self.oldest_file,
            "files behind": self.files_behind,
            "bytes behind": self.bytes_behind,
            "bytes in older binlogs": self.bytes_before,
            "expire seconds": self.expire_seconds,
            "expire setting": self.expire_setting,
            "last captured commit": self.last_committed_at,
            "seconds left": None if self.seconds_left is None else round(self.seconds_left, 1),
        }

    def summary(self) -> str:
        """One line: the state, then the first problem or the note, then the positions."""
        reason = self.problems[0] if self.problems else self.note
        return (
            f"{self.state}: {reason} [captured {self.captured_file}:{self.captured_pos},"
            f" source {self.source_file}:{self.source_pos}, {self.bytes_behind:,} bytes behind]"
        )


def _file_number(name: str) -> int:
    """The sequence number in a binlog file name (``binlog.000042`` -> 42)."""
    digits = name.rpartition(".")[2]
    return int(digits) if digits.isdigit() else -1


def assess_headroom(
    state: SourceState,
    end: WalEnd,
    expire_seconds: int,
    expire_setting: str,
    last_committed_at: datetime | None,
    now: datetime,
    warn_seconds: float,
) -> HeadroomReport:
    """Decide the headroom from the server's state, the WAL end and the expiry (pure)."""
    sizes = dict(state.binlog_files)
    sizes[state.binlog_file] = max(sizes.get(state.binlog_file, 0), state.binlog_pos)
    listed = end.binlog_file in sizes
    at_risk = end.binlog_file if listed else state.oldest_binlog_file
    first = _file_number(at_risk)
    behind = [f for f in sizes if first <= _file_number(f) <= _file_number(state.binlog_file)]
    report = HeadroomReport(
        bytes_before=sum(size for f, size in sizes.items() if _file_number(f) < first),
        bytes_behind=max(sum(sizes[f] for f in behind) - (end.binlog_pos if listed else 0), 0),
        files_behind=max(len(behind) - 1, 0),
        captured_file=end.binlog_file,
        captured_pos=end.binlog_pos,
        source_file=state.binlog_file,
        source_pos=state.binlog_pos,
        oldest_file=state.oldest_binlog_file,
        expire_seconds=expire_seconds,
        expire_setting=expire_setting,
        last_committed_at=last_committed_at.isoformat() if last_committed_at else None,
    )
    if end.gtid.flavor != state.flavor:
        report.state = "lost"
        report.problems.append(
            f"the WAL was captured from a {end.gtid.flavor} server but the source is"
            f" {state.flavor}; point CDC_MYSQL_URL at the right server or use a new"
            " CDC_SOURCE_NAME."
        )
        return report
    lost = lost_gtids(end.gtid, state.purged)
    if lost:
        report.state, report.lost_gtids, report.lost_count = "lost", str(lost), lost.count()
        report.problems.append(
            f"the source purged binlogs holding {lost.count():,} transactions the WAL never"
            f" captured ({lost.describe()}); they are lost to capture: re-baseline with"
            " 'cdc-pipeline snapshot' (see docs/operations.md)."
        )
    unknown = unknown_to_server(end.gtid, state.executed)
    if unknown:
        report.state = "lost"
        report.problems.append(
            f"the WAL holds transactions the source never executed ({unknown.describe()}): this"
            " is not the server the WAL was captured from, or it was reset; point CDC_MYSQL_URL"
            " at the right server or start a new CDC_SOURCE_NAME."
        )
    if report.state == "lost":
        return report
    if end.gtid.issuperset(state.executed):
        report.note = "caught up: the WAL holds every transaction the source executed"
    elif at_risk == state.binlog_file:
        report.note = f"the captured position is in {at_risk}, the source's current binlog,"
        report.note += " which is not expirable while current"
    elif expire_seconds <= 0:
        report.note = f"the source does not expire binlogs ({expire_setting})"
    elif last_committed_at is None:
        report.state = "warn"
        report.problems.append(
            f"the captured position is in {at_risk}, which the source expires"
            f" ({expire_setting}), but the WAL records no commit time, so the time left cannot"
            f" be bounded; capture is {report.bytes_behind:,} bytes behind: let capture catch up."
        )
    else:
        left = expire_seconds - (now - last_committed_at).total_seconds()
        report.seconds_left = left
        report.note = f"the captured position is in {at_risk}, which the source expires in"
        report.note += f" about {duration_text(max(left, 0))} at the earliest ({expire_setting})"
        if left < warn_seconds:
            report.state = "warn"
            when = (
                f"the source expires in about {duration_text(left)}"
                if left > 0
                else "is past the source's expiry and goes at its next binlog rotation"
            )
            files = f"{report.files_behind} binlog file{'' if report.files_behind == 1 else 's'}"
            report.problems.append(
                f"the captured position is in {at_risk}, which {when}"
                f" ({expire_setting}); capture is {report.bytes_behind:,} bytes ({files})"
                " behind: let capture catch up or raise the expiry."
            )
    return report


def expiry_from_variables(values: Mapping[str, str]) -> tuple[int, str]:
    """The automatic binlog expiry in seconds (0: never) and the setting behind it, from the
    server's global variables (names lower case).

    MySQL: ``binlog_expire_logs_seconds`` unless ``binlog_expire_logs_auto_purge`` is OFF;
    MariaDB: ``binlog_expire_logs_seconds`` (10.6+, tied to ``expire_logs_days``), else
    ``expire_logs_days``; MySQL 8.0 also falls back to ``expire_logs_days`` when seconds are 0.
    """
    if values.get("binlog_expire_logs_auto_purge", "ON").upper() == "OFF":
        return 0, "binlog_expire_logs_auto_purge=OFF"
    seconds = round(float(values.get("binlog_expire_logs_seconds") or 0))
    days = float(values.get("expire_logs_days") or 0)
    if seconds == 0 and days > 0:
        return round(days * 86_400), f"expire_logs_days={days:g}"
    if "binlog_expire_logs_seconds" in values or "expire_logs_days" not in values:
        return seconds, f"binlog_expire_logs_seconds={seconds}"
    return 0, "expire_logs_days=0"


def read_expiry(connection: Any) -> tuple[int, str]:
    """``expiry_from_variables`` of the server on ``connection`` (needs no privilege)."""
    rows = query_all(
        connection,
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('binlog_expire_logs_seconds',"
        " 'expire_logs_days', 'binlog_expire_logs_auto_purge')",
    )
    return expiry_from_variables({str(name).lower(): str(value) for name, value in rows})


def measure_headroom(
    connection: Any,
    end: WalEnd,
    last_committed_at: datetime | None,
    warn_seconds: float,
    now: datetime | None = None,
) -> HeadroomReport:
    """Read the source's binlog state and expiry on ``connection`` and assess the headroom.

    ``end`` must have been read before calling; ``now`` defaults to the server's UTC clock.
    """
    state = read_state(connection)
    expire_seconds, expire_setting = read_expiry(connection)
    if now is None:
        server_now = query_one(connection, "SELECT UTC_TIMESTAMP(6)")
        now = server_now[0].replace(tzinfo=UTC) if server_now else datetime.now(UTC)
    return assess_headroom(
        state, end, expire_seconds, expire_setting, last_committed_at, now, warn_seconds
    )


def headroom_for(
    paths: WalPaths, source_url: SourceUrl, warn_seconds: float, now: datetime | None = None
) -> HeadroomReport:
    """The headroom of the WAL at ``paths`` against the source (no connection when it is empty).

    Raises the ``CdcError`` of ``connect``/``read_state`` (source unreachable, binlog off, missing
    grant) and ``CorruptSegmentError`` for an unreadable last segment.
    """
    end = wal_end(paths)
    if end is None:
        return HeadroomReport(note="nothing captured yet")
    last_committed_at = None
    segment = paths.segment(end.sequence)
    if end.sequence and segment.exists():
        text = read_manifest(segment).last_committed_at
        if text:
            parsed = datetime.fromisoformat(text)
            last_committed_at = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    with connect(source_url) as connection:
        return measure_headroom(connection, end, last_committed_at, warn_seconds, now)
