"""Unit tests of core/load/row_runs.py: a run's documents joined by Arrow's kernels are, byte
for byte, the documents ``raw_documents`` assembles row by row, and a batch splits into runs and
rows without losing or reordering a row."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pyarrow as pa
import pytest
from bson.decimal128 import Decimal128
from hypothesis import example, given
from hypothesis import strategies as st

from cdc_pipeline.core.images import encode_image
from cdc_pipeline.core.load import row_runs
from cdc_pipeline.core.load.raw_documents import CdcElements, ChangeLogDocuments, RawMirror
from cdc_pipeline.core.load.row_runs import (
    RUN_OPS,
    Images,
    MirrorWrites,
    RowRun,
    change_log_documents,
    mirror_writes,
    split_batch,
)
from cdc_pipeline.core.wal.segment import IMAGES_OF_OP, ROW_SCHEMA, ROW_SCHEMA_V1, batch_rows
from cdc_pipeline_tests.core.load.segment_rows import segment_row
from cdc_pipeline_tests.core.test_images import scalars


def _row(seq: int, index: int = 0, **changes: Any) -> dict[str, Any]:
    """``segment_row`` with the images of an insert of key ``seq * 10 + index``."""
    key = seq * 10 + index
    images = {
        "pk": encode_image({"id": key}),
        "after": encode_image({"id": key, "name": f"n{key}", "amount": Decimal128("1.5")}),
    }
    return segment_row(seq, index, **(images | changes))


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


def _run_rows(
    op: str, draws: list[tuple[Any, dict[str, Any], dict[str, Any] | None]]
) -> list[dict[str, Any]]:
    """Rows of ``op`` from the draws; an update's key moves when its before image's does."""
    rows, row = [], _row(1, op=op)
    for number, (key, values, changes) in enumerate(draws):
        row = row | (changes or {"event_id": f"{row['gtid']}#{number}", "row_index": number})
        image = {"id": key} | {name: value for name, value in values.items() if name != "id"}
        before = image | {"id": number} if number % 2 else image  # odd rows: the key moved
        rows.append(
            row
            | {
                "pk": encode_image({"id": key}),
                "before": encode_image(before) if IMAGES_OF_OP[op][0] else None,
                "after": encode_image(image) if IMAGES_OF_OP[op][1] else None,
            }
        )
    return rows


_DRAWS = st.lists(
    st.tuples(_KEYS, st.dictionaries(_TEXT, scalars, max_size=3), _CHANGES),
    min_size=1,
    max_size=8,
)
_OPS = st.sampled_from(RUN_OPS)


@given(_OPS, _DRAWS)
@example(
    "insert",
    [(1, {}, None), (2, {}, {"binlog_pos": 9}), (3, {"d": Decimal128("-0")}, {"gtid": "x"})],
)
def test_a_runs_change_log_documents_are_the_assemblers(
    op: str, draws: list[tuple[Any, dict[str, Any], dict[str, Any] | None]]
) -> None:
    """Over rows of each op as a segment gives them (sharing their rows event, transaction
    and time with the row before, or not; text with NULs and non-ASCII; every int32 index),
    each document is the one ``ChangeLogDocuments`` assembles for the row."""
    rows = _run_rows(op, draws)
    run = RowRun(pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA), op)
    by_row = ChangeLogDocuments("batch-7")
    expected = [by_row(row, row["pk"], row["before"], row["after"]).raw for row in rows]
    by_run = ChangeLogDocuments("batch-7")
    images = Images.of(run)
    got = change_log_documents(run, images, by_run.table_fields, by_run.position_fields)
    assert got == expected


@given(_OPS, _DRAWS)
def test_a_runs_mirror_writes_are_raw_mirrors(
    op: str, draws: list[tuple[Any, dict[str, Any], dict[str, Any] | None]]
) -> None:
    """Each mirror document, selector and key identity is ``RawMirror``'s for the row (its
    insert, its upsert's replacement and filter, its delete's filter), the ``_cdc`` element
    asked once per transaction as the row path asks it."""
    rows = _run_rows(op, draws)
    run = RowRun(pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA), op)
    mirror = RawMirror("shop.items", b"id")
    by_row = CdcElements("batch-7")
    documents, identities, selectors, keys = [], [], [], []
    for row in rows:
        key = mirror.key_of_pk(row["pk"])
        assert key is not None
        identities.append(mirror.identity(key))
        keys.append(key)
        if op == "insert":
            document, _ = mirror.insert(key, row["after"], by_row(row))
            documents.append(document.raw)
        elif op == "update":
            document, write = mirror.upsert(key, row["after"], by_row(row))
            documents.append(document.raw)
            selectors.append(write._filter.raw)
        else:
            selectors.append(mirror.delete(key)._filter.raw)
    asked: list[str] = []
    by_run = CdcElements("batch-7")

    def cdc(row: dict[str, Any]) -> bytes:
        asked.append(row["gtid"])
        return by_run(row)

    written = mirror_writes(run, b"id", Images.of(run), cdc)
    assert written == MirrorWrites(
        identities,
        keys if op == "update" else None,
        selectors or None,
        documents or None,
    )
    starts = [n for n, row in enumerate(rows) if n == 0 or rows[n - 1]["gtid"] != row["gtid"]]
    # once per transaction, for the ops whose document carries the element
    assert asked == ([rows[n]["gtid"] for n in starts] if op != "delete" else [])


@pytest.mark.parametrize(
    "pk",
    [{"ix": 1}, {"idx": 1}, {}, {"ID": 1}],
    ids=["another name", "a longer name", "empty", "another case"],
)
def test_a_pk_that_is_not_the_keys_one_element_leaves_the_run_to_the_row_path(
    pk: dict[str, Any],
) -> None:
    rows = [_row(1), _row(1, 1, pk=encode_image(pk)), _row(1, 2)]
    run = RowRun(pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA), "insert")
    assert mirror_writes(run, b"id", Images.of(run), CdcElements("b")) is None
    assert RawMirror("shop.items", b"id").key_of_pk(encode_image(pk)) is None


_SHAPES = {
    "insert": {},
    "insert with before": {"before": encode_image({"id": 0})},
    "update": {"op": "update", "before": encode_image({"id": 0})},
    "delete": {"op": "delete", "before": encode_image({"id": 0}), "after": None},
    "delete with after": {"op": "delete", "before": encode_image({"id": 0})},
    "update without before": {"op": "update"},
    "text before": {"op": "update", "before": b"\x00\x00\x00\x00" + b'{"id": 1}'},
    "ddl": {"op": "ddl", "pk": None, "after": None, "statement": "ALTER TABLE t ADD c INT"},
    "snapshot": {"op": "snapshot"},
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
    """Every row comes out once, in order; a run is at least ``MIN_RUN`` consecutive rows of
    one op, table and version, with BSON images where the op has them and none where not, and
    no longer run could have been cut."""
    rows = []
    for shape, count in shapes:
        rows.extend(_row(len(rows) + 1) | _SHAPES[shape] for _ in range(count))
    batch = pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)
    old, row_runs.MIN_RUN = row_runs.MIN_RUN, min_run
    try:
        items = list(split_batch(batch))
    finally:
        row_runs.MIN_RUN = old
    flattened: list[dict[str, Any]] = []
    kinds = []
    for item in items:
        got = item.rows() if isinstance(item, RowRun) else [item]
        flattened.extend(got)
        kinds.extend([isinstance(item, RowRun)] * len(got))
        if isinstance(item, RowRun):
            assert len(got) >= min_run
            firsts = {(r["op"], r["source"], r["table"], r["schema_version"]) for r in got}
            assert len(firsts) == 1 and {r["op"] for r in got} == {item.op}
    assert flattened == batch_rows(batch)
    assert kinds == _runs_by_row(rows, min_run)


def _runs_by_row(rows: list[dict[str, Any]], min_run: int) -> list[bool]:
    """Whether each row belongs in a run, decided row by row: groups of consecutive rows
    alike (eligible or not, same source, table and version, a null version alike to nothing),
    a group of eligible rows at least ``min_run`` long being a run."""

    def bson(image: Any) -> bool:
        return type(image) is bytes and image[:4] != b"\x00" * 4

    run_images = {"insert": (False, True), "update": (True, True), "delete": (True, False)}

    def eligible(row: dict[str, Any]) -> bool:
        carried = run_images.get(row["op"])
        return (
            carried is not None
            and bson(row["pk"])
            and (bson(row["before"]) if carried[0] else row["before"] is None)
            and (bson(row["after"]) if carried[1] else row["after"] is None)
        )

    def alike(a: dict[str, Any], b: dict[str, Any]) -> bool:
        fields = ("op", "source", "schema", "table", "schema_version")
        return (
            eligible(a) == eligible(b)
            and all(a[name] == b[name] for name in fields)
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
    rows += [_row(2, n, op="delete", pk='{"id": 1}', before="{}", after=None) for n in range(40)]
    batch = pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA_V1)
    items = list(split_batch(batch))
    assert items == batch_rows(batch)
