"""``core.reconcile_*`` without servers: the row comparison, which tables a GTID range touched,
and the report."""

from __future__ import annotations

import datetime as dt
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from cdc_pipeline.core.audit.reconcile.compare import (
    Comparison,
    TableComparison,
    differing_fields,
    expected_document,
)
from cdc_pipeline.core.audit.reconcile.report import ReconcileReport, StrayMirror, TableResult
from cdc_pipeline.core.audit.reconcile.touched import SegmentSpan, ddl_touches, touched_by
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.load.sink import MongoSink
from cdc_pipeline.core.mysql.catalog import SourceTable

UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"


def mysql(text: str) -> GtidSet:
    return GtidSet.parse(text, "mysql")


COMPOSITE = SourceTable(
    schema="shop",
    table="orders",
    columns=("region", "id", "qty", "price", "_id"),
    primary_key=("region", "id"),
    column_types={"region": "char(2)", "id": "bigint", "qty": "int", "price": "decimal(9,2)"},
)


def rows() -> list[dict[str, Any]]:
    return [
        {"region": "EU", "id": Int64(n), "qty": n, "price": Decimal128(f"{n}.50"), "_id": n}
        for n in range(1, 6)
    ]


def compare(
    source: list[dict[str, Any]],
    mirror: list[dict[str, Any]],
    exact: bool = True,
    cap: int = 20,
) -> Comparison:
    comparison = TableComparison(exact, cap)
    for document in source:
        comparison.add_expected(document)
    for document in mirror:
        comparison.add_mirror(document)
    if comparison.needs_second_pass:
        return comparison.resolve(source)
    return comparison.finish()


def expected_rows(stored: Any = lambda value: value) -> list[dict[str, Any]]:
    return [expected_document(COMPOSITE, row, stored) for row in rows()]


def mirrored(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As the loader writes them: plus ``_cdc``, and fields in another order."""
    out = []
    for document in documents:
        reordered = dict(reversed(list(document.items())))
        reordered["_cdc"] = {"gtid": f"{UUID}:1", "batch": "default-000000000001"}
        out.append(reordered)
    return out


def test_expected_document_is_what_the_loader_writes() -> None:
    document = expected_rows()[0]
    assert list(document) == ["_id", "region", "id", "qty", "price", "_src_id"]
    assert document["_id"] == {"region": "EU", "id": 1}
    stand_in = MongoSink(database=None, decimals_as_strings=True)  # type: ignore[arg-type]
    assert expected_document(COMPOSITE, rows()[0], stand_in.stored)["price"] == "1.50"


def test_equal_sides_compare_equal_whatever_the_field_order_and_cdc_metadata() -> None:
    result = compare(expected_rows(), mirrored(expected_rows()))
    assert result.equal
    assert (result.source_rows, result.mirror_rows) == (5, 5)


def test_missing_extra_and_differing_keys_are_named_with_the_fields_that_differ() -> None:
    mirror = mirrored(expected_rows())
    mirror[0]["qty"] = 100  # key 1 differs in qty
    mirror[3]["price"] = Decimal128("4.51")  # key 4 differs in price ...
    del mirror[3]["_src_id"]  # ... and lacks a field
    mirror[3]["surprise"] = 1  # ... and has one too many
    del mirror[2]  # key 3 missing
    mirror.append({"_id": {"region": "US", "id": Int64(9)}, "qty": 1, "_cdc": {}})
    result = compare(expected_rows(), mirror)
    assert (result.missing, result.extra, result.differing) == (1, 1, 2)
    assert result.missing_keys == ['{"region": "EU", "id": 3}']
    assert result.extra_keys == ['{"region": "US", "id": 9}']
    assert result.differing_keys == [
        ('{"region": "EU", "id": 1}', ["qty"]),
        ('{"region": "EU", "id": 4}', ["price", "_src_id", "surprise"]),
    ]
    assert not result.equal


def test_values_are_type_strict_except_integer_width_on_the_stand_in() -> None:
    source = [{"_id": 1, "a": 1, "b": 2.0, "c": "3", "d": dt.datetime(2024, 1, 1)}]
    widened = [{"_id": Int64(1), "a": Int64(1), "b": 2.0, "c": "3", "d": dt.datetime(2024, 1, 1)}]
    assert compare(source, widened, exact=False).equal
    strict = compare(source, widened, exact=True)
    assert (strict.missing, strict.extra) == (1, 1)  # an int64 key is another key
    assert differing_fields(source[0], {**source[0], "a": Int64(1)}, True) == ["a"]
    for wrong in ({"a": 1.0}, {"b": 2}, {"c": 3}, {"d": dt.datetime(2024, 1, 2)}):
        assert compare(source, [{**source[0], **wrong}], exact=False).differing == 1, wrong


def test_keys_are_capped_but_counts_are_not() -> None:
    source = [{"_id": n, "v": n} for n in range(100)]
    mirror = [{"_id": n, "v": -n} for n in range(50, 100)] + [{"_id": -n} for n in range(1, 41)]
    result = compare(source, mirror, cap=3)
    assert (result.missing, result.extra, result.differing) == (50, 40, 50)
    assert result.missing_keys == ["0", "1", "2"]  # in source order
    assert result.extra_keys == ["-1", "-2", "-3"]
    assert [key for key, _ in result.differing_keys] == ["50", "51", "52"]


def test_the_second_pass_is_only_needed_for_missing_or_differing_rows() -> None:
    comparison = TableComparison()
    comparison.add_expected({"_id": 1, "v": 1})
    comparison.add_mirror({"_id": 1, "v": 1})
    comparison.add_mirror({"_id": 2, "v": 1})
    assert not comparison.needs_second_pass
    assert comparison.finish().extra_keys == ["2"]


# --- which tables a GTID range touched -----------------------------------------------------------


def span(sequence: int, first: int, last: int, *tables: str, **ddl: Any) -> SegmentSpan:
    return SegmentSpan(
        sequence,
        mysql(f"{UUID}:{first}-{last}"),
        frozenset(tables),
        frozenset(ddl.get("names", ())),
        frozenset(ddl.get("schemas", ())),
    )


SPANS = [
    span(1, 1, 10, "shop.orders"),
    span(2, 11, 20, "shop.items"),
    span(3, 21, 30, "shop.t", names={"t"}, schemas={"hr"}),
]


def test_only_segments_covering_the_changed_transactions_count() -> None:
    touched = touched_by(SPANS, mysql(f"{UUID}:15-16"))
    assert touched.known
    assert touched.touches("shop", "items")
    assert touched.touches("SHOP", "Items")  # case-insensitive: errs towards touched
    assert not touched.touches("shop", "orders")
    assert not touched.touches("hr", "people")


def test_ddl_names_touch_bare_table_names_and_whole_schemas() -> None:
    touched = touched_by(SPANS, mysql(f"{UUID}:30"))
    assert touched.touches("other", "t")  # an unqualified DDL name may be in another schema
    assert touched.touches("hr", "anything")
    assert not touched.touches("shop", "orders")


def test_transactions_no_segment_covers_are_reported_uncovered() -> None:
    touched = touched_by(SPANS[:1] + SPANS[2:], mysql(f"{UUID}:5-25"))
    assert not touched.known
    assert touched.uncovered == mysql(f"{UUID}:11-20")
    beyond = touched_by(SPANS, mysql(f"{UUID}:29-31"))
    assert beyond.uncovered == mysql(f"{UUID}:31")
    assert touched_by(SPANS, mysql("")).known  # nothing changed: nothing to know


def test_mariadb_ranges_work_the_same_way() -> None:
    spans = [
        SegmentSpan(1, GtidSet.parse("0-1-11:20", "mariadb"), frozenset({"db.a"})),
        SegmentSpan(2, GtidSet.parse("0-1-21:30", "mariadb"), frozenset({"db.b"})),
    ]
    changed = GtidSet.parse("0-1-25", "mariadb") - GtidSet.parse("0-1-20", "mariadb")
    touched = touched_by(spans, changed)
    assert touched.known and touched.touches("db", "b") and not touched.touches("db", "a")


def test_ddl_targets_include_both_names_of_a_rename_and_whole_schemas_otherwise() -> None:
    tables, names, schemas = ddl_touches("RENAME TABLE a TO b, shop.c TO arch.c", "shop")
    assert tables == {"shop.a", "shop.b", "shop.c", "arch.c"}
    assert names == {"a", "b", "c"}
    assert schemas == set()
    assert ddl_touches("ALTER TABLE `Shop`.`T` ADD COLUMN x INT", "db")[0] == {"shop.t"}
    assert ddl_touches("DROP DATABASE IF EXISTS `old_shop`", "db") == (
        set(),
        set(),
        {"old_shop", "db"},
    )
    assert ddl_touches("CREATE INDEX i ON t (x)", "shop")[2] == {"shop"}


# --- the report --------------------------------------------------------------------------------


def test_the_report_passes_only_when_nothing_differs_and_is_complete_only_when_none_skipped() -> (
    None
):
    report = ReconcileReport()
    report.add_table(TableResult(name="shop.a", state="equal", source_rows=1234, mirror_rows=1234))
    assert report.passed and report.complete and report.ok
    assert report.lines()[0] == "shop.a: equal 1,234 rows"

    report.add_table(
        TableResult(name="shop.b", state="skipped", reason="changed after the checkpoint")
    )
    assert report.passed and not report.complete

    different = compare([{"_id": 1, "v": 1}, {"_id": 2, "v": 2}], [{"_id": 1, "v": 5}])
    report.add_table(TableResult.compared("shop.c", different))
    assert not report.passed
    line = report.tables[-1].line()
    assert line.startswith("shop.c: DIFFERENT missing 1 extra 0 differing 1")
    assert "missing 2; differing 1 (v)" in line

    report.add_stray(StrayMirror("shop.gone", "shop", "gone", 3))
    assert len(report.strays) == 1
    data = report.to_dict()
    assert data["passed"] is False and data["complete"] is False
    assert data["tables"][2]["differing_keys"] == [{"key": "1", "fields": ["v"]}]
    assert data["strays"] == [
        {"collection": "shop.gone", "schema": "shop", "table": "gone", "documents": 3}
    ]
    assert report.problem_count == 3  # skipped, different, stray
    assert "1 equal, 1 different, 1 skipped, 1 stray mirror" in report.lines()[-1]


def test_no_value_reaches_the_report() -> None:
    secret = "4111-1111-1111-1111"
    different = compare([{"_id": 1, "card": secret}], [{"_id": 1, "card": secret + "9"}])
    result = TableResult.compared("shop.cards", different)
    assert secret not in result.line() and secret not in str(result.to_dict())
