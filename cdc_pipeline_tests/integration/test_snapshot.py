"""Snapshot against real MariaDB / MySQL 9.7 and the session's MongoDB.

Each test ends with the invariants every load test checks: every mirror equals its source table
(read independently with SQL), the checkpoint equals the source's GTID state, no event is staged
or applied twice, the WAL chains; and here also: the change log holds every row change after the
snapshot point exactly once (an independent binlog read), and nothing before it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cdc_pipeline.core.audit.duplicates import check_change_log, check_wal
from cdc_pipeline.core.audit.status import read_status
from cdc_pipeline.core.capture.snapshot import run_snapshot
from cdc_pipeline.core.capture.snapshot_plan import SnapshotProgress, load_plan, read_recoveries
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.errors import BinlogPurgedError
from cdc_pipeline.core.images import encode_image
from cdc_pipeline.core.load.documents import MIRROR_STATUS, ROW_CHANGES
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl
from cdc_pipeline.core.wal.continuity import check_chain, gather_chain
from cdc_pipeline.core.wal.segment import read_manifest
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline_tests.binlog_oracle import binlog_row_events
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.pipeline_checks import (
    checkpoint_matches_source,
    mirror_differences,
    replay_problems,
)
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration

BIG_ROWS = 20_000
SEGMENT_ROWS = 2_000


def _create_tables(server: SourceServer, schema: str, big_rows: int = BIG_ROWS) -> None:
    server.execute(
        f"CREATE TABLE `{schema}`.big (id INT PRIMARY KEY, grp INT, name VARCHAR(40),"
        " amount DECIMAL(12,2), doc JSON, updated DATETIME(6))",
        f"CREATE TABLE `{schema}`.pairs (a INT, b VARCHAR(10), v INT, PRIMARY KEY (b, a))",
        f"CREATE TABLE `{schema}`.nokey (x INT, y VARCHAR(10))",
    )
    with contextlib.closing(server.connect()) as connection, connection.cursor() as cursor:
        for start in range(0, big_rows, 2_000):
            cursor.executemany(
                f"INSERT INTO `{schema}`.big VALUES (%s, %s, %s, %s, %s, NOW(6))",
                [
                    (n, n % 7, f"row {n} ünï", f"{n}.{n % 100:02d}", json.dumps({"n": n}))
                    for n in range(start, min(start + 2_000, big_rows))
                ],
            )
        cursor.executemany(
            f"INSERT INTO `{schema}`.pairs VALUES (%s, %s, %s)",
            [(n, f"k{n % 13}", n) for n in range(500)],
        )
        cursor.executemany(
            f"INSERT INTO `{schema}`.nokey VALUES (%s, %s)", [(n % 50, f"y{n}") for n in range(300)]
        )


class Writer:
    """Writes to the tables from a thread until stopped: updates, inserts, deletes, in small
    transactions, so the snapshot reads while rows change under it."""

    def __init__(self, server: SourceServer, schema: str, seed: int = 7):
        self.server, self.schema = server, schema
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.transactions = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        try:
            with contextlib.closing(self.server.connect(autocommit=False)) as connection:
                cursor = connection.cursor()
                next_id = 10_000_000
                while not self.stop.is_set():
                    for _ in range(5):
                        n = self.random.randrange(BIG_ROWS)
                        kind = self.random.random()
                        if kind < 0.6:
                            cursor.execute(
                                f"UPDATE `{self.schema}`.big SET name = %s, amount = amount + 1,"
                                " updated = NOW(6) WHERE id = %s",
                                (f"upd {self.transactions}", n),
                            )
                        elif kind < 0.8:
                            cursor.execute(f"DELETE FROM `{self.schema}`.big WHERE id = %s", (n,))
                        else:
                            next_id += 1
                            cursor.execute(
                                f"INSERT INTO `{self.schema}`.big VALUES (%s, 1, 'new', 1.5,"
                                " '[1, 2]', NOW(6))",
                                (next_id,),
                            )
                    cursor.execute(
                        f"UPDATE `{self.schema}`.pairs SET v = v + 1 WHERE a = %s",
                        (self.random.randrange(500),),
                    )
                    cursor.execute(
                        f"INSERT INTO `{self.schema}`.nokey VALUES (%s, 'live')",
                        (self.transactions,),
                    )
                    connection.commit()
                    self.transactions += 1
                    time.sleep(0.005)
        except BaseException as error:  # surfaced by the test
            self.error = error


def _settings(settings: CaptureSettings) -> CaptureSettings:
    return replace(settings, max_events_per_segment=SEGMENT_ROWS, row_group_size=500)


def _mongo(target: MongoTarget, database: str) -> MongoSettings:
    compat = {} if target.compat == "standard" else {"CDC_MONGO_COMPAT": target.compat}
    return MongoSettings.from_env({"CDC_MONGO_URI": target.uri, "CDC_MONGO_DB": database, **compat})


def _capture_all(settings: CaptureSettings) -> int:
    for ticks in range(200):
        if capture_once(settings).manifest is None:
            return ticks
    raise AssertionError("capture never caught up")


def _load(paths: WalPaths, mongo: MongoSettings, server: SourceServer) -> None:
    run_load(paths, mongo, source_url=SourceUrl.parse(server.url))  # raises when it halts


def _snapshot_point(paths: WalPaths) -> str:
    """The GTID state of the newest snapshot segment (the last read view)."""
    ends = [
        read_manifest(path).end_gtid
        for path in list_segments(paths)
        if read_manifest(path).kind == "snapshot"
    ]
    return ends[-1]


def _assert_pipeline_exact(
    server: SourceServer,
    schema: str,
    paths: WalPaths,
    target: MongoTarget,
    database_name: str,
    stream_start: str,
) -> dict[str, int]:
    """The invariants after snapshot + stream + load; returns a few counts for the caller."""
    assert replay_problems(paths, "big") == []
    with target.client() as client:
        database = client[database_name]
        sink = target.sink(database)
        assert mirror_differences(server, schema, sink) == []
        matches, applied, wanted = checkpoint_matches_source(server, database)
        assert matches, (applied, wanted)
        wal = check_wal(paths)
        assert wal.ok, wal.problems
        applied_through = read_manifest(list_segments(paths)[-1]).sequence
        log = check_change_log(database, paths, applied_through)
        assert log.ok, log.problems
        links, origin, flavor, notes = gather_chain(paths)
        assert flavor is not None
        chain = check_chain(links, flavor, origin)
        assert chain.ok and not notes, chain.problems + notes
        # The change log: every row change after the stream's start exactly once, nothing else.
        expected = sorted(binlog_row_events(server, stream_start, schema))
        logged = list(database[ROW_CHANGES].find({"schema": schema}))
        changes = sorted(
            (document["_id"], document["table"], document["op"])
            for document in logged
            if document["op"] != "snapshot"
        )
        assert changes == expected
        snapshots = [document for document in logged if document["op"] == "snapshot"]
        assert {document["table"] for document in snapshots} <= {"nokey"}
        snapshot_rows = len(snapshots)
        assert database[MIRROR_STATUS].count_documents({}) == 0
        return {"stream_events": len(expected), "keyless_snapshot_rows": snapshot_rows}


def test_initial_snapshot_with_concurrent_writes_then_stream_is_exact(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    _create_tables(source_server, source_schema)
    settings = _settings(capture_settings)
    paths = WalPaths(settings.staging_dir, settings.source_name)
    steps: list[SnapshotProgress] = []
    with Writer(source_server, source_schema) as writer:
        time.sleep(0.3)
        before = writer.transactions
        result = run_snapshot(settings, on_progress=steps.append)
        during = writer.transactions - before
        time.sleep(0.5)
    assert writer.error is None, writer.error
    assert during > 0, "the writer must commit while the snapshot reads"
    assert result.complete and not result.resumed and result.stream_segments == 0
    assert result.rows_written >= BIG_ROWS * 0.8
    assert steps and steps[-1].rows_done == result.rows_written
    assert [step.rows_done for step in steps] == sorted(step.rows_done for step in steps)
    origin = json.loads(paths.origin.read_text())
    assert origin["gtid"] == result.point_gtid  # streaming starts exactly at the read view
    big_segments = [
        read_manifest(path).snapshot
        for path in list_segments(paths)
        if (read_manifest(path).snapshot or {}).get("table", "").endswith(".big")
    ]
    assert len(big_segments) >= BIG_ROWS // SEGMENT_ROWS - 2
    assert [info["after_key"] for info in big_segments[1:]] == [
        info["last_key"] for info in big_segments[:-1]
    ], "each segment starts where the previous one ended"
    _capture_all(settings)
    mongo = _mongo(mongo_target, mongo_db_name)
    _load(paths, mongo, source_server)
    counts = _assert_pipeline_exact(
        source_server, source_schema, paths, mongo_target, mongo_db_name, result.point_gtid
    )
    assert counts["stream_events"] > 0
    # The keyless table's rows at the read view are in the change log, as op snapshot.
    with contextlib.closing(source_server.connect()) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM `{source_schema}`.nokey")
        (keyless_now,) = cursor.fetchone()
    inserted_after = sum(
        1
        for _, table, op in binlog_row_events(source_server, result.point_gtid, source_schema)
        if table == "nokey" and op == "insert"
    )
    assert counts["keyless_snapshot_rows"] == keyless_now - inserted_after


def _cli_env(server: SourceServer, schema: str, settings: CaptureSettings) -> dict[str, str]:
    return {
        **os.environ,
        "CDC_MYSQL_URL": server.url,
        "CDC_STAGING_DIR": str(settings.staging_dir),
        "CDC_INCLUDE_TABLES": f"{schema}.*",
        "CDC_SERVER_ID": str(settings.server_id),
        "CDC_SEGMENT_MAX_EVENTS": "1000",
        "CDC_MONGO_URI": "mongodb://127.0.0.1:1",
    }


def _snapshot_segments(paths: WalPaths) -> list[dict[str, Any]]:
    found = []
    for path in list_segments(paths):
        with contextlib.suppress(Exception):
            manifest = read_manifest(path)
            if manifest.kind == "snapshot":
                found.append({**(manifest.snapshot or {}), "rows": manifest.row_count})
    return found


def test_snapshot_resumes_after_kill9_without_rewriting_finished_chunks(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    _create_tables(source_server, source_schema)
    settings = replace(capture_settings, max_events_per_segment=1_000, row_group_size=500)
    paths = WalPaths(settings.staging_dir, settings.source_name)
    env = _cli_env(source_server, source_schema, settings)
    with Writer(source_server, source_schema, seed=11) as writer:
        process = subprocess.Popen(
            [sys.executable, "-m", "cdc_pipeline.cli", "snapshot"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while len(_snapshot_segments(paths)) < 4:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the snapshot wrote no segments"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        killed_at = _snapshot_segments(paths)
        plan = load_plan(paths)
        assert plan is not None and plan.status == "running"
        assert "resumes it" in read_status(paths, None, None).snapshot
        # The sensor captures meanwhile: the stream goes on from the first read view.
        capture_once(settings)
        time.sleep(0.3)
        resumed = run_snapshot(settings)
        time.sleep(0.3)
    assert writer.error is None, writer.error
    assert resumed.resumed and resumed.complete
    kept = sum(info["rows"] for info in killed_at)
    assert resumed.rows_kept_from_before == kept > 0
    finished = _snapshot_segments(paths)
    assert finished[: len(killed_at)] == killed_at, "committed chunks are never rewritten"
    big = [info for info in finished if info["table"].endswith(".big")]
    assert [info["after_key"] for info in big[1:]] == [info["last_key"] for info in big[:-1]]
    assert len({info["point"]["gtid"] for info in finished}) == 2  # two read views
    print(
        f"\n{source_server.flavor}: killed after {len(killed_at)} segments ({kept:,} rows kept);"
        f" the resumed run wrote {resumed.rows_written:,} rows in {resumed.segments_written}"
        f" segments after {resumed.stream_segments} stream segments"
    )
    _capture_all(settings)
    mongo = _mongo(mongo_target, mongo_db_name)
    _load(paths, mongo, source_server)
    first_point = killed_at[0]["point"]["gtid"]
    _assert_pipeline_exact(
        source_server, source_schema, paths, mongo_target, mongo_db_name, first_point
    )


def test_purge_recovery_rebaselines_and_the_checks_show_the_recovered_gap(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    pipeline_env: WalPaths,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _create_tables(source_server, source_schema, big_rows=3_000)
    settings = _settings(capture_settings)
    paths = pipeline_env
    mongo = _mongo(mongo_target, mongo_db_name)
    if mongo_target.compat != "standard":
        monkeypatch.setenv("CDC_MONGO_COMPAT", mongo_target.compat)
    first = run_snapshot(settings)
    source_server.execute(f"UPDATE `{source_schema}`.big SET grp = 99 WHERE id < 100")
    _capture_all(settings)
    _load(paths, mongo, source_server)
    # Changes capture never reads: deletes, updates, inserts; then the binlog holding them goes.
    source_server.execute(
        f"DELETE FROM `{source_schema}`.big WHERE id BETWEEN 100 AND 199",
        f"UPDATE `{source_schema}`.big SET name = 'while down' WHERE id BETWEEN 200 AND 299",
        f"INSERT INTO `{source_schema}`.big VALUES (5000000, 1, 'gap', 1, '{{}}', NOW(6))",
        f"DELETE FROM `{source_schema}`.nokey WHERE x < 10",
    )
    source_server.purge_binlogs()
    with pytest.raises(BinlogPurgedError) as refused:
        capture_once(settings)
    lost = refused.value.lost_text
    assert lost
    source_server.execute(f"UPDATE `{source_schema}`.pairs SET v = -1 WHERE a < 5")
    recovery = run_snapshot(settings)
    assert recovery.snapshot_id != first.snapshot_id
    assert recovery.lost == lost
    assert recovery.recovered and recovery.stream_segments == 0
    recoveries = read_recoveries(paths)
    assert [entry["recovered"] for entry in recoveries] == [recovery.recovered]
    source_server.execute(f"UPDATE `{source_schema}`.big SET grp = -5 WHERE id < 10")
    _capture_all(settings)
    _load(paths, mongo, source_server)
    with mongo_target.client() as client:
        sink = mongo_target.sink(client[mongo_db_name])
        assert mirror_differences(source_server, source_schema, sink) == []
        matches, applied, wanted = checkpoint_matches_source(source_server, client[mongo_db_name])
        assert matches, (applied, wanted)
    from cdc_pipeline_tests.audit import audit

    evaluations = audit()
    failed = {name: e.metadata for name, e in evaluations.items() if not e.passed}
    assert failed == {}
    continuity = evaluations["gtid_continuity"]
    assert "recovered" in (continuity.description or "")
    assert recovery.recovered in json.dumps(continuity.metadata["recovered gaps"].value)


def test_validation_refuses_a_foreign_row_in_a_snapshot_segment(tmp_path: Path) -> None:
    """A snapshot segment holds rows of its one table only; anything else is reported."""
    from datetime import UTC, datetime

    from cdc_pipeline.core.wal.segment import Manifest
    from cdc_pipeline.core.wal.validation import validate_segment
    from cdc_pipeline.core.wal.writer import SegmentWriter

    paths = WalPaths(tmp_path, "default")
    paths.ensure()
    schema = {
        "schema": "s",
        "table": "t",
        "columns": [{"name": "id", "type_name": "int", "type_code": 3}],
        "primary_key": ["id"],
    }
    from cdc_pipeline.core.schema import TableSchema

    version = TableSchema.from_dict(schema).version
    schema["version"] = version

    def row(table: str, ordinal: int) -> dict[str, Any]:
        gtid = f"snapshot:S1:s.{table}"
        return {
            "event_id": f"{gtid}#{ordinal}",
            "gtid": gtid,
            "row_index": ordinal,
            "source": "default",
            "schema": "s",
            "table": table,
            "op": "snapshot",
            "pk": encode_image({"id": 1}),
            "before": None,
            "after": encode_image({"id": 1}),
            "schema_version": version,
            "binlog_file": "b.000001",
            "binlog_pos": 4,
            "committed_at": datetime.now(UTC),
            "statement": None,
        }

    for sequence, table in ((1, "t"), (2, "other")):
        writer = SegmentWriter(paths, sequence)
        writer.append([row(table, 0)])
        manifest = Manifest(
            source="default",
            sequence=sequence,
            flavor="mariadb",
            start_gtid="0-1-5",
            end_gtid="0-1-5",
            start_binlog_file="b.000001",
            start_binlog_pos=4,
            end_binlog_file="b.000001",
            end_binlog_pos=4,
            row_count=1,
            schema_versions={"s.t": {version: schema}},
            kind="snapshot",
            snapshot={"id": "S1", "table": "s.t", "keyed": True},
        )
        path = writer.commit(manifest)
        report = validate_segment(path).report
        assert report.ok == (table == "t"), report.problems


def test_snapshot_job_runs_through_dagster_and_registers_its_partitions(
    source_server: SourceServer, source_schema: str, pipeline_env: WalPaths
) -> None:
    import dagster as dg

    from cdc_pipeline.definitions import defs
    from cdc_pipeline.defs.partitions import cdc_batches_partitions

    _create_tables(source_server, source_schema, big_rows=2_500)
    config = {"ops": {"take_snapshot": {"config": {"tables": f"{source_schema}.big"}}}}
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("snapshot_job").execute_in_process(
            run_config=config, instance=instance
        )
        assert result.success
        outputs = [
            event.event_specific_data.metadata  # type: ignore[union-attr]
            for event in result.all_node_events
            if event.event_type_value == "STEP_OUTPUT"
        ]
        assert outputs and outputs[0]["rows written"].value == 2_500
        assert outputs[0]["recovered gtids"].value == "none"
        registered = instance.get_dynamic_partitions(cdc_batches_partitions.name)
    segments = [read_manifest(path) for path in list_segments(pipeline_env)]
    assert registered == [manifest.partition_key for manifest in segments]
    assert {(manifest.snapshot or {}).get("table") for manifest in segments} == {
        f"{source_schema}.big"
    }


def test_a_user_without_the_privilege_gets_one_sentence(
    source_server: SourceServer, source_schema: str, tmp_path: Path
) -> None:
    """MySQL needs RELOAD for the read lock; MariaDB's lock-free point does not."""
    from cdc_pipeline_tests.integration.test_cli_errors import cdc_user, run_cli

    _create_tables(source_server, source_schema, big_rows=100)
    grants = "SELECT, REPLICATION SLAVE, REPLICATION CLIENT"
    with cdc_user(source_server, grants) as (name, password):
        env = {
            "CDC_MYSQL_URL": f"mysql://{name}:{password}@127.0.0.1:{source_server.port}",
            "CDC_STAGING_DIR": str(tmp_path / "wal"),
            "CDC_INCLUDE_TABLES": f"{source_schema}.*",
        }
        run = run_cli("snapshot", "--json", env=env)
    if source_server.flavor == "mysql":
        line = run.assert_one_line_failure(2, password)
        assert "RELOAD" in line and "GRANT RELOAD ON *.*" in line
    else:
        assert run.code == 0, run.stderr
        run.assert_clean(password)
        assert json.loads(run.stdout)["rows_written"] == 100 + 500 + 300
