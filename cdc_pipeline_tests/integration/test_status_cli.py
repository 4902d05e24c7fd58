"""``cdc-pipeline status``: positions, pending segments, lag and the breaker, also in outages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline_tests.conftest import MongoTarget
from devtools.local_servers import SourceServer, free_port

pytestmark = pytest.mark.integration


def status(env: dict[str, str], code: int = 0) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "cdc_pipeline.cli", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == code, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_status_reports_pending_lag_and_an_unreachable_sink(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    env = {
        **os.environ,
        "CDC_MYSQL_URL": source_server.url,
        "CDC_MONGO_URI": mongo_target.uri,
        "CDC_MONGO_DB": mongo_db_name,
        "CDC_STAGING_DIR": str(capture_settings.staging_dir),
    }
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(capture_settings)
    source_server.execute(f"INSERT INTO {table} VALUES (1)", f"INSERT INTO {table} VALUES (2)")
    capture_once(capture_settings)

    waiting = status(env)
    assert waiting["pending_segments"] == 1
    assert waiting["lag_transactions"] and int(waiting["lag_transactions"]) >= 2  # type: ignore[arg-type]
    assert waiting["lag_seconds"] is not None and float(waiting["lag_seconds"]) >= 0  # type: ignore[arg-type]
    assert waiting["breaker"] == "closed"

    paths = WalPaths(capture_settings.staging_dir, "default")
    run_load(paths, MongoSettings.from_env(env))
    source_server.execute("SELECT 1")
    loaded = status(env)
    assert loaded["pending_segments"] == 0
    assert loaded["applied_gtid"] == loaded["captured_gtid"]
    if loaded["captured_gtid"] == loaded["source_gtid"]:
        assert loaded["lag_seconds"] == 0.0 and loaded["lag_transactions"] == 0

    secret = "s3cret-Pw"
    # MongoDB unreachable: status still prints what it knows, and exits 1 (partial).
    down = status({**env, "CDC_MONGO_URI": f"mongodb://u:{secret}@127.0.0.1:{free_port()}"}, 1)
    assert down["sink_error"] and "unreachable" in str(down["sink_error"])
    assert secret not in json.dumps(down)
