"""Real-world identifiers end in exact mirrors, on real MariaDB and MySQL 9.7 and the session's
MongoDB: dashes, dots, ``$``, ``#``, ``--``, ``/*``, ``|``, ``@``, spaces, non-ASCII, 64-character
schema and table names, reserved words, names differing only in case, names that two older naming
rules gave one collection (``a__b``.``c`` / ``a``.``b__c``, ``a.b``.``c`` / ``a``.``b.c``), and
columns named ``$price``, ``a.b`` (also in a composite key), ``_id``, ``_cdc``, ``_src``.

Before issue 19 this corpus failed in three ways (each load exiting 0 or stopping for good):
collection names the server refuses, two tables sharing one mirror, and an update or delete of
a composite key with a dotted column matching nothing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cdc_pipeline.core.audit.reconcile.run import reconcile
from cdc_pipeline.core.capture.snapshot import run_snapshot
from cdc_pipeline.core.load.documents import CATALOG, ROW_CHANGES
from cdc_pipeline.core.load.loader import load_pending
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.integration.test_load import capture_all
from cdc_pipeline_tests.pipeline_checks import mirror_differences, sink_with_source
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration

TABLES = [
    "c--d",
    "a#old",
    "a/*b",
    "c*/",
    "price$",
    "x|y",
    "x@y",
    "with space",
    "Ünïcödé",
    "日本",
    "select",
    "order",
    "Orders",
    "orders",
    "b__c",
    "b.c",
    "t" * 64,
    "`tick`",
]
KEYED_COLUMNS = "`$price` INT, `x.y` VARCHAR(8), `_id` INT, `_cdc` INT, `_src` INT, `é` CHAR(2)"


def q(name: str) -> str:
    """A MySQL identifier, quoted."""
    return "`" + name.replace("`", "``") + "`"


def schemas_of(db: str) -> list[str]:
    """The test's schemas: its own, the two that collided with a table of it under the older
    rules, and one of 64 characters with a dollar and a space."""
    return [db, f"{db}__b", f"{db}.b", (f"{db}$ s" + "s" * 64)[:64]]


def workload(server: SourceServer, db: str) -> None:
    """Rows in every table, then updates, deletes, key moves and DDL on the special names."""
    statements: list[str] = []
    for schema in schemas_of(db)[1:]:
        for table in ("c", "t" * 64):
            name = f"{q(schema)}.{q(table)}"
            statements += [
                f"INSERT INTO {name} VALUES (1, 'one'), (2, 'two'), (3, 'three')",
                f"UPDATE {name} SET v = 'changed' WHERE id = 2",
                f"DELETE FROM {name} WHERE id = 3",
            ]
    for table in TABLES:
        name = f"{q(db)}.{q(table)}"
        statements += [
            f"INSERT INTO {name} (id, v) VALUES (1, 'one'), (2, 'two'), (3, 'three')",
            f"UPDATE {name} SET v = 'changed', `$price` = 5, `x.y` = 'a.b' WHERE id = 2",
            f"UPDATE {name} SET id = 30 WHERE id = 3",  # the key moves
            f"DELETE FROM {name} WHERE id = 1",
        ]
    composite = f"{q(db)}.composite"
    statements += [
        f"INSERT INTO {composite} VALUES (1, 'x', 10, 1), (2, 'y', 20, 2), (3, 'z', 30, 3)",
        f"UPDATE {composite} SET `$v` = 99 WHERE `a.b` = 2",
        f"UPDATE {composite} SET k = 'moved' WHERE `a.b` = 3",
        f"DELETE FROM {composite} WHERE `a.b` = 1",
        f"RENAME TABLE {q(db)}.{q('x|y')} TO {q(db)}.{q('x|z')}",
        f"TRUNCATE TABLE {q(db)}.{q('a/*b')}",
        f"DROP TABLE {q(db)}.{q('c*/')}",
        f"ALTER TABLE {q(db)}.{q('price$')} ADD COLUMN `$new` INT DEFAULT 7",
        f"INSERT INTO {q(db)}.{q('price$')} (id, v) VALUES (40, 'after')",
    ]
    server.execute(*statements)


def test_real_world_identifiers_end_in_exact_mirrors(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
) -> None:
    db = source_schema
    schemas = schemas_of(db)
    patterns = tuple(f"{q(schema)}.*" for schema in schemas)
    settings = replace(capture_settings, include_tables=patterns)
    create = [f"CREATE DATABASE {q(schema)}" for schema in schemas[1:]]
    for schema in schemas[1:]:
        for table in ("c", "t" * 64):
            create.append(f"CREATE TABLE {q(schema)}.{q(table)} (id INT PRIMARY KEY, v TEXT)")
    for table in TABLES:
        create.append(
            f"CREATE TABLE {q(db)}.{q(table)} (id INT PRIMARY KEY, v TEXT, {KEYED_COLUMNS})"
        )
    create.append(
        f"CREATE TABLE {q(db)}.composite (`a.b` INT, k VARCHAR(8), `$v` INT, `_id` INT,"
        " PRIMARY KEY (`a.b`, k))"
    )
    source_server.execute(*create)
    try:
        capture_all(settings)
        workload(source_server, db)
        capture_all(settings)
        url = SourceUrl.parse(source_server.url)
        with sink_with_source(source_server, mongo_target, mongo_db_name) as sink:
            client = sink.database.client
            load_pending(WalPaths(settings.staging_dir, "default"), sink)
            for schema in schemas:
                assert mirror_differences(source_server, schema, sink) == [], schema
            names = {sink.mirror(db, table) for table in TABLES}
            assert len(names) == len(TABLES)  # no two tables share a mirror
            catalog = client[mongo_db_name][CATALOG]
            entry = catalog.find_one({"_id": sink.mirror(db, "x|z")})
            assert entry is not None and (entry["schema"], entry["table"]) == (db, "x|z")
            assert entry["field_escapes"]["$price"] == "_src%24price"
            assert catalog.find_one({"_id": sink.mirror(db, "x|y")}) is None
            assert catalog.find_one({"_id": sink.mirror(db, "c*/")}) is None
            assert client[mongo_db_name][sink.mirror(db, "price$")].count_documents({}) == 3
            composite = client[mongo_db_name][sink.mirror(db, "composite")]
            assert sorted(d["k"] for d in composite.find()) == ["moved", "y"]
        mongo = MongoSettings.from_env(
            {
                "CDC_MONGO_URI": mongo_target.uri,
                "CDC_MONGO_DB": mongo_db_name,
                "CDC_MONGO_COMPAT": mongo_target.compat,
            }
        )
        report = reconcile(
            WalPaths(settings.staging_dir, "default"), url, mongo, patterns, wait_seconds=20
        )
        assert report.passed and report.complete, report.lines()
        assert report.strays == []
        assert len(report.tables) == len(TABLES) - 1 + 1 + 2 * 3, " ".join(
            r.name for r in report.tables
        )
    finally:
        source_server.execute(*(f"DROP DATABASE IF EXISTS {q(s)}" for s in schemas[1:]))


def test_a_dropped_schema_drops_its_mirrors_and_a_table_renamed_into_scope_is_read_whole(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    """``DROP DATABASE`` names no table: its mirrors used to stay (strays with the dropped
    rows). ``RENAME TABLE out.x TO in.x`` from an excluded name was not in the WAL at all (its
    target was only the old name), so the new table's rows before the rename never reached a
    mirror. Also checked: a pattern naming one table of the dropped schema still takes the drop."""
    db, gone, out = source_schema, f"{source_schema}_gone", f"{source_schema}_out"
    patterns = (f"{db}.*", f"{gone}.t")
    settings = replace(capture_settings, include_tables=patterns)
    source_server.execute(
        f"CREATE DATABASE {q(gone)}",
        f"CREATE DATABASE {q(out)}",
        f"CREATE TABLE {q(gone)}.t (id INT PRIMARY KEY)",
        f"CREATE TABLE {q(out)}.x (id INT PRIMARY KEY, v INT)",
        f"CREATE TABLE {q(db)}.keep (id INT PRIMARY KEY)",
    )
    try:
        capture_all(settings)
        source_server.execute(
            f"INSERT INTO {q(gone)}.t VALUES (1), (2)",
            f"INSERT INTO {q(out)}.x VALUES (1, 1), (2, 2)",
            f"INSERT INTO {q(db)}.keep VALUES (1)",
        )
        capture_all(settings)
        paths = WalPaths(settings.staging_dir, "default")
        with sink_with_source(source_server, mongo_target, mongo_db_name) as sink:
            client = sink.database.client
            load_pending(paths, sink)
            database = client[mongo_db_name]
            assert database[sink.mirror(gone, "t")].count_documents({}) == 2
            source_server.execute(
                f"DROP DATABASE {q(gone)}",
                f"RENAME TABLE {q(out)}.x TO {q(db)}.x_in",
                f"INSERT INTO {q(db)}.x_in VALUES (3, 3)",
            )
            capture_all(settings)
            load_pending(paths, sink)
            assert sink.mirror(gone, "t") not in database.list_collection_names()
            assert database[CATALOG].count_documents({"schema": gone}) == 0
            assert mirror_differences(source_server, db, sink) == []
            assert database[sink.mirror(db, "x_in")].count_documents({}) == 3
    finally:
        source_server.execute(
            f"DROP DATABASE IF EXISTS {q(gone)}", f"DROP DATABASE IF EXISTS {q(out)}"
        )


def test_the_rows_of_create_table_select_reach_the_change_log_and_the_mirror(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    """MySQL logs ``CREATE TABLE t2 AS SELECT …`` as ``CREATE TABLE … START TRANSACTION``, then
    the rows and an Xid in the same GTID; the reader ended the transaction at the statement and
    dropped the rows (found by the DDL corpus). MariaDB logs the rows the same way either way."""
    db = source_schema
    source_server.execute(f"CREATE TABLE {q(db)}.src (id INT PRIMARY KEY, v INT)")
    capture_all(capture_settings)
    source_server.execute(
        f"INSERT INTO {q(db)}.src VALUES (1, 10), (2, 20), (3, 30)",
        f"CREATE TABLE {q(db)}.copy (PRIMARY KEY (id)) AS SELECT id, v FROM {q(db)}.src",
        f"INSERT INTO {q(db)}.copy VALUES (4, 40)",
    )
    capture_all(capture_settings)
    with sink_with_source(source_server, mongo_target, mongo_db_name) as sink:
        client = sink.database.client
        load_pending(WalPaths(capture_settings.staging_dir, "default"), sink)
        inserted = client[mongo_db_name][ROW_CHANGES].count_documents(
            {"schema": db, "table": "copy", "op": "insert"}
        )
        assert inserted == 4
        assert mirror_differences(source_server, db, sink) == []


def test_ddl_of_a_session_without_backslash_escapes_acts_as_the_server_ran_it(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    """Under NO_BACKSLASH_ESCAPES ``COMMENT 'a\\'`` ends at the backslash, so the statement
    drops column ``v``; read with escapes it was a comment only and the mirror kept ``v``."""
    db = source_schema
    source_server.execute(f"CREATE TABLE {q(db)}.t (id INT PRIMARY KEY, v INT, w INT)")
    capture_all(capture_settings)
    source_server.execute(
        f"INSERT INTO {q(db)}.t VALUES (1, 1, 1), (2, 2, 2)",
        "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'",
        f"ALTER TABLE {q(db)}.t COMMENT 'a\\', DROP COLUMN v -- '",
    )
    capture_all(capture_settings)
    with sink_with_source(source_server, mongo_target, mongo_db_name) as sink:
        load_pending(WalPaths(capture_settings.staging_dir, "default"), sink)
        assert mirror_differences(source_server, db, sink) == []


def test_a_snapshot_of_tables_with_dots_and_odd_names_fills_their_own_mirrors(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    """The snapshot's plan named tables ``schema.table`` and split them at the first dot:
    schema ``a.b`` + table ``c`` was read as schema ``a``, table ``b.c``."""
    db, dotted = source_schema, f"{source_schema}.b"
    settings = replace(capture_settings, include_tables=(f"{q(db)}.*", f"{q(dotted)}.*"))
    source_server.execute(
        f"CREATE DATABASE {q(dotted)}",
        f"CREATE TABLE {q(dotted)}.c (id INT PRIMARY KEY, v TEXT)",
        f"CREATE TABLE {q(db)}.{q('b.c')} (id INT PRIMARY KEY, v TEXT)",
        f"CREATE TABLE {q(db)}.{q('x|y')} (id INT PRIMARY KEY, `$v` TEXT)",
        f"INSERT INTO {q(dotted)}.c VALUES (1, 'schema with a dot'), (2, 'two')",
        f"INSERT INTO {q(db)}.{q('b.c')} VALUES (1, 'table with a dot')",
        f"INSERT INTO {q(db)}.{q('x|y')} VALUES (1, 'pipe')",
    )
    try:
        result = run_snapshot(settings)
        assert result.complete
        with sink_with_source(source_server, mongo_target, mongo_db_name) as sink:
            client = sink.database.client
            load_pending(WalPaths(settings.staging_dir, "default"), sink)
            for schema in (db, dotted):
                assert mirror_differences(source_server, schema, sink) == [], schema
            assert client[mongo_db_name][sink.mirror(dotted, "c")].count_documents({}) == 2
    finally:
        source_server.execute(f"DROP DATABASE IF EXISTS {q(dotted)}")


def test_dates_past_their_months_end_load_as_null_and_verify_agrees(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    """``ALLOW_INVALID_DATES`` lets a session store ``2024-02-30``. The library cannot decode
    such a DATE (capture stopped with an unnamed error) and made such a DATETIME None; both now
    load as null, as zero dates do, in the change log and the mirror, and ``verify`` agrees."""
    db = source_schema
    source_server.execute(
        f"CREATE TABLE {q(db)}.d (id INT PRIMARY KEY, day DATE, at DATETIME(3), n INT)"
    )
    capture_all(capture_settings)
    source_server.execute(
        "SET SESSION sql_mode = 'ALLOW_INVALID_DATES'",
        f"INSERT INTO {q(db)}.d VALUES (1, '2024-02-30', '2023-04-31 10:00:00.5', 1),"
        " (2, '2024-02-29', '2024-02-29 10:00:00', 2), (3, '2021-06-31', NULL, 3)",
        f"UPDATE {q(db)}.d SET day = '2023-02-29', n = 20 WHERE id = 2",
        f"DELETE FROM {q(db)}.d WHERE id = 3",
    )
    capture_all(capture_settings)
    with sink_with_source(source_server, mongo_target, mongo_db_name) as sink:
        load_pending(WalPaths(capture_settings.staging_dir, "default"), sink)
        mirror = {d["_id"]: d for d in sink.database[sink.mirror(db, "d")].find()}
        assert (mirror[1]["day"], mirror[1]["at"]) == (None, None)
        assert (mirror[2]["day"], mirror[2]["n"]) == (None, 20)
        assert mirror[2]["at"].replace(tzinfo=None) == datetime(2024, 2, 29, 10)
        assert sorted(mirror) == [1, 2]
        changes = sorted(
            sink.database[ROW_CHANGES].find({"schema": db, "table": "d"}),
            key=lambda c: (c["binlog_file"], c["binlog_pos"], c["row_index"]),
        )
        assert [(c["op"], (c["after"] or c["before"])["day"]) for c in changes] == [
            ("insert", None),
            ("insert", datetime(2024, 2, 29, tzinfo=UTC)),
            ("insert", None),
            ("update", None),
            ("delete", None),
        ]
        assert mirror_differences(source_server, db, sink) == []
    report = reconcile(
        WalPaths(capture_settings.staging_dir, "default"),
        SourceUrl.parse(source_server.url),
        replace(mongo_target.settings, database=mongo_db_name),
        (f"{q(db)}.*",),
        wait_seconds=20,
    )
    assert report.passed and report.complete, report.lines()
