"""One capture tick: read the binlog from the end of the WAL up to a fixed stop, write one segment.

This is the code the Dagster sensor and ``cdc-pipeline capture --once`` both run.

Invariants:
    * the start is the WAL on disk (the last segment's end state, or ``origin.json`` for an empty
      WAL), never a cursor in memory; the stop is the source's executed GTID set read *before*
      reading, so a tick always ends;
    * a segment ends only at a transaction commit; a transaction larger than the tick's bounds is
      still written whole (streamed to disk, not held in memory);
    * before connecting, the start state is checked against the server: GTIDs purged from the
      binlog that we never captured stop capture with their names (``BinlogPurgedError``), and a
      start state the server never executed stops it too (``SourceHistoryError``);
    * one capture per source at a time (``wal.capture_lock``);
    * before anything is written, the staging folder's record of who writes it is checked
      (``capture.identity``): another server (unless a replica holding all the WAL has) or
      another table list is refused (``WalIdentityError``) and the WAL is left as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdc_pipeline.core.capture.identity import check_capture_identity
from cdc_pipeline.core.capture.segment_builder import SegmentBuilder
from cdc_pipeline.core.errors import (
    BinlogPurgedError,
    CdcError,
    ConfigError,
    SourceHistoryError,
    SourceSettingError,
    StagingError,
)
from cdc_pipeline.core.governance import Governance
from cdc_pipeline.core.gtid import (
    GtidError,
    GtidSet,
    lost_gtids,
    parse_gtid,
    unknown_to_server,
)
from cdc_pipeline.core.heap import young_objects_only
from cdc_pipeline.core.mysql.binlog import BinlogReader, Ddl, Idle, RowImages, TxBegin, TxCommit
from cdc_pipeline.core.mysql.catalog import MariadbJsonColumns
from cdc_pipeline.core.mysql.source import SourceState, connect, query_one, read_state
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.ledger import WalEnd, wal_end
from cdc_pipeline.core.wal.segment import Manifest
from cdc_pipeline.core.wal.staging import (
    Origin,
    WalPaths,
    capture_lock,
    note_caught_up,
    remove_stale_temp_files,
    write_origin,
)
from cdc_pipeline.core.wal.writer import SegmentWriter

REQUIRED_SETTINGS = {
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
}


@dataclass
class CaptureResult:
    """What one tick did; ``segment`` is None when there was nothing new."""

    source: str
    start_gtid: str
    end_gtid: str
    source_gtid: str
    segment: Path | None = None
    manifest: Manifest | None = None
    transactions: int = 0
    rows: int = 0
    ddl: int = 0
    stopped_because: str = "caught_up"
    seconds: float = 0.0
    error: str | None = None
    binlog_file: str = ""
    binlog_pos: int = 0
    notice: str | None = None
    """A change the operator should see though the tick succeeded (a failover accepted)."""

    @property
    def partition_key(self) -> str | None:
        return self.manifest.partition_key if self.manifest else None

    def summary(self) -> str:
        if self.manifest is None:
            text = f"nothing new; captured up to {self.end_gtid or '(empty)'}"
        else:
            first = self.manifest.first_gtid or self.start_gtid
            last = self.manifest.last_gtid or self.end_gtid
            text = (
                f"captured {self.rows:,} row events and {self.ddl} DDL in {self.transactions:,}"
                f" transactions {first}..{last} into {self.partition_key}"
                f" in {self.seconds:.1f} s ({self.stopped_because})"
            )
        if self.error:
            text += f"; stopped early: {self.error}"
        if self.notice:
            text += f"; NOTE: {self.notice}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "partition_key": self.partition_key,
            "segment": str(self.segment) if self.segment else None,
            "start_gtid": self.start_gtid,
            "end_gtid": self.end_gtid,
            "source_gtid": self.source_gtid,
            "transactions": self.transactions,
            "rows": self.rows,
            "ddl": self.ddl,
            "stopped_because": self.stopped_because,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "notice": self.notice,
        }


def _decide_origin(settings: CaptureSettings, state: SourceState, paths: WalPaths) -> WalEnd:
    """First start: fix where capture begins and write it down before reading anything."""
    choice = settings.start_position.strip()
    if choice == "current":
        start = state.executed
        binlog_file, binlog_pos = state.binlog_file, state.binlog_pos
    elif choice == "earliest":
        start = state.purged
        binlog_file, binlog_pos = state.oldest_binlog_file, 4
    else:
        try:
            start = GtidSet.parse(choice, state.flavor)
        except GtidError as error:
            raise ConfigError(
                f"CDC_START_POSITION must be 'current', 'earliest' or a {state.flavor} GTID"
                f" state: {error}"
            ) from None
        binlog_file, binlog_pos = "", 0
    write_origin(
        paths,
        Origin(str(start), state.flavor, binlog_file, binlog_pos, choice, state.server_uuid),
    )
    return WalEnd(0, start, binlog_file, binlog_pos)


def check_source_settings(connection: Any, state: SourceState) -> None:
    """Refuse a source whose binlog settings would make capture mis-map or miss rows."""
    for name, wanted in REQUIRED_SETTINGS.items():
        row = query_one(connection, f"SELECT @@global.{name}")
        value = str(row[0] if row else "").upper()
        if value != wanted:
            raise SourceSettingError(
                f"the source has {name}={value or 'unset'} but capture needs {wanted}, or rows"
                f" would be mis-mapped; run SET GLOBAL {name}='{wanted}' and make it permanent"
                " in the server config (see 'cdc-pipeline doctor')."
            )
    if state.flavor == "mysql" and any(
        ":" in source for source, _, _ in state.executed.intervals()
    ):
        raise SourceSettingError(
            "the source's GTID history holds tagged GTIDs, which mysql-replication 1.0.17 cannot"
            " resume from; stop using SET gtid_next='AUTOMATIC:<tag>' on this source."
        )


def _check_resumable(start: GtidSet, state: SourceState) -> None:
    lost = lost_gtids(start, state.purged)
    if lost:
        raise BinlogPurgedError(
            f"the source purged binlogs holding transactions never captured: {lost.describe()}"
            f" ({lost.count():,} transactions lost to capture); capture stops rather than skip"
            " them: re-baseline with 'cdc-pipeline snapshot' (see docs/operations.md).",
            lost_text=str(lost),
        )
    unknown = unknown_to_server(start, state.executed)
    if unknown:
        raise SourceHistoryError(
            f"the WAL holds transactions the source never executed ({unknown.describe()}): this"
            " is not the server the WAL was captured from, or it was reset; point CDC_MYSQL_URL"
            " at the right server or start a new CDC_SOURCE_NAME."
        )


def _advance(state: GtidSet, gtid: str) -> GtidSet:
    parsed = parse_gtid(gtid)
    if parsed.flavor == "mariadb":
        # A MariaDB state is a position per domain: everything up to this seq is applied.
        return state | GtidSet.parse(f"{parsed.source}-{parsed.server_id}-{parsed.seq}", "mariadb")
    return state.add(parsed)


def capture_once(
    settings: CaptureSettings, clock: Callable[[], float] = time.monotonic
) -> CaptureResult:
    """Capture one bounded slice of the binlog into one new WAL segment (or none when idle)."""
    paths = WalPaths(settings.staging_dir, settings.source_name)
    with capture_lock(paths):
        remove_stale_temp_files(paths)
        return capture_locked(settings, paths, clock)


def capture_locked(
    settings: CaptureSettings,
    paths: WalPaths,
    clock: Callable[[], float] = time.monotonic,
    stop_at: GtidSet | None = None,
) -> CaptureResult:
    """``capture_once`` for a caller that already holds the staging lock.

    With ``stop_at`` the tick reads up to that GTID state and not one transaction past it (the
    snapshot uses this to bring the stream exactly to its read view); ``stop_at`` must be a
    prefix of the binlog, i.e. a state the server executed at one moment.
    """
    started = clock()
    with connect(settings.source_url) as connection:
        read_at = datetime.now(UTC)
        state = read_state(connection)
        check_source_settings(connection, state)
        notice = check_capture_identity(settings, paths, connection, state, "capture")
    end = wal_end(paths) or _decide_origin(settings, state, paths)
    if end.gtid.flavor != state.flavor:
        raise SourceHistoryError(
            f"the WAL was captured from a {end.gtid.flavor} server but the source is"
            f" {state.flavor}; point CDC_MYSQL_URL at the right server or use a new"
            " CDC_SOURCE_NAME."
        )
    _check_resumable(end.gtid, state)
    target = state.executed if stop_at is None else stop_at
    result = CaptureResult(
        source=settings.source_name,
        start_gtid=str(end.gtid),
        end_gtid=str(end.gtid),
        source_gtid=str(state.executed),
        binlog_file=end.binlog_file,
        binlog_pos=end.binlog_pos,
        notice=notice,
    )
    if end.gtid.issuperset(target):
        if stop_at is None:
            note_caught_up(paths, str(state.executed), read_at)
        result.seconds = clock() - started
        return result
    with young_objects_only():  # collections skip the objects held before the tick
        result = _read_segment(settings, paths, state, end, target, result, started, clock)
    if result.stopped_because == "caught_up" and stop_at is None:
        note_caught_up(paths, str(state.executed), read_at)
    return result


def _read_segment(
    settings: CaptureSettings,
    paths: WalPaths,
    state: SourceState,
    end: WalEnd,
    target: GtidSet,
    result: CaptureResult,
    started: float,
    clock: Callable[[], float],
) -> CaptureResult:
    deadline = started + settings.max_seconds_per_tick
    writer = SegmentWriter(paths, end.sequence + 1, settings.row_group_size)
    governance = Governance(settings.governance)
    builder = SegmentBuilder(
        settings,
        writer,
        spill_rows=settings.row_group_size * 4,
        mariadb=state.flavor == "mariadb",
        governance=governance,
    )
    captured = end.gtid
    last_file, last_pos = end.binlog_file, end.binlog_pos
    json_columns = MariadbJsonColumns(settings.source_url) if state.flavor == "mariadb" else None
    try:
        with BinlogReader(
            settings.source_url,
            state.flavor,
            settings.server_id,
            end.gtid,
            settings.includes,
            settings.heartbeat_seconds,
            state.oldest_binlog_file,
            json_columns,
        ) as reader:
            for item in reader.items():
                if isinstance(item, TxBegin):
                    builder.begin(item)
                elif isinstance(item, RowImages):
                    builder.add_rows(item)
                elif isinstance(item, Ddl):
                    builder.add_ddl(item)
                elif isinstance(item, TxCommit):
                    builder.commit(item)
                    captured = _advance(captured, item.gtid)
                    last_file, last_pos = item.binlog_file, item.binlog_pos
                    if captured.issuperset(target):
                        result.stopped_because = "caught_up"
                        break
                    if builder.rows >= settings.max_events_per_segment:
                        result.stopped_because = "event_bound"
                        break
                    if clock() >= deadline:
                        result.stopped_because = "time_bound"
                        break
                elif isinstance(item, Idle) and builder.transaction is None and clock() >= deadline:
                    result.stopped_because = "time_bound"
                    break
            reader.end_dump()
    except StagingError:
        # The writer failed (disk full...) and dropped its file: nothing of this tick is kept,
        # the next tick reads the same transactions again.
        writer.abort()
        raise
    except CdcError as error:
        if builder.open_spilled or builder.transactions == 0:
            writer.abort()
            raise
        result.error = str(error)
        result.stopped_because = "error"
    except BaseException:
        writer.abort()
        raise
    finally:
        if json_columns is not None:
            json_columns.close()
    if builder.transactions == 0:
        writer.abort()
        result.seconds = clock() - started
        return result
    manifest = Manifest(
        source=settings.source_name,
        sequence=end.sequence + 1,
        flavor=state.flavor,
        start_gtid=str(end.gtid),
        end_gtid=str(captured),
        start_binlog_file=end.binlog_file,
        start_binlog_pos=end.binlog_pos,
        end_binlog_file=last_file,
        end_binlog_pos=last_pos,
        row_count=builder.rows,
        ddl_count=builder.ddl,
        transaction_count=builder.transactions,
        first_gtid=builder.first_gtid,
        last_gtid=builder.last_gtid,
        counts=builder.counts,
        schema_versions=builder.schema_versions,
        first_committed_at=_iso(builder.first_committed_at),
        last_committed_at=_iso(builder.last_committed_at),
        server_uuid=state.server_uuid,
        governance=governance.record(),
    )
    result.segment = writer.commit(manifest)
    result.manifest = manifest
    result.end_gtid = manifest.end_gtid
    result.transactions, result.rows, result.ddl = (
        builder.transactions,
        builder.rows,
        builder.ddl,
    )
    result.binlog_file, result.binlog_pos = last_file, last_pos
    result.seconds = clock() - started
    return result


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
