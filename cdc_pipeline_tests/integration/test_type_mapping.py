"""Every CONTRACT source type, written on real MariaDB and MySQL 9.7, read back from the binlog.

Each row goes server -> binlog -> our compiled row decoder (checked equal to pymysqlreplication's
own decoding, with our decoder fixes) -> convert_row ->
WAL text -> decode, and is compared with BSON values written out by hand below.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import time
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import HeartbeatLogEvent, XidEvent
from pymysqlreplication.row_event import WriteRowsEvent

from cdc_pipeline.core.images import decode_document, encode_document, encode_image
from cdc_pipeline.core.mysql.decoder_fixes import install_decoder_fixes
from cdc_pipeline.core.schema import (
    TableSchema,
    schema_diff,
    table_schema_from_rows_event,
    with_json_columns,
)
from cdc_pipeline.core.values import convert_row
from cdc_pipeline_tests.row_decoding import both_decodings, differences, typed
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration

UTC = dt.UTC

CREATE_EVERY_TYPE = """
CREATE TABLE every_type (
  id INT PRIMARY KEY,
  c_tinyint TINYINT, c_smallint SMALLINT, c_mediumint MEDIUMINT, c_int INT, c_bigint BIGINT,
  c_ubigint BIGINT UNSIGNED,
  c_decimal DECIMAL(65,30),
  c_float FLOAT, c_double DOUBLE,
  c_char_latin1 CHAR(10) CHARACTER SET latin1,
  c_varchar_latin1 VARCHAR(20) CHARACTER SET latin1,
  c_text_latin1 TEXT CHARACTER SET latin1,
  c_latin1_high VARCHAR(128) CHARACTER SET latin1,
  c_char_utf8 CHAR(10) CHARACTER SET utf8mb4,
  c_varchar_utf8 VARCHAR(20) CHARACTER SET utf8mb4,
  c_text_utf8 TEXT CHARACTER SET utf8mb4,
  c_binary BINARY(4), c_varbinary VARBINARY(8), c_blob BLOB,
  c_date DATE, c_datetime DATETIME, c_datetime3 DATETIME(3), c_datetime6 DATETIME(6),
  c_timestamp TIMESTAMP NULL DEFAULT NULL, c_timestamp6 TIMESTAMP(6) NULL DEFAULT NULL,
  c_time TIME, c_time2 TIME(2), c_time6 TIME(6),
  c_year YEAR,
  c_json JSON,
  c_enum ENUM('small','médium','large') CHARACTER SET latin1,
  c_set SET('red','green','blue'),
  c_bit BIT(10),
  c_point POINT, c_geometry GEOMETRY
)
"""
HIGH_LATIN1_HEX = bytes(range(0x80, 0x100)).hex()

ROW_TYPICAL = f"""
INSERT INTO every_type VALUES (
  1, -128, 32767, -8388608, 2147483647, -9223372036854775808, 18446744073709551615,
  12345678901234567890.123456789012345678901234567890, 1.1, 0.1,
  'Ünï', CONVERT(UNHEX('436166E9819D') USING latin1), 'Größe ½',
  CONVERT(UNHEX('{HIGH_LATIN1_HEX}') USING latin1),
  '😀', 'naïve 😀', 'Zoë 😀 text',
  UNHEX('AB000000'), UNHEX('00FF00'), UNHEX('DEADBEEF00'),
  '2024-02-29', '2024-02-29 23:59:59', '2024-02-29 23:59:59.123', '2024-02-29 23:59:59.123456',
  '1970-01-01 00:00:01', '2038-01-19 03:14:07.999999',
  '838:59:59', '-00:00:00.01', '-00:00:00.010000',
  2155,
  '{{"name": "Zoë 😀", "tags": ["a", 1, 2.5, null, true, false], "nested": {{"deep": [[]]}},
    "big": 18446744073709551615, "neg": -5}}',
  'médium', 'blue,red', b'1000000101',
  ST_GeomFromText('POINT(1 2)'), ST_GeomFromText('POINT(1 2)', 4326)
)
"""
ROW_EDGES = """
INSERT INTO every_type VALUES (
  2, 127, -32768, 8388607, -2147483648, 9223372036854775807, 9223372036854775808,
  12345.5, -3.40282e38, -1.7976931348623157e308,
  '', '', '', NULL, 'a', '', '',
  UNHEX('00AB0000'), UNHEX(''), UNHEX(''),
  '1000-01-01', '9999-12-31 23:59:59', '1000-01-01 00:00:00.001', '9999-12-31 23:59:59.999999',
  '2038-01-19 03:14:07', '1970-01-01 00:00:01.000001',
  '-838:59:59', '-00:00:01.10', '-12:34:56.000001',
  1901, '[1, "two", {"$date": 3, "~k": 4}]',
  'small', 'red,green,blue', b'0000000000',
  ST_GeomFromText('POINT(-1.5 0)'), ST_GeomFromText('LINESTRING(0 0, 1 1)')
)
"""
# Needs sql_mode='' on both servers: zero dates, zero TIMESTAMP, YEAR 0000, invalid ENUM.
ROW_ZEROS = """
INSERT INTO every_type (id, c_decimal, c_date, c_datetime, c_datetime3, c_datetime6,
  c_timestamp, c_timestamp6, c_time, c_year, c_enum, c_set)
VALUES (3, -0.000000000000000000000000000001, '0000-00-00', '0000-00-00 00:00:00',
  '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00',
  '00:00:00', '0000', 'bogus', '')
"""
ROW_NULLS = "INSERT INTO every_type (id) VALUES (4)"

COLUMN_ORDER = [
    "id",
    "c_tinyint",
    "c_smallint",
    "c_mediumint",
    "c_int",
    "c_bigint",
    "c_ubigint",
    "c_decimal",
    "c_float",
    "c_double",
    "c_char_latin1",
    "c_varchar_latin1",
    "c_text_latin1",
    "c_latin1_high",
    "c_char_utf8",
    "c_varchar_utf8",
    "c_text_utf8",
    "c_binary",
    "c_varbinary",
    "c_blob",
    "c_date",
    "c_datetime",
    "c_datetime3",
    "c_datetime6",
    "c_timestamp",
    "c_timestamp6",
    "c_time",
    "c_time2",
    "c_time6",
    "c_year",
    "c_json",
    "c_enum",
    "c_set",
    "c_bit",
    "c_point",
    "c_geometry",
]
POINT_1_2 = "0101000000" + "000000000000F03F" + "0000000000000040"


def expected_rows(flavor: str) -> dict[int, dict[str, Any]]:
    """The BSON-ready rows, written out by hand."""
    # MySQL knows SRID 4326 is latitude-longitude: POINT(1 2) is lat 1, long 2 and is stored
    # x=2, y=1. MariaDB has no axis order and stores x=1, y=2. Both come out as EWKB.
    srid_point = (
        "0101000020E6100000" + "0000000000000040" + "000000000000F03F"
        if flavor == "mysql"
        else "0101000020E6100000" + "000000000000F03F" + "0000000000000040"
    )
    typical = {
        "id": 1,
        "c_tinyint": -128,
        "c_smallint": 32767,
        "c_mediumint": -8388608,
        "c_int": 2147483647,
        "c_bigint": -9223372036854775808,
        "c_ubigint": Decimal128("18446744073709551615"),
        "c_decimal": "12345678901234567890.123456789012345678901234567890",
        "c_float": 1.1,
        "c_double": 0.1,
        "c_char_latin1": "Ünï",
        "c_varchar_latin1": "Café\x81\x9d",
        "c_text_latin1": "Größe ½",
        "c_latin1_high": None,  # filled in from the server's own conversion below
        "c_char_utf8": "😀",
        "c_varchar_utf8": "naïve 😀",
        "c_text_utf8": "Zoë 😀 text",
        "c_binary": b"\xab\x00\x00\x00",
        "c_varbinary": b"\x00\xff\x00",
        "c_blob": b"\xde\xad\xbe\xef\x00",
        "c_date": dt.datetime(2024, 2, 29, tzinfo=UTC),
        "c_datetime": dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
        "c_datetime3": dt.datetime(2024, 2, 29, 23, 59, 59, 123000, tzinfo=UTC),
        "c_datetime6": "2024-02-29T23:59:59.123456",
        "c_timestamp": dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
        "c_timestamp6": "2038-01-19T03:14:07.999999",
        "c_time": "838:59:59",
        "c_time2": "-00:00:00.010000",
        "c_time6": "-00:00:00.010000",
        "c_year": 2155,
        "c_json": {
            "name": "Zoë 😀",
            "tags": ["a", 1, 2.5, None, True, False],
            "nested": {"deep": [[]]},
            "big": Decimal128("18446744073709551615"),
            "neg": -5,
        },
        "c_enum": "médium",
        "c_set": ["red", "blue"],
        "c_bit": 517,
        "c_point": bytes.fromhex(POINT_1_2),
        "c_geometry": bytes.fromhex(srid_point),
    }
    edges = {
        "id": 2,
        "c_tinyint": 127,
        "c_smallint": -32768,
        "c_mediumint": 8388607,
        "c_int": -2147483648,
        "c_bigint": 9223372036854775807,
        "c_ubigint": Decimal128("9223372036854775808"),
        "c_decimal": Decimal128("12345.50000000000000000000000000000"),
        "c_float": -3.40282e38,
        "c_double": -1.7976931348623157e308,
        "c_char_latin1": "",
        "c_varchar_latin1": "",
        "c_text_latin1": "",
        "c_latin1_high": None,
        "c_char_utf8": "a",
        "c_varchar_utf8": "",
        "c_text_utf8": "",
        "c_binary": b"\x00\xab\x00\x00",
        "c_varbinary": b"",
        "c_blob": b"",
        "c_date": dt.datetime(1000, 1, 1, tzinfo=UTC),
        "c_datetime": dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        "c_datetime3": dt.datetime(1000, 1, 1, 0, 0, 0, 1000, tzinfo=UTC),
        "c_datetime6": "9999-12-31T23:59:59.999999",
        "c_timestamp": dt.datetime(2038, 1, 19, 3, 14, 7, tzinfo=UTC),
        "c_timestamp6": "1970-01-01T00:00:01.000001",
        "c_time": "-838:59:59",
        "c_time2": "-00:00:01.100000",
        "c_time6": "-12:34:56.000001",
        "c_year": 1901,
        "c_json": [1, "two", {"$date": 3, "~k": 4}],
        "c_enum": "small",
        "c_set": ["red", "green", "blue"],
        "c_bit": 0,
        "c_point": bytes.fromhex("0101000000" + "000000000000F8BF" + "0000000000000000"),
        "c_geometry": bytes.fromhex("0102000000" + "02000000" + "00" * 16 + "000000000000F03F" * 2),
    }
    nulls = dict.fromkeys(COLUMN_ORDER)
    zeros = {
        **nulls,
        "id": 3,
        "c_decimal": Decimal128("-1E-30"),
        "c_time": "00:00:00",
        "c_year": 0,  # YEAR 0000, which the library reads as 1900
        "c_enum": "",  # an invalid ENUM value is stored as index 0, the empty string
        "c_set": [],  # the empty set, which the library reads as None
    }
    return {1: typical, 2: edges, 3: zeros, 4: {**nulls, "id": 4}}


def _gtid_state(server: SourceServer) -> str:
    query = "SELECT @@gtid_binlog_pos" if server.flavor == "mariadb" else "SELECT @@gtid_executed"
    return str(server.execute(query)[0][0])


def _json_columns(server: SourceServer, database: str, table: str) -> list[str]:
    """MariaDB's JSON columns: LONGTEXT with a json_valid() check, invisible in the binlog."""
    if server.flavor != "mariadb":
        return []
    rows = server.execute(
        "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
        f" WHERE CONSTRAINT_SCHEMA = '{database}' AND TABLE_NAME = '{table}'"
    )
    prefix, suffix = "json_valid(`", "`)"
    clauses = [str(row[0]) for row in rows]
    return [c[len(prefix) : -len(suffix)] for c in clauses if c.startswith(prefix)]


def _read_rows(
    server: SourceServer, database: str, start: str, count: int
) -> list[tuple[TableSchema, dict[str, Any], dict[str, str]]]:
    """The first ``count`` inserted rows of ``database`` after GTID state ``start``."""
    install_decoder_fixes()
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": server.port, "user": "root"},
        server_id=random.randint(100_000, 2**31 - 1),
        blocking=True,
        auto_position=start,
        is_mariadb=server.flavor == "mariadb",
        only_events=[WriteRowsEvent, XidEvent, HeartbeatLogEvent],
        only_schemas=[database],
        slave_heartbeat=1,
        enable_logging=False,
    )
    rows: list[tuple[TableSchema, dict[str, Any], dict[str, str]]] = []
    deadline = time.monotonic() + 30
    try:
        for event in stream:
            if isinstance(event, WriteRowsEvent) and event.schema == database:
                schema = table_schema_from_rows_event(event)
                # The product decodes with its compiled row decoder: it must give exactly
                # the library's values (types, key order, none sources) on every row.
                decoded, library, fast = both_decodings(event)
                assert fast, "the compiled decoder did not take this event"
                assert typed(decoded) == typed(library), differences(decoded, library)
                rows.extend((schema, row["values"], row["none_sources"]) for row in decoded)
            elif isinstance(event, XidEvent) and len(rows) >= count:
                break
            assert time.monotonic() < deadline, f"only {len(rows)} of {count} rows arrived"
    finally:
        stream.close()
    return rows


def _bson_type(value: Any) -> type:
    """The type as BSON sees it: Int64 is an int, TextedDecimal128 a Decimal128."""
    if type(value) is Int64:
        return int
    return Decimal128 if isinstance(value, Decimal128) else type(value)


def _same(actual: Any, expected: Any, where: str) -> None:
    """Equal values of the same BSON type (bool is not int, bytes is not str, ...)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), where
        for key in expected:
            _same(actual[key], expected[key], f"{where}.{key}")
        return
    if isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _same(a, e, f"{where}[{index}]")
        return
    actual_type, expected_type = _bson_type(actual), _bson_type(expected)
    assert actual_type is expected_type, f"{where}: {actual!r} is not a {expected_type}"
    assert actual == expected, f"{where}: {actual!r} != {expected!r}"
    if isinstance(expected, Decimal128):
        assert str(actual) == str(expected), f"{where}: {actual} is not written {expected}"
    if isinstance(expected, dt.datetime):
        assert actual.utcoffset() == dt.timedelta(0), where


def test_every_contract_type_round_trips_through_the_binlog(
    source_server: SourceServer, source_schema: str
) -> None:
    flavor = source_server.flavor
    source_server.execute(f"USE `{source_schema}`", CREATE_EVERY_TYPE)
    start = _gtid_state(source_server)
    connection = source_server.connect(database=source_schema, charset="utf8mb4")
    with contextlib.closing(connection), connection.cursor() as cursor:
        cursor.execute("SET time_zone = '+00:00'")
        cursor.execute(ROW_TYPICAL)
        cursor.execute(ROW_EDGES)
        cursor.execute("SET sql_mode = ''")
        cursor.execute(ROW_ZEROS)
        cursor.execute(ROW_NULLS)
        # Expected values the server computes itself: its latin1 -> Unicode mapping of bytes
        # 0x80-0xFF, and its own WKB of the spatial values.
        cursor.execute(
            "SELECT CONVERT(c_latin1_high USING utf8mb4), ST_AsWKB(c_point),"
            + (
                " ST_AsWKB(c_geometry, 'axis-order=long-lat')"
                if flavor == "mysql"
                else " ST_AsWKB(c_geometry)"
            )
            + " FROM every_type WHERE id = 1"
        )
        server_latin1, server_point_wkb, server_geometry_wkb = cursor.fetchone()

    rows = _read_rows(source_server, source_schema, start, count=4)
    json_columns = _json_columns(source_server, source_schema, "every_type")
    # MariaDB's JSON is LONGTEXT in the binlog; MySQL sends its binary JSON type.
    assert json_columns == (["c_json"] if flavor == "mariadb" else [])

    expected = expected_rows(flavor)
    expected[1]["c_latin1_high"] = server_latin1
    assert [server_latin1[index - 0x80] for index in (0x81, 0x8D, 0x8F, 0x90, 0x9D)] == [
        "\x81",
        "\x8d",
        "\x8f",
        "\x90",
        "\x9d",
    ]
    assert server_latin1[0] == "€" and server_latin1[-1] == "ÿ"

    versions = set()
    for schema, values, none_sources in rows:
        schema = with_json_columns(schema, json_columns)
        versions.add(schema.version)
        assert list(schema.column_names) == COLUMN_ORDER
        assert schema.primary_key == ("id",)
        document = convert_row(values, none_sources, schema)
        assert list(document) == COLUMN_ORDER
        decoded = decode_document(encode_document(document))
        assert decoded == document
        assert decoded is not None
        row_id = decoded["id"]
        _same(decoded, expected[row_id], f"{flavor} row {row_id}")
        # WAL format 2 (BSON images) gives back exactly what format 1 (text) did.
        from_bson = decode_document(encode_image(document))
        assert from_bson is not None and list(from_bson) == COLUMN_ORDER
        _same(from_bson, decoded, f"{flavor} row {row_id} (BSON image)")
    assert sorted(values["id"] for _, values, _ in rows) == [1, 2, 3, 4]
    assert len(versions) == 1

    # Spatial values equal the server's own WKB: SRID 0 plainly, SRID 4326 once the EWKB's
    # SRID flag and SRID are taken out (MySQL: in long-lat order, which is storage order).
    typical = decode_document(encode_document(convert_row(rows[0][1], rows[0][2], rows[0][0])))
    assert typical is not None
    assert typical["c_point"] == server_point_wkb == bytes.fromhex(POINT_1_2)
    ewkb = typical["c_geometry"]
    assert ewkb[:4] + bytes([ewkb[4] & ~0x20]) + ewkb[9:] == server_geometry_wkb


def test_schema_version_follows_alter_table_and_old_rows_keep_their_columns(
    source_server: SourceServer, source_schema: str
) -> None:
    source_server.execute(
        f"CREATE TABLE `{source_schema}`.evolve (id INT PRIMARY KEY, name VARCHAR(20))"
    )
    start = _gtid_state(source_server)
    source_server.execute(
        f"INSERT INTO `{source_schema}`.evolve VALUES (1, 'before')",
        f"ALTER TABLE `{source_schema}`.evolve ADD COLUMN score INT",
        f"INSERT INTO `{source_schema}`.evolve VALUES (2, 'after', 7)",
        f"RENAME TABLE `{source_schema}`.evolve TO `{source_schema}`.evolved",
        f"INSERT INTO `{source_schema}`.evolved VALUES (3, 'renamed', 8)",
    )
    # All three rows are decoded only now, after the ALTER and the RENAME: each still comes
    # with the columns it was written with.
    (old, row1, _), (new, row2, _), (renamed, row3, _) = _read_rows(
        source_server, source_schema, start, count=3
    )
    assert convert_row(row1, None, old) == {"id": 1, "name": "before"}
    assert convert_row(row2, None, new) == {"id": 2, "name": "after", "score": 7}
    assert convert_row(row3, None, renamed) == {"id": 3, "name": "renamed", "score": 8}
    assert old.column_names == ("id", "name")
    assert old.version != new.version
    assert (renamed.table, renamed.version) == ("evolved", new.version)
    assert schema_diff(old, new)["added"] == ["score"]
    assert schema_diff(new, renamed) == schema_diff(new, new)
