"""``core.retention``: which segments are deleted, the ledger written first, ``wal_end`` kept."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cdc_pipeline.core.errors import CaptureLockedError, ConfigError, StagingError
from cdc_pipeline.core.images import encode_image
from cdc_pipeline.core.load.retention import retire_segments, retired_partitions
from cdc_pipeline.core.settings import retention_from_env
from cdc_pipeline.core.wal import ledger as ledger_module
from cdc_pipeline.core.wal import writer as segment_writer
from cdc_pipeline.core.wal.ledger import read_ledger, wal_end
from cdc_pipeline.core.wal.segment import Manifest, read_manifest, verify_segment
from cdc_pipeline.core.wal.staging import (
    WalPaths,
    capture_lock,
    list_segments,
    partition_key,
    write_json_atomically,
)
from cdc_pipeline.core.wal.writer import SegmentWriter

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ROWS_PER_SEGMENT = 3


class _FrozenClock:
    def __init__(self, moment: datetime):
        self.moment = moment

    def now(self, tz: Any = None) -> datetime:
        return self.moment


def row(gtid_seq: int) -> dict[str, object]:
    return {
        "event_id": f"0-1-{gtid_seq}#0",
        "gtid": f"0-1-{gtid_seq}",
        "row_index": 0,
        "source": "default",
        "schema": "shop",
        "table": "orders",
        "op": "insert",
        "pk": encode_image({"id": gtid_seq}),
        "before": None,
        "after": encode_image({"id": gtid_seq}),
        "schema_version": "vabc",
        "binlog_file": "bin.000001",
        "binlog_pos": 100 * gtid_seq,
        "committed_at": datetime(2026, 1, 1, tzinfo=UTC),
        "statement": None,
    }


def write_segment(
    paths: WalPaths,
    sequence: int,
    created_at: datetime,
    monkeypatch: pytest.MonkeyPatch,
    start: int | None = None,
) -> Path:
    """Segment ``sequence`` holds GTIDs 0-1-(start+1 .. start+3), committed at ``created_at``."""
    first = (sequence - 1) * ROWS_PER_SEGMENT if start is None else start
    last = first + ROWS_PER_SEGMENT
    writer = SegmentWriter(paths, sequence, row_group_size=10)
    writer.append([row(seq) for seq in range(first + 1, last + 1)])
    manifest = Manifest(
        source="default",
        sequence=sequence,
        flavor="mariadb",
        start_gtid=f"0-1-{first}",
        end_gtid=f"0-1-{last}",
        start_binlog_file="bin.000001",
        start_binlog_pos=100 * first + 50,
        end_binlog_file="bin.000001",
        end_binlog_pos=100 * last + 50,
        row_count=ROWS_PER_SEGMENT,
        first_gtid=f"0-1-{first + 1}",
        last_gtid=f"0-1-{last}",
    )
    with monkeypatch.context() as patch:
        patch.setattr(segment_writer, "datetime", _FrozenClock(created_at))  # manifest.created_at
        return writer.commit(manifest)


def make_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int, hours_apart: float = 0.0
) -> WalPaths:
    """A chained WAL of ``count`` segments starting at origin ``0-1-0``, one every few hours."""
    paths = WalPaths(tmp_path / "staging", "default")
    paths.ensure()
    write_json_atomically(
        paths.origin,
        {"gtid": "0-1-0", "flavor": "mariadb", "binlog_file": "bin.000001", "binlog_pos": 4},
    )
    for sequence in range(1, count + 1):
        created = T0 + timedelta(hours=hours_apart * (sequence - 1))
        write_segment(paths, sequence, created, monkeypatch)
    return paths


def on_disk(paths: WalPaths) -> list[int]:
    return [int(path.stem.split("-")[1]) for path in list_segments(paths)]


def key(sequence: int) -> str:
    return partition_key("default", sequence)


def test_retention_hours_come_from_the_environment() -> None:
    assert retention_from_env({}) == timedelta(hours=24)
    assert retention_from_env({"CDC_RETENTION_HOURS": "0"}) == timedelta(0)
    assert retention_from_env({"CDC_RETENTION_HOURS": " 1.5 "}) == timedelta(minutes=90)
    for bad in ("-1", "a day", "nan", "inf"):
        with pytest.raises(ConfigError, match="CDC_RETENTION_HOURS must be a number of hours"):
            retention_from_env({"CDC_RETENTION_HOURS": bad})


def test_only_segments_older_than_the_retention_are_retired_oldest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=5, hours_apart=1)  # created T0 .. T0+4h
    now = T0 + timedelta(hours=3, minutes=30)

    result = retire_segments(paths, 5, timedelta(hours=2), now)

    assert result.retired_keys == [key(1), key(2)]  # 3.5 h and 2.5 h old
    assert on_disk(paths) == [3, 4, 5]
    assert result.kept_reason == f"kept from {key(3)}: younger than 2 h"
    assert "retired 2 segments" in result.summary()
    assert not paths.segment(1).with_suffix(".sha256").exists()
    later = retire_segments(paths, 5, timedelta(hours=2), now + timedelta(hours=24))
    assert later.retired_keys == [key(3), key(4)]


def test_the_newest_segment_is_always_kept_and_wal_end_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=3)
    before = wal_end(paths)

    result = retire_segments(paths, 3, timedelta(0), T0)

    assert result.retired_keys == [key(1), key(2)]
    assert on_disk(paths) == [3]
    assert "the newest segment" in result.kept_reason
    assert wal_end(paths) == before
    assert before is not None and (before.sequence, str(before.gtid)) == (3, "0-1-9")


def test_unloaded_segments_are_never_retired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=5)

    result = retire_segments(paths, 2, timedelta(0), T0 + timedelta(days=365))

    assert result.retired_keys == [key(1), key(2)]
    assert result.kept_reason == f"kept from {key(3)}: not loaded yet"
    assert on_disk(paths) == [3, 4, 5]
    for sequence in (3, 4, 5):
        assert verify_segment(paths.segment(sequence)).sequence == sequence
    nothing_loaded = retire_segments(paths, 0, timedelta(0), T0 + timedelta(days=365))
    assert nothing_loaded.retired_keys == [] and on_disk(paths) == [3, 4, 5]


def test_the_quarantine_is_never_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=4)
    # A refused copy of segment 1 (same name as a segment that will be retired) and its reason.
    shutil.copy(paths.segment(1), paths.quarantine / paths.segment(1).name)
    shutil.copy(
        paths.segment(1).with_suffix(".sha256"),
        paths.quarantine / paths.segment(1).with_suffix(".sha256").name,
    )
    (paths.quarantine / "seg-000000000001.reason.json").write_text('{"reason": "test"}')
    before = {path.name: path.read_bytes() for path in paths.quarantine.iterdir()}

    result = retire_segments(paths, 4, timedelta(0), T0)

    assert result.retired_keys == [key(1), key(2), key(3)]
    assert {path.name: path.read_bytes() for path in paths.quarantine.iterdir()} == before


def test_the_ledger_records_the_end_and_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=4)
    retire_segments(paths, 2, timedelta(0), T0)
    retire_segments(paths, 4, timedelta(0), T0)

    data = json.loads((paths.root / "retired.json").read_text())
    assert data["through_sequence"] == 3
    assert (data["end_gtid"], data["end_binlog_file"], data["end_binlog_pos"]) == (
        "0-1-9",
        "bin.000001",
        950,
    )
    assert data["flavor"] == "mariadb"
    assert data["chain"] == [[1, "0-1-0", "0-1-3"], [2, "0-1-3", "0-1-6"], [3, "0-1-6", "0-1-9"]]
    assert (data["first_sequence"], data["first_start_gtid"]) == (1, "0-1-0")
    assert (data["retired_count"], data["break_count"], data["breaks"]) == (3, 0, [])
    # The next segment on disk starts exactly where the ledger ends.
    assert read_manifest(paths.segment(4)).start_gtid == data["end_gtid"]


def test_the_chain_stays_small_and_breaks_are_kept_as_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "CHAIN_LIMIT", 3)
    paths = make_wal(tmp_path, monkeypatch, count=5)
    write_segment(paths, 6, T0, monkeypatch, start=100)  # does not start at 5's end (0-1-15)
    write_segment(paths, 7, T0, monkeypatch, start=103)

    retire_segments(paths, 7, timedelta(0), T0)

    ledger = read_ledger(paths)
    assert ledger is not None
    assert [link.sequence for link in ledger.chain] == [4, 5, 6]
    assert (ledger.first_sequence, ledger.first_start_gtid, ledger.retired_count) == (
        1,
        "0-1-0",
        6,
    )
    assert ledger.break_count == 1
    assert ledger.breaks == [
        {
            "sequence": 6,
            "start_gtid": "0-1-100",
            "expected_start_gtid": "0-1-15",
            "previous_sequence": 5,
        }
    ]


def test_a_crash_between_ledger_and_delete_is_completed_by_the_next_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=4)
    ledger_file = paths.root / "retired.json"
    real_unlink = Path.unlink
    seen: list[tuple[str, int]] = []
    failures = iter([True])

    def unlink_failing_once(self: Path, missing_ok: bool = False) -> None:
        if self.parent == paths.segments and self.name.startswith("seg-"):
            ledger = read_ledger(paths)
            # Every deletion happens after the ledger names the segment.
            seen.append((self.name, ledger.through_sequence if ledger else 0))
            if next(failures, False):
                raise OSError(5, "Input/output error")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink_failing_once)
    with pytest.raises(StagingError, match="next retention pass deletes it"):
        retire_segments(paths, 3, timedelta(0), T0)

    assert ledger_file.exists()
    assert json.loads(ledger_file.read_text())["through_sequence"] == 3
    assert on_disk(paths) == [1, 2, 3, 4]  # nothing lost: on disk and in the ledger

    result = retire_segments(paths, 3, timedelta(0), T0)

    assert result.retired_keys == [key(1), key(2), key(3)]
    assert on_disk(paths) == [4]
    assert sorted(path.name for path in paths.segments.iterdir()) == [
        "seg-000000000004.parquet",
        "seg-000000000004.sha256",
    ]
    ledger = read_ledger(paths)
    assert ledger is not None
    assert [link.sequence for link in ledger.chain] == [1, 2, 3]  # no link twice
    assert ledger.retired_count == 3 and ledger.break_count == 0
    assert all(int(name[4:16]) <= through for name, through in seen)


def test_a_digest_left_by_a_crash_between_the_two_deletes_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=3)
    real_unlink = Path.unlink
    failures = iter([True])

    def digest_unlink_fails_once(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".sha256" and next(failures, False):
            raise OSError(5, "Input/output error")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", digest_unlink_fails_once)
    with pytest.raises(StagingError):
        retire_segments(paths, 3, timedelta(0), T0)
    assert paths.segment(1).with_suffix(".sha256").exists() and not paths.segment(1).exists()

    result = retire_segments(paths, 3, timedelta(0), T0)

    assert result.retired_keys == [key(2)]
    assert not paths.segment(1).with_suffix(".sha256").exists()
    assert on_disk(paths) == [3]


def test_wal_end_falls_back_to_the_ledger_when_no_segment_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=4)
    retire_segments(paths, 4, timedelta(0), T0)
    # docs/operations.md, "A damaged segment": the remaining segment is moved to quarantine.
    for path in [paths.segment(4), paths.segment(4).with_suffix(".sha256")]:
        path.rename(paths.quarantine / path.name)

    end = wal_end(paths)

    assert end is not None
    assert (end.sequence, str(end.gtid), end.binlog_file, end.binlog_pos) == (
        3,
        "0-1-9",
        "bin.000001",
        950,
    )  # the next capture writes segment 4 again, from segment 3's end, not from origin.json


def test_a_checkpoint_that_does_not_match_the_wal_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=4)

    other = retire_segments(paths, 3, timedelta(0), T0, applied_gtid="0-1-999")
    missing = retire_segments(paths, 40, timedelta(0), T0, applied_gtid="0-1-120")
    matching = retire_segments(paths, 3, timedelta(0), T0, applied_gtid="0-1-9")

    assert other.retired_keys == [] and "differs from segment" in other.kept_reason
    assert missing.retired_keys == [] and "is not in this WAL" in missing.kept_reason
    assert matching.retired_keys == [key(1), key(2), key(3)]
    # Once retired, the checkpoint is checked against the ledger's chain.
    assert retire_segments(paths, 3, timedelta(0), T0, applied_gtid="0-1-9").kept_reason


def test_kept_sequences_and_the_per_pass_bound_stop_retirement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=6)

    in_flight = retire_segments(paths, 5, timedelta(0), T0, keep={3})
    bounded = retire_segments(paths, 5, timedelta(0), T0, max_segments=1)

    assert in_flight.retired_keys == [key(1), key(2)]
    assert in_flight.kept_reason == f"kept from {key(3)}: a load run for it is in flight"
    assert bounded.retired_keys == [key(3)]
    assert bounded.kept_reason == f"kept from {key(4)}: 1 retired per pass"


def test_retirement_waits_for_a_running_capture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=3)
    with capture_lock(paths), pytest.raises(CaptureLockedError):
        retire_segments(paths, 3, timedelta(0), T0)
    assert on_disk(paths) == [1, 2, 3] and read_ledger(paths) is None


def test_retired_partitions_are_this_sources_retired_keys_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_wal(tmp_path, monkeypatch, count=4)
    registered = [key(n) for n in range(1, 5)] + ["other-000000000001", "de-fault-000000000001"]
    assert retired_partitions(paths, registered) == []

    retire_segments(paths, 3, timedelta(0), T0)

    assert retired_partitions(paths, registered) == [key(1), key(2), key(3)]
