"""The compiled row decoder against mysql-replication's own decoding, on real MariaDB and MySQL 9.7.

A property test over random rows: every CONTRACT source type (the type-mapping table) and the
widths the decoder picks readers by (unsigned integers, every DECIMAL layout, 1- to 4-byte text
lengths, every fractional-second precision, 2-byte ENUMs and 8-byte SETs), NULLs anywhere,
written as multi-row inserts, updates and deletes. Every rows event is decoded both ways and
must match value for value, types, key order and none sources included. The seed is in the test
id, so a failure can be replayed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import time
from decimal import Decimal
from typing import Any

import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import HeartbeatLogEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc_pipeline.core.mysql import json_binary
from cdc_pipeline.core.mysql.decoder_fixes import MYSQL_LATIN1, install_decoder_fixes
from cdc_pipeline.core.mysql.row_decoder import decode_rows, fast_path_applies
from cdc_pipeline_tests.integration.test_type_mapping import CREATE_EVERY_TYPE
from cdc_pipeline_tests.row_decoding import both_decodings, differences, typed
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration

ENUM_LABELS = [f"l{index}" for index in range(300)]  # more than 255: a 2-byte ENUM
SET_MEMBERS = [f"m{index}" for index in range(64)]  # 64 members: an 8-byte SET

CREATE_WIDTHS = f"""
CREATE TABLE widths (
  id INT PRIMARY KEY,
  u_tiny TINYINT UNSIGNED, u_small SMALLINT UNSIGNED, u_medium MEDIUMINT UNSIGNED,
  u_int INT UNSIGNED, u_float FLOAT,
  d_5_2 DECIMAL(5,2), d_10_0 DECIMAL(10,0), d_18_9 DECIMAL(18,9), d_1_1 DECIMAL(1,1),
  d_30_20 DECIMAL(30,20), d_9_0 DECIMAL(9,0), d_19_10 DECIMAL(19,10),
  v_latin1_300 VARCHAR(300) CHARACTER SET latin1, v_utf8_100 VARCHAR(100) CHARACTER SET utf8mb4,
  t_tiny TINYTEXT, t_medium MEDIUMTEXT, t_long LONGTEXT, b_tiny TINYBLOB, b_medium MEDIUMBLOB,
  b_long LONGBLOB,
  dt1 DATETIME(1), dt2 DATETIME(2), dt4 DATETIME(4), dt5 DATETIME(5),
  tm1 TIME(1), tm3 TIME(3), tm4 TIME(4), tm5 TIME(5),
  ts2 TIMESTAMP(2) NULL DEFAULT NULL, ts3 TIMESTAMP(3) NULL DEFAULT NULL,
  e_big ENUM({", ".join(f"'{label}'" for label in ENUM_LABELS)}),
  s_big SET({", ".join(f"'{member}'" for member in SET_MEMBERS)})
) DEFAULT CHARSET = utf8mb4
"""


class Values:
    """Random values MySQL and MariaDB accept for each column kind."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, bits: int, unsigned: bool = False) -> int:
        low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        return self.rng.choice([low, high, 0, -1 if low < 0 else 1, self.rng.randint(low, high)])

    def decimal(self, precision: int, scale: int) -> Decimal:
        digits = "".join(self.rng.choice("0123456789") for _ in range(precision))
        sign = self.rng.choice(["", "-"])
        whole, fraction = digits[: precision - scale] or "0", digits[precision - scale :]
        return Decimal(f"{sign}{whole}.{fraction}" if scale else f"{sign}{whole}")

    def real(self) -> float:
        return self.rng.choice([0.0, -1.5, 3.4e38, self.rng.uniform(-1e9, 1e9)])

    def latin1(self, length: int) -> str:
        raw = bytes(self.rng.randint(0x20, 0xFF) for _ in range(self.rng.randint(0, length)))
        return raw.decode(MYSQL_LATIN1)

    def unicode(self, length: int) -> str:
        alphabet = "aZ0 éß½Ωж中😀🎉\t'\"\\%_"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, length)))

    def binary(self, length: int) -> bytes:
        return bytes(self.rng.randint(0, 255) for _ in range(self.rng.randint(0, length)))

    def date(self) -> dt.date:
        return dt.date(1000, 1, 1) + dt.timedelta(days=self.rng.randint(0, 3_287_181))

    def datetime(self) -> dt.datetime:
        start = dt.datetime(1000, 1, 1)
        return start + dt.timedelta(
            days=self.rng.randint(0, 3_287_181),
            seconds=self.rng.randint(0, 86_399),
            microseconds=self.rng.randint(0, 999_999),
        )

    def timestamp(self) -> dt.datetime:
        seconds = self.rng.randint(1, 2**31 - 1)
        moment = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)
        return moment.replace(microsecond=self.rng.randint(0, 999_999))

    def time(self) -> str:
        total = self.rng.randint(0, 838 * 3600 + 59 * 60 + 58)
        fraction = self.rng.randint(0, 999_999)
        hours, rest = divmod(total, 3600)
        sign = self.rng.choice(["", "-"])
        return f"{sign}{hours}:{rest // 60:02d}:{rest % 60:02d}.{fraction:06d}"

    def json_node(self, depth: int = 0) -> Any:
        """A JSON value: every scalar kind MySQL's binary JSON stores (int16/32/64, uint64,
        double, strings whose length takes 1-3 bytes, literals), nested objects and arrays."""
        rng = self.rng
        kinds = ["int16", "int32", "int64", "uint64", "double", "text", "long", "literal"]
        kind = rng.choice(kinds + (["object", "array"] * 2 if depth < 3 else []))
        if kind == "object":
            return {self.unicode(6) + str(i): self.json_node(depth + 1) for i in range(4)}
        if kind == "array":
            return [self.json_node(depth + 1) for _ in range(rng.randint(0, 5))]
        return {
            "int16": lambda: rng.randint(-(2**15), 2**15 - 1),
            "int32": lambda: rng.randint(-(2**31), 2**31 - 1),
            "int64": lambda: rng.randint(-(2**63), 2**63 - 1),
            "uint64": lambda: rng.randint(2**63, 2**64 - 1),
            "double": lambda: rng.choice([0.5, -1e300, rng.uniform(-1e6, 1e6)]),
            "text": lambda: self.unicode(20),
            "long": lambda: "x" * rng.choice([127, 128, 16_383, 16_384, 20_000]),
            "literal": lambda: rng.choice([None, True, False]),
        }[kind]()

    def json(self) -> str:
        return json.dumps(self.json_node(), ensure_ascii=False)

    def maybe(self, value: Any) -> Any:
        return None if self.rng.random() < 0.15 else value


def every_type_row(values: Values, row_id: int) -> dict[str, Any]:
    """A random row of the type-mapping table (``CREATE_EVERY_TYPE``)."""
    v, rng = values, values.rng
    row = {
        "c_tinyint": v.integer(8),
        "c_smallint": v.integer(16),
        "c_mediumint": v.integer(24),
        "c_int": v.integer(32),
        "c_bigint": v.integer(64),
        "c_ubigint": v.integer(64, unsigned=True),
        "c_decimal": v.decimal(65, 30),
        "c_float": v.real(),
        "c_double": v.real(),
        "c_char_latin1": v.latin1(10),
        "c_varchar_latin1": v.latin1(20),
        "c_text_latin1": v.latin1(200),
        "c_latin1_high": v.latin1(128),
        "c_char_utf8": v.unicode(10),
        "c_varchar_utf8": v.unicode(20),
        "c_text_utf8": v.unicode(100),
        "c_binary": v.binary(4),
        "c_varbinary": v.binary(8),
        "c_blob": v.binary(300),
        "c_date": v.date(),
        "c_datetime": v.datetime().replace(microsecond=0),
        "c_datetime3": v.datetime(),
        "c_datetime6": v.datetime(),
        "c_timestamp": v.timestamp().replace(microsecond=0),
        "c_timestamp6": v.timestamp(),
        "c_time": v.time(),
        "c_time2": v.time(),
        "c_time6": v.time(),
        "c_year": rng.choice([1901, 2155, rng.randint(1901, 2155)]),
        "c_json": v.json(),
        "c_enum": rng.choice(["small", "médium", "large"]),
        "c_set": ",".join(rng.sample(["red", "green", "blue"], rng.randint(0, 3))),
        "c_bit": rng.randint(0, 1023),
        "c_point": f"POINT({rng.uniform(-180, 180)} {rng.uniform(-90, 90)})",
        "c_geometry": "LINESTRING(0 0, 1 1)",
    }
    return {"id": row_id, **{name: v.maybe(value) for name, value in row.items()}}


def widths_row(values: Values, row_id: int) -> dict[str, Any]:
    v, rng = values, values.rng
    row = {
        "u_tiny": v.integer(8, unsigned=True),
        "u_small": v.integer(16, unsigned=True),
        "u_medium": v.integer(24, unsigned=True),
        "u_int": v.integer(32, unsigned=True),
        "u_float": v.real(),
        "d_5_2": v.decimal(5, 2),
        "d_10_0": v.decimal(10, 0),
        "d_18_9": v.decimal(18, 9),
        "d_1_1": v.decimal(1, 1),
        "d_30_20": v.decimal(30, 20),
        "d_9_0": v.decimal(9, 0),
        "d_19_10": v.decimal(19, 10),
        "v_latin1_300": v.latin1(300),
        "v_utf8_100": v.unicode(100),
        "t_tiny": v.unicode(60),
        "t_medium": v.unicode(400),
        "t_long": v.unicode(400),
        "b_tiny": v.binary(255),
        "b_medium": v.binary(70_000),
        "b_long": v.binary(500),
        "dt1": v.datetime(),
        "dt2": v.datetime(),
        "dt4": v.datetime(),
        "dt5": v.datetime(),
        "tm1": v.time(),
        "tm3": v.time(),
        "tm4": v.time(),
        "tm5": v.time(),
        "ts2": v.timestamp(),
        "ts3": v.timestamp(),
        "e_big": rng.choice(ENUM_LABELS),
        "s_big": ",".join(rng.sample(SET_MEMBERS, rng.randint(0, 64))),
    }
    return {"id": row_id, **{name: v.maybe(value) for name, value in row.items()}}


SPATIAL = {"c_point", "c_geometry"}


def _insert(cursor: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """One multi-row INSERT (one transaction, rows events of many rows)."""
    names = list(rows[0])
    marks = ", ".join("ST_GeomFromText(%s)" if name in SPATIAL else "%s" for name in names)
    cursor.execute(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES " + ", ".join(f"({marks})" for _ in rows),
        [row[name] for row in rows for name in names],
    )


def _update(cursor: Any, table: str, row: dict[str, Any]) -> None:
    names = [name for name in row if name != "id"]
    sets = ", ".join(
        f"{name} = ST_GeomFromText(%s)" if name in SPATIAL else f"{name} = %s" for name in names
    )
    cursor.execute(
        f"UPDATE {table} SET {sets} WHERE id = %s", [*(row[n] for n in names), row["id"]]
    )


def _gtid_state(server: SourceServer) -> str:
    query = "SELECT @@gtid_binlog_pos" if server.flavor == "mariadb" else "SELECT @@gtid_executed"
    return str(server.execute(query)[0][0])


def _row_events(server: SourceServer, schema: str, start: str, handle: Any) -> int:
    """Feed every rows event of ``schema`` after ``start`` to ``handle``, up to the commit of
    the ``done`` table's row; the number of events."""
    install_decoder_fixes()
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": server.port, "user": "root"},
        server_id=random.randint(100_000, 2**31 - 1),
        blocking=True,
        auto_position=start,
        is_mariadb=server.flavor == "mariadb",
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, HeartbeatLogEvent],
        only_schemas=[schema],
        slave_heartbeat=1,
        enable_logging=False,
    )
    events, done = 0, False
    deadline = time.monotonic() + 60
    try:
        for event in stream:
            if isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                if event.schema != schema:
                    continue
                if event.table == "done":
                    done = True
                    continue
                handle(event)
                events += 1
            elif isinstance(event, XidEvent) and done:
                break
            assert time.monotonic() < deadline, f"only {events} events arrived"
    finally:
        stream.close()
    return events


def _no_library_json(blob: bytes) -> Any:
    raise AssertionError(f"the JSON reader handed a value to the library: {blob[:40]!r}")


@pytest.mark.parametrize("seed", [20261203])
def test_compiled_decoder_equals_the_library_on_random_rows_of_every_type(
    source_server: SourceServer, source_schema: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every JSON value here is well formed: the JSON reader must decide all of them itself.
    monkeypatch.setattr(json_binary, "_library_parse", _no_library_json)
    install_decoder_fixes()  # registers the mysql_latin1 codec the latin1 values are made with
    rng = random.Random(seed)
    values = Values(rng)
    source_server.execute(
        f"USE `{source_schema}`",
        CREATE_EVERY_TYPE,
        CREATE_WIDTHS,
        "CREATE TABLE done (id INT PRIMARY KEY)",
    )
    start = _gtid_state(source_server)
    connection = source_server.connect(database=source_schema, charset="utf8mb4")
    written = {"insert": 0, "update": 0, "delete": 0}
    with contextlib.closing(connection), connection.cursor() as cursor:
        cursor.execute("SET time_zone = '+00:00'")
        for table, make in (("every_type", every_type_row), ("widths", widths_row)):
            next_id = 1
            for _ in range(4):
                count = rng.randint(5, 25)
                _insert(cursor, table, [make(values, next_id + i) for i in range(count)])
                next_id += count
                written["insert"] += count
            cursor.execute("BEGIN")
            for row_id in range(1, next_id, 3):
                _update(cursor, table, make(values, row_id))
                written["update"] += 1
            cursor.execute("COMMIT")
            written["delete"] += cursor.execute(f"DELETE FROM {table} WHERE id % 4 = 0")
        # JSON the server builds: opaque DECIMAL, DATE, TIME and DATETIME values (MySQL's
        # binary JSON keeps their types), and a document over 64 KiB (the large layout).
        written["update"] += cursor.execute(
            "UPDATE every_type SET c_json = JSON_OBJECT('d', CAST(-12.345 AS DECIMAL(10,3)),"
            " 't', CAST('-12:34:56.5' AS TIME(1)), 'day', CAST('2024-02-29' AS DATE),"
            " 'at', CAST('2024-02-29 01:02:03.456' AS DATETIME(3)), 'n', JSON_ARRAY(1, 'a'))"
            " WHERE id IN (1, 2)"
        )
        written["update"] += cursor.execute(
            "UPDATE every_type SET c_json = JSON_OBJECT('big', REPEAT('é', 40000),"
            " 'list', JSON_ARRAY(REPEAT('x', 30000), 70000, -70000, 1.5e300, NULL, TRUE))"
            " WHERE id = 3"
        )
        cursor.execute("INSERT INTO done VALUES (1)")

    seen = {"insert": 0, "update": 0, "delete": 0}
    kinds = {WriteRowsEvent: "insert", UpdateRowsEvent: "update", DeleteRowsEvent: "delete"}

    def check(event: Any) -> None:
        fast, library, applied = both_decodings(event)
        where = f"seed {seed}, {source_server.flavor}, {event.table} {type(event).__name__}"
        assert applied, f"the compiled decoder did not take an event ({where})"
        assert typed(fast) == typed(library), [where, *differences(fast, library)]
        seen[kinds[type(event)]] += len(fast)

    events = _row_events(source_server, source_schema, start, check)
    assert seen == written
    assert events >= 2 * 6  # per table: 4 inserts, at least one update and one delete event


def test_partial_row_images_and_errors_are_left_to_the_library(
    source_server: SourceServer, source_schema: str
) -> None:
    """MINIMAL row images are not the fast path's (the library decodes them). A DATE past its
    month's end (ALLOW_INVALID_DATES let it in), which the library cannot decode (it raises),
    is None with "out of date range", as the library gives for such a DATETIME: conversion
    stores both as null, as zero dates."""
    source_server.execute(
        f"USE `{source_schema}`",
        "CREATE TABLE t (id INT PRIMARY KEY, d DATE, s VARCHAR(10))",
        "CREATE TABLE done (id INT PRIMARY KEY)",
    )
    start = _gtid_state(source_server)
    connection = source_server.connect(database=source_schema, charset="utf8mb4")
    with contextlib.closing(connection), connection.cursor() as cursor:
        cursor.execute("INSERT INTO t VALUES (1, '2024-01-01', 'a'), (2, NULL, 'b')")
        cursor.execute("SET SESSION binlog_row_image = 'MINIMAL'")
        cursor.execute("UPDATE t SET s = 'c' WHERE id = 1")
        cursor.execute("SET SESSION binlog_row_image = 'FULL'")
        cursor.execute("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
        cursor.execute("INSERT INTO t VALUES (3, '2024-02-30', 'd'), (4, '2023-04-31', 'e')")
        cursor.execute("INSERT INTO done VALUES (1)")

    outcomes: list[tuple[str, bool, Any, str]] = []

    def check(event: Any) -> None:
        applied = fast_path_applies(event)
        wrapper, inner = event.packet, event.packet.packet
        start_at = inner._position, wrapper.read_bytes
        rows = typed(decode_rows(event))
        inner._position, wrapper.read_bytes = start_at
        event._RowsEvent__rows = None
        event._RowsEvent__none_sources = {}
        try:
            event.rows  # noqa: B018  (what the library alone makes of the event)
            library = "decoded"
        except ValueError as error:
            library = f"ValueError: {error}"
        outcomes.append((type(event).__name__, applied, rows, library))

    _row_events(source_server, source_schema, start, check)
    (
        (insert, _, _, _),
        (update, update_fast, update_rows, _),
        (bad, bad_fast, bad_rows, by_library),
    ) = outcomes
    assert by_library == "ValueError: day is out of range for month"
    assert (insert, update, bad) == ("WriteRowsEvent", "UpdateRowsEvent", "WriteRowsEvent")
    assert update_fast is False  # MINIMAL: the library decodes it
    # The before image holds the key only: the library reports the other columns as absent.
    assert update_rows[0][0][1][0] == ("id", ("int", 1))
    assert update_rows[0][1] == (
        "before_none_sources",
        [("d", ("str", "cols bitmap")), ("s", ("str", "cols bitmap"))],
    )
    assert bad_fast is True
    assert bad_rows == [
        [
            ("values", [("id", ("int", 3)), ("d", ("NoneType", None)), ("s", ("str", "d"))]),
            ("none_sources", [("d", ("str", "out of date range"))]),
        ],
        [
            ("values", [("id", ("int", 4)), ("d", ("NoneType", None)), ("s", ("str", "e"))]),
            ("none_sources", [("d", ("str", "out of date range"))]),
        ],
    ]
