"""Load pending WAL segments into MongoDB, in order, each exactly once, checkpoint after the data.

The one loading path: the Dagster asset, ``catch_up_job`` and ``cdc-pipeline load --pending``
all call ``load_pending``.

Invariants:
    * segments are applied strictly in sequence order starting right after the checkpoint; a
      load "through" segment N first applies every pending predecessor (Dagster's queue can run
      partitions out of order, and failed runs or retries break order), and a load of an
      already-applied segment changes nothing;
    * a missing or refused segment stops loading at that position: nothing after a gap is ever
      applied, so the checkpoint never moves past a hole;
    * a segment that fails validation is moved to ``quarantine/`` (kept, never deleted) before
      anything of it is written;
    * the checkpoint moves only after all of a segment's writes succeeded, and only forward;
    * one loader per source at a time (an ``flock`` on ``loader.lock``; a second loader waits).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from cdc_pipeline.core.errors import CdcError, CorruptSegmentError
from cdc_pipeline.core.load.breaker import SinkBreaker
from cdc_pipeline.core.load.retry import SinkUnavailableError
from cdc_pipeline.core.load.sink import (
    ApplyReport,
    Checkpoint,
    MongoSink,
    Rebaseline,
    open_sink,
)
from cdc_pipeline.core.mysql.source import connect
from cdc_pipeline.core.mysql.source_rows import describe_table, mirror_id, row_documents
from cdc_pipeline.core.settings import MongoSettings, SourceUrl
from cdc_pipeline.core.wal.segment import (
    Manifest,
    WalPaths,
    file_digest_path,
    list_segments,
    partition_key,
    write_json_atomically,
)
from cdc_pipeline.core.wal.validation import register_schema_versions, validate_segment


class LoadHaltedError(CdcError):
    """Loading stopped at a position it must not skip (a gap, a quarantined segment)."""


class LoaderBusyError(CdcError):
    """Another loader held the source's loader lock for longer than we would wait."""


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


def sequence_of(path: Path) -> int:
    return int(path.stem.split("-")[1])


def note_applied(paths: WalPaths, manifest: Manifest) -> None:
    """A local copy of the checkpoint's position, for status and the sensor while MongoDB is
    down. Informational only: MongoDB's ``cdc_checkpoints`` stays the truth."""
    write_json_atomically(
        paths.root / "applied.json",
        {
            "last_sequence": manifest.sequence,
            "last_partition": manifest.partition_key,
            "gtid": manifest.end_gtid,
            "last_committed_at": manifest.last_committed_at,
            "at": datetime.now(UTC).isoformat(),
        },
    )


def pending_count(paths: WalPaths) -> int:
    """Segments on disk after the last one this host saw applied (``applied.json``)."""
    try:
        applied = int(json.loads((paths.root / "applied.json").read_text())["last_sequence"])
    except (OSError, ValueError, KeyError, TypeError):
        applied = 0
    return sum(1 for path in list_segments(paths) if sequence_of(path) > applied)


@contextlib.contextmanager
def loader_lock(paths: WalPaths, timeout: float = 600.0) -> Iterator[None]:
    """Hold the source's loader lock, waiting up to ``timeout`` s for another loader to finish."""
    paths.ensure()
    with (paths.root / "loader.lock").open("a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LoaderBusyError(
                        f"another loader has held {paths.root}/loader.lock for {timeout:.0f} s;"
                        " check for a stuck 'cdc-pipeline load' or load run."
                    ) from None
                time.sleep(0.2)
        yield


def quarantine(paths: WalPaths, segment: Path, reason: str) -> Path:
    """Move a refused segment (and its digest) into ``quarantine/`` with the reason beside it."""
    paths.ensure()
    target = paths.quarantine / segment.name
    digest = file_digest_path(segment)
    write_json_atomically(
        target.with_suffix(".reason.json"),
        {"segment": segment.name, "reason": reason, "at": datetime.now(UTC).isoformat()},
    )
    if digest.exists():
        shutil.move(str(digest), str(target.with_suffix(".sha256")))
    shutil.move(str(segment), str(target))
    return target


def segment_rows(path: Path) -> Iterator[dict[str, Any]]:
    """A segment's rows in order, a batch at a time (memory stays bounded)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=5_000):
        yield from batch.to_pylist()


def _lag_seconds(manifest: Manifest) -> float | None:
    if not manifest.last_committed_at:
        return None
    committed = datetime.fromisoformat(manifest.last_committed_at)
    return max(0.0, (datetime.now(UTC) - committed).total_seconds())


def _halt_at_gap(paths: WalPaths, expected: int) -> LoadHaltedError:
    missing = paths.segment(expected).name
    if (paths.quarantine / missing).exists():
        return LoadHaltedError(
            f"loading halts at {partition_key(paths.root.name, expected)}: its segment is"
            " quarantined; re-capture it (docs/operations.md, 'A damaged segment'), then load"
            " again."
        )
    return LoadHaltedError(
        f"loading halts at {partition_key(paths.root.name, expected)}: segment {missing} is"
        " missing from the WAL; nothing after it is applied. Restore it, or re-capture from the"
        " previous segment's end (docs/operations.md)."
    )


def _refuse_reset_sink(paths: WalPaths, checkpoint: Checkpoint | None) -> None:
    """A sink behind segments that retention already deleted cannot be caught up from the WAL."""
    ledger_file = paths.root / "retired.json"
    if not ledger_file.exists():
        return
    through = int(json.loads(ledger_file.read_text()).get("through_sequence", 0))
    applied = checkpoint.last_sequence if checkpoint else 0
    if applied < through:
        holds = (
            "no checkpoint"
            if checkpoint is None
            else f"a checkpoint at {checkpoint.last_partition}"
        )
        raise LoadHaltedError(
            f"MongoDB holds {holds} but segments up to"
            f" {partition_key(paths.root.name, through)} were already loaded and retired: the"
            " database was reset or replaced; re-baseline it with a snapshot"
            " (docs/operations.md) rather than load a partial history."
        )


def load_pending(
    paths: WalPaths,
    sink: MongoSink,
    through_sequence: int | None = None,
    on_loaded: Callable[[SegmentLoad], None] | None = None,
    lock_timeout: float = 600.0,
) -> LoadResult:
    """Apply every segment after the checkpoint, up to ``through_sequence`` (None: all)."""
    source = paths.root.name
    with loader_lock(paths, lock_timeout):
        checkpoint = sink.read_checkpoint(source)
        result = LoadResult(source, checkpoint=checkpoint)
        applied = checkpoint.last_sequence if checkpoint else 0
        _refuse_reset_sink(paths, checkpoint)
        limit = through_sequence if through_sequence is not None else float("inf")
        segments = [p for p in list_segments(paths) if sequence_of(p) > applied]
        quarantined_next = paths.quarantine / paths.segment(applied + 1).name
        if quarantined_next.exists() and not paths.segment(applied + 1).exists():
            raise _halt_at_gap(paths, applied + 1)  # loud even when nothing follows it
        for path in segments:
            sequence = sequence_of(path)
            if sequence > limit:
                break
            if sequence != applied + 1:
                raise _halt_at_gap(paths, applied + 1)
            loaded, manifest = _load_one(paths, sink, path, result.checkpoint)
            result.checkpoint = sink.write_checkpoint(manifest)  # after all its data
            note_applied(paths, manifest)
            result.loaded.append(loaded)
            applied = sequence
            if on_loaded is not None:
                on_loaded(result.loaded[-1])
        if through_sequence is not None and applied < through_sequence:
            raise _halt_at_gap(paths, applied + 1)
        result.pending_after = sum(1 for p in list_segments(paths) if sequence_of(p) > applied)
        return result


def _load_one(
    paths: WalPaths, sink: MongoSink, path: Path, checkpoint: Checkpoint | None
) -> tuple[SegmentLoad, Manifest]:
    started = time.monotonic()
    try:
        manifest, report = validate_segment(path)
    except CorruptSegmentError as error:
        quarantine(paths, path, str(error))
        raise
    if not report.ok:
        quarantine(paths, path, report.summary())
        raise CorruptSegmentError(
            f"segment {path.name} failed validation and was quarantined: {report.summary()}"
        )
    if checkpoint is not None and manifest.start_gtid != checkpoint.gtid:
        raise LoadHaltedError(
            f"loading halts at {manifest.partition_key}: it starts at {manifest.start_gtid} but"
            f" MongoDB holds everything through {checkpoint.gtid}; the WAL does not chain here"
            " (see the gtid_continuity check)."
        )
    new_versions = register_schema_versions(sink.database, manifest, report.first_gtids)
    applied = sink.apply(segment_rows(path), manifest)
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


def breaker_of(paths: WalPaths, probe_seconds: float = 60.0) -> SinkBreaker:
    """The MongoDB circuit breaker of a source (state in its staging folder)."""
    return SinkBreaker(paths.root / "sink_breaker.json", probe_seconds)


@contextlib.contextmanager
def source_rebaseline(url: SourceUrl | None) -> Iterator[Rebaseline | None]:
    """Re-reads a source table for a mirror rebuild after a column change (None: no source).

    Each call reads the table's rows as they are now. That is enough for an exact mirror:
    every later change of a row is in the WAL after the DDL and is applied after the rebuild,
    so each key ends at its last change, or at the value read if it never changed again.
    """
    if url is None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        connection: Any = None

        def rows(schema: str, table: str) -> Iterator[tuple[Any, dict[str, Any]]] | None:
            nonlocal connection
            if connection is None:
                connection = stack.enter_context(connect(url))
            try:
                described = describe_table(connection, schema, table)
            except ValueError:
                return None
            if not described.primary_key:
                return iter(())
            return (
                (mirror_id(described, document), document)
                for document in row_documents(connection, described)
            )

        yield rows


def run_load(
    paths: WalPaths,
    mongo: MongoSettings,
    through_sequence: int | None = None,
    on_loaded: Callable[[SegmentLoad], None] | None = None,
    source_url: SourceUrl | None = None,
) -> LoadResult:
    """``load_pending`` against ``mongo``, keeping the breaker: the path every loader takes.

    A load that exhausts its retries opens the breaker (the sensor then sends one probe per
    interval instead of a run per segment); any successful load closes it.
    """
    breaker = breaker_of(paths, mongo.breaker_probe_seconds)
    try:
        with (
            source_rebaseline(source_url) as rebaseline,
            open_sink(mongo, rebaseline=rebaseline) as sink,
        ):
            result = load_pending(paths, sink, through_sequence, on_loaded)
    except SinkUnavailableError as error:
        breaker.record_failure(str(error))
        raise
    breaker.record_success()
    return result
