"""Is any event staged in two segments, or any row change applied twice in MongoDB?

The logic of the ``no_duplicate_events`` check. It looks at the segments still on disk (retention
bounds the work; retired segments were checked while they were on disk) and at the change-log
documents of the batches they hold.

Invariants of a healthy pipeline, each checked here:
    * every transaction GTID in the WAL's rows lies in exactly one segment, and inside that
      segment's covered range (``end_gtid - start_gtid``); transactions are never split, so a
      GTID in two segments means its events were staged twice;
    * within a segment, every ``event_id`` appears once;
    * in ``row_changes``, every document of a loaded batch belongs to that batch's segment (a
      document whose transaction lies outside the batch's range was applied by a segment that
      should not hold it: a second application), each ``(gtid, row_index)`` appears once, and a
      batch has exactly as many documents as its segment has row events.

Offenders are named (event ids, GTIDs, partitions), capped; counts are always complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pymongo.database import Database

from cdc_pipeline.core.errors import CorruptSegmentError
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.load.documents import ROW_CHANGES
from cdc_pipeline.core.problems import CappedProblems
from cdc_pipeline.core.wal.segment import Manifest, read_manifest, snapshot_tag
from cdc_pipeline.core.wal.staging import WalPaths, list_segments


@dataclass
class DuplicateReport(CappedProblems):
    segments: int = 0
    events: int = 0
    batches_checked: int = 0
    change_log_documents: int = 0
    staged_twice: int = 0
    applied_twice: int = 0
    missing_from_change_log: int = 0
    offenders: list[str] = field(default_factory=list)

    def offend(self, offender: str, problem: str) -> None:
        if len(self.offenders) < 20:
            self.offenders.append(offender)
        self.add(problem)


@dataclass(frozen=True)
class _Segment:
    path: Path
    manifest: Manifest
    covered: GtidSet

    def holds(self, gtid: str) -> bool:
        """Whether a row with this ``gtid`` belongs in this segment: a transaction of its covered
        range, or for a snapshot segment the tag of its table (``core.snapshot``)."""
        if self.manifest.kind == "snapshot":
            info = self.manifest.snapshot or {}
            return gtid == snapshot_tag(info.get("id"), info.get("table"))
        return not gtid.startswith("snapshot:") and gtid in self.covered

    @property
    def change_log_rows(self) -> int:
        """How many ``row_changes`` documents loading this segment writes: one per row event;
        for a snapshot segment, its rows only if the table has no key (no mirror)."""
        if self.manifest.kind == "snapshot":
            keyed = bool((self.manifest.snapshot or {}).get("keyed"))
            return 0 if keyed else self.manifest.row_count
        return self.manifest.row_count


def _segments(paths: WalPaths) -> list[_Segment]:
    found = []
    for path in list_segments(paths):
        manifest = read_manifest(path)
        found.append(_Segment(path, manifest, manifest.covered()))
    return found


def _event_columns(path: Path) -> tuple[list[str], list[str]]:
    try:
        table = pq.read_table(path, columns=["event_id", "gtid"])
    except Exception as error:  # undecodable bytes: the segment is damaged
        raise CorruptSegmentError(
            f"segment {path.name} cannot be read ({type(error).__name__}); the"
            " schema_versions_valid check names what is wrong with it."
        ) from None
    return table.column("event_id").to_pylist(), table.column("gtid").to_pylist()


def check_wal(paths: WalPaths, report: DuplicateReport | None = None) -> DuplicateReport:
    """Events staged twice: across segments (by transaction) and within one (by event id)."""
    report = report or DuplicateReport()
    segments = _segments(paths)
    report.segments = len(segments)
    home: dict[str, int] = {}  # transaction GTID -> the segment that first held it
    snapshot_rows: dict[str, int] = {}  # snapshot event id -> the segment that first held it
    for segment in segments:
        sequence = segment.manifest.sequence
        event_ids, gtids = _event_columns(segment.path)
        report.events += len(event_ids)
        seen: set[str] = set()
        for event_id in event_ids:
            if event_id in seen:
                report.staged_twice += 1
                report.offend(event_id, f"event {event_id} is staged twice in segment {sequence}")
            seen.add(event_id)
        if segment.manifest.kind == "snapshot":
            # A table's rows span several segments: a snapshot row is checked by its id.
            items = [
                (event_id, gtid, "snapshot row")
                for event_id, gtid in zip(event_ids, gtids, strict=True)
            ]
            _staged_once(report, snapshot_rows, segment, items)
        else:  # each transaction once, in order
            _staged_once(
                report,
                home,
                segment,
                [(gtid, gtid, "transaction") for gtid in dict.fromkeys(gtids)],
            )
    return report


def _staged_once(
    report: DuplicateReport,
    first_seen: dict[str, int],
    segment: _Segment,
    items: list[tuple[str, str, str]],
) -> None:
    """Each ``(identity, gtid, what)`` must be in no earlier segment and belong in this one."""
    sequence = segment.manifest.sequence
    for identity, gtid, what in items:
        first = first_seen.setdefault(identity, sequence)
        if first != sequence:
            problem = f"{what} {identity} is staged in segments {first} and {sequence}"
        elif segment.holds(gtid):
            continue
        elif segment.manifest.kind == "snapshot":
            problem = f"{what} {identity} does not belong in segment {sequence}"
        else:
            problem = (
                f"{what} {identity} is staged in segment {sequence}, whose range"
                f" ({segment.manifest.start_gtid} .. {segment.manifest.end_gtid}) does"
                " not hold it"
            )
        report.staged_twice += 1
        report.offend(identity, problem)


def check_change_log(
    database: Database[Mapping[str, Any]],
    paths: WalPaths,
    applied_through: int,
    report: DuplicateReport | None = None,
) -> DuplicateReport:
    """Row changes applied twice: every loaded batch on disk against its ``row_changes``."""
    report = report or DuplicateReport()
    collection = database[ROW_CHANGES]
    events: dict[tuple[str, int], str] = {}
    for segment in _segments(paths):
        manifest = segment.manifest
        if manifest.sequence > applied_through:
            continue
        report.batches_checked += 1
        batch = manifest.partition_key
        count = 0
        cursor = collection.find({"batch": batch}, {"gtid": 1, "row_index": 1})
        for document in cursor:
            count += 1
            gtid, row_index = str(document["gtid"]), int(document["row_index"])
            identity = str(document["_id"])
            if not segment.holds(gtid):
                report.applied_twice += 1
                report.offend(
                    identity,
                    f"row change {identity} was applied by batch {batch}, whose segment does"
                    " not hold its transaction: it was applied twice",
                )
            other = events.setdefault((gtid, row_index), identity)
            if other != identity:
                report.applied_twice += 1
                report.offend(
                    identity,
                    f"row changes {other} and {identity} are the same event {gtid} row {row_index}",
                )
        report.change_log_documents += count
        expected = segment.change_log_rows
        if count > expected:
            report.applied_twice += count - expected
            report.offend(
                batch,
                f"batch {batch} has {count} row changes in MongoDB but its segment holds"
                f" {expected}",
            )
        elif count < expected:
            report.missing_from_change_log += expected - count
            report.add(
                f"batch {batch} has {count} row changes in MongoDB but its segment holds"
                f" {expected}: {expected - count} are missing (applied by"
                " another batch, or deleted behind the pipeline's back)"
            )
    return report
