"""``binlog_capture_sensor`` through Dagster: partitions and runs come from the WAL on disk.

Evaluates the real sensor with ``build_sensor_context`` on a test instance against the real
sources: a tick with changes adds one ``cdc_batches`` partition and one ``load_batch_job`` run
keyed by it; an idle tick skips with the position; a segment written outside the sensor (the
CLI, or a tick killed after writing) is registered by the next tick.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.definitions import defs
from cdc_pipeline.defs.load import load_batch_job
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.sensor_ticks import capture_sensor_tick
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


evaluate = capture_sensor_tick


def test_sensor_registers_each_segment_once_and_requests_its_load(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    monkeypatch.setenv("CDC_MONGO_DB", mongo_db_name)
    monkeypatch.setenv("CDC_STAGING_DIR", str(capture_settings.staging_dir))
    monkeypatch.setenv("CDC_INCLUDE_TABLES", f"{source_schema}.*")
    monkeypatch.setenv("CDC_SERVER_ID", str(capture_settings.server_id))
    monkeypatch.setenv("CDC_MYSQL_URL", source_server.url)
    monkeypatch.setenv("CDC_MONGO_URI", mongo_target.uri)
    source_server.execute(f"CREATE TABLE `{source_schema}`.t (id INT PRIMARY KEY)")
    with dg.instance_for_test() as instance:
        first = evaluate(instance, source_server, mongo_target.uri)
        assert isinstance(first, dg.SkipReason) and "nothing new" in str(first.skip_message)

        source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES (1), (2)")
        ticked = evaluate(instance, source_server, mongo_target.uri)
        assert isinstance(ticked, dg.SensorResult)
        [request] = ticked.run_requests or []
        assert request.partition_key == request.run_key == "default-000000000001"
        assert request.tags["cdc/loader"] == "default"
        [add] = ticked.dynamic_partitions_requests or []
        assert list(add.partition_keys) == ["default-000000000001"]  # type: ignore[union-attr]
        assert json.loads(ticked.cursor or "{}")["last_partition"] == "default-000000000001"
        instance.add_dynamic_partitions("cdc_batches", ["default-000000000001"])
        instance.create_run_for_job(  # the daemon has created the requested run
            defs.resolve_job_def("load_batch_job"),
            tags={**request.tags, "dagster/partition": "default-000000000001"},
            status=dg.DagsterRunStatus.NOT_STARTED,
        )

        idle = evaluate(instance, source_server, mongo_target.uri, ticked.cursor)
        assert isinstance(idle, dg.SkipReason)  # its run exists: nothing to resume

        # A segment the sensor did not write (CLI, or a tick killed after the rename).
        source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES (3)")
        assert capture_once(capture_settings).partition_key == "default-000000000002"
        picked_up = evaluate(instance, source_server, mongo_target.uri)
        assert isinstance(picked_up, dg.SensorResult)
        assert [r.partition_key for r in picked_up.run_requests or []] == ["default-000000000002"]


def materializations(
    result: dg.ExecuteInProcessResult, asset: str
) -> list[dg.AssetMaterialization]:
    """The materializations of ``asset`` in a run (both assets come from one step)."""
    return [
        materialization
        for materialization in result.asset_materializations_for_node("load_segment")
        if materialization.asset_key == dg.AssetKey(asset)
    ]


def test_load_batch_job_validates_and_loads_its_segment(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    monkeypatch: pytest.MonkeyPatch,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    monkeypatch.setenv("CDC_STAGING_DIR", str(capture_settings.staging_dir))
    monkeypatch.setenv("CDC_MONGO_URI", mongo_target.uri)
    monkeypatch.setenv("CDC_MYSQL_URL", source_server.url)
    monkeypatch.setenv("CDC_MONGO_DB", mongo_db_name)
    source_server.execute(f"CREATE TABLE `{source_schema}`.t (id INT PRIMARY KEY)")
    capture_once(capture_settings)
    source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES (1), (2), (3)")
    key = capture_once(capture_settings).partition_key
    assert key is not None
    from cdc_pipeline.definitions import defs

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("cdc_batches", [key])
        job = defs.resolve_job_def(load_batch_job.name)
        result = job.execute_in_process(instance=instance, partition_key=key)
        assert result.success
        [materialization] = materializations(result, "wal_segment")
        assert materialization.metadata["rows"].value == 3
        rows_by_table = materialization.metadata["rows by table and op"].value
        assert rows_by_table == {f"{source_schema}.t": {"insert": 3}}
        [check] = result.get_asset_check_evaluations()
        assert check.check_name == "schema_versions_valid" and check.passed
        [loaded] = materializations(result, "mongo_batch")
        assert loaded.metadata["rows"].value == 3
        assert loaded.metadata["checkpoint"].value == key
        # The next load's history table lists both loads, newest first, from the event log.
        source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES (4), (5)")
        second = capture_once(capture_settings).partition_key
        assert second is not None
        instance.add_dynamic_partitions("cdc_batches", [second])
        result = job.execute_in_process(instance=instance, partition_key=second)
        [loaded] = materializations(result, "mongo_batch")
        history = loaded.metadata["recent loads"].value
        assert history.startswith("last 2 loads: lag median"), history
        rows = [line for line in history.splitlines() if line.startswith(f"| {key[:-1]}")]
        assert [row.split(" | ")[0][2:] for row in rows] == [second, key], history
        assert [row.split(" | ")[2] for row in rows] == ["2", "3"], history
    with mongo_target.client() as client:
        assert client[mongo_db_name]["row_changes"].count_documents({}) == 5


def test_pending_segments_without_a_load_run_get_one_resume_run_per_interval(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    monkeypatch: pytest.MonkeyPatch,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    """A load run that died leaves its segment pending; when no run is queued or running and
    nothing new arrives, the sensor asks for one resume run, then waits an interval."""
    monkeypatch.setenv("CDC_MONGO_DB", mongo_db_name)
    monkeypatch.setenv("CDC_STAGING_DIR", str(capture_settings.staging_dir))
    monkeypatch.setenv("CDC_INCLUDE_TABLES", f"{source_schema}.*")
    monkeypatch.setenv("CDC_SERVER_ID", str(capture_settings.server_id))
    monkeypatch.setenv("CDC_BREAKER_PROBE_SECONDS", "3600")
    source_server.execute(f"CREATE TABLE `{source_schema}`.t (id INT PRIMARY KEY)")
    with dg.instance_for_test() as instance:
        evaluate(instance, source_server, mongo_target.uri)
        source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES (1)")
        ticked = evaluate(instance, source_server, mongo_target.uri)
        assert isinstance(ticked, dg.SensorResult)
        [request] = ticked.run_requests or []  # the run is requested, then "dies": never runs
        assert request.run_key == "default-000000000001"

        resumed = evaluate(instance, source_server, mongo_target.uri, ticked.cursor)
        assert isinstance(resumed, dg.SensorResult)
        [resume] = resumed.run_requests or []
        assert resume.partition_key == "default-000000000001"
        assert (resume.run_key or "").startswith("resume:default-000000000001:")
        assert resume.tags["cdc/resume"] == "true"

        again = evaluate(instance, source_server, mongo_target.uri, resumed.cursor)
        assert isinstance(again, dg.SkipReason)  # within the interval: no second resume run
