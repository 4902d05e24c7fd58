"""Retention through ``binlog_capture_sensor``: loaded segments go, their partitions too, no gap.

Against the real sources and the session's MongoDB server, with ``CDC_RETENTION_HOURS=0``: the
sensor reads MongoDB's checkpoint and deletes loaded segments (never the newest, never an
unloaded one, never one whose load run is queued) and their ``cdc_batches`` partitions; capture
then goes on from exactly where the retired chain ends; an unreachable MongoDB only skips
retention.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import timedelta
from itertools import pairwise

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from cdc_pipeline.core.load.documents import CHECKPOINTS, ROW_CHANGES
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.load.retention import retire_segments
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings
from cdc_pipeline.core.wal.segment import read_manifest
from cdc_pipeline.core.wal.staging import WalPaths, list_segments, partition_key
from cdc_pipeline.defs.load_runs import loader_tags
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.sensor_ticks import capture_sensor_tick
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


tick = capture_sensor_tick


def message_of(result: dg.SensorResult | dg.SkipReason) -> str:
    """The tick's summary: the skip message, or the one kept in the cursor with its runs."""
    if isinstance(result, dg.SkipReason):
        return str(result.skip_message)
    return str(json.loads(result.cursor or "{}").get("message", ""))


def on_disk(paths: WalPaths) -> list[int]:
    return [int(path.stem.split("-")[1]) for path in list_segments(paths)]


def keys(*sequences: int) -> list[str]:
    return [partition_key("default", sequence) for sequence in sequences]


@pytest.fixture
def sensor_env(
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_db_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> WalPaths:
    monkeypatch.setenv("CDC_STAGING_DIR", str(capture_settings.staging_dir))
    monkeypatch.setenv("CDC_INCLUDE_TABLES", f"{source_schema}.*")
    monkeypatch.setenv("CDC_SERVER_ID", str(capture_settings.server_id))
    monkeypatch.setenv("CDC_MONGO_DB", mongo_db_name)
    monkeypatch.setenv("CDC_RETENTION_HOURS", "0")
    return WalPaths(capture_settings.staging_dir, capture_settings.source_name)


def test_the_sensor_retires_loaded_segments_and_capture_continues_without_a_gap(
    source_server: SourceServer,
    source_schema: str,
    sensor_env: WalPaths,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    paths = sensor_env
    mongo = MongoSettings(uri=mongo_target.uri, database=mongo_db_name, compat=mongo_target.compat)
    uri = mongo_target.uri
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    with dg.instance_for_test() as instance:
        assert "nothing new" in message_of(tick(instance, source_server, uri))
        for row in range(1, 6):
            source_server.execute(f"INSERT INTO {table} VALUES ({row})")
            assert isinstance(tick(instance, source_server, uri), dg.SensorResult)
        assert on_disk(paths) == [1, 2, 3, 4, 5]
        run_load(paths, mongo, through_sequence=3)

        # A running load run for segment 2 holds it (and what follows) on disk.
        run = create_run_for_test(
            instance,
            job_name="load_batch_job",
            status=dg.DagsterRunStatus.STARTED,
            tags={**loader_tags("default"), "dagster/partition": keys(2)[0]},
        )
        held = message_of(tick(instance, source_server, uri))
        assert "retired 1 segment (" in held and "a load run for it is in flight" in held
        assert on_disk(paths) == [2, 3, 4, 5]
        assert instance.get_dynamic_partitions("cdc_batches") == keys(2, 3, 4, 5)
        instance.delete_run(run.run_id)

        # The run loading the newest segment is in flight (else the sensor would resume 4..5).
        newest_run = create_run_for_test(
            instance,
            job_name="load_batch_job",
            status=dg.DagsterRunStatus.STARTED,
            tags={**loader_tags("default"), "dagster/partition": keys(5)[0]},
        )
        idle = message_of(tick(instance, source_server, uri))
        assert "retired 2 segments" in idle and "not loaded yet" in idle
        assert on_disk(paths) == [4, 5]  # loaded ones gone, unloaded ones kept
        assert instance.get_dynamic_partitions("cdc_batches") == keys(4, 5)
        instance.delete_run(newest_run.run_id)

        run_load(paths, mongo)
        newest_kept = message_of(tick(instance, source_server, uri))
        assert "retired 1 segment" in newest_kept and "the newest segment" in newest_kept
        assert on_disk(paths) == [5]
        assert instance.get_dynamic_partitions("cdc_batches") == keys(5)

        source_server.execute(f"INSERT INTO {table} VALUES (6), (7)")
        captured = tick(instance, source_server, uri)
        assert isinstance(captured, dg.SensorResult)
        assert [r.partition_key for r in captured.run_requests or []] == keys(6)
        # Segment 6 was captured from 5's end; 5 (loaded, no longer the newest) then retired.
        assert on_disk(paths) == [6]
        assert instance.get_dynamic_partitions("cdc_batches") == keys(6)

    ledger = json.loads((paths.root / "retired.json").read_text())
    origin = json.loads(paths.origin.read_text())
    chain = ledger["chain"]
    assert [link[0] for link in chain] == [1, 2, 3, 4, 5] and ledger["break_count"] == 0
    assert chain[0][1] == origin["gtid"] == ledger["first_start_gtid"]
    assert all(before[2] == after[1] for before, after in pairwise(chain))
    sixth = read_manifest(paths.segment(6))
    assert sixth.start_gtid == chain[-1][2] == ledger["end_gtid"]  # no gap, no overlap

    loaded = run_load(paths, mongo)
    assert [item.sequence for item in loaded.loaded] == [6]
    with mongo_target.client() as client:
        database = client[mongo_db_name]
        events = list(database[ROW_CHANGES].find({}, {"gtid": 1}))
        checkpoint = database[CHECKPOINTS].find_one({"_id": "default"})
    assert len(events) == 7 and len({event["gtid"] for event in events}) == 6  # no gap, no twice
    assert checkpoint is not None and checkpoint["gtid"] == sixth.end_gtid


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_mongodb_only_skips_retention(
    source_server: SourceServer,
    source_schema: str,
    sensor_env: WalPaths,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    paths = sensor_env
    mongo = MongoSettings(uri=mongo_target.uri, database=mongo_db_name, compat=mongo_target.compat)
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    with dg.instance_for_test() as instance:
        tick(instance, source_server, mongo_target.uri)
        for row in (1, 2, 3):
            source_server.execute(f"INSERT INTO {table} VALUES ({row})")
            tick(instance, source_server, mongo_target.uri)
        run_load(paths, mongo)

        source_server.execute(f"INSERT INTO {table} VALUES (4)")
        started = time.monotonic()
        down = tick(instance, source_server, f"mongodb://127.0.0.1:{closed_port()}")
        seconds = time.monotonic() - started

        assert isinstance(down, dg.SensorResult)  # capture and registration go on
        assert [r.partition_key for r in down.run_requests or []] == keys(4)
        assert on_disk(paths) == [1, 2, 3, 4] and not (paths.root / "retired.json").exists()
        assert seconds < 15, f"a tick with MongoDB down took {seconds:.1f} s"
        up = message_of(tick(instance, source_server, mongo_target.uri))
        assert "retired 3 segments" in up and on_disk(paths) == [4]


def test_a_partition_left_by_a_tick_killed_after_retiring_is_pruned_next_tick(
    source_server: SourceServer,
    source_schema: str,
    sensor_env: WalPaths,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    paths = sensor_env
    mongo = MongoSettings(uri=mongo_target.uri, database=mongo_db_name, compat=mongo_target.compat)
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    with dg.instance_for_test() as instance:
        tick(instance, source_server, mongo_target.uri)
        for row in (1, 2, 3):
            source_server.execute(f"INSERT INTO {table} VALUES ({row})")
            tick(instance, source_server, mongo_target.uri)
        run_load(paths, mongo)
        # A tick died after deleting the files, before deleting the partitions.
        retire_segments(paths, 3, timedelta(0))
        assert instance.get_dynamic_partitions("cdc_batches") == keys(1, 2, 3)

        tick(instance, source_server, mongo_target.uri)

        assert instance.get_dynamic_partitions("cdc_batches") == keys(3)
