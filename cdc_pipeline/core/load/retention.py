"""Retention: delete loaded WAL segments after ``CDC_RETENTION_HOURS``, keeping a small ledger.

Layout: ``<staging>/<source>/retired.json`` records what was retired (see ``RetiredLedger``).

Invariants:
    * only a segment MongoDB's checkpoint covers (sequence <= the applied sequence) is deleted,
      never one after it, never the newest segment (capture resumes from its manifest), never
      anything in ``quarantine/``;
    * segments are retired oldest first as a contiguous prefix, so the WAL on disk stays a run of
      sequence numbers without holes and ``through_sequence`` means "everything up to here";
    * the ledger is written (atomically, fsynced) before any file is deleted: a kill -9 at any
      instant leaves each segment either on disk or in the ledger, and the next call deletes
      what the ledger already names;
    * the ledger keeps the WAL's end (GTID state and binlog position), so ``capture.wal_end`` can
      resume from it if no segment is left, and the GTID chain of the retired segments: the last
      ``CHAIN_LIMIT`` links verbatim, older ones as a summary (first start, breaks).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pymongo.errors import PyMongoError

from cdc_pipeline.core.errors import (
    CdcError,
    CorruptSegmentError,
    SinkUnavailableError,
    StagingError,
)
from cdc_pipeline.core.load.sink import read_checkpoint
from cdc_pipeline.core.settings import MongoSettings
from cdc_pipeline.core.wal.ledger import RetiredLedger, read_ledger
from cdc_pipeline.core.wal.segment import Manifest, read_manifest
from cdc_pipeline.core.wal.staging import (
    WalPaths,
    capture_lock,
    file_digest_path,
    fsync_dir,
    list_segments,
    orphan_digests,
    partition_key,
    read_origin,
    sequence_of,
    sequence_of_partition,
    source_of_partition,
    write_json_atomically,
)

MAX_SEGMENTS_PER_CALL = 1_000
"""Bounds one call (and one sensor tick) when retention first meets a long backlog."""
CHECKPOINT_DEADLINE_SECONDS = 3.0


@dataclass
class RetireResult:
    """What one retention pass did; ``kept_reason`` says why the oldest remaining segment stays."""

    source: str
    retired_keys: list[str] = field(default_factory=list)
    kept_reason: str = ""
    through_sequence: int = 0
    skipped: bool = False

    def summary(self) -> str:
        count = len(self.retired_keys)
        text = f"retired {count} segment{'' if count == 1 else 's'}"
        if self.retired_keys:
            text += f" ({self.retired_keys[0]} .. {self.retired_keys[-1]})"
        return f"{text}; {self.kept_reason}" if self.kept_reason else text


def _created_at(path: Path, manifest: Manifest) -> datetime:
    try:
        moment = datetime.fromisoformat(manifest.created_at)
    except ValueError:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _checkpoint_mismatch(
    paths: WalPaths, ledger: RetiredLedger | None, applied_sequence: int, applied_gtid: str
) -> str | None:
    """Why MongoDB's checkpoint does not describe this WAL, or None when it does."""
    key = partition_key(paths.source, applied_sequence)
    links = {link.sequence: link.end_gtid for link in ledger.chain} if ledger else {}
    segment = paths.segment(applied_sequence)
    if segment.exists():
        end = read_manifest(segment).end_gtid
    elif applied_sequence in links:
        end = links[applied_sequence]
    elif ledger is not None and applied_sequence <= ledger.through_sequence:
        return None  # retired long ago and summarized: only leftovers of that can remain
    else:
        return f"the checkpoint's segment {key} is not in this WAL"
    if end != applied_gtid:
        return f"the checkpoint's GTID state differs from segment {key}'s end"
    return None


def retire_segments(
    paths: WalPaths,
    applied_sequence: int,
    retention: timedelta,
    now: datetime | None = None,
    *,
    applied_gtid: str | None = None,
    keep: Collection[int] = (),
    max_segments: int = MAX_SEGMENTS_PER_CALL,
) -> RetireResult:
    """Delete loaded segments older than ``retention``, oldest first, ledger before files.

    Args:
        paths: the source's WAL.
        applied_sequence: MongoDB's checkpoint (authoritative; never ``applied.json`` alone).
        retention: minimum age (manifest ``created_at``, else file mtime); 0 ignores age.
        now: the current time (tests pass one).
        applied_gtid: the checkpoint's GTID state; when given, nothing is deleted unless it equals
            the end of segment ``applied_sequence`` (a checkpoint from another WAL deletes nothing).
        keep: sequences that must stay (say, a load run for them is in flight); retirement stops
            before the first of them.
        max_segments: at most this many segments per call.

    Raises:
        CaptureLockedError: a capture holds the WAL (the caller retries later).
        StagingError: a file could not be deleted (the ledger already names it; rerun).
    """
    now = now or datetime.now(UTC)
    source = paths.source
    with capture_lock(paths):
        ledger = read_ledger(paths)
        result = RetireResult(source, through_sequence=ledger.through_sequence if ledger else 0)
        segments = list_segments(paths)
        if not segments:
            result.kept_reason = "no segment on disk"
            return result
        if applied_gtid is not None and applied_sequence > 0:
            mismatch = _checkpoint_mismatch(paths, ledger, applied_sequence, applied_gtid)
            if mismatch:
                result.kept_reason = f"nothing retired: {mismatch} (another WAL's checkpoint?)"
                return result
        chosen: list[tuple[Path, Manifest | None]] = []
        for path in segments:
            manifest, reason = _retirable(
                path,
                path == segments[-1],
                result.through_sequence,
                applied_sequence,
                retention,
                now,
                keep,
            )
            if reason is None and len(chosen) >= max_segments:
                reason = f"{max_segments} retired per pass"
            if reason is not None:
                key = partition_key(source, sequence_of(path))
                result.kept_reason = f"kept from {key}: {reason}"
                break
            chosen.append((path, manifest))
        new = [manifest for _, manifest in chosen if manifest is not None]
        if new:
            ledger = _extended(paths, ledger, new, now)
            write_json_atomically(paths.ledger, ledger.to_dict())  # before any delete
            result.through_sequence = ledger.through_sequence
        for path, _ in chosen:
            _delete(path, paths.ledger.name)
            result.retired_keys.append(partition_key(source, sequence_of(path)))
        for digest in orphan_digests(paths, result.through_sequence):
            digest.unlink(missing_ok=True)
        if chosen:
            fsync_dir(paths.segments)
        return result


def _retirable(
    path: Path,
    newest: bool,
    through_sequence: int,
    applied_sequence: int,
    retention: timedelta,
    now: datetime,
    keep: Collection[int],
) -> tuple[Manifest | None, str | None]:
    """(manifest to add to the ledger or None if it is there already, why it stays or None)."""
    sequence = sequence_of(path)
    if newest:
        return None, "the newest segment (capture resumes from it)"
    if sequence > applied_sequence:
        return None, "not loaded yet"
    if sequence in keep:
        return None, "a load run for it is in flight"
    if sequence <= through_sequence:
        return None, None  # in the ledger already: the rest of an interrupted pass
    try:
        manifest = read_manifest(path)
    except CorruptSegmentError:
        return None, "its manifest cannot be read (check the segment)"
    if retention > timedelta(0) and now - _created_at(path, manifest) < retention:
        return None, f"younger than {retention.total_seconds() / 3600:g} h"
    return manifest, None


def _extended(
    paths: WalPaths, ledger: RetiredLedger | None, manifests: list[Manifest], now: datetime
) -> RetiredLedger:
    first = manifests[0]
    if ledger is None:
        ledger = RetiredLedger(
            source=first.source,
            flavor=first.flavor,
            through_sequence=0,
            end_gtid=first.start_gtid,
            end_binlog_file=first.start_binlog_file,
            end_binlog_pos=first.start_binlog_pos,
            server_uuid=first.server_uuid,
            first_sequence=first.sequence,
            first_start_gtid=first.start_gtid,
        )
    found = read_origin(paths) if first.sequence == 1 else None
    origin = found.gtid if found is not None else None
    for manifest in manifests:
        ledger.add(manifest, origin)
    ledger.updated_at = now.isoformat()
    return ledger


def _delete(segment: Path, ledger_name: str) -> None:
    """The segment first, then its digest (a digest without a segment is harmless)."""
    try:
        segment.unlink(missing_ok=True)
        file_digest_path(segment).unlink(missing_ok=True)
    except OSError as error:
        raise StagingError(
            f"cannot delete the retired segment {segment.name} ({error.strerror}); it is in"
            f" {ledger_name} already, so the next retention pass deletes it: check the staging"
            " folder's permissions."
        ) from None


def retired_partitions(paths: WalPaths, registered: Iterable[str]) -> list[str]:
    """Registered partition keys of this source whose segments are retired (to be pruned).

    Derived from the ledger and the disk, not from one pass's result, so partitions left behind
    by a pass killed before pruning are pruned by the next one.
    """
    ledger = read_ledger(paths)
    if ledger is None:
        return []
    source = paths.source
    return sorted(
        key
        for key in registered
        if source_of_partition(key) == source
        and sequence_of_partition(key) <= ledger.through_sequence
        and not paths.segment(sequence_of_partition(key)).exists()
    )


def retire_loaded(
    paths: WalPaths,
    mongo: MongoSettings,
    retention: timedelta,
    now: datetime | None = None,
    *,
    keep: Collection[int] = (),
    deadline: float = CHECKPOINT_DEADLINE_SECONDS,
) -> RetireResult:
    """One retention pass for the sensor: MongoDB's checkpoint says what is loaded.

    Never raises for an unreachable MongoDB, a capture holding the WAL or an undeletable file:
    the pass is skipped (``skipped``) with the reason, and a later one catches up. One attempt
    costs up to ``open_sink``'s 5 s server-selection timeout when MongoDB is down.
    """
    source = paths.source
    try:
        checkpoint = read_checkpoint(mongo, source, deadline)
    except (SinkUnavailableError, PyMongoError) as error:
        reason = f"MongoDB's checkpoint is unreadable ({type(error).__name__})"
        return RetireResult(source, kept_reason=f"retention skipped: {reason}", skipped=True)
    if checkpoint is None:
        return RetireResult(source, kept_reason="nothing loaded yet")
    try:
        return retire_segments(
            paths,
            checkpoint.last_sequence,
            retention,
            now,
            applied_gtid=checkpoint.gtid,
            keep=keep,
        )
    except CdcError as error:
        return RetireResult(source, kept_reason=f"retention skipped: {error}", skipped=True)
