"""``dagster job execute -j catch_up_job`` with a throwaway DAGSTER_HOME, as CI and cron run it.

Against a real source and the session's MongoDB: one command captures until caught up and
loads everything (a column change's mirror rebuild reporting in the run log); the mirrors then
equal the source and the checkpoint is the source position. A failure (nothing configured, a
wrong password, MongoDB down) prints the project's one sentence, never a stack trace.
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
from devtools.local_servers import SourceServer, free_port

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
    assert "catch_up_job: loaded 1 segments (default-000000000001 .." in done.stderr
    # INFO and above only (sentence_console); Dagster's worker announces itself before the
    # job's loggers exist.
    assert [line for line in done.stderr.splitlines() if " - DEBUG - " in line] == [
        line for line in done.stderr.splitlines() if "STEP_WORKER_STARTED" in line
    ]
    # The rebuild's progress reaches the run log.
    assert ": rebuilding from the source table, read in key order" in done.stdout + done.stderr
    with mongo_target.client(tz_aware=True) as client:
        sink = mongo_target.sink(client[mongo_db_name])
        assert mirror_differences(source_server, source_schema, sink) == []
        matches, applied, source = checkpoint_matches_source(source_server, client[mongo_db_name])
        assert matches, f"checkpoint {applied} != source {source}"
        assert client[mongo_db_name]["row_changes"].count_documents({"schema": source_schema}) == 3


def _execute(env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
    command = [DAGSTER, "job", "execute", "-m", "cdc_pipeline.definitions", "-j", "catch_up_job"]
    return subprocess.run(
        command,
        env={**base, "DAGSTER_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_catch_up_job_fails_in_one_sentence(source_server: SourceServer, tmp_path: Path) -> None:
    """With nothing configured the run used to end in 115 lines with a config-processing
    traceback; each failure now ends in the project's sentence, without a stack trace."""
    mongo_down = f"mongodb://127.0.0.1:{free_port()}"
    wrong = f"mysql://root:Wr0ng-{os.getpid()}@127.0.0.1:{source_server.port}"
    staging = {"CDC_STAGING_DIR": str(tmp_path / "wal"), "CDC_MONGO_RETRY_SECONDS": "1"}
    cases = {
        "nothing configured": ({}, "CDC_MYSQL_URL is not set; export it as mysql://"),
        "wrong password": (
            {**staging, "CDC_MYSQL_URL": wrong, "CDC_MONGO_URI": mongo_down},
            "refused user 'root'",
        ),
        "MongoDB down": (
            {**staging, "CDC_MYSQL_URL": source_server.url, "CDC_MONGO_URI": mongo_down},
            "run catch_up_job again: what was captured waits in the WAL.",
        ),
    }
    for case, (env, sentence) in cases.items():
        done = _execute(env, tmp_path / case.replace(" ", "_"))
        output = done.stdout + done.stderr
        assert done.returncode == 1, (case, output)
        failed = [line for line in output.splitlines() if line.startswith("catch_up_job: failed: ")]
        assert len(failed) == 1 and sentence in failed[0], (case, output.splitlines()[2:])
        assert "Traceback" not in output and "Stack Trace" not in output, (case, output)
        assert "Wr0ng-" not in output
        assert len(output.splitlines()) <= 8, (case, output)
