"""MongoDB down for over a minute while the source keeps writing: capture goes on, the loader
backs off to one probe per breaker interval, and the backlog drains by itself afterwards.

Drives the real Dagster pieces as the daemon would: ``binlog_capture_sensor`` is evaluated on a
test instance every tick, its partition requests are applied, and every requested
``load_batch_job`` run is executed in process. MongoDB is the session's nx-27017, killed -9 and
restarted on the same data (skipped against an external MongoDB).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.load.breaker import SinkBreaker
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline.definitions import defs
from cdc_pipeline_tests.binlog_oracle import binlog_row_events
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.pipeline_checks import (
    change_log_problems,
    checkpoint_matches_source,
    mirror_differences,
)
from cdc_pipeline_tests.sensor_ticks import capture_sensor_tick
from devtools.local_servers import NxMongoServer, SourceServer
from devtools.sample_workload import Workload

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.mongo_kill]

OUTAGE_SECONDS = float(os.environ.get("CDC_TEST_OUTAGE_SECONDS", "62"))
PROBE_SECONDS = 20
TICK_SECONDS = 2.0


def newest_sequence(paths: WalPaths) -> int:
    """Sequence of the newest segment (retention deletes loaded ones, so never count files)."""
    segments = list_segments(paths)
    return int(segments[-1].stem.split("-")[1]) if segments else 0


class Daemon:
    """What the Dagster daemon does for this pipeline: sensor ticks, then the runs they ask for."""

    def __init__(self, instance: dg.DagsterInstance, server: SourceServer, mongo_uri: str):
        self.instance = instance
        self.server = server
        self.mongo_uri = mongo_uri
        self.job = defs.resolve_job_def("load_batch_job")
        self.runs: list[tuple[float, str, bool]] = []  # (time, partition, success)

    def tick(self) -> None:
        result = capture_sensor_tick(self.instance, self.server, self.mongo_uri)
        if not isinstance(result, dg.SensorResult):
            return
        for run in result.run_requests or []:
            outcome = self.job.execute_in_process(
                instance=self.instance,
                partition_key=run.partition_key,
                tags=run.tags,
                raise_on_error=False,
            )
            self.runs.append((time.monotonic(), str(run.partition_key), outcome.success))


# MariaDB only: the fault is MongoDB's, and what the source side does meanwhile (capture goes on
# at every tick) is the same code on both servers, exercised on MySQL 9.7 by every other fault
# scenario; a second run cost CI two minutes for no added coverage (docs/faults.md).
@pytest.mark.parametrize("source_server", ["mariadb"], indirect=True)
def test_a_long_mongodb_outage_is_ridden_out_and_drains_by_itself(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    killable_mongo: NxMongoServer,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in {
        "CDC_MYSQL_URL": source_server.url,
        "CDC_MONGO_URI": mongo_target.uri,
        "CDC_MONGO_DB": mongo_db_name,
        "CDC_STAGING_DIR": str(capture_settings.staging_dir),
        "CDC_INCLUDE_TABLES": f"{source_schema}.*",
        "CDC_SERVER_ID": str(capture_settings.server_id),
        "CDC_TICK_MAX_SECONDS": "2",
        "CDC_BREAKER_PROBE_SECONDS": str(PROBE_SECONDS),
        "CDC_MONGO_RETRY_SECONDS": "3",
        "CDC_RETENTION_HOURS": "0",
    }.items():
        monkeypatch.setenv(name, value)
    paths = WalPaths(capture_settings.staging_dir, "default")
    workload = Workload(source_server, source_schema, seed=7, max_rows=8, pause_seconds=0.05)
    workload.create_tables()
    capture_once(capture_settings)
    origin = json.loads(paths.origin.read_text())["gtid"]

    with dg.instance_for_test() as instance:
        daemon = Daemon(instance, source_server, mongo_target.uri)
        workload.start()
        try:
            for _ in range(3):
                daemon.tick()
                time.sleep(TICK_SECONDS)
            killable_mongo.kill9()
            down_at = time.monotonic()
            segments_before = newest_sequence(paths)
            while time.monotonic() - down_at < OUTAGE_SECONDS:
                daemon.tick()
                time.sleep(TICK_SECONDS)
            captured_during_outage = newest_sequence(paths) - segments_before
            breaker_during = SinkBreaker(paths.root / "sink_breaker.json").read()
            killable_mongo.restart()
            up_at = time.monotonic()
            for _ in range(15):
                daemon.tick()
                time.sleep(TICK_SECONDS)
        finally:
            workload.stop()
        for _ in range(40):  # the workload stopped: tick until everything is loaded
            daemon.tick()
            state = SinkBreaker(paths.root / "sink_breaker.json").read()
            with mongo_target.client() as client:
                checkpoint = client[mongo_db_name]["cdc_checkpoints"].find_one({"_id": "default"})
            if (
                state.state == "closed"
                and checkpoint
                and not any(
                    int(p.stem.split("-")[1]) > checkpoint["last_sequence"]
                    for p in list_segments(paths)
                )
            ):
                break
            time.sleep(TICK_SECONDS)

    failed_during_outage = [r for r in daemon.runs if down_at <= r[0] <= up_at and not r[2]]
    runs_during_outage = [r for r in daemon.runs if down_at <= r[0] <= up_at]
    print(
        f"{source_server.flavor}: outage {up_at - down_at:.0f} s, {captured_during_outage}"
        f" segments captured meanwhile, {len(runs_during_outage)} load runs during the outage"
        f" ({len(failed_during_outage)} failed), {len(daemon.runs)} runs in all,"
        f" {workload.committed_transactions} transactions written"
    )
    assert breaker_during.state == "open" and breaker_during.down_since
    assert captured_during_outage >= 5, "capture must keep going while MongoDB is down"
    # The first failing run opens the breaker; after that at most one probe per interval.
    allowed = 2 + int((up_at - down_at) // PROBE_SECONDS)
    assert len(failed_during_outage) <= allowed
    assert len(runs_during_outage) < captured_during_outage  # no run per segment meanwhile

    with mongo_target.client(tz_aware=True) as client:
        sink = mongo_target.sink(client[mongo_db_name])
        assert mirror_differences(source_server, source_schema, sink) == []
        expected = binlog_row_events(source_server, origin, source_schema)
        assert change_log_problems(expected, client[mongo_db_name], source_schema) == []
        matches, applied, source = checkpoint_matches_source(source_server, client[mongo_db_name])
        assert matches, f"checkpoint {applied} != source {source}"
