"""``reconcile`` and ``cdc-pipeline verify`` against real MariaDB / MySQL 9.7 and the session's
MongoDB: a healthy pipeline is equal; mirror documents deleted, altered or added behind the
pipeline's back are named by key (and field); a source ahead of the loader is skipped, never
compared, until the loader catches up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from cdc_pipeline import cli
from cdc_pipeline.core.audit.reconcile.attempt import CAPTURE_BEHIND, TOUCHED
from cdc_pipeline.core.audit.reconcile.report import ReconcileReport
from cdc_pipeline.core.audit.reconcile.run import reconcile
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.load.documents import MIRROR_STATUS, id_filter
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.load.sink import MongoSink
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl
from cdc_pipeline.core.wal.segment import read_verified
from cdc_pipeline.core.wal.staging import WalPaths, list_segments, loader_lock
from cdc_pipeline_tests.conftest import MongoTarget
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration

BIG_ROWS = 3000


@dataclass
class Pipeline:
    server: SourceServer
    schema: str
    settings: CaptureSettings
    paths: WalPaths
    target: MongoTarget
    database_name: str
    env: dict[str, str]

    @property
    def mongo(self) -> MongoSettings:
        return MongoSettings.from_env(self.env)

    def sink(self, client: Any) -> MongoSink:
        return self.target.sink(client[self.database_name])

    def capture_all(self) -> None:
        for _ in range(100):
            if capture_once(self.settings).manifest is None:
                return
        raise AssertionError("capture never caught up")

    def load(self) -> None:
        run_load(self.paths, self.mongo, source_url=SourceUrl.parse(self.server.url))

    def reconcile(
        self, wait_seconds: float = 20.0, sleep: Callable[[float], None] = time.sleep
    ) -> ReconcileReport:
        return reconcile(
            self.paths,
            SourceUrl.parse(self.server.url),
            self.mongo,
            (f"{self.schema}.*",),
            wait_seconds=wait_seconds,
            sleep=sleep,
        )

    def table(self, name: str) -> str:
        return f"`{self.schema}`.`{name}`"


def states(report: ReconcileReport) -> dict[str, str]:
    return {result.name.split(".", 1)[1]: result.state for result in report.tables}


def result(report: ReconcileReport, table: str) -> Any:
    return next(r for r in report.tables if r.name.split(".", 1)[1] == table)


@pytest.fixture
def pipeline(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Pipeline]:
    """Four tables (one without a key) with rows of many types, captured and loaded."""
    env = {
        "CDC_MYSQL_URL": source_server.url,
        "CDC_MONGO_URI": mongo_target.uri,
        "CDC_MONGO_DB": mongo_db_name,
        "CDC_MONGO_COMPAT": mongo_target.compat,
        "CDC_STAGING_DIR": str(capture_settings.staging_dir),
        "CDC_INCLUDE_TABLES": f"{source_schema}.*",
        "CDC_SERVER_ID": str(capture_settings.server_id),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = replace(capture_settings, max_events_per_segment=2000)
    paths = WalPaths(settings.staging_dir, settings.source_name)
    db = source_schema
    source_server.execute(
        f"CREATE TABLE `{db}`.plain (id INT PRIMARY KEY, name VARCHAR(40), score INT,"
        " amount DECIMAL(10,2), created DATETIME(3), note TEXT)",
        f"CREATE TABLE `{db}`.composite (region CHAR(2), id BIGINT, qty SMALLINT,"
        " price DECIMAL(12,3), ratio DOUBLE, day DATE, at DATETIME(6), payload JSON,"
        " tags SET('a','b','c'), kind ENUM('x','y'), raw VARBINARY(8), flag BIT(3),"
        " `_id` INT, PRIMARY KEY (region, id))",
        f"CREATE TABLE `{db}`.big (id INT PRIMARY KEY, v VARCHAR(32), n INT, f FLOAT)",
        f"CREATE TABLE `{db}`.nokey (x INT, y VARCHAR(5))",
    )
    capture_once(settings)  # fixes the origin: every row below goes through the binlog
    with source_server.connect(autocommit=False) as connection, connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO `{db}`.plain VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (
                    n,
                    f"name {n}",
                    n * 10,
                    f"{n}.25",
                    f"2024-01-{n % 28 + 1:02d} 10:00:00.123",
                    "é" * n,
                )
                for n in range(1, 41)
            ],
        )
        cursor.executemany(
            f"INSERT INTO `{db}`.composite VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    region,
                    n,
                    n,
                    f"{n}.125",
                    n / 3,
                    "2024-02-29",
                    "2024-03-01 12:00:00.654321",
                    json.dumps({"n": n, "tags": ["a", None], "deep": {"x": 1.5}}),
                    "a,c",
                    "y",
                    bytes([n, 0, 255]),
                    n % 8,
                    -n,
                )
                for region in ("EU", "US")
                for n in range(1, 16)
            ],
        )
        cursor.executemany(
            f"INSERT INTO `{db}`.big VALUES (%s, %s, %s, %s)",
            [(n, f"value {n}", n * n, n / 7) for n in range(1, BIG_ROWS + 1)],
        )
        cursor.execute(f"INSERT INTO `{db}`.nokey VALUES (1, 'a'), (1, 'a')")
        connection.commit()
    pipeline = Pipeline(source_server, db, settings, paths, mongo_target, mongo_db_name, env)
    pipeline.capture_all()
    pipeline.load()
    yield pipeline


def verify(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["verify", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_healthy_pipeline_is_equal_and_verify_exits_0(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    report = pipeline.reconcile()
    assert states(report) == {"big": "equal", "composite": "equal", "plain": "equal"}
    assert report.passed and report.complete, report.lines()
    assert (result(report, "big").source_rows, result(report, "big").mirror_rows) == (
        BIG_ROWS,
        BIG_ROWS,
    )
    assert result(report, "composite").source_rows == 30
    assert report.unmirrored == [f"{pipeline.schema}.nokey"]
    assert report.strays == []
    assert report.checkpoint_gtid == report.source_gtid != ""

    code, out, err = verify(capsys=capsys)
    assert code == 0, err
    assert f"{pipeline.schema}.big: equal {BIG_ROWS:,} rows" in out.splitlines()
    assert err == ""
    code, out, _ = verify("--json", capsys=capsys)
    data = json.loads(out)
    assert code == 0 and data["passed"] and data["complete"]
    assert {table["state"] for table in data["tables"]} == {"equal"}


def test_changes_behind_the_pipelines_back_are_named_by_key_and_field(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    with pipeline.target.client(tz_aware=True) as client:
        sink = pipeline.sink(client)
        plain = sink.database[sink.mirror(pipeline.schema, "plain")]
        composite = sink.database[sink.mirror(pipeline.schema, "composite")]
        assert plain.delete_one({"_id": 7}).deleted_count == 1
        key = {"region": "US", "id": 3}
        assert composite.update_one(id_filter(key), {"$set": {"qty": 999}}).modified_count == 1
        plain.insert_one({"_id": 4242, "name": "intruder"})
        # A table the pipeline once mirrored (so cdc_collections has it) dropped behind its back.
        ghost = sink.database[sink.register("default", pipeline.schema, "ghost", ["_id"])]
        ghost.insert_many([{"_id": 1}, {"_id": 2}])

    report = pipeline.reconcile()
    assert states(report) == {"big": "equal", "composite": "different", "plain": "different"}
    plain_result = result(report, "plain")
    assert (plain_result.missing, plain_result.extra, plain_result.differing) == (1, 1, 0)
    assert (plain_result.missing_keys, plain_result.extra_keys) == (["7"], ["4242"])
    assert (plain_result.source_rows, plain_result.mirror_rows) == (40, 40)
    composite_result = result(report, "composite")
    assert (composite_result.missing, composite_result.extra) == (0, 0)
    assert composite_result.differing_keys == [('{"region": "US", "id": 3}', ["qty"])]
    assert [(s.table, s.documents) for s in report.strays] == [("ghost", 2)]
    assert not report.passed and report.complete

    code, out, err = verify(capsys=capsys)
    assert code == 1
    assert "DIFFERENT missing 1 extra 1 differing 0" in out
    assert "differing " + '{"region": "US", "id": 3} (qty)' in out
    assert len(err.strip().splitlines()) == 1
    schema = pipeline.schema
    assert err.startswith(
        f"cdc-pipeline: verify: 2 differ ({schema}.composite, {schema}.plain); 1 stray mirror"
    ), err
    printed = (out + err).replace(schema, "<schema>")  # a random schema name may hold "999"
    assert "999" not in printed and "intruder" not in printed  # keys, never values

    with pipeline.target.client(tz_aware=True) as client:
        client[pipeline.database_name][MIRROR_STATUS].insert_one(
            {"_id": pipeline.sink(client).mirror(schema, "big"), "reason": "test"}
        )
    stale = pipeline.reconcile()
    assert states(stale)["big"] == "stale" and not stale.passed


def test_a_source_ahead_of_the_loader_is_skipped_until_the_loader_catches_up(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline.server.execute(f"UPDATE {pipeline.table('plain')} SET score = -1 WHERE id = 5")

    # Not captured yet: which tables it touched is unknown, so nothing is compared.
    report = pipeline.reconcile(wait_seconds=1.5)
    assert set(states(report).values()) == {"skipped"}
    assert all(CAPTURE_BEHIND.split("{")[0] in r.reason for r in report.tables)
    assert report.passed and not report.complete

    # Captured, not loaded: the touched table is skipped, the others are compared.
    pipeline.capture_all()
    report = pipeline.reconcile(wait_seconds=1.5)
    assert states(report) == {"big": "equal", "composite": "equal", "plain": "skipped"}
    assert result(report, "plain").reason == TOUCHED.replace("{wait}", "1.5")
    code, _, err = verify("--wait", "1", capsys=capsys)
    assert code == 1
    assert f"1 skipped ({pipeline.schema}.plain: changed after the checkpoint" in err

    pipeline.load()
    report = pipeline.reconcile(wait_seconds=1.5)
    assert set(states(report).values()) == {"equal"} and report.complete


def test_a_change_captured_while_verify_waits_is_caught_after_the_comparison(
    pipeline: Pipeline,
) -> None:
    """The change is neither captured nor loaded when the tables are compared; capture covers
    it while verify waits; the WAL then shows it touched ``plain`` (and only ``plain``)."""
    pipeline.server.execute(f"UPDATE {pipeline.table('plain')} SET name = 'x' WHERE id = 9")
    captures: list[None] = []

    def sleep(seconds: float) -> None:
        if not captures:
            captures.append(pipeline.capture_all())
        time.sleep(seconds)

    report = pipeline.reconcile(wait_seconds=1.5, sleep=sleep)
    assert captures
    assert states(report) == {"big": "equal", "composite": "equal", "plain": "skipped"}
    assert result(report, "plain").reason == TOUCHED.replace("{wait}", "1.5")


def test_writes_of_a_crashed_load_ahead_of_the_checkpoint_are_not_compared(
    pipeline: Pipeline,
) -> None:
    """A load that wrote mirror documents and died before its checkpoint."""
    pipeline.server.execute(f"DELETE FROM {pipeline.table('big')} WHERE id <= 10")
    pipeline.capture_all()
    segment = list_segments(pipeline.paths)[-1]
    with pipeline.target.client(tz_aware=True) as client, loader_lock(pipeline.paths):
        verified = read_verified(segment)
        pipeline.sink(client).apply(verified.rows(), verified.manifest)
    report = pipeline.reconcile(wait_seconds=1.5)
    assert states(report) == {"big": "skipped", "composite": "equal", "plain": "equal"}
    pipeline.load()
    assert set(states(pipeline.reconcile()).values()) == {"equal"}


def test_ddl_not_loaded_yet_skips_both_names_of_a_rename_and_a_changed_table(
    pipeline: Pipeline,
) -> None:
    schema = pipeline.schema
    pipeline.server.execute(
        f"RENAME TABLE `{schema}`.plain TO `{schema}`.renamed",
        f"ALTER TABLE `{schema}`.composite ADD COLUMN extra INT DEFAULT 5",
    )
    pipeline.capture_all()
    report = pipeline.reconcile(wait_seconds=1.5)
    assert states(report) == {"big": "equal", "composite": "skipped", "renamed": "skipped"}
    assert report.strays == []  # the old mirror is legitimately still there
    assert any("stray mirrors not checked" in problem for problem in report.problems)

    pipeline.load()  # renames the mirror, rebuilds the altered one from the source
    report = pipeline.reconcile()
    assert set(states(report).values()) == {"equal"} and report.passed and report.complete
    assert report.strays == []


def test_a_checkpoint_the_source_never_executed_fails_without_comparing(
    pipeline: Pipeline,
) -> None:
    with pipeline.target.client() as client:
        checkpoints = client[pipeline.database_name]["cdc_checkpoints"]
        document = checkpoints.find_one({"_id": "default"})
        assert document is not None
        if pipeline.server.flavor == "mariadb":
            domain, server, seq = document["gtid"].split(",")[0].split("-")
            foreign = f"{domain}-{server}-{int(seq) + 100}"
        else:
            foreign = document["gtid"] + ",3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"
        checkpoints.update_one({"_id": "default"}, {"$set": {"gtid": foreign}})
    report = pipeline.reconcile(wait_seconds=1.5)
    assert set(states(report).values()) == {"skipped"}
    assert all("the source never executed" in r.reason for r in report.tables)
    assert not report.passed and not report.complete


def test_verify_as_a_process_keeps_secrets_out_and_exits_2_on_bad_config(
    pipeline: Pipeline,
) -> None:
    env = {**os.environ, **pipeline.env}
    done = subprocess.run(
        [sys.executable, "-m", "cdc_pipeline.cli", "verify", "--wait", "5"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    secret = "pw-Secret-42"
    bad = {**env, "CDC_MONGO_URI": "mysql://nope", "CDC_MYSQL_URL": f"mysql://u:{secret}@h:1"}
    done = subprocess.run(
        [sys.executable, "-m", "cdc_pipeline.cli", "verify"],
        env=bad,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and secret not in done.stderr
