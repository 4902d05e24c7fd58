"""``core.source_rows`` on real MariaDB and MySQL 9.7: rows read with SQL equal the binlog's.

The every-type table of test_type_mapping must come out as its hand-written expected BSON values,
and a table of values that SQL text hides (MySQL JSON decimals and dates, FLOAT, TIMESTAMP under a
non-UTC session, zero parts) must equal what the binlog path makes of the same rows.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from cdc_pipeline.core.errors import ValueConversionError
from cdc_pipeline.core.images import decode_document, encode_document
from cdc_pipeline.core.load.documents import mirror_id
from cdc_pipeline.core.mysql.catalog import describe_table, list_tables
from cdc_pipeline.core.mysql.source import connect
from cdc_pipeline.core.mysql.source_rows import row_documents, row_hash
from cdc_pipeline.core.schema import with_json_columns
from cdc_pipeline.core.settings import SourceUrl
from cdc_pipeline.core.values import convert_row
from cdc_pipeline_tests.integration.test_type_mapping import (
    COLUMN_ORDER,
    CREATE_EVERY_TYPE,
    ROW_EDGES,
    ROW_NULLS,
    ROW_TYPICAL,
    ROW_ZEROS,
    _gtid_state,
    _json_columns,
    _read_rows,
    _same,
    expected_rows,
)
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


@pytest.fixture
def source(source_server: SourceServer) -> Iterator[Any]:
    """A connection as the pipeline opens it (``core.source.connect``)."""
    with connect(SourceUrl.parse(source_server.url)) as connection:
        yield connection


def _run(server: SourceServer, database: str, *statements: str) -> None:
    """Statements on one connection in ``database``, under a non-UTC session time zone."""
    connection = server.connect(database=database, charset="utf8mb4")
    with contextlib.closing(connection), connection.cursor() as cursor:
        cursor.execute("SET time_zone = '+05:30'")
        for statement in statements:
            cursor.execute(statement)


def test_every_contract_type_reads_as_the_binlog_path_converts_it(
    source_server: SourceServer, source_schema: str, source: Any
) -> None:
    flavor = source_server.flavor
    source_server.execute(f"USE `{source_schema}`", CREATE_EVERY_TYPE)
    connection = source_server.connect(database=source_schema, charset="utf8mb4")
    with contextlib.closing(connection), connection.cursor() as cursor:
        cursor.execute("SET time_zone = '+00:00'")
        cursor.execute(ROW_TYPICAL)
        cursor.execute(ROW_EDGES)
        cursor.execute("SET sql_mode = ''")
        cursor.execute(ROW_ZEROS)
        cursor.execute(ROW_NULLS)
        cursor.execute("SELECT CONVERT(c_latin1_high USING utf8mb4) FROM every_type WHERE id = 1")
        (server_latin1,) = cursor.fetchone()
    expected = expected_rows(flavor)
    expected[1]["c_latin1_high"] = server_latin1

    table = describe_table(source, source_schema, "every_type")
    assert table.columns == tuple(COLUMN_ORDER)
    assert table.primary_key == ("id",)
    assert table.column_types["c_json"] == "json"
    assert table.column_types["c_decimal"] == "decimal(65,30)"
    documents = list(row_documents(source, table))
    assert [document["id"] for document in documents] == [1, 2, 3, 4]
    for document in documents:
        assert list(document) == COLUMN_ORDER
        _same(document, expected[document["id"]], f"{flavor} row {document['id']}")
        assert decode_document(encode_document(document)) == document
        assert mirror_id(table.key_of(document)) == document["id"]


TRICKY = """
CREATE TABLE tricky (
  id INT PRIMARY KEY, c_json JSON, c_char CHAR(6), c_float FLOAT, c_datetime DATETIME(2),
  c_timestamp TIMESTAMP(3) NULL DEFAULT NULL, c_timestamp0 TIMESTAMP NULL DEFAULT NULL,
  c_date DATE, c_time TIME(3), c_enum ENUM('x','y'), c_set SET('a','b','c'), c_bit BIT(63),
  c_decimal DECIMAL(10,0) UNSIGNED, c_ubigint BIGINT UNSIGNED, c_year YEAR
)
"""
TRICKY_ROWS = (
    """INSERT INTO tricky VALUES (1,
      JSON_OBJECT('p', 9.90, 'i', CAST(2 AS DECIMAL), 'd', CAST('2024-01-02' AS DATE),
        'dt', CAST('2024-01-02 03:04:05.123456' AS DATETIME(6)), 'dt0', NOW(), 'dbl', 1.5e0,
        'big', 18446744073709551615, 'neg', -9223372036854775808, '$k', -0.5,
        'we"ird\\\\', JSON_ARRAY(0.1e0, 7.10, 'x', JSON_OBJECT('', 1e300, 'n', NULL))),
      'ab  ', 0.1, '2020-05-00 10:00:00.5', '2021-03-28 02:30:00.123', '2038-01-19 08:44:07',
      '2020-00-15', '-00:00:00.001', 'bogus', 'c,a', b'101', 4294967296, 18446744073709551615,
      '0000')""",
    """INSERT INTO tricky VALUES (2, JSON_EXTRACT(JSON_ARRAY(3.25), '$[0]'), '  x', 16777217,
      '0999-12-31 23:59:59.99', '1970-01-01 05:30:01.001', '1970-01-01 05:30:00', '2020-05-00',
      '-838:59:59.000', 'y', '', b'0', 0, 9223372036854775807, 1901)""",
    """INSERT INTO tricky VALUES (3, '[1.0, 2.50, "2024-01-02", {"a": [[-0.0]]}]',
      'é', 1.17549435e-38, NULL, NULL, NULL, NULL, '838:59:58.999', NULL, 'a,b,c', NULL, NULL,
      NULL, 2155)""",
    "INSERT INTO tricky (id, c_float) VALUES (4, -3.4028234e38)",
    "SET sql_mode = 'ALLOW_INVALID_DATES'",  # days past their month's end: null, as zero dates
    "INSERT INTO tricky (id, c_datetime, c_date) VALUES (5, '2024-02-30 10:00:00.5', '2023-04-31')",
)


def test_values_that_sql_text_hides_read_as_the_binlog_gives_them(
    source_server: SourceServer, source_schema: str, source: Any
) -> None:
    flavor = source_server.flavor
    _run(source_server, source_schema, TRICKY)
    start = _gtid_state(source_server)
    _run(source_server, source_schema, "SET sql_mode = ''", *TRICKY_ROWS)

    json_columns = _json_columns(source_server, source_schema, "tricky")
    binlog = {}
    for schema, values, none_sources in _read_rows(source_server, source_schema, start, 5):
        document = convert_row(values, none_sources, with_json_columns(schema, json_columns))
        binlog[document["id"]] = document
    assert sorted(binlog) == [1, 2, 3, 4, 5]

    table = describe_table(source, source_schema, "tricky")
    documents = list(row_documents(source, table, batch_size=3))
    assert [document["id"] for document in documents] == [1, 2, 3, 4, 5]
    for document in documents:
        _same(document, binlog[document["id"]], f"{flavor} row {document['id']}")
    # Spot checks that the rows really hold what the comparison is about.
    first = documents[0]
    assert first["c_char"] == "ab" and first["c_date"] is None and first["c_datetime"] is None
    assert documents[4]["c_date"] is None and documents[4]["c_datetime"] is None
    assert first["c_float"] == 0.1 and documents[1]["c_float"] == 16777216.0
    if flavor == "mysql":
        assert str(first["c_json"]["p"]) == "9.90" and str(first["c_json"]["i"]) == "2"
        assert first["c_json"]["d"] == "2024-01-02 00:00:00.000000"
        assert str(documents[1]["c_json"]) == "3.25"


def test_mysql_json_values_the_binlog_path_refuses_are_refused(
    source_server: SourceServer, source_schema: str, source: Any
) -> None:
    if source_server.flavor != "mysql":
        pytest.skip("MariaDB's JSON is text: it holds no typed TIME values")
    _run(
        source_server,
        source_schema,
        "CREATE TABLE j (id INT PRIMARY KEY, j JSON)",
        "INSERT INTO j VALUES (1, JSON_OBJECT('t', CAST('12:00:00' AS TIME)))",
    )
    table = describe_table(source, source_schema, "j")
    with pytest.raises(ValueConversionError, match=r"TIME value at \['t'\]"):
        list(row_documents(source, table))


def test_composite_key_documents_come_in_key_order_with_key_ordered_ids(
    source_server: SourceServer, source_schema: str, source: Any
) -> None:
    _run(
        source_server,
        source_schema,
        "CREATE TABLE pairs (a INT, b VARCHAR(5), c INT, PRIMARY KEY (b, a))",
        "INSERT INTO pairs VALUES (2, 'y', 1), (1, 'y', 2), (9, 'x', 3), (1, 'z', 4), (3, 'x', 5)",
    )
    table = describe_table(source, source_schema, "pairs")
    assert table.columns == ("a", "b", "c")
    assert table.primary_key == ("b", "a")
    documents = list(row_documents(source, table, batch_size=2))
    assert [document["c"] for document in documents] == [5, 3, 2, 1, 4]
    assert all(list(document) == ["a", "b", "c"] for document in documents)
    ids = [mirror_id(table.key_of(document)) for document in documents]
    assert ids[0] == {"b": "x", "a": 3}
    assert all(list(key) == ["b", "a"] for key in ids)


def test_keyset_pages_return_every_row_once_and_resume_after_a_key(
    source_server: SourceServer, source_schema: str, source: Any
) -> None:
    values = ", ".join(f"({n}, 'row {n}')" for n in range(10, 0, -1))
    _run(
        source_server,
        source_schema,
        "CREATE TABLE ten (id INT PRIMARY KEY, label VARCHAR(10))",
        f"INSERT INTO ten VALUES {values}",
    )
    table = describe_table(source, source_schema, "ten")
    documents = list(row_documents(source, table, batch_size=3))
    assert [document["id"] for document in documents] == list(range(1, 11))
    rest = list(row_documents(source, table, batch_size=3, after_key=(4,)))
    assert rest == documents[4:]
    assert list(row_documents(source, table, batch_size=3, after_key=(10,))) == []


def test_keyset_pages_follow_the_server_order_of_every_key_type(
    source_server: SourceServer, source_schema: str, source: Any
) -> None:
    """ENUM sorts by definition order, TIMESTAMP by instant, strings by collation: each page
    must continue exactly where the previous one ended, whatever the key's types."""
    _run(
        source_server,
        source_schema,
        "CREATE TABLE keyed (e ENUM('z','a') NOT NULL, ts TIMESTAMP(3) NOT NULL,"
        " d DECIMAL(40,20) NOT NULL, s VARCHAR(5) CHARACTER SET latin1 NOT NULL,"
        " f FLOAT NOT NULL, dt6 DATETIME(6) NOT NULL, ts6 TIMESTAMP(6) NOT NULL,"
        " dt3 DATETIME(3) NOT NULL, day DATE NOT NULL, t TIME(2) NOT NULL, y YEAR NOT NULL,"
        " b BINARY(3) NOT NULL, big BIGINT UNSIGNED NOT NULL, st SET('x','y') NOT NULL,"
        " n INT NOT NULL,"
        " PRIMARY KEY (e, ts, d, s, f, dt6, ts6, dt3, day, t, y, b, big, st))",
    )
    # Pages end at every position of the key, so each column's equality term must be exact too.
    rows = itertools.product(
        ("a", "z"),
        ("2001-01-01 00:00:00.5", "1999-12-31 23:00:00"),
        ("0.1", "12345678901234567890.12345678901234567891"),
        ("é", "F", "a"),
        ("1.1", "-2.5"),
        ("2020-01-01 00:00:00.000001",),
        ("2030-06-01 12:00:00.000001",),
        ("2020-01-01 00:00:00.123",),
        ("2020-02-29",),
        ("-00:00:00.01",),
        ("2000",),
        ("ab",),
        ("18446744073709551615",),
        ("y,x",),
    )
    inserts = ", ".join(
        "(" + ", ".join(f"'{value}'" for value in row) + f", {n})" for n, row in enumerate(rows)
    )
    _run(source_server, source_schema, f"INSERT INTO keyed VALUES {inserts}")
    order = source_server.execute(f"SELECT n FROM `{source_schema}`.keyed ORDER BY e, ts, d, s, f")
    table = describe_table(source, source_schema, "keyed")
    for batch_size in (1, 3, 5, 1000):
        documents = list(row_documents(source, table, batch_size=batch_size))
        assert [document["n"] for document in documents] == [row[0] for row in order]


def test_tables_are_listed_by_pattern_and_a_table_without_key_is_streamed(
    source_server: SourceServer, source_schema: str, source: Any
) -> None:
    _run(
        source_server,
        source_schema,
        "CREATE TABLE a_one (id INT PRIMARY KEY)",
        "CREATE TABLE a_two (id INT PRIMARY KEY)",
        "CREATE TABLE b_loose (v INT, w VARCHAR(5))",
        "CREATE VIEW a_view AS SELECT id FROM a_one",
        "INSERT INTO b_loose VALUES (3, 'c'), (1, 'a'), (2, 'b'), (1, 'a'), (NULL, 'n')",
    )
    schema = source_schema
    assert list_tables(source, (f"{schema}.a_*",)) == [(schema, "a_one"), (schema, "a_two")]
    assert list_tables(source, (f"{schema}.b_*", "nowhere.*")) == [(schema, "b_loose")]
    everything = list_tables(source, ())
    assert [(schema, "a_one"), (schema, "a_two"), (schema, "b_loose")] == [
        name for name in everything if name[0] == schema
    ]
    assert not any(name[0] in ("mysql", "sys", "information_schema") for name in everything)
    assert (schema, "a_one") not in list_tables(source, ("other.*",))

    table = describe_table(source, schema, "b_loose")
    assert table.primary_key == ()
    documents = list(row_documents(source, table, batch_size=2))
    assert documents == [
        {"v": None, "w": "n"},
        {"v": 1, "w": "a"},
        {"v": 1, "w": "a"},
        {"v": 2, "w": "b"},
        {"v": 3, "w": "c"},
    ]
    with pytest.raises(ValueError, match="no primary key"):
        mirror_id(table.key_of(documents[0]))
    with pytest.raises(ValueError, match="no primary key"):
        list(row_documents(source, table, after_key=(1,)))
    assert row_hash(documents[1]) == row_hash(documents[2]) != row_hash(documents[3])
    assert row_hash({"w": "a", "v": 1}) != row_hash(documents[1])  # field order counts
