"""Validate a WAL segment before anything of it is applied.

Invariants:
    * ``validate_segment`` reads the segment from disk once, in one pass, and checks its
      bytes, its rows against the manifest (checksum, counts), and every row against its
      declared schema version (the exact ordered column names of its before/after images, the
      op's images, the event id) and inside the segment's GTID range (``end_gtid -
      start_gtid``: a row outside it was already staged by another segment, and applying it
      again would replay old row images); a segment with any problem is reported, never
      partly accepted;
    * what a loader applies comes from that same read (``ValidatedSegment.rows``), so the rows
      applied are the rows validated.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.images import document_keys, has_columns
from cdc_pipeline.core.problems import CappedProblems
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.wal.segment import (
    IMAGES_OF_OP,
    Manifest,
    VerifiedSegment,
    batch_rows,
    read_verified,
    snapshot_tag,
)


@dataclass(kw_only=True)
class ValidationReport(CappedProblems):
    """The outcome of validating one segment; ``problems`` is capped (``core.problems``)."""

    partition_key: str
    rows_checked: int = 0
    versions: dict[str, list[str]] = field(default_factory=dict)
    first_gtids: dict[tuple[str, str], str] = field(default_factory=dict)

    def summary(self) -> str:
        if self.ok:
            return f"{self.partition_key}: {self.rows_checked:,} rows match their schema versions"
        return (
            f"{self.partition_key}: {self.problem_count} rows do not match their schema"
            f" version, first: {self.problems[0]}"
        )


def _check_row(
    row: Mapping[str, Any],
    manifest: Manifest,
    report: ValidationReport,
    columns_of: dict[tuple[str, str], tuple[list[str], tuple[bytes, ...]] | None],
) -> None:
    """``columns_of`` caches each (table, version)'s declared column names, as text and as
    UTF-8 (None: not in the manifest), across the rows of one segment."""
    if row["op"] == "ddl":
        if not row.get("statement"):
            report.add(f"event {row['event_id']}: DDL row without its statement")
        return
    if row["event_id"] != f"{row['gtid']}#{row['row_index']}":
        report.add(f"event {row['event_id']}: event id does not match gtid#row_index")
    table = f"{row['schema']}.{row['table']}"
    version = row["schema_version"]
    if (table, version) in columns_of:
        known = columns_of[(table, version)]
    else:
        known = _declared(manifest, report, columns_of, table, version, row["gtid"])
    if known is None:
        report.add(f"event {row['event_id']}: schema version {version} of {table} not in manifest")
        return
    columns, encoded = known
    images = IMAGES_OF_OP.get(row["op"])
    if (
        images is not None
        and (has_columns(row["before"], encoded) if images[0] else row["before"] is None)
        and (has_columns(row["after"], encoded) if images[1] else row["after"] is None)
    ):
        return  # the common case, compared without decoding; otherwise find out what differs
    before = document_keys(row["before"])
    after = document_keys(row["after"])
    if (before is not None, after is not None) != IMAGES_OF_OP.get(row["op"], (None, None)):
        report.add(f"event {row['event_id']}: op {row['op']} with the wrong row images")
    for image_name, image in (("before", before), ("after", after)):
        if image is not None and image != columns:
            report.add(
                f"event {row['event_id']}: {image_name} has columns {image} but version"
                f" {version} of {table} has {columns}"
            )


def _declared(
    manifest: Manifest,
    report: ValidationReport,
    columns_of: dict[tuple[str, str], tuple[list[str], tuple[bytes, ...]] | None],
    table: str,
    version: str,
    gtid: str,
) -> tuple[list[str], tuple[bytes, ...]] | None:
    """A (table, version)'s declared column names, as text and as UTF-8 (None: not in the
    manifest), looked up at its first row, whose GTID the report keeps; cached in
    ``columns_of``."""
    report.first_gtids[(table, version)] = gtid
    declared = manifest.schema_versions.get(table, {}).get(version)
    names = None if declared is None else [column["name"] for column in declared["columns"]]
    known = None if names is None else (names, tuple(_utf8(name) for name in names))
    columns_of[(table, version)] = known
    return known


def _utf8(name: str) -> bytes:
    """A column name as a BSON key holds it (a name no BSON key can hold never matches)."""
    return name.encode("utf-8", "surrogatepass")


def _row_groups(
    batch: pa.RecordBatch,
) -> list[tuple[list[int] | None, tuple[Any, Any, Any, Any, Any]]]:
    """The batch's rows grouped by (schema, table, schema version, op), groups in the order of
    their first rows: each group's row positions (None: every row of the batch, the common
    case) and the GTID of its first row with the four values (nulls group with nulls, as
    equal values do).

    Validation checks each group's images against one set of declared columns, so the Python
    left per row is the image check itself; a loop over every row's five values was a
    quarter of validating a segment (docs/profile.md). Arrow's grouping costs about 0.1 µs
    per row."""
    names = ["schema", "table", "schema_version", "op"]
    keyed = pa.table(
        [*(batch.column(name) for name in names), pa.array(range(batch.num_rows), pa.int64())],
        names=[*names, "position"],
    )
    groups = keyed.group_by(names, use_threads=False).aggregate([("position", "list")])
    gtids = batch.column("gtid")
    found = sorted(
        (group["position_list"][0], group["position_list"], tuple(group[name] for name in names))
        for group in groups.to_pylist()
    )
    return [
        (None if len(found) == 1 else positions, (gtids[first].as_py(), *values))
        for first, positions, values in found
    ]


def _check_snapshot_row(
    row: Mapping[str, Any], manifest: Manifest, report: ValidationReport
) -> None:
    """A snapshot segment holds op ``snapshot`` rows of its one table, tagged with its id."""
    info = manifest.snapshot or {}
    table = f"{row['schema']}.{row['table']}"
    expected_gtid = snapshot_tag(info.get("id"), table)
    if row["op"] != "snapshot" or table != info.get("table") or row["gtid"] != expected_gtid:
        report.add(
            f"event {row['event_id']}: a {row['op']} row of {table} in the snapshot segment of"
            f" {info.get('table')} (snapshot {info.get('id')})"
        )


@dataclass
class ValidatedSegment:
    """A segment read once, with what validation found; apply ``rows()`` only if ``ok``."""

    segment: VerifiedSegment
    report: ValidationReport

    @property
    def manifest(self) -> Manifest:
        return self.segment.manifest

    @property
    def ok(self) -> bool:
        return self.report.ok

    def rows(self) -> Iterator[dict[str, Any]]:
        return self.segment.rows()

    def batches(self) -> Iterator[pa.RecordBatch]:
        return self.segment.batches()

    def ddl_rows(self) -> list[dict[str, Any]]:
        return self.segment.ddl_rows()


def validate_segment(path: Path) -> ValidatedSegment:
    """Check a segment end to end; raises ``CorruptSegmentError`` if it cannot be trusted.

    One read of the file: the row checks run inside ``read_verified``'s pass, and the report
    is returned only after the bytes, checksum and counts were found to match the manifest.
    """
    checker = _SegmentChecker()
    segment = read_verified(path, checker)
    return ValidatedSegment(segment, checker.report_for(segment.manifest))


class _SegmentChecker:
    """``read_verified``'s ``each_batch``: checks rows against the manifest, builds the report."""

    def __init__(self) -> None:
        self.report: ValidationReport | None = None
        self.in_range: dict[str, bool] = {}
        self.covered: GtidSet | None = None
        self.columns_of: dict[tuple[str, str], tuple[list[str], tuple[bytes, ...]] | None] = {}

    def report_for(self, manifest: Manifest) -> ValidationReport:
        if self.report is None:
            self.covered = manifest.covered()
            self.report = self._start(manifest)
        return self.report

    @staticmethod
    def _start(manifest: Manifest) -> ValidationReport:
        report = ValidationReport(partition_key=manifest.partition_key)
        for table, versions in manifest.schema_versions.items():
            report.versions[table] = sorted(versions)
            for version, data in versions.items():
                try:
                    if TableSchema.from_dict(data).version != version:
                        report.add(
                            f"{table}: manifest version {version} does not match its columns"
                        )
                except (KeyError, ValueError, TypeError) as error:
                    report.add(f"{table}: manifest version {version} is malformed ({error})")
        return report

    def __call__(self, manifest: Manifest, batch: pa.RecordBatch) -> None:
        """Check one batch of rows: what holds for the whole batch is checked on its columns,
        each image's keys row by row; a row any of it doubts is checked again alone by
        ``_check`` (which words the problems), so the report is the one a row by row pass
        gives, problems in row order (tested against it)."""
        report = self.report_for(manifest)
        report.rows_checked += batch.num_rows
        if manifest.kind == "snapshot":
            for row in batch_rows(batch):
                self._check(manifest, row)
            return
        doubted = self._doubted(batch)
        for positions, (gtid, schema, table, version, op) in _row_groups(batch):
            if op == "ddl":
                continue  # its statement was checked on the columns
            label = f"{schema}.{table}"
            if (label, version) in self.columns_of:
                known = self.columns_of[(label, version)]
            else:
                known = _declared(manifest, report, self.columns_of, label, version, gtid)
            images = IMAGES_OF_OP.get(op)
            if known is None or images is None:
                doubted.update(range(batch.num_rows) if positions is None else positions)
                continue
            for carried, name in zip(images, ("before", "after"), strict=True):
                values = batch.column(name)
                if positions is not None:
                    values = values.take(pa.array(positions, pa.int64()))
                if carried:
                    fits = map(has_columns, values.to_pylist(), repeat(known[1]))
                    wrong = [index for index, fit in enumerate(fits) if not fit]
                elif values.null_count < len(values):
                    wrong = pc.indices_nonzero(values.is_valid()).to_pylist()
                else:
                    continue
                doubted.update(wrong if positions is None else (positions[i] for i in wrong))
        for index in sorted(doubted):
            self._check(manifest, batch_rows(batch.slice(index, 1))[0])

    def _doubted(self, batch: pa.RecordBatch) -> set[int]:
        """The rows whose GTID lies outside the segment's range, whose event id is not
        ``gtid#row_index``, or that are DDL rows without a statement."""
        column = batch.column
        outside = [gtid for gtid in column("gtid").unique().to_pylist() if not self._inside(gtid)]
        ddl = pc.equal(column("op"), "ddl")
        expected = pc.binary_join_element_wise(
            column("gtid"), pc.cast(column("row_index"), pa.string()), "#"
        )
        wrong = pc.or_kleene(
            pc.and_kleene(pc.invert(ddl), pc.not_equal(column("event_id"), expected)),
            pc.and_kleene(ddl, pc.equal(pc.fill_null(column("statement"), ""), "")),
        )
        if outside:
            wrong = pc.or_kleene(wrong, pc.is_in(column("gtid"), pa.array(outside, pa.string())))
        wrong = pc.fill_null(wrong, True)
        if not pc.any(wrong).as_py():
            return set()
        return set(pc.indices_nonzero(wrong).to_pylist())

    def _inside(self, gtid: str) -> bool:
        inside = self.in_range.get(gtid)
        if inside is None:  # once per transaction: a GTID set lookup is not cheap
            inside = self.in_range[gtid] = self.covered is not None and gtid in self.covered
        return inside

    def _check(self, manifest: Manifest, row: dict[str, Any]) -> None:
        """Every check of one row, worded; the row was counted."""
        report = self.report_for(manifest)
        gtid = row["gtid"]
        if manifest.kind == "snapshot":
            _check_snapshot_row(row, manifest, report)
        elif not self._inside(gtid):
            report.add(
                f"event {row['event_id']}: transaction {gtid} lies outside the segment's"
                f" range {manifest.start_gtid} .. {manifest.end_gtid}"
            )
        _check_row(row, manifest, report, self.columns_of)
