"""``replication_lag`` through ``audit_job`` against the real servers: passes when MongoDB holds
everything the source executed; warns, then errors, while a stalled loader leaves captured
segments unapplied (naming the oldest pending batch); and fails while the checkpoint lags
transactions capture has not read yet (naming them)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings
from cdc_pipeline.core.wal.staging import WalPaths, list_segments, partition_key, sequence_of
from cdc_pipeline_tests.audit import audit, value
from cdc_pipeline_tests.binlog_oracle import executed_gtids
from cdc_pipeline_tests.conftest import MongoTarget
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration

WARN, ERROR = 6, 12  # seconds: longer than capture plus an audit run takes here (about 3 s)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def test_replication_lag_follows_a_stalled_loader_and_a_lagging_checkpoint(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    monkeypatch: pytest.MonkeyPatch,
    pipeline_env: WalPaths,
) -> None:
    monkeypatch.setenv("CDC_LAG_WARN_SECONDS", str(WARN))
    monkeypatch.setenv("CDC_LAG_ERROR_SECONDS", str(ERROR))
    settings = replace(capture_settings, max_events_per_segment=3)
    paths = WalPaths(settings.staging_dir, "default")
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(settings)
    run_load(paths, MongoSettings.from_env())

    healthy = audit()["replication_lag"]
    assert healthy.passed, healthy.metadata
    assert value(healthy, "lag seconds") == 0.0
    assert value(healthy, "lag transactions") == 0

    # A stalled loader: segments are captured, nothing loads them.
    before = executed_gtids(source_server)
    started = time.monotonic()
    for i in range(6):
        source_server.execute(f"INSERT INTO {table} VALUES ({i})")
    while capture_once(settings).manifest is not None:
        pass
    unapplied = executed_gtids(source_server) - before
    fresh = audit()["replication_lag"]
    assert fresh.passed, fresh.metadata  # younger than the warning threshold
    assert value(fresh, "lag transactions") == 6
    assert value(fresh, "pending segments") == 2
    sleep_until(started + WARN + 0.5)
    stalled = audit()["replication_lag"]
    assert not stalled.passed
    assert stalled.severity.value == "WARN"
    first_pending = sequence_of(list_segments(paths)[0])  # nothing was loaded before
    assert value(stalled, "oldest pending batch") == partition_key("default", first_pending)
    assert value(stalled, "transactions not applied") == unapplied.describe()
    assert WARN < value(stalled, "lag seconds") < ERROR
    sleep_until(started + ERROR + 0.5)
    stuck = audit()["replication_lag"]
    assert not stuck.passed
    assert stuck.severity.value == "ERROR"
    assert "check that the sensor and load runs are running" in value(stuck, "problems")[0]

    run_load(paths, MongoSettings.from_env())
    assert audit()["replication_lag"].passed

    # A lagging checkpoint: the source moved on and capture has not read it yet. The age is an
    # upper bound from the last time capture was caught up (a tick that found nothing new).
    assert capture_once(settings).manifest is None
    moved_on = time.monotonic()
    source_server.execute(f"INSERT INTO {table} VALUES (100)")
    just_now = audit()["replication_lag"]
    assert just_now.passed, just_now.metadata
    assert value(just_now, "lag transactions") == 1
    assert value(just_now, "how the age is known") == "upper bound: not captured yet"
    sleep_until(moved_on + ERROR + 0.5)
    lagging = audit()["replication_lag"]
    assert not lagging.passed
    assert lagging.severity.value == "ERROR"
    assert "capture has not read them yet" in value(lagging, "problems")[0]
    assert value(lagging, "pending segments") == 0
