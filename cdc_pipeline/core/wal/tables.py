"""``tables.json``: every table this WAL has carried rows of, for the per-table Dagster assets.

Each committed segment's tables (its manifest's schema versions) are merged in right after the
segment is renamed into place, so the list survives retention deleting the segments. The file
is derived data: a failed write loses nothing of the WAL (the segment is committed, and its
tables are merged again by a later segment or by the rebuild from the manifests on disk, which
runs when the file is missing).

Invariants: a table, once listed, stays listed (a dropped table's mirror history is still worth
showing); ``keyed`` follows the newest schema version seen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cdc_pipeline.core.errors import CorruptSegmentError
from cdc_pipeline.core.wal.segment import Manifest, read_manifest
from cdc_pipeline.core.wal.staging import WalPaths, list_segments, read_json, write_json_atomically


@dataclass(frozen=True)
class SeenTable:
    schema: str
    table: str
    keyed: bool
    first_partition: str
    last_partition: str


def _merged(known: dict[tuple[str, str], SeenTable], manifest: Manifest) -> bool:
    changed = False
    for versions in manifest.schema_versions.values():
        if not versions:
            continue
        newest = list(versions.values())[-1]
        schema, table = str(newest["schema"]), str(newest["table"])
        keyed = bool(newest.get("primary_key"))
        before = known.get((schema, table))
        first = before.first_partition if before else manifest.partition_key
        after = SeenTable(schema, table, keyed, first, manifest.partition_key)
        if after != before:
            known[(schema, table)] = after
            changed = True
    return changed


def _read(paths: WalPaths) -> dict[tuple[str, str], SeenTable] | None:
    data = read_json(paths.tables)
    if data is None:
        return None
    fields = SeenTable.__dataclass_fields__
    tables = [
        SeenTable(**{key: entry[key] for key in fields})
        for entry in data.get("tables", [])
        if isinstance(entry, dict) and all(key in entry for key in fields)
    ]
    return {(entry.schema, entry.table): entry for entry in tables}


def _write(paths: WalPaths, known: dict[tuple[str, str], SeenTable]) -> None:
    entries = [asdict(known[key]) for key in sorted(known)]
    write_json_atomically(paths.tables, {"tables": entries})


def note_tables(paths: WalPaths, manifest: Manifest) -> None:
    """Merge a just-committed segment's tables into ``tables.json``."""
    known = _read(paths)
    if known is None:
        known = _from_manifests(paths)
    if _merged(known, manifest) or not paths.tables.exists():
        _write(paths, known)


def seen_tables(paths: WalPaths) -> list[SeenTable]:
    """Every table the WAL has carried rows of, sorted; rebuilt from the manifests on disk when
    ``tables.json`` is missing (read-only: nothing is written here)."""
    known = _read(paths)
    if known is None:
        known = _from_manifests(paths)
    return [known[key] for key in sorted(known)]


def _from_manifests(paths: WalPaths) -> dict[tuple[str, str], SeenTable]:
    known: dict[tuple[str, str], SeenTable] = {}
    for segment in list_segments(paths):
        try:
            _merged(known, read_manifest(segment))
        except CorruptSegmentError:
            continue  # quarantine's business
    return known
