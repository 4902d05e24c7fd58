"""The staging folder of one source, ``<CDC_STAGING_DIR>/<source>/``: every file and lock in it.

Layout::

    segments/seg-000000000001.parquet   committed segments, sequence numbers without holes
    segments/seg-000000000001.sha256    sha256 of the segment file's bytes (written before it)
    segments/.tmp-...                   a segment being written (never read; cleaned on start)
    quarantine/seg-N.parquet            a segment validation refused, with .sha256 and
                                        .reason.json beside it (kept, never deleted)
    quarantine/recaptured-<time>/       segments set aside by 'cdc-pipeline recapture'
    origin.json                         where capture started when the WAL was empty
    identity.json, identity.lock        who writes this WAL: the source server, the table
                                        settings and the mirror style (``wal.identity``)
    capture.lock                        held by the one capture (or snapshot) of this source
    loader.lock                         held by the one loader of this source
    applied.json                        the last segment this host saw applied
    retired.json                        what retention deleted (``wal.ledger``)
    caught_up.json                      when capture last had all the source had executed
    sink_breaker.json                   the MongoDB circuit breaker (``load.breaker``)
    snapshot.json, recoveries.json      the newest snapshot's plan, gaps snapshots re-baselined

Invariants:
    * private whatever the umask: the source's folder and every folder in it are 0700, every
      file 0600 (``private_folder``, ``open_private``); the WAL holds row images;
    * this module is the only code that knows these names; a segment's sequence number comes
      from ``sequence_of`` (file) or ``sequence_of_partition`` (Dagster partition key) only;
    * every JSON file is written atomically (temp file, fsync, rename, folder fsync), so a
      reader sees a whole old or a whole new version;
    * both locks are ``flock``s: the kernel releases them when the holder dies, so a kill -9
      never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdc_pipeline.core.errors import CaptureLockedError, LoaderBusyError, StagingError

SEGMENT_GLOB = "seg-*.parquet"
_RECAPTURE_DOC = "docs/operations.md, 'A damaged segment'"


def partition_key(source: str, sequence: int) -> str:
    """The Dagster partition of a segment: zero-padded so keys sort like sequence numbers."""
    return f"{source}-{sequence:012d}"


def sequence_of_partition(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


def source_of_partition(key: str) -> str:
    return key.rsplit("-", 1)[0]


def sequence_from_text(text: str) -> int:
    """A segment named by its partition key (``default-000000000042``) or its number (``42``);
    ValueError when it is neither."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        return sequence_of_partition(text)
    except IndexError:
        raise ValueError(text) from None


def sequence_of(segment: Path) -> int:
    """The sequence number of a segment file (``seg-000000000042.parquet`` -> 42), also of its
    ``.sha256`` and quarantine files."""
    return int(segment.name.split(".", 1)[0].split("-")[1])


class WalPaths:
    """Where one source's WAL and its bookkeeping live (see the module's layout)."""

    def __init__(self, staging_dir: Path, source: str):
        self.root = staging_dir / source
        self.source = source
        self.segments = self.root / "segments"
        self.quarantine = self.root / "quarantine"
        self.origin = self.root / "origin.json"
        self.identity = self.root / "identity.json"
        self.identity_lock_file = self.root / "identity.lock"
        self.capture_lock_file = self.root / "capture.lock"
        self.loader_lock_file = self.root / "loader.lock"
        self.applied = self.root / "applied.json"
        self.ledger = self.root / "retired.json"
        self.caught_up = self.root / "caught_up.json"
        self.breaker = self.root / "sink_breaker.json"
        self.snapshot_plan = self.root / "snapshot.json"
        self.recoveries = self.root / "recoveries.json"
        self.tables = self.root / "tables.json"

    def segment(self, sequence: int) -> Path:
        return self.segments / f"seg-{sequence:012d}.parquet"

    def temp_segment(self, sequence: int) -> Path:
        """Where a segment is written before it is committed (``remove_stale_temp_files``)."""
        return self.segments / f".tmp-{sequence:012d}-{os.getpid()}.parquet"

    def recapture_folder(self, stamp: str) -> Path:
        return self.quarantine / f"recaptured-{stamp}"

    def ensure(self) -> None:
        try:
            upgrade = self.root.exists() and _mode(self.root) != PRIVATE_FOLDER
            private_folder(self.root)
            private_folder(self.segments)
            private_folder(self.quarantine)
            if upgrade:  # a folder an earlier version wrote with the umask's permissions
                make_private(self.root)
        except OSError as error:
            raise StagingError(
                f"cannot create the staging folder {self.root} ({error.strerror}); point"
                " CDC_STAGING_DIR at a writable folder."
            ) from None


def file_digest_path(segment: Path) -> Path:
    """The ``.sha256`` file beside a segment (or beside a temp file being committed)."""
    return segment.with_suffix(".sha256")


def list_segments(paths: WalPaths) -> list[Path]:
    """Committed segments in sequence order."""
    if not paths.segments.exists():
        return []
    return sorted(paths.segments.glob(SEGMENT_GLOB))


def partition_keys(paths: WalPaths) -> list[str]:
    """The partition key of every committed segment, in order."""
    return [partition_key(paths.source, sequence_of(path)) for path in list_segments(paths)]


PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def private_folder(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700 (``mkdir``'s mode is cut by the umask,
    so each is set after), and set ``path`` itself to 0700 if it was there."""
    missing = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
    for created in {path, *missing}:
        created.chmod(PRIVATE_FOLDER)


def open_private(path: Path, mode: str = "w") -> Any:
    """``open(path, mode)`` (``w``, ``wb`` or ``a+``) for a file that is 0600 from its first
    byte, whatever the umask (and made 0600 if it was there with other permissions)."""
    flags = os.O_CREAT | (os.O_RDWR | os.O_APPEND if mode.startswith("a") else os.O_WRONLY)
    if mode.startswith("w"):
        flags |= os.O_TRUNC
    descriptor = os.open(path, flags, PRIVATE_FILE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE)
    except OSError:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, mode)


def make_private(root: Path) -> None:
    """Every folder under ``root`` 0700 and every file 0600 (the once-only upgrade of a WAL an
    earlier version wrote with the umask's permissions)."""
    for folder, folders, files in os.walk(root):
        os.chmod(folder, PRIVATE_FOLDER)
        for name in folders:
            os.chmod(os.path.join(folder, name), PRIVATE_FOLDER)
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(os.path.join(folder, name), PRIVATE_FILE)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    temp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open_private(temp) as handle:
        json.dump(data, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)
    fsync_dir(path.parent)


def read_json(path: Path) -> dict[str, Any] | None:
    """A bookkeeping file's content; None when it is missing or unreadable (never raises)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_stale_temp_files(paths: WalPaths) -> int:
    """Delete what a killed capture left half-written; call only under the capture lock.

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


def orphan_digests(paths: WalPaths, through_sequence: int) -> list[Path]:
    """``.sha256`` files up to ``through_sequence`` whose segment is gone (what a retention
    pass killed between its two deletes leaves)."""
    return [
        digest
        for digest in paths.segments.glob("seg-*.sha256")
        if sequence_of(digest) <= through_sequence and not digest.with_suffix(".parquet").exists()
    ]


# -- where capture began ---------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """``origin.json``: where capture began when the WAL was empty (written before any read)."""

    gtid: str
    flavor: str
    binlog_file: str
    binlog_pos: int
    start_position: str
    server_uuid: str = ""
    decided_at: str = ""


def write_origin(paths: WalPaths, origin: Origin) -> None:
    data = asdict(origin)
    data["decided_at"] = origin.decided_at or datetime.now(UTC).isoformat()
    write_json_atomically(paths.origin, data)


def read_origin(paths: WalPaths) -> Origin | None:
    """The origin, or None when capture never started (or the file is unreadable)."""
    data = read_json(paths.origin)
    if data is None:
        return None
    try:
        return Origin(**{key: data[key] for key in Origin.__dataclass_fields__ if key in data})
    except TypeError:
        return None


# -- locks -----------------------------------------------------------------------------------


@contextlib.contextmanager
def capture_lock(paths: WalPaths, purpose: str = "capture") -> Iterator[None]:
    """Hold the source's staging lock; a second holder gets ``CaptureLockedError`` at once.

    ``purpose`` (capture, snapshot) is written beside the holder's pid for the refusal message.
    """
    paths.ensure()
    handle = open_private(paths.capture_lock_file, "a+")
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


@contextlib.contextmanager
def _waiting_flock(
    path: Path, timeout: float, poll: float, busy: Callable[[], Exception]
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``, waiting up to ``timeout`` s; ``busy()`` is
    raised when it stays held."""
    with open_private(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise busy() from None
                time.sleep(poll)
        yield


@contextlib.contextmanager
def loader_lock(paths: WalPaths, timeout: float = 600.0) -> Iterator[None]:
    """Hold the source's loader lock, waiting up to ``timeout`` s for another loader to finish."""
    paths.ensure()
    busy = LoaderBusyError(
        f"another loader has held {paths.loader_lock_file} for {timeout:.0f} s;"
        " check for a stuck 'cdc-pipeline load' or load run."
    )
    with _waiting_flock(paths.loader_lock_file, timeout, 0.2, lambda: busy):
        yield


@contextlib.contextmanager
def identity_lock(paths: WalPaths, timeout: float = 30.0) -> Iterator[None]:
    """Hold the lock of ``identity.json`` while it is read, compared and rewritten, so two
    pipelines starting at once on one folder cannot both record themselves (an ``flock``;
    each holder keeps it for a file read and write only)."""
    paths.ensure()
    busy = StagingError(
        f"{paths.identity_lock_file} stayed locked for {timeout:.0f} s; check"
        " for a hung cdc-pipeline process on this staging folder."
    )
    with _waiting_flock(paths.identity_lock_file, timeout, 0.05, lambda: busy):
        yield


# -- what this host saw applied, and when capture last caught up ------------------------------


def note_applied(paths: WalPaths, sequence: int, gtid: str, last_committed_at: str | None) -> None:
    """A local copy of the checkpoint's position, for status and the sensor while MongoDB is
    down. Informational only: MongoDB's ``cdc_checkpoints`` stays the truth."""
    write_json_atomically(
        paths.applied,
        {
            "last_sequence": sequence,
            "last_partition": partition_key(paths.source, sequence),
            "gtid": gtid,
            "last_committed_at": last_committed_at,
            "at": datetime.now(UTC).isoformat(),
        },
    )


def noted_applied(paths: WalPaths) -> int:
    """The last segment ``note_applied`` recorded (0 when none)."""
    data = read_json(paths.applied) or {}
    try:
        return int(data.get("last_sequence", 0))
    except (TypeError, ValueError):
        return 0


def note_caught_up(paths: WalPaths, executed: str, read_at: datetime) -> None:
    """Record that the WAL holds everything the source had executed (``executed``) at ``read_at``.

    Every transaction the WAL lacks therefore committed after ``read_at``: the replication-lag
    check uses this as a bound on the age of transactions capture has not read yet.
    """
    write_json_atomically(
        paths.caught_up, {"gtid": executed, "source_read_at": read_at.isoformat()}
    )


def caught_up_at(paths: WalPaths) -> datetime | None:
    """When capture last had everything the source had executed (None: never, or unreadable)."""
    data = read_json(paths.caught_up) or {}
    try:
        return datetime.fromisoformat(str(data["source_read_at"]))
    except (KeyError, ValueError):
        return None


# -- quarantine ------------------------------------------------------------------------------


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
        shutil.move(str(digest), str(file_digest_path(target)))
    shutil.move(str(segment), str(target))
    return target


def is_quarantined(paths: WalPaths, sequence: int) -> bool:
    """Whether segment ``sequence`` was refused and not re-captured since."""
    name = paths.segment(sequence).name
    return (paths.quarantine / name).exists() and not paths.segment(sequence).exists()


def quarantined_after(paths: WalPaths, applied_sequence: int) -> list[Path]:
    """Segments validation set aside that were neither re-captured nor applied since: loading
    halts at the first of them."""
    if not paths.quarantine.is_dir():
        return []
    return [
        path
        for path in sorted(paths.quarantine.glob(SEGMENT_GLOB))
        if sequence_of(path) > applied_sequence and not (paths.segments / path.name).exists()
    ]


def quarantine_sentence(paths: WalPaths, segment: Path) -> str:
    """What an operator reads about a quarantined segment: why, and the commands that resolve it."""
    key = partition_key(paths.source, sequence_of(segment))
    why = "failed verification"
    reason = (read_json(segment.with_suffix(".reason.json")) or {}).get("reason")
    if reason:
        said = str(reason).split(";")[0].removeprefix(f"segment {segment.name} ").strip()[:400]
        why = said if said.startswith(("is ", "does ", "cannot ")) else f"{why} ({said})"
    return (
        f"segment {key} {why} and was quarantined in {paths.quarantine}, so nothing after it is"
        f" loaded; stop the capture sensor, run 'cdc-pipeline recapture --from {key}', capture"
        f" again and run 'cdc-pipeline load --pending' ({_RECAPTURE_DOC})."
    )


# -- the folder itself -----------------------------------------------------------------------


def check_staging_folder(paths: WalPaths, *, create: bool, write: bool) -> None:
    """CDC_STAGING_DIR must be a folder, writable when the caller writes. Only capture
    (``create``) may create it, and never its missing parents: that is a typo or a disk that
    is not mounted, and the WAL must not land elsewhere."""
    root = paths.root.parent
    if not root.exists() and not create:
        raise StagingError(
            f"CDC_STAGING_DIR {root} does not exist, so there is no WAL to read; point it at the"
            " folder capture writes to, or run 'cdc-pipeline capture --once' first."
        )
    if not root.exists():
        if not root.parent.exists():
            raise StagingError(
                f"CDC_STAGING_DIR {root} does not exist and neither does its parent"
                f" {root.parent}; create it (mkdir -p {root}) or correct CDC_STAGING_DIR."
            )
        folders = [root.parent]
    else:
        folders = [root, paths.root] if paths.root.exists() else [root]
    for folder in folders:
        if not folder.is_dir():
            raise StagingError(
                f"CDC_STAGING_DIR needs {folder} to be a folder, but it is a file; point"
                " CDC_STAGING_DIR at a folder."
            )
        if write and not os.access(folder, os.W_OK | os.X_OK):
            raise StagingError(
                f"{folder} is not writable by this user, and the WAL is written there; make it"
                " writable or point CDC_STAGING_DIR at a writable folder."
            )
