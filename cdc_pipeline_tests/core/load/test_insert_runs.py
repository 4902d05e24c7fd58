"""Unit tests of core/load/insert_runs.py: a run's documents joined by Arrow's kernels are, byte
for byte, the documents ``raw_documents`` assembles row by row, and a batch splits into runs and
rows without losing or reordering a row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from bson.decimal128 import Decimal128
from hypothesis import example, given
from hypothesis import strategies as st

from cdc_pipeline.core.images import encode_image
from cdc_pipeline.core.load import insert_runs
from cdc_pipeline.core.load.insert_runs import (
    InsertRun,
    change_log_documents,
    mirror_writes,
    split_batch,
)
from cdc_pipeline.core.load.raw_documents import CdcElements, ChangeLogDocuments, RawMirror
from cdc_pipeline.core.wal.segment import ROW_SCHEMA, ROW_SCHEMA_V1, batch_rows
from cdc_pipeline_tests.core.test_images import scalars

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _row(seq: int, index: int = 0, **changes: Any) -> dict[str, Any]:
    gtid = f"0-1-{seq}"
    key = seq * 10 + index
    return {
        "event_id": f"{gtid}#{index}",
        "gtid": gtid,
        "row_index": index,
        "source": "default",
        "schema": "shop",
        "table": "items",
        "op": "insert",
        "pk": encode_image({"id": key}),
        "before": None,
        "after": encode_image({"id": key, "name": f"n{key}", "amount": Decimal128("1.5")}),
        "schema_version": "v1",
        "binlog_file": "bin.000001",
        "binlog_pos": 4 + seq,
        "committed_at": START + timedelta(seconds=seq),
        "statement": None,
    } | changes


_TEXT = st.sampled_from(["0-1-5", "ü", "a\x00b", 'q"\\', ""]) | st.text(
    st.characters(exclude_categories=("Cs",)), max_size=5
)
_KEYS = st.integers(-(2**63), 2**63 - 1) | _TEXT | st.sampled_from([Decimal128("2.0"), 1.5])
# what changes from one row to the next: nothing (same rows event), or these fields
_CHANGES = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "event_id": _TEXT,
        "gtid": _TEXT,
        "row_index": st.integers(-(2**31), 2**31 - 1),
        "binlog_file": _TEXT,
        "binlog_pos": st.integers(-(2**63), 2**63 - 1),
        "committed_at": st.datetimes(timezones=st.just(UTC)),
    },
)


def _run_rows(draws: list[tuple[Any, dict[str, Any], dict[str, Any] | None]]) -> list[dict]:
    rows, row = [], _row(1)
    for number, (key, values, changes) in enumerate(draws):
        row = row | (changes or {"event_id": f"{row['gtid']}#{number}", "row_index": number})
        after = {"id": key} | {name: value for name, value in values.items() if name != "id"}
        rows.append(row | {"pk": encode_image({"id": key}), "after": encode_image(after)})
    return rows


_DRAWS = st.lists(
    st.tuples(_KEYS, st.dictionaries(_TEXT, scalars, max_size=3), _CHANGES),
    min_size=1,
    max_size=8,
)


@given(_DRAWS)
@example([(1, {}, None), (2, {}, {"binlog_pos": 9}), (3, {"d": Decimal128("-0")}, {"gtid": "x"})])
def test_a_runs_change_log_documents_are_the_assemblers(
    draws: list[tuple[Any, dict[str, Any], dict[str, Any] | None]],
) -> None:
    """Over rows as a segment gives them (sharing their rows event, transaction and time with
    the row before, or not; text with NULs and non-ASCII; every int32 index), each document
    is the one ``ChangeLogDocuments`` assembles for the row."""
    rows = _run_rows(draws)
    run = InsertRun(pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA))
    by_row = ChangeLogDocuments("batch-7")
    expected = [by_row(row, row["pk"], None, row["after"]).raw for row in rows]
    by_run = ChangeLogDocuments("batch-7")
    got = change_log_documents(
        run,
        run.batch.column("pk"),
        run.batch.column("after"),
        by_run.table_fields,
        by_run.position_fields,
    )
    assert got == expected


@given(_DRAWS)
def test_a_runs_mirror_documents_and_identities_are_raw_mirrors(
    draws: list[tuple[Any, dict[str, Any], dict[str, Any] | None]],
) -> None:
    """Each mirror document and key identity is ``RawMirror``'s for the row, the ``_cdc``
    element asked once per transaction as the row path asks it."""
    rows = _run_rows(draws)
    run = InsertRun(pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA))
    mirror = RawMirror("shop.items", b"id")
    by_row = CdcElements("batch-7")
    expected_documents, expected_identities = [], []
    for row in rows:
        key = mirror.key_of_pk(row["pk"])
        assert key is not None
        document, _ = mirror.insert(key, row["after"], by_row(row))
        expected_documents.append(document.raw)
        expected_identities.append(mirror.identity(key))
    asked: list[str] = []
    by_run = CdcElements("batch-7")

    def cdc(row: dict[str, Any]) -> bytes:
        asked.append(row["gtid"])
        return by_run(row)

    written = mirror_writes(run, b"id", run.batch.column("pk"), run.batch.column("after"), cdc)
    assert written == (expected_documents, expected_identities)
    starts = [n for n, row in enumerate(rows) if n == 0 or rows[n - 1]["gtid"] != row["gtid"]]
    assert asked == [rows[n]["gtid"] for n in starts]  # once per transaction


@pytest.mark.parametrize(
    "pk",
    [{"ix": 1}, {"idx": 1}, {}, {"ID": 1}],
    ids=["another name", "a longer name", "empty", "another case"],
)
def test_a_pk_that_is_not_the_keys_one_element_leaves_the_run_to_the_row_path(
    pk: dict[str, Any],
) -> None:
    rows = [_row(1), _row(1, 1, pk=encode_image(pk)), _row(1, 2)]
    run = InsertRun(pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA))
    pks = run.batch.column("pk")
    assert mirror_writes(run, b"id", pks, run.batch.column("after"), CdcElements("b")) is None
    assert RawMirror("shop.items", b"id").key_of_pk(encode_image(pk)) is None


_SHAPES = {
    "insert": {},
    "insert with before": {"before": encode_image({"id": 0})},
    "update": {"op": "update", "before": encode_image({"id": 0})},
    "delete": {"op": "delete", "before": encode_image({"id": 0}), "after": None},
    "ddl": {"op": "ddl", "pk": None, "after": None, "statement": "ALTER TABLE t ADD c INT"},
    "text image": {"after": b"\x00\x00\x00\x00" + b'{"id": 1}'},
    "no pk": {"pk": None},
    "other table": {"table": "lines"},
    "other version": {"schema_version": "v2"},
    "no version": {"schema_version": None},
    "other source": {"source": "eu"},
}


@given(
    st.lists(st.tuples(st.sampled_from(sorted(_SHAPES)), st.integers(1, 40)), max_size=8),
    st.integers(1, 40),
)
@example([("insert", 40), ("update", 1), ("insert", 31), ("insert", 1)], 32)
def test_a_batch_splits_into_runs_and_rows_in_order(
    shapes: list[tuple[str, int]], min_run: int
) -> None:
    """Every row comes out once, in order; a run is at least ``MIN_RUN`` consecutive inserts
    with BSON images into one table at one version, and no longer run could have been cut."""
    rows = []
    for shape, count in shapes:
        rows.extend(_row(len(rows) + 1) | _SHAPES[shape] for _ in range(count))
    batch = pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)
    old, insert_runs.MIN_RUN = insert_runs.MIN_RUN, min_run
    try:
        items = list(split_batch(batch))
    finally:
        insert_runs.MIN_RUN = old
    flattened: list[dict[str, Any]] = []
    kinds = []
    for item in items:
        got = item.rows() if isinstance(item, InsertRun) else [item]
        flattened.extend(got)
        kinds.extend([isinstance(item, InsertRun)] * len(got))
        if isinstance(item, InsertRun):
            assert len(got) >= min_run
            firsts = {(r["source"], r["table"], r["schema_version"]) for r in got}
            assert len(firsts) == 1 and {r["op"] for r in got} == {"insert"}
            assert all(r["before"] is None and r["after"][:4] != b"\x00" * 4 for r in got)
    assert flattened == batch_rows(batch)
    assert kinds == _runs_by_row(rows, min_run)


def _runs_by_row(rows: list[dict[str, Any]], min_run: int) -> list[bool]:
    """Whether each row belongs in a run, decided row by row: groups of consecutive rows
    alike (eligible or not, same source, table and version, a null version alike to nothing),
    a group of eligible rows at least ``min_run`` long being a run."""

    def eligible(row: dict[str, Any]) -> bool:
        images = (row["pk"], row["after"])
        return (
            row["op"] == "insert"
            and row["before"] is None
            and all(type(image) is bytes and image[:4] != b"\x00" * 4 for image in images)
        )

    def alike(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return (
            eligible(a) == eligible(b)
            and all(a[name] == b[name] for name in ("source", "schema", "table", "schema_version"))
            and a["schema_version"] is not None
        )

    if len(rows) < min_run:
        return [False] * len(rows)
    kinds: list[bool] = []
    group: list[dict[str, Any]] = []
    for row in [*rows, None]:
        if group and (row is None or not alike(group[-1], row)):
            kinds.extend([eligible(group[0]) and len(group) >= min_run] * len(group))
            group = []
        if row is not None:
            group.append(row)
    return kinds


def test_a_batch_of_the_first_formats_columns_has_no_runs() -> None:
    """Format 1 keeps its images as text: its rows all take the row path."""
    rows = [_row(1, n, pk='{"id": 1}', after='{"id": 1}') for n in range(40)]
    batch = pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA_V1)
    items = list(split_batch(batch))
    assert items == batch_rows(batch)
