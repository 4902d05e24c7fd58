"""Rows MongoDB cannot hold as they are, on real MariaDB and MySQL 9.7 and the session's MongoDB.

- Values that would push a document past 16 MiB, or nest it past 100 levels, go to GridFS and
  are referenced from their documents; every stored document is within MongoDB's limits and
  ``verify`` reads the values back. (Neither stand-in enforces the limits, so the test checks
  every stored document itself: before issue 19 the loader wrote a 17 MiB mirror document, a
  change-log document of 18 MiB for an UPDATE of a 9 MB value, and JSON 102 levels deep.)
- A row MongoDB refuses as a data error (here: a unique index an operator put on a mirror)
  halts loading at that row: the load fails naming table and key, ``status`` and ``doctor``
  exit 1 with the same sentence, and once the index is gone the load resumes and both exit 0.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import bson
import pytest

from cdc_pipeline import cli
from cdc_pipeline.core.audit.reconcile.run import reconcile
from cdc_pipeline.core.errors import UnloadableRowError
from cdc_pipeline.core.load.documents import DEAD_LETTERS, LOAD_HALTS, ROW_CHANGES
from cdc_pipeline.core.load.large_values import MAX_DEPTH, MAX_DOCUMENT_BYTES, depth, resolve
from cdc_pipeline.core.load.loader import load_pending
from cdc_pipeline.core.load.rebaseline import source_rebaseline
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.integration.test_load import capture_all
from cdc_pipeline_tests.pipeline_checks import mirror_differences, sink_with_source
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration

MB = 1_000_000


@contextlib.contextmanager
def packets_of(server: SourceServer, size: int) -> Iterator[None]:
    """``max_allowed_packet`` large enough for the test's rows (MariaDB's default is 16 MB)."""
    previous = server.execute("SELECT @@GLOBAL.max_allowed_packet")[0][0]
    server.execute(f"SET GLOBAL max_allowed_packet = {size}")
    try:
        yield
    finally:
        server.execute(f"SET GLOBAL max_allowed_packet = {previous}")


def nested_json(levels: int) -> str:
    """A JSON array ``levels`` deep as MySQL counts (``JSON_DEPTH``)."""
    return "[" * (levels - 1) + "1" + "]" * (levels - 1)


def test_values_too_large_or_too_deep_for_a_document_go_to_gridfs_and_read_back(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    if mongo_target.compat == "nx-27017":
        pytest.skip(
            "CDC_MONGO_COMPAT=nx-27017 stores values in line: the stand-in has no size limit"
            " and refuses GridFS's dotted collection names (run with a standard-mode MongoDB)"
        )
    db = source_schema
    # MySQL's JSON nests up to 100 levels; MariaDB's JSON_VALID check refuses more than 32.
    deepest = 100 if source_server.flavor == "mysql" else 32
    with packets_of(source_server, 128 * 1024 * 1024):
        source_server.execute(
            f"CREATE TABLE `{db}`.blobs (id INT PRIMARY KEY, b LONGBLOB, note VARCHAR(8))",
            f"CREATE TABLE `{db}`.docs (id INT PRIMARY KEY, j JSON)",
        )
        capture_all(capture_settings)
        source_server.execute(
            f"INSERT INTO `{db}`.blobs VALUES (1, REPEAT('a', {17 * MB}), 'big')",
            f"INSERT INTO `{db}`.blobs VALUES (2, REPEAT('b', {9 * MB}), 'nine')",
            f"UPDATE `{db}`.blobs SET b = REPEAT('c', {9 * MB}) WHERE id = 2",
            f"INSERT INTO `{db}`.blobs VALUES (3, 'small', 'small')",
            f"INSERT INTO `{db}`.docs VALUES (1, '{nested_json(deepest)}'), (2, '[1]')",
        )
        capture_all(capture_settings)
    url = SourceUrl.parse(source_server.url)
    with source_rebaseline(url) as rebaseline, mongo_target.client(tz_aware=True) as client:
        database = client[mongo_db_name]
        sink = mongo_target.sink(database, rebaseline=rebaseline)
        load_pending(WalPaths(capture_settings.staging_dir, "default"), sink)
        stored = [*database[ROW_CHANGES].find({"schema": db})]
        for table in ("blobs", "docs"):
            stored += database[sink.mirror(db, table)].find()
        too_big = [
            (d["_id"], len(bson.encode(d)), depth(d))
            for d in stored
            if len(bson.encode(d)) > MAX_DOCUMENT_BYTES or depth(d) > MAX_DEPTH
        ]
        assert too_big == []
        assert mirror_differences(source_server, db, sink) == []
        update = database[ROW_CHANGES].find_one({"schema": db, "table": "blobs", "op": "update"})
        assert update is not None and update["large_values"]
        resolve(database, update, update["large_values"])
        assert update["before"]["b"] == b"b" * 9 * MB and update["after"]["b"] == b"c" * 9 * MB
        files = database["cdc_large_values.files"].count_documents({})
        assert files == (3 if deepest == 100 else 2)  # 17 MB, one 9 MB image, the deep JSON
    mongo = MongoSettings.from_env(
        {
            "CDC_MONGO_URI": mongo_target.uri,
            "CDC_MONGO_DB": mongo_db_name,
            "CDC_MONGO_COMPAT": mongo_target.compat,
        }
    )
    report = reconcile(
        WalPaths(capture_settings.staging_dir, "default"), url, mongo, (f"{db}.*",), 20
    )
    assert report.passed and report.complete, report.lines()


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_row_mongodb_refuses_halts_loading_there_and_status_and_doctor_say_so(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    pipeline_env: WalPaths,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CDC_MONGO_COMPAT", mongo_target.compat)
    db = source_schema
    source_server.execute(f"CREATE TABLE `{db}`.users (id INT PRIMARY KEY, email VARCHAR(40))")
    capture_all(capture_settings)
    source_server.execute(f"INSERT INTO `{db}`.users VALUES (1, 'secret@example.org')")
    capture_all(capture_settings)
    with mongo_target.client(tz_aware=True) as client:
        sink = mongo_target.sink(client[mongo_db_name])
        load_pending(pipeline_env, sink)
        mirror = client[mongo_db_name][sink.mirror(db, "users")]
        mirror.create_index("email", unique=True)  # an operator's rule the source does not have
    source_server.execute(f"INSERT INTO `{db}`.users VALUES (2, 'secret@example.org')")
    capture_all(capture_settings)

    with mongo_target.client(tz_aware=True) as client, pytest.raises(UnloadableRowError) as stop:
        load_pending(pipeline_env, mongo_target.sink(client[mongo_db_name]))
    sentence = str(stop.value)
    assert f"the row 2 of {db}.users" in sentence and "code 11000" in sentence
    assert "cdc-pipeline load --pending" in sentence and "secret" not in sentence

    code, out, err = run_cli("status", capsys=capsys)
    assert code == 1 and f"the row 2 of {db}.users" in err, (out, err)
    code, out, err = run_cli("status", "--json", capsys=capsys)
    assert code == 1 and f"row 2 of {db}.users" in json.loads(out)["load_halt"]
    code, out, err = run_cli("doctor", capsys=capsys)
    assert code != 0 and f"the row 2 of {db}.users" in out + err
    assert "secret" not in out + err

    with mongo_target.client(tz_aware=True) as client:
        client[mongo_db_name][sink.mirror(db, "users")].drop_index("email_1")
        load_pending(pipeline_env, mongo_target.sink(client[mongo_db_name]))
        assert client[mongo_db_name][LOAD_HALTS].count_documents({}) == 0
        assert mirror_differences(source_server, db, mongo_target.sink(client[mongo_db_name])) == []
    code, out, err = run_cli("status", capsys=capsys)
    assert code == 0, err
    assert "row 2" not in out + err


def test_under_dead_letter_a_refused_row_and_its_later_changes_wait_aside_in_order(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    pipeline_env: WalPaths,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CDC_MONGO_COMPAT", mongo_target.compat)
    monkeypatch.setenv("CDC_ON_UNLOADABLE", "dead-letter")
    db = source_schema
    users = f"`{db}`.users"
    source_server.execute(f"CREATE TABLE {users} (id INT PRIMARY KEY, email VARCHAR(40))")
    capture_all(capture_settings)
    source_server.execute(f"INSERT INTO {users} VALUES (1, 'a@example.org')")
    capture_all(capture_settings)

    def load() -> None:
        with sink_with_source(
            source_server, mongo_target, mongo_db_name, on_unloadable="dead-letter"
        ) as sink:
            load_pending(pipeline_env, sink)

    load()
    with mongo_target.client(tz_aware=True) as client:
        mirror = client[mongo_db_name][mongo_target.sink(client[mongo_db_name]).mirror(db, "users")]
        mirror.create_index("email", unique=True)
    source_server.execute(
        f"INSERT INTO {users} VALUES (2, 'a@example.org')",  # refused: set aside
        f"INSERT INTO {users} VALUES (3, 'c@example.org')",  # loads
    )
    capture_all(capture_settings)
    load()
    source_server.execute(
        f"UPDATE {users} SET email = 'b@example.org' WHERE id = 2",  # waits behind the refusal
        f"UPDATE {users} SET email = 'd@example.org' WHERE id = 3",
    )
    capture_all(capture_settings)
    load()
    with mongo_target.client(tz_aware=True) as client:
        mirror = client[mongo_db_name][mongo_target.sink(client[mongo_db_name]).mirror(db, "users")]
        assert sorted((d["_id"], d["email"]) for d in mirror.find()) == [
            (1, "a@example.org"),
            (3, "d@example.org"),
        ]
        letter = client[mongo_db_name][DEAD_LETTERS].find_one({})
        assert letter is not None and letter["changes"] == 2 and letter["key"] == 2
        assert letter["document"]["email"] == "b@example.org" and "11000" in letter["reason"]

    code, out, err = run_cli("status", capsys=capsys)
    assert code == 1 and "1 row set aside in cdc_dead_letters" in err, (out, err)
    code, out, err = run_cli("verify", capsys=capsys)
    assert code == 1 and "set aside in cdc_dead_letters" in out + err, (out, err)
    code, out, err = run_cli("dead-letters", "list", "--json", capsys=capsys)
    rows = json.loads(out)["dead_letters"]
    assert code == 0 and [(r["table"], r["key"], r["changes"]) for r in rows] == [
        (f"{db}.users", "2", 2)
    ]

    # The set-aside key's latest document is written; the earlier refused one never is.
    code, out, err = run_cli("dead-letters", "retry", capsys=capsys)
    assert code == 0, err
    with mongo_target.client(tz_aware=True) as client:
        assert client[mongo_db_name][DEAD_LETTERS].count_documents({}) == 0
        assert mirror_differences(source_server, db, mongo_target.sink(client[mongo_db_name])) == []
    assert run_cli("status", capsys=capsys)[0] == 0
    assert run_cli("verify", capsys=capsys)[0] == 0


def test_a_retry_that_is_still_refused_keeps_the_row_and_exits_1(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    pipeline_env: WalPaths,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CDC_MONGO_COMPAT", mongo_target.compat)
    monkeypatch.setenv("CDC_ON_UNLOADABLE", "dead-letter")
    db = source_schema
    source_server.execute(f"CREATE TABLE `{db}`.u (id INT PRIMARY KEY, email VARCHAR(40))")
    capture_all(capture_settings)
    source_server.execute(f"INSERT INTO `{db}`.u VALUES (1, 'same')")
    capture_all(capture_settings)
    assert run_cli("load", "--pending", capsys=capsys)[0] == 0
    with mongo_target.client(tz_aware=True) as client:
        mirror = client[mongo_db_name][mongo_target.sink(client[mongo_db_name]).mirror(db, "u")]
        mirror.create_index("email", unique=True)
    source_server.execute(f"INSERT INTO `{db}`.u VALUES (2, 'same')")
    capture_all(capture_settings)
    assert run_cli("load", "--pending", capsys=capsys)[0] == 0  # the rest loads

    code, _, err = run_cli("dead-letters", "retry", capsys=capsys)
    assert code == 1 and f"the row 2 of {db}.u" in err and "still refused" in err
    with mongo_target.client(tz_aware=True) as client:
        assert client[mongo_db_name][DEAD_LETTERS].count_documents({}) == 1
        client[mongo_db_name][mongo_target.sink(client[mongo_db_name]).mirror(db, "u")].drop_index(
            "email_1"
        )
    assert run_cli("dead-letters", "retry", capsys=capsys)[0] == 0
    assert run_cli("verify", capsys=capsys)[0] == 0
