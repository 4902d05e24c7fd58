"""``core.wal.validation``: every row is checked against its declared schema version, and each
check reports the row that breaks it (a segment whose bytes match its checksum can still hold a
row capture should never have written)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pymysql.constants import FIELD_TYPE

from cdc_pipeline.core.images import encode_image
from cdc_pipeline.core.schema import ColumnSpec, TableSchema
from cdc_pipeline.core.wal.segment import Manifest
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline.core.wal.validation import ValidationReport, validate_segment
from cdc_pipeline.core.wal.writer import SegmentWriter

ORDERS = TableSchema(
    "shop",
    "orders",
    (ColumnSpec("id", "int", FIELD_TYPE.LONG), ColumnSpec("qty", "int", FIELD_TYPE.LONG)),
    ("id",),
)


def _row(number: int, op: str = "insert", **changes: Any) -> dict[str, Any]:
    image = encode_image({"id": number, "qty": 2})
    row = {
        "event_id": f"0-1-{number}#0",
        "gtid": f"0-1-{number}",
        "row_index": 0,
        "source": "default",
        "schema": "shop",
        "table": "orders",
        "op": op,
        "pk": encode_image({"id": number}),
        "before": image if op in ("update", "delete") else None,
        "after": image if op in ("insert", "update") else None,
        "schema_version": ORDERS.version,
        "binlog_file": "bin.000001",
        "binlog_pos": 100 + number,
        "committed_at": datetime(2026, 1, 1, tzinfo=UTC),
        "statement": None,
    }
    row.update(changes)
    return row


def _manifest(rows: list[dict[str, Any]], **changes: Any) -> Manifest:
    """The manifest of a segment of ``rows`` (GTIDs 0-1-1 to 0-1-9) of the one table."""
    return Manifest(
        source="default",
        sequence=1,
        flavor="mariadb",
        start_gtid="",
        end_gtid="0-1-9",
        start_binlog_file="bin.000001",
        start_binlog_pos=4,
        end_binlog_file="bin.000001",
        end_binlog_pos=900,
        row_count=sum(row["op"] != "ddl" for row in rows),
        ddl_count=sum(row["op"] == "ddl" for row in rows),
        schema_versions={"shop.orders": {ORDERS.version: ORDERS.to_dict()}},
        **changes,
    )


def _validated(tmp_path: Path, rows: list[dict[str, Any]]) -> ValidationReport:
    paths = WalPaths(tmp_path, "default")
    paths.ensure()
    writer = SegmentWriter(paths, 1)
    writer.append(rows)
    report = validate_segment(writer.commit(_manifest(rows))).report
    assert report.rows_checked == len(rows)
    return report


GOOD = [_row(1), _row(2, "update"), _row(3, "delete"), _row(4)]


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (_row(5, event_id="0-1-5#1"), "event 0-1-5#1: event id does not match gtid#row_index"),
        (
            _row(5, schema_version="v0"),
            "event 0-1-5#0: schema version v0 of shop.orders not in manifest",
        ),
        (
            _row(5, after=encode_image({"qty": 2, "id": 5})),
            "event 0-1-5#0: after has columns ['qty', 'id'] but version",
        ),
        (
            _row(5, "update", before=encode_image({"id": 5})),
            "event 0-1-5#0: before has columns ['id'] but version",
        ),
        (
            _row(5, "delete", after=encode_image({"id": 5, "qty": 1})),
            "event 0-1-5#0: op delete with the wrong row images",
        ),
        (_row(5, "insert", after=None), "event 0-1-5#0: op insert with the wrong row images"),
        (
            _row(5, "insert", before=_row(5)["after"]),
            "event 0-1-5#0: op insert with the wrong row images",
        ),
        (  # an op capture never writes, whatever its images
            _row(5, "upsert", before=_row(5, "update")["before"], after=_row(5)["after"]),
            "event 0-1-5#0: op upsert with the wrong row images",
        ),
        (_row(12), "event 0-1-12#0: transaction 0-1-12 lies outside the segment's range  .. 0-1-9"),
        (_row(5, "ddl", before=None, after=None), "event 0-1-5#0: DDL row without its statement"),
    ],
)
def test_each_row_check_names_the_row_that_breaks_it(
    tmp_path: Path, bad: dict[str, Any], problem: str
) -> None:
    """The bad row is checked after rows of the same version passed (the per-segment caches
    are warm) and before more of them; only it is reported."""
    problems = _validated(tmp_path, [*GOOD[:2], bad, *GOOD[2:]]).problems
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_a_segment_of_good_rows_has_no_problem(tmp_path: Path) -> None:
    report = _validated(tmp_path, [*GOOD, _row(9, "ddl", statement="ALTER TABLE t ADD c INT")])
    assert report.problems == []
    # where each schema version was first seen: what cdc_schema_versions records
    assert report.first_gtids == {("shop.orders", ORDERS.version): "0-1-1"}


_VARIANTS = {
    "good": lambda n: _row(n),
    "update": lambda n: _row(n, "update"),
    "delete": lambda n: _row(n, "delete"),
    "event id": lambda n: _row(n, event_id=f"0-1-{n}#7"),
    "no event id": lambda n: _row(n, event_id=None),
    "unknown version": lambda n: _row(n, schema_version="v0"),
    "no version": lambda n: _row(n, schema_version=None),
    "other table": lambda n: _row(n, table="items"),
    "no table": lambda n: _row(n, table=None),
    "columns": lambda n: _row(n, after=encode_image({"qty": 2, "id": n})),
    "text image": lambda n: _row(n, after=b"\x00\x00\x00\x00" + b'{"id": 1, "qty": 2}'),
    "delete with after": lambda n: _row(n, "delete", after=_row(n)["after"]),
    "insert without after": lambda n: _row(n, after=None),
    "unknown op": lambda n: _row(n, "upsert", before=_row(n)["after"], after=_row(n)["after"]),
    "ddl": lambda n: _row(n, "ddl", before=None, after=None, statement="DROP TABLE t"),
    "ddl without statement": lambda n: _row(n, "ddl", before=None, after=None),
    "ddl with empty statement": lambda n: _row(n, "ddl", before=None, after=None, statement=""),
}


@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(_VARIANTS)), st.integers(1, 12)),
        max_size=30,
    ),
    st.integers(1, 8),
    st.booleans(),
)
@example([("good", 3), ("event id", 12), ("ddl without statement", 2), ("columns", 3)], 2, False)
def test_checking_a_batch_reports_what_checking_row_by_row_reports(
    draws: list[tuple[str, int]], batch_size: int, snapshot: bool
) -> None:
    """Validation checks a batch on its columns and doubts rows, which it checks again alone:
    the report (problems in order, first GTIDs, count) is the one a row by row pass gives,
    over rows of every kind of damage, GTIDs inside and outside the range, several batches,
    and snapshot segments."""
    from cdc_pipeline.core.wal.segment import ROW_SCHEMA
    from cdc_pipeline.core.wal.validation import _SegmentChecker
    from cdc_pipeline.core.wal.writer import row_values, values_table

    rows = [_VARIANTS[name](number) for name, number in draws]
    manifest = _manifest(
        rows,
        kind="snapshot" if snapshot else "stream",
        snapshot={"id": "s1", "table": "shop.orders", "keyed": True} if snapshot else None,
    )
    table = values_table([row_values(row) for row in rows], ROW_SCHEMA)
    by_batch = _SegmentChecker()
    rechecked: list[str] = []
    check_alone = by_batch._check
    by_batch._check = lambda manifest, row: (  # type: ignore[method-assign]
        rechecked.append(row["event_id"]),
        check_alone(manifest, row),
    )
    for batch in table.to_batches(max_chunksize=batch_size):
        by_batch(manifest, batch)
    by_row = _SegmentChecker()
    troubled = []  # the rows a row by row pass finds a problem in, or cannot read as bytes
    for row in table.to_pylist():
        report = by_row.report_for(manifest)
        report.rows_checked += 1
        before = report.problem_count
        by_row._check(manifest, row)
        if report.problem_count > before or (row["after"] or b"")[:4] == b"\x00" * 4:
            troubled.append(row["event_id"])
    got, expected = by_batch.report_for(manifest), by_row.report_for(manifest)
    assert got.problems == expected.problems
    assert got.problem_count == expected.problem_count
    assert got.first_gtids == expected.first_gtids
    assert got.rows_checked == expected.rows_checked == len(rows)
    # and only the rows that need it are checked again alone (snapshot rows all are)
    assert rechecked == (table.column("event_id").to_pylist() if snapshot else troubled)
