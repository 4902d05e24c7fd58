"""Which tables did a set of transactions touch? Answered from the WAL's segments.

Reconciliation compares a table only when no transaction between the checkpoint and the
source state it reads touched that table; the WAL is the only record of what those
transactions were. Each segment covers the transactions ``end_gtid - start_gtid``; its manifest
counts row events per ``schema.table`` and its DDL rows name their targets.

Invariants (every answer errs towards "touched"):
    * a segment counts as touching a table if it covers *any* of the transactions asked about,
      even if the change to that table came from another of its transactions;
    * a DDL touches every target ``classify_ddl`` finds, both names of a RENAME, and the bare
      table name in every schema (a DDL row keeps its first target's schema, not the session's
      default one, so an unqualified name may belong to another schema); a DDL with no table
      target touches its row's whole schema and any schema named by ``DATABASE``/``SCHEMA``;
    * names compare case-insensitively;
    * transactions that no segment covers (a hole, a quarantined segment, or not captured yet)
      are returned as ``uncovered``: the caller must not decide anything then.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from cdc_pipeline.core.errors import CorruptSegmentError
from cdc_pipeline.core.gtid import Flavor, GtidSet
from cdc_pipeline.core.mysql.ddl import classify_ddl, session_schema
from cdc_pipeline.core.wal.segment import read_manifest

_DATABASE = re.compile(
    r"\b(?:DATABASE|SCHEMA)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(`(?:[^`]|``)+`|[\w$]+)", re.I
)


@dataclass(frozen=True)
class SegmentSpan:
    """What one segment covers and which names it touches (all lower-case)."""

    sequence: int
    covers: GtidSet
    tables: frozenset[str] = frozenset()
    """``schema.table`` of row events and DDL targets."""
    table_names: frozenset[str] = frozenset()
    """Bare table names of DDL targets, touched in every schema."""
    schemas: frozenset[str] = frozenset()
    """Schemas touched as a whole (DDL without a table target)."""


@dataclass(frozen=True)
class Touched:
    """The union of what the segments covering some transactions touch."""

    tables: frozenset[str]
    table_names: frozenset[str]
    schemas: frozenset[str]
    uncovered: GtidSet

    @property
    def known(self) -> bool:
        """Whether every transaction asked about lies in some segment."""
        return not self.uncovered

    def touches(self, schema: str, table: str) -> bool:
        schema, table = schema.lower(), table.lower()
        return (
            f"{schema}.{table}" in self.tables
            or table in self.table_names
            or schema in self.schemas
        )


def touched_by(spans: Iterable[SegmentSpan], changed: GtidSet) -> Touched:
    """What the transactions ``changed`` touched, as far as ``spans`` tell."""
    tables: set[str] = set()
    names: set[str] = set()
    schemas: set[str] = set()
    uncovered = changed
    for span in spans:
        if not changed or not (span.covers & changed):
            continue
        tables |= span.tables
        names |= span.table_names
        schemas |= span.schemas
        uncovered = uncovered - span.covers
    return Touched(frozenset(tables), frozenset(names), frozenset(schemas), uncovered)


def ddl_touches(statement: str, schema: str) -> tuple[set[str], set[str], set[str]]:
    """``(schema.table names, bare table names, whole schemas)`` one DDL statement touches."""
    classified = classify_ddl(statement, schema)
    targets = set(classified.targets)
    targets.update(new for _, new in classified.renames)
    if classified.kind == "drop_database":
        return set(), set(), {s.lower() for s, _ in classified.targets} | {schema.lower()}
    if not targets:
        named = {_unquote(match.group(1)) for match in _DATABASE.finditer(statement)}
        return set(), set(), {name.lower() for name in named | {schema}}
    return (
        {f"{s}.{t}".lower() for s, t in targets},
        {t.lower() for _, t in targets},
        set(),
    )


def _unquote(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def span_of(path: Path, flavor: Flavor) -> SegmentSpan:
    """Read a segment's span: its manifest, plus its DDL rows when it has any."""
    manifest = read_manifest(path)
    covers = GtidSet.parse(manifest.end_gtid, flavor) - GtidSet.parse(manifest.start_gtid, flavor)
    tables: set[str] = set()
    names: set[str] = set()
    schemas: set[str] = set()
    for name in manifest.counts:
        if name.endswith(".*"):
            schemas.add(name[:-2].lower())
        else:
            tables.add(name.lower())
    if manifest.ddl_count:
        for schema, statement in _ddl_rows(path):
            more_tables, more_names, more_schemas = ddl_touches(statement, schema)
            tables |= more_tables
            names |= more_names
            schemas |= more_schemas
    return SegmentSpan(
        manifest.sequence, covers, frozenset(tables), frozenset(names), frozenset(schemas)
    )


def _ddl_rows(path: Path) -> list[tuple[str, str]]:
    try:
        table = pq.read_table(
            path, columns=["schema", "statement", "after"], filters=[("op", "=", "ddl")]
        )
    except Exception as error:  # any failure to decode the bytes means they are damaged
        raise CorruptSegmentError(
            f"segment {path.name} cannot be read ({type(error).__name__}); move it to the"
            " quarantine folder and re-capture it from the binlog (see docs/operations.md)."
        ) from None
    rows = table.to_pylist()
    return [(session_schema(row), str(row["statement"] or "")) for row in rows]
