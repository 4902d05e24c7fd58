"""Load pending WAL segments into MongoDB, in order, each exactly once, checkpoint after the data.

The one loading path: the Dagster assets, ``catch_up_job`` and ``cdc-pipeline load --pending``
all call ``run_load`` (``load_pending`` plus the MongoDB breaker).

Invariants:
    * segments are applied strictly in sequence order starting right after the checkpoint; a
      load "through" segment N first applies every pending predecessor (Dagster's queue can run
      partitions out of order, and failed runs or retries break order), and a load of an
      already-applied segment changes nothing;
    * a missing or refused segment stops loading at that position: nothing after a gap is ever
      applied, so the checkpoint never moves past a hole;
    * each segment is read from disk once: validated, then applied from the same read; one
      that fails validation is moved to ``quarantine/`` (kept, never deleted) before anything
      of it is written;
    * the checkpoint moves only after all of a segment's writes succeeded, and only forward;
    * one loader per source at a time (an ``flock`` on ``loader.lock``; a second loader waits).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdc_pipeline.core.errors import CorruptSegmentError, LoadHaltedError, SinkUnavailableError
from cdc_pipeline.core.governance import RulesInForce, rules_differ_for
from cdc_pipeline.core.heap import young_objects_only
from cdc_pipeline.core.load.breaker import breaker_of
from cdc_pipeline.core.load.documents import Checkpoint, mirror_meta
from cdc_pipeline.core.load.rebaseline import source_rebaseline
from cdc_pipeline.core.load.rebuild import rebuild_for_rules
from cdc_pipeline.core.load.row_runs import runs_and_rows
from cdc_pipeline.core.load.schema_versions import register_schema_versions
from cdc_pipeline.core.load.sink import ApplyReport, MongoSink, open_sink
from cdc_pipeline.core.settings import MongoSettings, SourceUrl
from cdc_pipeline.core.wal.identity import check_load_identity
from cdc_pipeline.core.wal.ledger import read_ledger
from cdc_pipeline.core.wal.segment import Manifest
from cdc_pipeline.core.wal.staging import (
    WalPaths,
    is_quarantined,
    list_segments,
    loader_lock,
    note_applied,
    partition_key,
    quarantine,
    quarantine_sentence,
    sequence_of,
)
from cdc_pipeline.core.wal.validation import ValidatedSegment, validate_segment


@dataclass
class SegmentLoad:
    """What loading one segment did (becomes the partition's metadata in Dagster)."""

    partition_key: str
    sequence: int
    rows: int
    ddl: int
    first_gtid: str | None
    last_gtid: str | None
    end_gtid: str
    seconds: float
    lag_seconds: float | None
    apply: ApplyReport
    new_schema_versions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class LoadResult:
    """What one call of ``load_pending`` did."""

    source: str
    loaded: list[SegmentLoad] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    pending_after: int = 0

    def summary(self) -> str:
        if not self.loaded:
            position = self.checkpoint.last_partition if self.checkpoint else "nothing yet"
            return f"nothing to load; applied through {position}"
        rows = sum(item.rows for item in self.loaded)
        seconds = sum(item.seconds for item in self.loaded)
        return (
            f"loaded {len(self.loaded)} segments ({self.loaded[0].partition_key} .."
            f" {self.loaded[-1].partition_key}), {rows:,} row events in {seconds:.1f} s;"
            f" {self.pending_after} segments still pending"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "loaded": [
                {
                    "partition_key": item.partition_key,
                    "rows": item.rows,
                    "ddl": item.ddl,
                    "seconds": round(item.seconds, 3),
                    "lag_seconds": item.lag_seconds,
                }
                for item in self.loaded
            ],
            "checkpoint": self.checkpoint.last_partition if self.checkpoint else None,
            "checkpoint_gtid": self.checkpoint.gtid if self.checkpoint else None,
            "pending_after": self.pending_after,
        }


def _lag_seconds(manifest: Manifest) -> float | None:
    if not manifest.last_committed_at:
        return None
    committed = datetime.fromisoformat(manifest.last_committed_at)
    return max(0.0, (datetime.now(UTC) - committed).total_seconds())


def _halt_at_gap(paths: WalPaths, expected: int) -> LoadHaltedError:
    key = partition_key(paths.source, expected)
    if is_quarantined(paths, expected):
        return LoadHaltedError(
            quarantine_sentence(paths, paths.quarantine / paths.segment(expected).name)
        )
    return LoadHaltedError(
        f"loading halts at {key}: segment {paths.segment(expected).name} is missing from the"
        " WAL; nothing after it is applied. Restore it, or re-capture from the previous"
        " segment's end (docs/operations.md)."
    )


def _refuse_reset_sink(paths: WalPaths, checkpoint: Checkpoint | None) -> None:
    """A sink behind segments that retention already deleted cannot be caught up from the WAL."""
    ledger = read_ledger(paths)
    if ledger is None:
        return
    applied = checkpoint.last_sequence if checkpoint else 0
    if applied < ledger.through_sequence:
        holds = (
            "no checkpoint"
            if checkpoint is None
            else f"a checkpoint at {checkpoint.last_partition}"
        )
        raise LoadHaltedError(
            f"MongoDB holds {holds} but segments up to"
            f" {partition_key(paths.source, ledger.through_sequence)} were already loaded and"
            " retired: the database was reset or replaced; re-baseline it with a snapshot"
            " (docs/operations.md) rather than load a partial history."
        )


def load_pending(
    paths: WalPaths,
    sink: MongoSink,
    through_sequence: int | None = None,
    on_loaded: Callable[[SegmentLoad], None] | None = None,
    lock_timeout: float = 600.0,
    on_validated: Callable[[ValidatedSegment], None] | None = None,
) -> LoadResult:
    """Apply every segment after the checkpoint, up to ``through_sequence`` (None: all).

    ``on_validated`` sees each segment's validation (passed or not) before anything of it is
    applied; ``on_loaded`` sees each segment once its checkpoint is written. Garbage
    collections during the load skip the objects the process held before it
    (``heap.young_objects_only``).
    """
    with loader_lock(paths, lock_timeout), young_objects_only():
        checkpoint = sink.read_checkpoint(paths.source)
        result = LoadResult(paths.source, checkpoint=checkpoint)
        applied = checkpoint.last_sequence if checkpoint else 0
        _refuse_reset_sink(paths, checkpoint)
        limit = through_sequence if through_sequence is not None else float("inf")
        if is_quarantined(paths, applied + 1):
            raise _halt_at_gap(paths, applied + 1)  # loud even when nothing follows it
        for path in list_segments(paths):
            sequence = sequence_of(path)
            if sequence <= applied:
                continue
            if sequence > limit:
                break
            if sequence != applied + 1:
                raise _halt_at_gap(paths, applied + 1)
            loaded, manifest = _load_one(paths, sink, path, result.checkpoint, on_validated)
            result.checkpoint = sink.write_checkpoint(manifest)  # after all its data
            note_applied(paths, sequence, manifest.end_gtid, manifest.last_committed_at)
            result.loaded.append(loaded)
            applied = sequence
            if on_loaded is not None:
                on_loaded(loaded)
        if through_sequence is not None and applied < through_sequence:
            raise _halt_at_gap(paths, applied + 1)
        result.pending_after = sum(1 for p in list_segments(paths) if sequence_of(p) > applied)
        return result


def _validated(
    paths: WalPaths, path: Path, on_validated: Callable[[ValidatedSegment], None] | None
) -> ValidatedSegment:
    """The segment read and validated once; a damaged or invalid one is quarantined (kept,
    never deleted) before anything of it is written, and loading stops there."""
    try:
        validated = validate_segment(path)
    except CorruptSegmentError as error:
        target = quarantine(paths, path, str(error))
        raise CorruptSegmentError(quarantine_sentence(paths, target)) from None
    if on_validated is not None:
        on_validated(validated)
    if not validated.ok:
        target = quarantine(paths, path, validated.report.summary())
        raise CorruptSegmentError(quarantine_sentence(paths, target))
    return validated


def _load_one(
    paths: WalPaths,
    sink: MongoSink,
    path: Path,
    checkpoint: Checkpoint | None,
    on_validated: Callable[[ValidatedSegment], None] | None,
) -> tuple[SegmentLoad, Manifest]:
    started = time.monotonic()
    validated = _validated(paths, path, on_validated)
    manifest = validated.manifest
    if checkpoint is not None and manifest.start_gtid != checkpoint.gtid:
        raise LoadHaltedError(
            f"loading halts at {manifest.partition_key}: it starts at {manifest.start_gtid} but"
            f" MongoDB holds everything through {checkpoint.gtid}; the WAL does not chain here"
            " (see the gtid_continuity check)."
        )
    sink.rules.enter(manifest.governance, manifest.partition_key)
    if checkpoint is not None and (checkpoint.governance or None) != (manifest.governance or None):
        # The column rules changed with this segment: mirrors written under the old ones are
        # rebuilt under the new ones before its rows (written under the new ones) are applied.
        meta = mirror_meta(
            manifest.first_gtid or manifest.start_gtid,
            manifest.partition_key,
            None,
            manifest.first_committed_at,
            rebuilt_after_rule_change=True,
        )
        tables = rules_differ_for(checkpoint.governance, manifest.governance)
        rebuild_for_rules(sink, manifest.source, tables, meta)
    new_versions = register_schema_versions(sink.database, manifest, validated.report.first_gtids)
    applied = sink.apply(runs_and_rows(validated.batches()), manifest, validated.ddl_rows())
    load = SegmentLoad(
        partition_key=manifest.partition_key,
        sequence=manifest.sequence,
        rows=manifest.row_count,
        ddl=manifest.ddl_count,
        first_gtid=manifest.first_gtid,
        last_gtid=manifest.last_gtid,
        end_gtid=manifest.end_gtid,
        seconds=time.monotonic() - started,
        lag_seconds=_lag_seconds(manifest),
        apply=applied,
        new_schema_versions=new_versions,
    )
    return load, manifest


def run_load(
    paths: WalPaths,
    mongo: MongoSettings,
    through_sequence: int | None = None,
    on_loaded: Callable[[SegmentLoad], None] | None = None,
    source_url: SourceUrl | None = None,
    on_validated: Callable[[ValidatedSegment], None] | None = None,
    table_scope: Mapping[str, tuple[str, ...]] | None = None,
    progress: Callable[[str], None] | None = None,
    mask_key: str = "",
) -> LoadResult:
    """``load_pending`` against ``mongo``, keeping the breaker: the path every loader takes.

    First the staging folder's record is checked (``wal.identity``): a load with another mirror
    style, or with table settings (``table_scope``, the ones the caller was given) other than
    the folder's, is refused before anything is written.

    A load that exhausts its retries opens the breaker (the sensor then sends one probe per
    interval instead of a run per segment); any successful load closes it. With
    ``source_url``, mirrors are rebuilt after column changes; without, they are marked stale.
    ``progress`` gets the progress lines of a long rebuild, for the run log. ``mask_key``
    (CDC_MASK_KEY) hashes masked columns in mirror rebuilds as capture did.
    """
    rules = RulesInForce(mask_key)
    check_load_identity(paths, mongo, table_scope)
    breaker = breaker_of(paths, mongo.breaker_probe_seconds)
    try:
        with (
            source_rebaseline(source_url, lambda: rules.current) as rebaseline,
            open_sink(mongo, rebaseline=rebaseline, progress=progress) as sink,
        ):
            sink.rules = rules
            result = load_pending(
                paths, sink, through_sequence, on_loaded, on_validated=on_validated
            )
    except SinkUnavailableError as error:
        breaker.record_failure(str(error))
        raise
    breaker.record_success()
    return result
