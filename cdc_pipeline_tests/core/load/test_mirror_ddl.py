"""Which column changes of a batch may skip their mirror rebuild (pure logic)."""

from __future__ import annotations

from cdc_pipeline.core.load.mirror_ddl import rebuild_plan, superseded_rebuilds


def _rows(*statements: str) -> list[dict[str, str]]:
    return [
        {"gtid": f"0-1-{number}", "schema": "shop", "statement": statement}
        for number, statement in enumerate(statements, start=1)
    ]


def test_only_the_last_column_change_of_a_table_rebuilds() -> None:
    rows = _rows(
        "ALTER TABLE t MODIFY COLUMN a INT",
        "ALTER TABLE other.t MODIFY COLUMN a INT",  # another schema's t
        "ALTER TABLE `shop`.`t` CHANGE COLUMN a b INT",
        "ALTER TABLE t ADD INDEX (b)",  # names t: keeps the rebuild before it
        "ALTER TABLE t MODIFY COLUMN b BIGINT",
        "ALTER TABLE t MODIFY COLUMN b INT",
    )
    assert superseded_rebuilds(rows) == {"0-1-1", "0-1-5"}


def test_a_name_in_another_case_keeps_a_rebuild_and_never_supersedes_one() -> None:
    """``t`` and ``T`` are two tables on a case-sensitive server, one on a case-folding one:
    the rebuild of ``t`` must happen either way."""
    rows = _rows(
        "ALTER TABLE t MODIFY COLUMN a INT",
        "ALTER TABLE T MODIFY COLUMN a INT",
        "ALTER TABLE t MODIFY COLUMN a BIGINT",
    )
    assert superseded_rebuilds(rows) == frozenset()
    same = _rows("ALTER TABLE T MODIFY COLUMN a INT", "ALTER TABLE T MODIFY COLUMN a BIGINT")
    assert superseded_rebuilds(same) == {"0-1-1"}


def test_a_statement_naming_the_table_between_two_changes_keeps_both() -> None:
    for between in (
        "TRUNCATE TABLE t",
        "DROP TABLE IF EXISTS t",
        "RENAME TABLE t TO t_old, t_new TO t",
        "RENAME TABLE x TO t",
        "ALTER TABLE t RENAME TO t2",
        "CREATE TABLE t (id INT PRIMARY KEY)",
        "GRANT SELECT ON shop.* TO someone",  # not recognised: might act on t
    ):
        rows = _rows("ALTER TABLE t MODIFY a INT", between, "ALTER TABLE t MODIFY a BIGINT")
        assert superseded_rebuilds(rows) == frozenset(), between


def test_statements_on_other_tables_do_not_keep_a_rebuild() -> None:
    rows = _rows(
        "ALTER TABLE t MODIFY COLUMN a INT",
        "TRUNCATE TABLE u",
        "RENAME TABLE v TO w",
        "ALTER TABLE t MODIFY COLUMN a BIGINT",
    )
    assert superseded_rebuilds(rows) == {"0-1-1"}
    assert superseded_rebuilds(_rows("ALTER TABLE t ADD COLUMN a INT")) == frozenset()
    assert superseded_rebuilds([]) == frozenset()


def test_a_change_that_may_be_made_in_place_rereads_only_when_it_stands_in_for_a_rebuild() -> None:
    """A DROP COLUMN could be applied in place (reading nothing); after a MODIFY of the same
    table in the batch it stands in for the MODIFY's rebuild, so it must re-read instead. In
    place changes one after another read nothing, and a later rebuild still takes over."""
    rows = _rows("ALTER TABLE t MODIFY COLUMN a BIGINT", "ALTER TABLE t DROP COLUMN b")
    assert rebuild_plan(rows) == ({"0-1-1"}, {"0-1-2"})
    rows = _rows(
        "ALTER TABLE t DROP COLUMN b",
        "ALTER TABLE t RENAME COLUMN a TO c",
        "ALTER TABLE t ADD COLUMN d INT",
    )
    assert rebuild_plan(rows) == (frozenset(), frozenset())
    rows = _rows("ALTER TABLE t DROP COLUMN b", "ALTER TABLE t MODIFY COLUMN a BIGINT")
    assert rebuild_plan(rows) == (frozenset(), frozenset())
