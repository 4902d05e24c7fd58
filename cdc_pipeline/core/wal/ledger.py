"""What the WAL on disk knows beyond its segments: the retired ledger and where the WAL ends.

``retired.json`` (``RetiredLedger``) records what retention deleted: the end of it (GTID state
and binlog position) and the GTID chain of the retired segments, so capture can resume and
``gtid_continuity`` can check the chain after the files are gone.

Invariants:
    * the ledger keeps the WAL's end, so ``wal_end`` can resume from it if no segment is left,
      and the chain: the last ``CHAIN_LIMIT`` links verbatim, older ones as a summary (first
      start, breaks);
    * ``wal_end`` reads only the disk: the last segment's manifest, else the ledger's end, else
      ``origin.json`` (never a cursor in memory);
    * ``applied_on_disk`` never exceeds MongoDB's checkpoint as last seen by this host: it is the
      larger of the loader's note and what retention retired (retention deletes only loaded
      segments).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cdc_pipeline.core.errors import StagingError
from cdc_pipeline.core.gtid import GtidSet, as_flavor
from cdc_pipeline.core.wal.segment import Manifest, read_manifest
from cdc_pipeline.core.wal.staging import (
    WalPaths,
    list_segments,
    noted_applied,
    quarantine_sentence,
    quarantined_after,
    read_origin,
    sequence_of,
)

LEDGER_FORMAT = 1

CHAIN_LIMIT = 100
"""Links of the retired chain kept verbatim; older ones survive as first start + breaks."""

BREAKS_LIMIT = 20


@dataclass(frozen=True)
class ChainLink:
    """One retired segment's place in the GTID chain."""

    sequence: int
    start_gtid: str
    end_gtid: str


@dataclass
class RetiredLedger:
    """``retired.json``: the end of what was retired, and the evidence that it chained.

    ``breaks`` lists (capped at ``BREAKS_LIMIT``, counted in ``break_count``) every retired
    segment whose sequence or ``start_gtid`` did not follow its predecessor (the first one is
    compared with ``origin.json``), so a continuity check still sees them after the files are gone.
    """

    source: str
    flavor: str
    through_sequence: int
    end_gtid: str
    end_binlog_file: str
    end_binlog_pos: int
    server_uuid: str
    first_sequence: int
    first_start_gtid: str
    retired_count: int = 0
    retired_rows: int = 0
    """Row events of the retired segments (counted since this field exists): with the segments
    on disk, the totals ``cdc-pipeline metrics`` exports."""
    break_count: int = 0
    breaks: list[dict[str, Any]] = field(default_factory=list)
    chain: list[ChainLink] = field(default_factory=list)
    updated_at: str = ""
    format_version: int = LEDGER_FORMAT

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["chain"] = [[link.sequence, link.start_gtid, link.end_gtid] for link in self.chain]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetiredLedger:
        values = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        values["chain"] = [ChainLink(int(s), str(a), str(b)) for s, a, b in data.get("chain", [])]
        return cls(**values)

    def add(self, manifest: Manifest, origin_gtid: str | None = None) -> None:
        """Append a retired segment; it becomes the ledger's end. A link that does not follow
        its predecessor (or, for the first, ``origin_gtid`` when known) is noted in ``breaks``."""
        if self.retired_count:
            previous: int | None = self.through_sequence
            expected: str | None = self.end_gtid
            chains = manifest.sequence == self.through_sequence + 1
        else:
            previous, expected, chains = None, origin_gtid, True
        if not chains or (expected is not None and manifest.start_gtid != expected):
            self.break_count += 1
            if len(self.breaks) < BREAKS_LIMIT:
                self.breaks.append(
                    {
                        "sequence": manifest.sequence,
                        "start_gtid": manifest.start_gtid,
                        "expected_start_gtid": expected,
                        "previous_sequence": previous,
                    }
                )
        link = ChainLink(manifest.sequence, manifest.start_gtid, manifest.end_gtid)
        self.chain = [*self.chain, link][-CHAIN_LIMIT:]
        self.retired_count += 1
        self.retired_rows += manifest.row_count
        self.through_sequence = manifest.sequence
        self.end_gtid = manifest.end_gtid
        self.end_binlog_file = manifest.end_binlog_file
        self.end_binlog_pos = manifest.end_binlog_pos
        self.server_uuid = manifest.server_uuid or self.server_uuid


def read_ledger(paths: WalPaths) -> RetiredLedger | None:
    """The retired ledger, or None when nothing was ever retired."""
    path = paths.ledger
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return RetiredLedger.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError):
        raise StagingError(
            f"{path} is damaged; it records which WAL segments were deleted: restore it from a"
            " backup or re-baseline (docs/operations.md)."
        ) from None


@dataclass
class WalEnd:
    """Where the WAL ends: the state the next segment starts from."""

    sequence: int  # of the last segment, 0 when none
    gtid: GtidSet
    binlog_file: str
    binlog_pos: int


def wal_end(paths: WalPaths) -> WalEnd | None:
    """The end of the WAL from disk: the last segment's manifest, else the end recorded in
    ``retired.json`` (every segment retired or moved to quarantine), else ``origin.json``."""
    segments = list_segments(paths)
    ledger = None if segments else read_ledger(paths)
    origin = None if segments or ledger else read_origin(paths)
    if segments:
        manifest = read_manifest(segments[-1])
        end = (manifest.sequence, manifest.end_gtid, manifest.flavor)
        position = (manifest.end_binlog_file, manifest.end_binlog_pos)
    elif ledger is not None:
        end = (ledger.through_sequence, ledger.end_gtid, ledger.flavor)
        position = (ledger.end_binlog_file, ledger.end_binlog_pos)
    elif origin is not None:
        end = (0, origin.gtid, origin.flavor)
        position = (origin.binlog_file, origin.binlog_pos)
    else:
        return None
    sequence, gtid, flavor = end
    return WalEnd(sequence, GtidSet.parse(gtid, as_flavor(flavor)), *position)


def applied_on_disk(paths: WalPaths) -> int:
    """The last segment known applied on this host: the loader's note, or what was retired
    (an unreadable ledger counts as nothing retired here; ``read_ledger`` reports it)."""
    try:
        ledger = read_ledger(paths)
    except StagingError:
        ledger = None
    return max(noted_applied(paths), ledger.through_sequence if ledger else 0)


def pending_count(paths: WalPaths) -> int:
    """Segments on disk after the last one known applied on this host (``applied_on_disk``)."""
    applied = applied_on_disk(paths)
    return sum(1 for path in list_segments(paths) if sequence_of(path) > applied)


def quarantine_halt(paths: WalPaths) -> str | None:
    """The sentence for the quarantined segment loading halts at, or None when there is none."""
    quarantined = quarantined_after(paths, applied_on_disk(paths))
    return quarantine_sentence(paths, quarantined[0]) if quarantined else None
