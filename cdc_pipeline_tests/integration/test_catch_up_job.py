"""``dagster job execute -j catch_up_job`` with a throwaway DAGSTER_HOME, as CI and cron run it.

Against a real source and the session's MongoDB: one command captures until caught up and
loads everything (a column change's mirror rebuild reporting in the run log); the mirrors then
equal the source and the checkpoint is the source position.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.pipeline_checks import checkpoint_matches_source, mirror_differences
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration

DAGSTER = str(Path(sys.executable).with_name("dagster"))


def test_catch_up_job_from_the_command_line(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
) -> None:
    table = f"`{source_schema}`.items"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(10))")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "CDC_MYSQL_URL": source_server.url,
        "CDC_MONGO_URI": mongo_target.uri,
        "CDC_MONGO_DB": mongo_db_name,
        "CDC_STAGING_DIR": str(capture_settings.staging_dir),
        "CDC_INCLUDE_TABLES": f"{source_schema}.*",
        "CDC_SERVER_ID": str(capture_settings.server_id),
        "CDC_START_POSITION": "earliest",
    }
    (tmp_path / "dagster_home").mkdir()
    source_server.execute(
        f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')",
        f"UPDATE {table} SET v = 'c' WHERE id = 2",
        f"ALTER TABLE {table} MODIFY COLUMN v VARCHAR(20)",  # a retype: the mirror is rebuilt
    )
    command = [DAGSTER, "job", "execute", "-m", "cdc_pipeline.definitions", "-j", "catch_up_job"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stdout + done.stderr
    # The rebuild's progress reaches the run log.
    assert ": rebuilding from the source table, read in key order" in done.stdout + done.stderr
    with mongo_target.client(tz_aware=True) as client:
        sink = mongo_target.sink(client[mongo_db_name])
        assert mirror_differences(source_server, source_schema, sink) == []
        matches, applied, source = checkpoint_matches_source(source_server, client[mongo_db_name])
        assert matches, f"checkpoint {applied} != source {source}"
        assert client[mongo_db_name]["row_changes"].count_documents({"schema": source_schema}) == 3
