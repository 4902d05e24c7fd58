"""Errors meant for people: each message is one sentence saying what happened and what to do.

Invariant: no message built here contains a password or a full connection URL; callers pass
redacted forms (``SourceUrl.redacted()``).
"""

from __future__ import annotations


class CdcError(Exception):
    """Base class: an operator-facing failure whose ``str()`` is the whole explanation."""


class ConfigError(CdcError):
    """A setting (environment variable or argument) is missing or malformed."""


class SourceUnavailableError(CdcError):
    """The source server cannot be reached or refuses us (network, auth, connection lost)."""


class SourceSettingError(CdcError):
    """The source is reachable but not configured for CDC (binlog settings, grants, GTIDs)."""


class SourceHistoryError(CdcError):
    """The source's GTID history no longer contains what we captured: a different server."""


class BinlogPurgedError(CdcError):
    """The binlog we must resume from is gone; ``lost`` names the GTIDs no reader can get back."""

    def __init__(self, message: str, lost_text: str):
        super().__init__(message)
        self.lost_text = lost_text


class CaptureLockedError(CdcError):
    """Another capture process holds this source's staging folder."""


class StagingError(CdcError):
    """The staging folder (the WAL) cannot be written: missing, not writable or full."""


class CorruptSegmentError(CdcError):
    """A WAL segment fails verification (unreadable, checksum or manifest mismatch)."""


class WalFormatError(CdcError):
    """A WAL segment is in a format newer than this cdc_pipeline reads (never quarantined: the
    segment is sound, the reader is old)."""


class ValueConversionError(CdcError):
    """A binlog value cannot be converted without loss; the message names column and cause."""


class SourceTableChangedError(CdcError):
    """A source table's columns changed (or it went away) while a mirror rebuild read it."""


class SinkUnavailableError(CdcError):
    """MongoDB stayed unreachable for a whole retry budget; the WAL keeps the data."""

    def __init__(self, error_class: str, attempts: int, elapsed_seconds: float):
        noun = "attempt" if attempts == 1 else "attempts"
        # A timeout or an operation the driver cancelled may be a server too busy to answer.
        busy = error_class in ("NetworkTimeout", "ExecutionTimeout", "_OperationCancelled")
        state = "did not answer in time" if busy else "is unreachable"
        super().__init__(
            f"MongoDB {state} ({error_class}) after {attempts} {noun} over"
            f" {elapsed_seconds:.1f} s; the segment stays in the WAL and will be loaded when it"
            " returns."
        )
        self.error_class = error_class
        self.attempts = attempts
        self.elapsed_seconds = elapsed_seconds


class SinkWriteError(CdcError):
    """MongoDB refused a write for a reason retrying cannot fix."""


class UnloadableRowError(SinkWriteError):
    """MongoDB refuses a row as a data error (not a transient fault): loading halts there."""


class TableNameCollisionError(SinkWriteError):
    """Two source tables were given one MongoDB collection name (``cdc_collections`` knows)."""


class LoadHaltedError(CdcError):
    """Loading stopped at a position it must not skip (a gap, a quarantined segment)."""


class LoaderBusyError(CdcError):
    """Another loader held the source's loader lock for longer than we would wait."""


class RecaptureRefusedError(CdcError):
    """The segments cannot be set aside for re-capture (the message says why and what to do)."""


class SnapshotError(CdcError):
    """The snapshot cannot go on; what it committed stays, and running it again resumes."""


class WalIdentityError(CdcError):
    """The staging folder was written by another server or configuration (``wal.identity``);
    nothing in it was changed by the refusal."""


class WalServerError(WalIdentityError, SourceHistoryError):
    """The staging folder was captured from another server, and this one does not hold all of
    its history (not a replica to fail over to)."""
