"""Does the WAL chain without holes or overlaps, and does the checkpoint cover exactly it?

The logic of the ``gtid_continuity`` check (its Dagster wiring is the checks issue's work).
Pure: it takes the chain as ``(sequence, start_gtid, end_gtid)`` links, from the manifests on
disk and the retired ledger, plus where capture began and what MongoDB says it applied.

Invariants: a healthy chain starts at the origin, each link starts exactly where the previous
one ended, sequence numbers have no hole, and the checkpoint equals the end of the link it names;
every problem found is reported with the GTIDs it concerns (capped), never only counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cdc_pipeline.core.gtid import Flavor, GtidSet, as_flavor
from cdc_pipeline.core.problems import CappedProblems
from cdc_pipeline.core.wal.ledger import read_ledger
from cdc_pipeline.core.wal.segment import read_manifest
from cdc_pipeline.core.wal.staging import WalPaths, list_segments, read_origin


@dataclass(frozen=True)
class Link:
    sequence: int
    start_gtid: str
    end_gtid: str


@dataclass
class ContinuityReport(CappedProblems):
    links: int = 0
    missing: list[str] = field(default_factory=list)
    overlapping: list[str] = field(default_factory=list)


def check_chain(
    links: Sequence[Link],
    flavor: Flavor,
    origin_gtid: str | None,
    checkpoint_sequence: int | None = None,
    checkpoint_gtid: str | None = None,
) -> ContinuityReport:
    """Check the links (in sequence order) and the checkpoint against them."""
    report = ContinuityReport(links=len(links))
    previous_end = GtidSet.parse(origin_gtid, flavor) if origin_gtid is not None else None
    previous_sequence: int | None = None
    ends: dict[int, GtidSet] = {}
    for link in links:
        start = GtidSet.parse(link.start_gtid, flavor)
        end = GtidSet.parse(link.end_gtid, flavor)
        ends[link.sequence] = end
        if previous_sequence is not None and link.sequence != previous_sequence + 1:
            report.add(
                f"segments {previous_sequence + 1}..{link.sequence - 1} are missing from the WAL"
            )
        if previous_end is not None and start != previous_end:
            hole = start - previous_end
            overlap = previous_end - start
            if hole:
                report.missing.append(hole.describe())
                report.add(f"segment {link.sequence} starts after a hole: {hole.describe()}")
            if overlap:
                report.overlapping.append(overlap.describe())
                report.add(
                    f"segment {link.sequence} starts before the previous end: it would"
                    f" capture {overlap.describe()} again"
                )
        if not end.issuperset(start):
            report.add(f"segment {link.sequence} ends before it starts")
        previous_end, previous_sequence = end, link.sequence
    if checkpoint_sequence is not None and checkpoint_gtid is not None:
        applied = GtidSet.parse(checkpoint_gtid, flavor)
        expected = ends.get(checkpoint_sequence)
        if expected is None:
            report.add(f"the checkpoint names segment {checkpoint_sequence}, which the WAL lacks")
        elif applied != expected:
            report.add(
                f"the checkpoint at segment {checkpoint_sequence} holds {applied.describe()} but"
                f" the segment ends at {expected.describe()}"
            )
    return report


def check_with_checkpoint(
    links: Sequence[Link],
    flavor: Flavor,
    origin_gtid: str | None,
    checkpoint_sequence: int | None,
    checkpoint_gtid: str | None,
) -> ContinuityReport:
    """``check_chain``, with the checkpoint compared only when it names a segment the chain
    still lists (one retired earlier was compared when it was retired)."""
    known = {link.sequence for link in links}
    verifiable = checkpoint_sequence is not None and checkpoint_sequence in known
    return check_chain(
        links,
        flavor,
        origin_gtid,
        checkpoint_sequence if verifiable else None,
        checkpoint_gtid if verifiable else None,
    )


def gather_chain(paths: WalPaths) -> tuple[list[Link], str | None, Flavor | None, list[str]]:
    """The chain as the WAL knows it: retired links from ``retired.json``, then the manifests
    on disk; the origin to start from (None when retired links beyond the ledger's memory were
    already checked at retirement); and notes about breaks the ledger recorded."""
    links: dict[int, Link] = {}
    notes: list[str] = []
    origin: str | None = None
    flavor: str | None = None
    found = read_origin(paths)
    if found is not None:
        origin, flavor = found.gtid, found.flavor
    ledger = read_ledger(paths)
    if ledger is not None:
        flavor = flavor or ledger.flavor
        for link in ledger.chain:
            links[link.sequence] = Link(link.sequence, link.start_gtid, link.end_gtid)
        if ledger.break_count:
            notes.append(
                f"{ledger.break_count} retired segments did not chain when they were retired"
                f" (first: {ledger.breaks[0] if ledger.breaks else '?'})"
            )
        if ledger.retired_count > len(ledger.chain):
            origin = None  # the oldest links are summarised; they were checked when retired
    for path in list_segments(paths):
        manifest = read_manifest(path)
        links[manifest.sequence] = Link(manifest.sequence, manifest.start_gtid, manifest.end_gtid)
        flavor = flavor or manifest.flavor
    resolved = as_flavor(flavor) if flavor is not None else None
    return [links[key] for key in sorted(links)], origin, resolved, notes
