"""``core.snapshot_schema`` on real MariaDB and MySQL 9.7: the catalogue gives the binlog's schema.

For each table below one row is written and read back by capture's own ``BinlogReader`` (with
capture's MariaDB JSON lookup and key order), and ``table_schema_from_source`` must equal the
``TableSchema`` that row comes with, field for field and so in ``version``. Types that cannot be
described exactly must be refused with one sentence naming table, column and type.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass

import pytest

from cdc_pipeline.core.errors import ValueConversionError
from cdc_pipeline.core.mysql.binlog import BinlogReader, Idle, RowImages
from cdc_pipeline.core.mysql.catalog import MariadbJsonColumns
from cdc_pipeline.core.mysql.source import read_state
from cdc_pipeline.core.mysql.table_schema import table_schema_from_source
from cdc_pipeline.core.schema import TableSchema, with_json_columns
from cdc_pipeline.core.settings import SourceUrl
from cdc_pipeline_tests.integration.test_type_mapping import (
    CREATE_EVERY_TYPE,
    ROW_TYPICAL,
    _gtid_state,
    _json_columns,
    _read_rows,
)
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    name: str
    create: tuple[str, ...]
    insert: str
    primary_key: tuple[str, ...]
    table: str = "t"
    flavor: str | None = None  # None: both servers


CASES = [
    Case("every_type", (CREATE_EVERY_TYPE,), ROW_TYPICAL, ("id",), table="every_type"),
    Case(
        "composite_key_out_of_column_order",
        ("CREATE TABLE t (a INT, b VARCHAR(10), c INT, PRIMARY KEY (b, a))",),
        "INSERT INTO t VALUES (1, 'x', 2)",
        ("b", "a"),
    ),
    Case("no_key", ("CREATE TABLE t (a INT, b TEXT)",), "INSERT INTO t VALUES (1, 'x')", ()),
    Case(
        "unique_not_null_key_promoted",
        (
            "CREATE TABLE t (a INT, b INT NOT NULL, c INT NOT NULL, k INT NOT NULL,"
            " UNIQUE KEY u1 (a), KEY plain (k), UNIQUE KEY u2 (c, b))",
        ),
        "INSERT INTO t VALUES (1, 2, 3, 4)",
        ("c", "b"),
    ),
    Case(
        "unique_keys_in_declaration_order",
        (
            "CREATE TABLE t (a INT NOT NULL, b INT NOT NULL, UNIQUE KEY zz (b))",
            "ALTER TABLE t ADD UNIQUE KEY aa (a)",
        ),
        "INSERT INTO t VALUES (1, 2)",
        ("b",),
    ),
    Case(
        "prefix_primary_key",
        ("CREATE TABLE t (a INT, s VARCHAR(50), PRIMARY KEY (s(10), a))",),
        "INSERT INTO t VALUES (1, 'x')",
        (),
    ),
    Case(
        "json",
        ("CREATE TABLE t (id INT PRIMARY KEY, j JSON, lt LONGTEXT, lb LONGBLOB, j2 JSON)",),
        "INSERT INTO t VALUES (1, '{\"a\": 1}', 'x', 'y', '[]')",
        ("id",),
    ),
    Case(
        "enum_and_set_labels",
        (
            "CREATE TABLE t (id INT PRIMARY KEY,"
            " e ENUM('it''s', 'a\\\\b', 'x,y)', 'ünï ½', 'tab\\there', 'cr\\r', 'nl\\n', 'q\"',"
            " 'ctrl\\Z', 'nul\\0') CHARACTER SET utf8mb4,"
            " e1 ENUM('é', 'ß', '?') CHARACTER SET latin1,"
            " s3 SET('a', 'b''c', 'ö', 'd?') CHARACTER SET utf8mb3,"
            " s0 SET('') CHARACTER SET utf8mb4)",
        ),
        "INSERT INTO t VALUES (1, 'it''s', 'é', 'b''c,ö', '')",
        ("id",),
    ),
    Case(
        "strings_in_character_sets",
        (
            "CREATE TABLE t (id INT PRIMARY KEY,"
            " v1 VARCHAR(30) CHARACTER SET latin1, v4 VARCHAR(30) CHARACTER SET utf8mb4,"
            " v3 VARCHAR(30) CHARACTER SET utf8mb3, vb VARCHAR(10) COLLATE utf8mb4_bin,"
            " va VARCHAR(10) CHARACTER SET ascii, v16 VARCHAR(10) CHARACTER SET utf16,"
            " c255 CHAR(255) CHARACTER SET utf8mb4, c0 CHAR(0), cb CHAR(5) CHARACTER SET binary,"
            " bi BINARY(1), vbi VARBINARY(300))",
        ),
        "INSERT INTO t (id, v4, v3) VALUES (1, 'naïve 😀', 'Zoë')",
        ("id",),
    ),
    Case(
        "text_and_blob_family",
        (
            "CREATE TABLE t (id INT PRIMARY KEY, tt TINYTEXT, te TEXT, mt MEDIUMTEXT,"
            " lt LONGTEXT CHARACTER SET latin1, tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB,"
            " t300 TEXT(300), b70k BLOB(70000))",
        ),
        "INSERT INTO t (id, tt, lb) VALUES (1, 'x', 'y')",
        ("id",),
    ),
    Case(
        "numbers",
        (
            "CREATE TABLE t (id BIGINT UNSIGNED PRIMARY KEY, y YEAR, u INT UNSIGNED, s INT,"
            " d DECIMAL(10,2) UNSIGNED, d0 DECIMAL, dn NUMERIC(5,5), dmax DECIMAL(65,30),"
            " f FLOAT, fu FLOAT UNSIGNED, f53 FLOAT(53), db DOUBLE, dbu DOUBLE UNSIGNED, r REAL,"
            " z INT ZEROFILL, ti TINYINT(1), bo BOOL, si SMALLINT UNSIGNED, mi MEDIUMINT UNSIGNED,"
            " b1 BIT(1), b9 BIT(9), b64 BIT(64), ser SERIAL)",
        ),
        "INSERT INTO t (id, d, ser) VALUES (1, 12.5, 1)",
        ("id",),
    ),
    Case(
        "temporal",
        (
            "CREATE TABLE t (id INT PRIMARY KEY, t3 TIME(3), t0 TIME, t6 TIME(6), d DATE,"
            " dt DATETIME, dt1 DATETIME(1), ts TIMESTAMP NULL, ts4 TIMESTAMP(4) NULL, y YEAR)",
        ),
        "INSERT INTO t (id, t3) VALUES (1, '-01:02:03.456')",
        ("id",),
    ),
    Case(
        "spatial",
        (
            "CREATE TABLE t (id INT PRIMARY KEY, g GEOMETRY, p POINT, l LINESTRING, pg POLYGON,"
            " mp MULTIPOINT, ml MULTILINESTRING, mpg MULTIPOLYGON, gc GEOMETRYCOLLECTION,"
            " after_spatial VARCHAR(5) CHARACTER SET latin1, e ENUM('a') CHARACTER SET utf8mb4)",
        ),
        "INSERT INTO t (id, p) VALUES (1, ST_GeomFromText('POINT(1 2)'))",
        ("id",),
    ),
    Case(
        "generated_and_invisible",
        (
            "CREATE TABLE t (id INT PRIMARY KEY, a INT, v INT AS (a + 1) VIRTUAL,"
            " s INT AS (a + 2) STORED, h INT INVISIBLE)",
        ),
        "INSERT INTO t (id, a) VALUES (1, 2)",
        ("id",),
    ),
    Case(
        "mariadb_binary_types",
        ("CREATE TABLE t (id INT PRIMARY KEY, i6 INET6, u UUID, i4 INET4)",),
        "INSERT INTO t VALUES (1, '::1', UUID(), '127.0.0.1')",
        ("id",),
        flavor="mariadb",
    ),
    Case(
        "mariadb_long_unique_keys",
        (
            "CREATE TABLE t (a TEXT NOT NULL, b BLOB NOT NULL, c INT NOT NULL, d INT NOT NULL,"
            " UNIQUE KEY lb (b), UNIQUE KEY la (a), UNIQUE KEY hc (c) USING HASH,"
            " UNIQUE KEY ud (d))",
        ),
        "INSERT INTO t VALUES ('x', 'y', 1, 2)",
        ("d",),
        flavor="mariadb",
    ),
    Case(
        "mariadb_system_versioning_with_named_period",
        (
            "CREATE TABLE t (id INT PRIMARY KEY, a INT,"
            " rs TIMESTAMP(6) GENERATED ALWAYS AS ROW START INVISIBLE,"
            " re TIMESTAMP(6) GENERATED ALWAYS AS ROW END INVISIBLE,"
            " PERIOD FOR SYSTEM_TIME (rs, re)) WITH SYSTEM VERSIONING",
        ),
        "INSERT INTO t (id, a) VALUES (1, 1)",
        ("id", "re"),
        flavor="mariadb",
    ),
    Case(
        "mariadb_memory_hash_key",
        ("CREATE TABLE t (a INT, b INT NOT NULL, UNIQUE KEY ub (b)) ENGINE=MEMORY",),
        "INSERT INTO t VALUES (1, 2)",
        ("b",),
        flavor="mariadb",
    ),
    Case(
        "mysql_generated_invisible_primary_key",
        ("SET sql_generate_invisible_primary_key = ON", "CREATE TABLE t (a INT, b INT)"),
        "INSERT INTO t (a, b) VALUES (1, 2)",
        ("my_row_id",),
        flavor="mysql",
    ),
]


def _captured_schema(server: SourceServer, database: str, table: str, insert: str) -> TableSchema:
    """The TableSchema capture gives the row ``insert`` writes: its BinlogReader, MariaDB JSON
    lookup and key order, as in ``core.capture``."""
    url = SourceUrl.parse(server.url)
    with contextlib.closing(server.connect(database=database, charset="utf8mb4")) as connection:
        state = read_state(connection)
        with connection.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")
            cursor.execute(insert)
    json_columns = MariadbJsonColumns(url) if state.flavor == "mariadb" else None
    deadline = time.monotonic() + 30
    try:
        with BinlogReader(
            url,
            state.flavor,
            random.randint(100_000, 2**31 - 1),
            state.executed,
            lambda schema, name: (schema, name) == (database, table),
            0.5,
            state.oldest_binlog_file,
            json_columns,
        ) as reader:
            for item in reader.items():
                if isinstance(item, RowImages):
                    return item.table_schema
                assert not isinstance(item, Idle) or time.monotonic() < deadline, "no row came"
    finally:
        if json_columns is not None:
            json_columns.close()
    raise AssertionError("the binlog stream ended")


def _snapshot_schema(server: SourceServer, database: str, table: str) -> TableSchema:
    with contextlib.closing(server.connect(database=database, charset="utf8mb4")) as connection:
        return table_schema_from_source(connection, database, table)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_snapshot_schema_is_the_binlog_schema(
    source_server: SourceServer, source_schema: str, case: Case
) -> None:
    if case.flavor not in (None, source_server.flavor):
        pytest.skip(f"{case.name} is {case.flavor} only")
    source_server.execute(f"USE `{source_schema}`", *case.create)
    binlog = _captured_schema(source_server, source_schema, case.table, case.insert)

    snapshot = _snapshot_schema(source_server, source_schema, case.table)

    assert snapshot == binlog
    assert snapshot.version == binlog.version
    assert binlog.primary_key == case.primary_key
    if case.name == "json":
        # MariaDB's JSON is LONGTEXT in the binlog: both sides must have marked it.
        assert [c.type_name for c in binlog.columns] == [
            "int",
            "json",
            "longtext",
            "longblob",
            "json",
        ]


def test_every_type_table_matches_the_type_mapping_reader(
    source_server: SourceServer, source_schema: str
) -> None:
    """The same check through test_type_mapping's own reader of the every-type table's rows."""
    source_server.execute(f"USE `{source_schema}`", CREATE_EVERY_TYPE)
    start = _gtid_state(source_server)
    source_server.execute(f"USE `{source_schema}`", "SET time_zone = '+00:00'", ROW_TYPICAL)
    [(binlog, _, _)] = _read_rows(source_server, source_schema, start, count=1)
    binlog = with_json_columns(binlog, _json_columns(source_server, source_schema, "every_type"))

    snapshot = _snapshot_schema(source_server, source_schema, "every_type")

    assert snapshot == binlog
    assert snapshot.version == binlog.version


def test_a_missing_table_or_a_view_is_refused(
    source_server: SourceServer, source_schema: str
) -> None:
    source_server.execute(f"CREATE VIEW `{source_schema}`.v AS SELECT 1 AS one")
    for name in ("missing", "v"):
        with pytest.raises(ValueError, match=f"no table {source_schema}.{name}\\.$"):
            _snapshot_schema(source_server, source_schema, name)


@pytest.mark.parametrize(
    ("flavor", "create", "message"),
    [
        (
            None,
            "CREATE TABLE t (id INT PRIMARY KEY, e ENUM('😀', 'a') CHARACTER SET utf8mb4)",
            r"column e of {schema}\.t is enum\('\?','a'\) in a 4-byte character set",
        ),
        (
            "mysql",
            "CREATE TABLE t (id INT PRIMARY KEY, v VECTOR(3))",
            r"column v of {schema}\.t is vector\(3\), a type the binlog library",
        ),
        (
            "mariadb",
            "CREATE TABLE t (id INT PRIMARY KEY, a INT) WITH SYSTEM VERSIONING",
            r"{schema}\.t is system-versioned with implicit row_start/row_end columns",
        ),
    ],
    ids=["label_beyond_bmp", "mysql_vector", "mariadb_implicit_system_versioning"],
)
def test_what_cannot_be_described_exactly_is_refused(
    source_server: SourceServer, source_schema: str, flavor: str | None, create: str, message: str
) -> None:
    if flavor not in (None, source_server.flavor):
        pytest.skip(f"{flavor} only")
    source_server.execute(f"USE `{source_schema}`", create)
    with pytest.raises(ValueConversionError, match=message.format(schema=source_schema)) as info:
        _snapshot_schema(source_server, source_schema, "t")
    assert str(info.value).endswith(".") and str(info.value).count(". ") == 0
