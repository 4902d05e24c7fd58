"""The naming scheme of ``load.documents``: collection names and field names.

Properties, over any pair of legal MySQL identifiers (1-64 characters of the Basic Multilingual
Plane, no NUL in table names but NUL-free is not assumed for columns):
- two tables never share a collection, in either style, also when names are shortened;
- every name is one MongoDB accepts (and the nx-27017 stand-in, for the underscore style);
- ordinary names stay readable; temporary rebuild names are never a mirror's name;
- field names are one-to-one, storable, never ``_id``/``_cdc``, and reversible.
"""

from __future__ import annotations

import re
import urllib.parse

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cdc_pipeline.core.load.documents import (
    MAX_NAMESPACE_BYTES,
    PIPELINE_COLLECTIONS,
    column_of_field,
    field_escapes,
    is_rebuild_collection,
    mirror_collection,
    mirror_field,
    mirror_id,
    rebuild_collection,
)
from cdc_pipeline.core.settings import split_table_pattern, table_included, table_label

DATABASE = "cdc"
STYLES = ("dotted", "underscore")
STAND_IN_NAME = re.compile(r"[a-z_][a-z0-9_]*")  # lower case: its tables ignore case
# MySQL identifiers: BMP characters except U+0000 (and surrogates, which are not characters).
identifier_chars = st.characters(
    min_codepoint=1, max_codepoint=0xFFFF, blacklist_categories=("Cs",)
)
tricky = st.sampled_from(
    [*".$%_#-/*|@ `'\"\\", "\x00", "__", "_x", "%2E", "system", "cdc_large_values"]
)
identifiers = st.one_of(
    st.text(identifier_chars, min_size=1, max_size=64),
    st.lists(st.one_of(tricky, st.text("ab_.", min_size=1, max_size=3)), min_size=1, max_size=12)
    .map("".join)
    .map(lambda text: text[:64]),
)
tables = st.tuples(identifiers, identifiers)

REAL_WORLD = [
    ("shop", "order_lines"),
    ("t3a__b", "c"),
    ("t3a", "b__c"),
    ("a.b", "c"),
    ("a", "b.c"),
    ("shop", "price$"),
    ("shop", "c--d"),
    ("shop", "a#old"),
    ("shop", "a/*b"),
    ("shop", "x|y"),
    ("shop", "x@y"),
    ("shop", "with space"),
    ("shop", "Ünïcödé"),
    ("shop", "日本"),
    ("system", "views"),
    ("cdc_large_values", "files"),
    ("s" * 64, "t" * 64),
    ("é" * 64, "." * 64),
    ("shop", "Orders"),
    ("shop", "orders"),
    ("2024", "1t"),
    ("_x", "a"),
    ("shop", "t__cdc_rebuild"),
]


def valid_for_mongodb(name: str) -> bool:
    return (
        bool(name)
        and "$" not in name
        and "\x00" not in name
        and not name.startswith("system.")
        and len(DATABASE.encode()) + 1 + len(name.encode()) <= MAX_NAMESPACE_BYTES
    )


@pytest.mark.parametrize("style", STYLES)
def test_real_world_names_get_distinct_valid_collections(style: str) -> None:
    names = [mirror_collection(schema, table, style, DATABASE) for schema, table in REAL_WORLD]
    assert len(set(names)) == len(names), names
    for name in names:
        assert valid_for_mongodb(name), name
        assert name not in PIPELINE_COLLECTIONS
        assert not name.startswith("cdc_large_values."), name
        assert not is_rebuild_collection(name), name
        if style == "underscore":
            assert STAND_IN_NAME.fullmatch(name), name


def test_ordinary_names_stay_readable() -> None:
    assert mirror_collection("shop", "order_lines", "dotted") == "shop.order_lines"
    assert mirror_collection("shop", "order_lines2", "underscore") == "shop__order_lines2"
    assert mirror_collection("shop", "Orders", "underscore") == "shop___x_4frders"
    assert mirror_collection("a", "b.c", "dotted") == "a.b%2Ec"
    assert mirror_collection("a.b", "c", "dotted") == "a%2Eb.c"
    assert mirror_collection("t3a__b", "c", "underscore") == "_xt3a_5f_5fb__c"
    assert mirror_collection("t3a", "b__c", "underscore") == "t3a___xb_5f_5fc"
    assert mirror_collection("system", "views", "dotted") == "%73ystem.views"


def decoded(name: str, style: str) -> tuple[str, str] | None:
    """The test's own reading of a name back to its table (None for a shortened name): the
    scheme is one-to-one exactly when this inverts it."""
    if style == "dotted":
        if "%h" in name:
            return None
        schema, table = name.split(".")  # an unescaped dot separates, and only that one
        return urllib.parse.unquote(schema), urllib.parse.unquote(table)
    if name.startswith("__h"):
        return None
    schema, table = name.split("__", 1)

    def side(text: str) -> str:
        if not text.startswith("_x"):
            return text
        raw = re.sub(r"_([0-9a-f]{2})", lambda m: f"%{m.group(1)}", text[2:])
        return urllib.parse.unquote(raw, errors="strict")

    return side(schema), side(table)


@given(tables, st.sampled_from(STYLES))
def test_every_name_that_is_not_shortened_reads_back_to_its_table(
    table: tuple[str, str], style: str
) -> None:
    found = decoded(mirror_collection(*table, style, DATABASE), style)
    assert found is None or found == table


@pytest.mark.parametrize("style", STYLES)
def test_the_real_world_names_read_back_to_their_tables(style: str) -> None:
    for table in REAL_WORLD[:-3]:
        assert decoded(mirror_collection(*table, style, DATABASE), style) in (table, None)
    assert decoded(mirror_collection("s" * 64, "t" * 64, style, DATABASE), style) == (
        "s" * 64,
        "t" * 64,
    )


@given(tables, tables, st.sampled_from(STYLES))
def test_two_tables_never_share_a_collection(a: tuple[str, str], b: tuple[str, str], style: str):
    if a != b:
        assert mirror_collection(*a, style, DATABASE) != mirror_collection(*b, style, DATABASE)


@given(tables, st.sampled_from(STYLES), st.sampled_from(["cdc", "d" * 60]))
def test_every_name_is_valid_and_no_temporary_name_is_a_mirror(
    table: tuple[str, str], style: str, database: str
) -> None:
    name = mirror_collection(*table, style, database)
    assert name and "$" not in name and "\x00" not in name and not name.startswith("system.")
    assert len(database.encode()) + 1 + len(name.encode()) <= MAX_NAMESPACE_BYTES
    assert name not in PIPELINE_COLLECTIONS and not is_rebuild_collection(name)
    temporary = rebuild_collection(name, style)
    assert is_rebuild_collection(temporary) and temporary != name
    if style == "underscore":
        assert STAND_IN_NAME.fullmatch(name) and STAND_IN_NAME.fullmatch(temporary), name


@given(identifiers, identifiers)
def test_field_names_are_one_to_one_storable_and_reversible(a: str, b: str) -> None:
    for column in (a, b):
        field = mirror_field(column)
        assert column_of_field(field) == column
        assert field not in ("_id", "_cdc")
        assert not field.startswith("$") and "." not in field and "\x00" not in field
    if a != b:
        assert mirror_field(a) != mirror_field(b)


def test_field_escapes_are_the_documented_ones() -> None:
    assert mirror_field("price") == "price"
    assert mirror_field("_id") == "_src_id"
    assert mirror_field("_srcx") == "_src_srcx"
    assert mirror_field("$price") == "_src%24price"
    assert mirror_field("a.b") == "_srca%2Eb"
    assert mirror_field("_src%") == "_src_src%25"
    assert mirror_field("a\x00b") == "_srca%00b"
    assert field_escapes(["id", "a.b", "$p", "v"]) == {"a.b": "_srca%2Eb", "$p": "_src%24p"}


def test_a_composite_key_is_addressed_by_storable_field_names() -> None:
    assert mirror_id({"a.b": 1, "c": 2}) == {"_srca%2Eb": 1, "c": 2}
    assert mirror_id({"a.b": 1}) == 1


# --- table patterns and labels (core.settings) -------------------------------------------------


def test_a_pattern_matches_schema_and_table_separately() -> None:
    """``fnmatch`` on the joined name let ``shop.*`` include every table of a schema ``shop.eu``
    (its ``*`` crossed the dot)."""
    assert table_included("shop", "orders", ("shop.*",))
    assert not table_included("shop.eu", "orders", ("shop.*",))
    assert table_included("shop.eu", "orders", ("`shop.eu`.*",))
    assert not table_included("shop", "eu.orders", ("`shop.eu`.*",))
    assert table_included("shop", "eu.orders", ("shop.*",))  # the table side is the rest
    assert table_included("shop", "a*b", ("shop.`a*b`",)) and not table_included(
        "shop", "axb", ("shop.`a*b`",)
    )
    assert split_table_pattern("`a``b`.c") == ("a`b", "c")
    # `[` is a character of a name, not fnmatch's class (it matched `shop.a` for `shop.[ab]`).
    assert table_included("shop", "[ab]", ("shop.[ab]",))
    assert not table_included("shop", "a", ("shop.[ab]",))
    assert table_included("x[1]", "t", ("x[1].*",)) and not table_included("x1", "t", ("x[1].*",))
    for bad in ("shop", "`shop.*", ".t", "shop.", "`a`b.c"):
        with pytest.raises(ValueError):
            split_table_pattern(bad)


@given(identifiers, identifiers, identifiers, identifiers)
def test_a_label_names_one_table_and_matches_only_it(s1: str, t1: str, s2: str, t2: str) -> None:
    label = table_label(s1, t1)
    assert table_included(s1, t1, (label,))
    if (s1, t1) != (s2, t2):
        assert table_label(s2, t2) != label
        assert not table_included(s2, t2, (label,))


@given(st.lists(st.lists(identifiers, max_size=4, unique=True), min_size=1, max_size=4))
@example([["_id", "a.b", "$x", "ok"], ["id", "qty"]])
def test_a_mirror_document_holds_each_column_under_its_field_name(
    column_lists: list[list[str]],
) -> None:
    """Every time, not only the first: the field names are cached per tuple of column names."""
    from cdc_pipeline.core.load.documents import mirror_document

    for columns in [*column_lists, *column_lists]:
        values = {column: index for index, column in enumerate(columns)}
        expected = {"_id": 7, **{mirror_field(c): v for c, v in values.items()}, "_cdc": {}}
        document = mirror_document(7, values, {})
        assert document == expected and list(document) == list(expected)
