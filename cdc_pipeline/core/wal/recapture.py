"""Re-capture a damaged segment from the binlog: set it and every later segment aside.

When validation refuses segment N (its bytes or rows no longer match what was written), the
transactions it held are still on the source as long as its binlog is. ``recapture_from``
moves N and every later segment (with their digests) into ``quarantine/recaptured-<time>/``;
the WAL then ends at segment N-1, so the next capture tick writes those transactions again,
from exactly where N-1 ended, under the same sequence numbers.

Invariants: runs under the capture lock (no tick can write meanwhile); refuses segments already
applied in MongoDB (re-capturing cannot change what was loaded) and a start whose predecessor
is not where the WAL would resume from; moves, never deletes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cdc_pipeline.core.errors import CorruptSegmentError, RecaptureRefusedError
from cdc_pipeline.core.wal.ledger import read_ledger
from cdc_pipeline.core.wal.segment import read_manifest
from cdc_pipeline.core.wal.staging import (
    WalPaths,
    capture_lock,
    file_digest_path,
    fsync_dir,
    list_segments,
    partition_key,
    private_folder,
    sequence_of,
)


@dataclass
class RecaptureResult:
    first_sequence: int
    folder: Path | None = None
    moved: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.moved:
            return f"nothing to set aside from segment {self.first_sequence} on"
        return (
            f"set aside {len(self.moved)} segments ({self.moved[0]} .. {self.moved[-1]}) in"
            f" {self.folder}; the next capture tick writes them again from the binlog"
        )


def recapture_from(paths: WalPaths, sequence: int, applied_through: int) -> RecaptureResult:
    """Set aside segment ``sequence`` and all later ones; ``applied_through`` is the
    checkpoint's segment (0 when nothing was loaded)."""
    source = paths.source
    if sequence <= applied_through:
        raise RecaptureRefusedError(
            f"{partition_key(source, sequence)} is already applied in MongoDB (checkpoint at"
            f" {partition_key(source, applied_through)}); re-capturing cannot change what was"
            " loaded: re-baseline with 'cdc-pipeline snapshot' instead."
        )
    result = RecaptureResult(sequence)
    with capture_lock(paths):
        segments = list_segments(paths)
        later = [path for path in segments if sequence_of(path) >= sequence]
        earlier = {sequence_of(path) for path in segments if sequence_of(path) < sequence}
        ledger = read_ledger(paths)
        resumable = (
            sequence == 1
            or (sequence - 1) in earlier
            or (ledger is not None and ledger.through_sequence == sequence - 1 and not earlier)
        )
        if not resumable:
            raise RecaptureRefusedError(
                f"segment {sequence - 1} is not in the WAL either, so capture would not resume"
                f" where {partition_key(source, sequence)} began; re-capture from the first"
                " missing segment."
            )
        if not later:
            return result
        _refuse_snapshot_segments(later, source)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        folder = paths.quarantine / f"recaptured-{stamp}"
        private_folder(folder)
        for path in reversed(later):  # newest first: a crash leaves a WAL that still chains
            digest = file_digest_path(path)
            shutil.move(str(path), str(folder / path.name))
            if digest.exists():
                shutil.move(str(digest), str(folder / digest.name))
            result.moved.insert(0, path.name)
        fsync_dir(paths.segments)
        result.folder = folder
    return result


def _refuse_snapshot_segments(later: list[Path], source: str) -> None:
    """Snapshot rows were read with SQL, not from the binlog: re-capturing cannot bring them
    back, so a range holding any (whose footer can still be read) is refused."""
    for path in later:
        try:
            manifest = read_manifest(path)
        except CorruptSegmentError:
            continue
        if manifest.kind == "snapshot":
            raise RecaptureRefusedError(
                f"{partition_key(source, manifest.sequence)} holds rows of snapshot"
                f" {(manifest.snapshot or {}).get('id')}, which the binlog cannot give back;"
                " take a new snapshot instead ('cdc-pipeline snapshot'), it re-baselines the"
                " mirrors."
            )
