"""The write-ahead log: one Parquet file per captured slice of the binlog, with its manifest.

Layout under ``<CDC_STAGING_DIR>/<source>/``::

    segments/seg-000000000001.parquet   committed segments, sequence numbers without holes
    segments/seg-000000000001.sha256    sha256 of the segment file's bytes (written before it)
    segments/.tmp-...                   a segment being written (never read; cleaned on start)
    quarantine/                         segments refused by validation (kept, never deleted)
    origin.json                         where capture started when the WAL was empty
    capture.lock                        held by the one capture process of this source

Invariants:
    * a segment appears under its final name only complete: written to a temp file, fsynced,
      renamed, and the folder fsynced; a crash at any instant leaves either no segment or a whole
      one, never a torn one;
    * the manifest lives in the Parquet footer, so it commits atomically with the rows;
    * the manifest's checksum covers every row, and the ``.sha256`` file beside the segment
      covers every byte of it, so any change to the content or the file is detected;
    * segment N+1 starts exactly where segment N ended (its ``start_gtid`` is N's ``end_gtid``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cdc_pipeline.core.errors import CaptureLockedError, CorruptSegmentError, StagingError
from cdc_pipeline.core.gtid import Flavor, GtidSet

MANIFEST_KEY = b"cdc_manifest"
FORMAT_VERSION = 1
SEGMENT_GLOB = "seg-*.parquet"

ROW_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("gtid", pa.string(), nullable=False),
        pa.field("row_index", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("schema", pa.string(), nullable=False),
        pa.field("table", pa.string()),
        pa.field("op", pa.string(), nullable=False),
        pa.field("pk", pa.string()),
        pa.field("before", pa.string()),
        pa.field("after", pa.string()),
        pa.field("schema_version", pa.string()),
        pa.field("binlog_file", pa.string(), nullable=False),
        pa.field("binlog_pos", pa.int64(), nullable=False),
        pa.field("committed_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("statement", pa.string()),
    ]
)
COLUMNS = tuple(ROW_SCHEMA.names)


def partition_key(source: str, sequence: int) -> str:
    """The Dagster partition of a segment: zero-padded so keys sort like sequence numbers."""
    return f"{source}-{sequence:012d}"


def sequence_of_partition(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


def source_of_partition(key: str) -> str:
    return key.rsplit("-", 1)[0]


def partition_keys(paths: WalPaths) -> list[str]:
    """The partition key of every committed segment, in order."""
    return [
        partition_key(paths.root.name, int(path.stem.split("-")[1]))
        for path in list_segments(paths)
    ]


_DIGEST_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""``json.dumps`` with these options builds a new encoder per call; the text is the same."""


def _digest_line(row: dict[str, Any]) -> bytes:
    values = []
    for name in COLUMNS:
        value = row.get(name)
        if isinstance(value, datetime):
            value = int(value.astimezone(UTC).timestamp() * 1_000_000)
        values.append(value)
    return _DIGEST_ENCODER.encode(values).encode() + b"\n"


@dataclass
class Manifest:
    """What a segment holds and where it sits in the binlog (stored in the Parquet footer)."""

    source: str
    sequence: int
    flavor: str
    start_gtid: str
    end_gtid: str
    start_binlog_file: str
    start_binlog_pos: int
    end_binlog_file: str
    end_binlog_pos: int
    row_count: int = 0
    ddl_count: int = 0
    transaction_count: int = 0
    first_gtid: str | None = None
    last_gtid: str | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    schema_versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    checksum: str = ""
    first_committed_at: str | None = None
    last_committed_at: str | None = None
    created_at: str = ""
    server_uuid: str = ""
    format_version: int = FORMAT_VERSION
    kind: str = "stream"
    """``stream`` (binlog events) or ``snapshot`` (rows read at one point, ``core.snapshot``)."""
    snapshot: dict[str, Any] | None = None
    """For a snapshot segment: which snapshot, table and key range it holds (``core.snapshot``)."""

    @property
    def partition_key(self) -> str:
        return partition_key(self.source, self.sequence)

    def covered(self) -> GtidSet:
        """The transactions this segment covers: ``end_gtid - start_gtid``."""
        flavor: Flavor = "mariadb" if self.flavor == "mariadb" else "mysql"
        return GtidSet.parse(self.end_gtid, flavor) - GtidSet.parse(self.start_gtid, flavor)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)  # insertion order: schema versions as first seen

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        data = json.loads(text)
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


class WalPaths:
    """Where one source's WAL lives."""

    def __init__(self, staging_dir: Path, source: str):
        self.root = staging_dir / source
        self.segments = self.root / "segments"
        self.quarantine = self.root / "quarantine"
        self.origin = self.root / "origin.json"
        self.lock = self.root / "capture.lock"

    def segment(self, sequence: int) -> Path:
        return self.segments / f"seg-{sequence:012d}.parquet"

    def ensure(self) -> None:
        try:
            self.segments.mkdir(parents=True, exist_ok=True)
            self.quarantine.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StagingError(
                f"cannot create the staging folder {self.root} ({error.strerror}); point"
                " CDC_STAGING_DIR at a writable folder."
            ) from None


def file_digest_path(segment: Path) -> Path:
    return segment.with_suffix(".sha256")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    temp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with temp.open("w") as handle:
        json.dump(data, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)
    fsync_dir(path.parent)


def list_segments(paths: WalPaths) -> list[Path]:
    """Committed segments in sequence order."""
    if not paths.segments.exists():
        return []
    return sorted(paths.segments.glob(SEGMENT_GLOB))


def read_manifest(path: Path) -> Manifest:
    """The manifest from a segment's footer (reads no rows)."""
    try:
        metadata = pq.read_metadata(path).metadata or {}
        return Manifest.from_json(metadata[MANIFEST_KEY])
    except Exception as error:  # any failure to decode the bytes means they are damaged
        raise CorruptSegmentError(
            f"segment {path.name} cannot be read ({type(error).__name__}); move it to the"
            " quarantine folder and re-capture it from the binlog (see docs/operations.md)."
        ) from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of a segment, in order, as dicts (for loaders and checks)."""
    try:
        return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
    except Exception as error:  # any failure to decode the bytes means they are damaged
        raise CorruptSegmentError(
            f"segment {path.name} cannot be read ({type(error).__name__}); move it to the"
            " quarantine folder and re-capture it from the binlog (see docs/operations.md)."
        ) from None


def verify_segment(
    path: Path, each_row: Callable[[Manifest, dict[str, Any]], None] | None = None
) -> Manifest:
    """Check the file's bytes, then that the rows match the manifest; return the manifest.

    ``each_row(manifest, row)`` sees every row during the same single read (validation's
    checks), before the digest comparison: a caller must not act on what it saw unless this
    returns. An exception it raises makes the segment unreadable (``CorruptSegmentError``).
    """
    try:
        expected_file_digest = file_digest_path(path).read_text().strip()
        actual_file_digest = file_sha256(path)
    except OSError as error:
        raise CorruptSegmentError(
            f"segment {path.name} or its .sha256 file cannot be read ({error.strerror});"
            " quarantine it and re-capture it from the binlog (see docs/operations.md)."
        ) from None
    if expected_file_digest != actual_file_digest:
        raise CorruptSegmentError(
            f"segment {path.name} is damaged (its bytes no longer match the sha256 written at"
            " capture); quarantine it and re-capture it from the binlog (see docs/operations.md)."
        )
    manifest = read_manifest(path)
    digest = hashlib.sha256()
    rows = 0
    ddl = 0
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                digest.update(_digest_line(row))
                rows += row["op"] != "ddl"
                ddl += row["op"] == "ddl"
                if each_row is not None:
                    each_row(manifest, row)
    except Exception as error:  # any failure to decode the bytes means they are damaged
        raise CorruptSegmentError(
            f"segment {path.name} cannot be read ({type(error).__name__}); move it to the"
            " quarantine folder and re-capture it from the binlog (see docs/operations.md)."
        ) from None
    if digest.hexdigest() != manifest.checksum or (rows, ddl) != (
        manifest.row_count,
        manifest.ddl_count,
    ):
        raise CorruptSegmentError(
            f"segment {path.name} does not match its manifest (checksum or row count differs);"
            " it was changed after capture: quarantine it and re-capture from the binlog."
        )
    return manifest


class SegmentWriter:
    """Streams rows into a temp Parquet file; ``commit`` makes it a segment, ``abort`` drops it.

    Memory holds at most ``row_group_size`` rows (plus one open transaction up to the caller's
    spill limit); everything else is already in the file.
    """

    def __init__(self, paths: WalPaths, sequence: int, row_group_size: int = 5_000):
        self.paths = paths
        self.sequence = sequence
        self.row_group_size = row_group_size
        self.temp_path = paths.segments / f".tmp-{sequence:012d}-{os.getpid()}.parquet"
        self._pending: list[dict[str, Any]] = []
        self._digest = hashlib.sha256()
        self._writer: pq.ParquetWriter | None = None
        self.rows_written = 0

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows (in order); they reach the file in row groups."""
        for row in rows:
            self._digest.update(_digest_line(row))
        self._pending.extend(rows)
        if len(self._pending) >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        try:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.temp_path, ROW_SCHEMA, compression="zstd")
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=ROW_SCHEMA))
        except OSError as error:
            self.abort()
            raise _staging_error(self.paths, error) from None
        self.rows_written += len(self._pending)
        self._pending = []

    def commit(self, manifest: Manifest) -> Path:
        """Finish the file with ``manifest`` in its footer and rename it into place, durably."""
        self._flush()
        manifest.checksum = self._digest.hexdigest()
        manifest.created_at = datetime.now(UTC).isoformat()
        final = self.paths.segment(self.sequence)
        try:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.temp_path, ROW_SCHEMA, compression="zstd")
                self._writer.write_table(ROW_SCHEMA.empty_table())
            self._writer.add_key_value_metadata({MANIFEST_KEY: manifest.to_json().encode()})
            self._writer.close()
            self._writer = None
            with self.temp_path.open("rb+") as handle:
                os.fsync(handle.fileno())
            if final.exists():
                raise StagingError(
                    f"segment {final.name} already exists; another capture wrote it, which the"
                    " staging lock should prevent: check for a second capture process."
                )
            # The byte digest is durable before the segment appears under its name.
            digest_temp = self.temp_path.with_suffix(".sha256")
            with digest_temp.open("w") as handle:
                handle.write(file_sha256(self.temp_path) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            digest_temp.rename(file_digest_path(final))
            self.temp_path.rename(final)
            fsync_dir(self.paths.segments)
        except OSError as error:
            self.abort()
            raise _staging_error(self.paths, error) from None
        return final

    def abort(self) -> None:
        """Drop everything written so far (the WAL is unchanged)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self._pending = []
        self.temp_path.unlink(missing_ok=True)


def _staging_error(paths: WalPaths, error: OSError) -> StagingError:
    if error.errno == errno.ENOSPC:
        return StagingError(
            f"the staging disk is full at {paths.root}; free space or move CDC_STAGING_DIR:"
            " capture resumes from the last complete segment, nothing is lost."
        )
    return StagingError(
        f"cannot write to the staging folder {paths.root} ({error.strerror}); check its"
        " permissions and free space."
    )


def remove_stale_temp_files(paths: WalPaths) -> int:
    """Delete what a killed capture left half-written; call only under the lock.

    That is temp files, and a ``.sha256`` whose segment never got its name (the kill came
    between the two renames of ``SegmentWriter.commit``).
    """
    removed = 0
    for temp in paths.segments.glob(".tmp-*"):
        temp.unlink(missing_ok=True)
        removed += 1
    for digest in paths.segments.glob("seg-*.sha256"):
        if not digest.with_suffix(".parquet").exists():
            digest.unlink(missing_ok=True)
            removed += 1
    return removed


@contextlib.contextmanager
def capture_lock(paths: WalPaths, purpose: str = "capture") -> Iterator[None]:
    """Hold the source's staging lock; a second holder gets ``CaptureLockedError`` at once.

    The lock is an ``flock`` on ``capture.lock``: the kernel drops it when the holder dies, so a
    kill -9 never leaves a stale lock behind. ``purpose`` (capture, snapshot) is written beside
    the holder's pid for the refusal message.
    """
    paths.ensure()
    handle = paths.lock.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid, _, held_for = (handle.read().strip() or "unknown").partition(" ")
            if held_for == "snapshot":
                raise CaptureLockedError(
                    f"a snapshot (pid {pid}) is writing the WAL at {paths.root}; capture goes on"
                    " from the snapshot's position when it finishes."
                ) from None
            raise CaptureLockedError(
                f"another capture process (pid {pid}) is writing the WAL at {paths.root};"
                " only one capture may run per source: stop it or wait for it to finish."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {purpose}")
        handle.flush()
        yield
    finally:
        handle.close()
