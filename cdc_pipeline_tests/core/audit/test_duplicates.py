"""``check_wal`` of the ``no_duplicate_events`` check on hand-built WALs (no servers needed):
each way an event can be staged twice is named, and a healthy WAL passes."""

from __future__ import annotations

from pathlib import Path

from cdc_pipeline.core.audit.duplicates import check_wal
from cdc_pipeline.core.wal.segment import Manifest
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline.core.wal.writer import SegmentWriter
from cdc_pipeline_tests.core.load.test_retention import row


def segment(
    paths: WalPaths, sequence: int, start: int, end: int, seqs: list[int] | None = None
) -> None:
    """Segment ``sequence`` covering ``0-1-(start+1 .. end)``, holding one row per ``seqs``."""
    paths.ensure()
    seqs = list(range(start + 1, end + 1)) if seqs is None else seqs
    writer = SegmentWriter(paths, sequence, row_group_size=10)
    writer.append([row(seq) for seq in seqs])
    writer.commit(
        Manifest(
            source="default",
            sequence=sequence,
            flavor="mariadb",
            start_gtid=f"0-1-{start}",
            end_gtid=f"0-1-{end}",
            start_binlog_file="bin.000001",
            start_binlog_pos=100 * start,
            end_binlog_file="bin.000001",
            end_binlog_pos=100 * end,
            row_count=len(seqs),
        )
    )


def wal(tmp_path: Path, *ranges: tuple[int, int]) -> WalPaths:
    paths = WalPaths(tmp_path / "staging", "default")
    for sequence, (start, end) in enumerate(ranges, start=1):
        segment(paths, sequence, start, end)
    return paths


def test_a_healthy_wal_passes(tmp_path: Path) -> None:
    report = check_wal(wal(tmp_path, (10, 13), (13, 16), (16, 19)))
    assert report.ok, report.problems
    assert (report.segments, report.events, report.staged_twice) == (3, 9, 0)


def test_a_transaction_in_two_segments_is_named(tmp_path: Path) -> None:
    report = check_wal(wal(tmp_path, (10, 13), (11, 14)))  # overlap: 0-1-12 and 0-1-13
    assert report.staged_twice == 2
    assert report.offenders == ["0-1-12", "0-1-13"]
    assert report.problems[0] == "transaction 0-1-12 is staged in segments 1 and 2"


def test_an_event_twice_in_one_segment_is_named(tmp_path: Path) -> None:
    paths = WalPaths(tmp_path / "staging", "default")
    segment(paths, 1, 10, 11, seqs=[11, 11])
    report = check_wal(paths)
    assert report.staged_twice == 1
    assert report.offenders == ["0-1-11#0"]


def test_a_row_outside_its_segments_range_is_named(tmp_path: Path) -> None:
    paths = wal(tmp_path, (10, 13), (13, 16))
    segment(paths, 3, 16, 16, seqs=[14, 15, 16])  # chains, but restages segment 2's rows
    report = check_wal(paths)
    assert report.staged_twice == 3
    assert report.offenders == ["0-1-14", "0-1-15", "0-1-16"]
