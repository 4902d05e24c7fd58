"""Two configurations on one staging folder, against real MariaDB / MySQL 9.7 and the session's
MongoDB: capture, snapshot and ``load --pending`` refuse a WAL another configuration writes,
status and doctor report it, and a different server is accepted only as a failover."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from cdc_pipeline.core.capture.identity import read_server_identity
from cdc_pipeline.core.capture.snapshot import run_snapshot
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.errors import WalIdentityError, WalServerError
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.load.documents import CHECKPOINTS
from cdc_pipeline.core.mysql.source import connect, read_state
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.identity import ServerIdentity, WalIdentity, read_identity
from cdc_pipeline.core.wal.staging import Origin, WalPaths, write_json_atomically, write_origin
from cdc_pipeline.definitions import defs
from cdc_pipeline.defs.load import load_batch_job
from cdc_pipeline_tests.conftest import MongoTarget, make_capture_settings
from cdc_pipeline_tests.sensor_ticks import capture_sensor_tick
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


def folder_state(paths: WalPaths) -> dict[str, str]:
    """Every file under the source's staging folder and its sha256 (the locks left out)."""
    return {
        str(path.relative_to(paths.root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(paths.root.rglob("*"))
        if path.is_file() and not path.name.endswith(".lock")
    }


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc_pipeline.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def pipeline_env(
    server: SourceServer, settings: CaptureSettings, mongo: MongoTarget, database: str
) -> dict[str, str]:
    return {
        "CDC_MYSQL_URL": server.url,
        "CDC_STAGING_DIR": str(settings.staging_dir),
        "CDC_INCLUDE_TABLES": ",".join(settings.include_tables),
        "CDC_SERVER_ID": str(settings.server_id),
        "CDC_MONGO_URI": mongo.uri,
        "CDC_MONGO_DB": database,
        "CDC_MONGO_COMPAT": mongo.compat,
    }


def test_two_table_lists_on_one_staging_folder_are_refused_not_silently_skipped(
    source_server: SourceServer,
    source_schema: str,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
) -> None:
    """The observed bug: pipeline B (tables b) shared pipeline A's folder (tables a); B started
    from A's end, so B's rows in A's range were skipped and both loads exited 0."""
    staging = tmp_path / "staging"
    first = make_capture_settings(
        source_server, source_schema, staging, include_tables=(f"{source_schema}.a",)
    )
    second = replace(first, include_tables=(f"{source_schema}.b",), server_id=first.server_id + 1)
    paths = WalPaths(staging, "default")
    source_server.execute(
        f"CREATE TABLE `{source_schema}`.a (id INT PRIMARY KEY)",
        f"CREATE TABLE `{source_schema}`.b (id INT PRIMARY KEY)",
    )
    capture_once(first)  # the first use: A's settings are recorded
    source_server.execute(
        f"INSERT INTO `{source_schema}`.a VALUES (1)", f"INSERT INTO `{source_schema}`.b VALUES (1)"
    )
    assert capture_once(first).rows == 1  # a's row; b's row is behind the WAL's end now
    before = folder_state(paths)

    with pytest.raises(WalIdentityError) as refused:
        capture_once(second)
    sentence = str(refused.value)
    assert f"captured with CDC_INCLUDE_TABLES={source_schema}.a" in sentence
    assert f"this capture has CDC_INCLUDE_TABLES={source_schema}.b" in sentence
    assert "CDC_STAGING_DIR" in sentence
    with pytest.raises(WalIdentityError, match="this snapshot has"):
        run_snapshot(second)
    assert folder_state(paths) == before  # nothing lost or changed by the refusals

    env_b = pipeline_env(source_server, second, mongo_target, mongo_db_name)
    load_b = cli("load", "--pending", env=env_b)
    assert load_b.returncode == 2, load_b.stderr
    [line] = load_b.stderr.splitlines()
    assert "this load has CDC_INCLUDE_TABLES" in line and source_server.url not in line
    status_b = cli("status", "--json", env=env_b)
    assert status_b.returncode == 1 and "CDC_INCLUDE_TABLES" in status_b.stderr
    doctor_b = cli("doctor", env=env_b)
    assert doctor_b.returncode == 1 and "FAIL wal_identity" in doctor_b.stdout
    assert folder_state(paths) == before
    with mongo_target.client() as client:
        assert client[mongo_db_name][CHECKPOINTS].count_documents({}) == 0  # B loaded nothing

    # A goes on as before, and its own load and status pass.
    source_server.execute(f"INSERT INTO `{source_schema}`.a VALUES (2)")
    assert capture_once(first).rows == 1
    env_a = pipeline_env(source_server, first, mongo_target, mongo_db_name)
    load_a = cli("load", "--pending", "--json", env=env_a)
    assert load_a.returncode == 0, load_a.stderr
    assert len(json.loads(load_a.stdout)["loaded"]) == 2
    status_a = cli("status", "--json", env=env_a)
    assert status_a.returncode == 0, status_a.stderr
    assert f"CDC_INCLUDE_TABLES={source_schema}.a" in json.loads(status_a.stdout)["identity"]


def test_a_load_with_another_mirror_style_is_refused(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(capture_settings)
    source_server.execute(f"INSERT INTO {table} VALUES (1)")
    capture_once(capture_settings)
    env = pipeline_env(source_server, capture_settings, mongo_target, mongo_db_name)
    assert cli("load", "--pending", env=env).returncode == 0  # records the mirror style
    source_server.execute(f"INSERT INTO {table} VALUES (2)")
    capture_once(capture_settings)
    paths = WalPaths(capture_settings.staging_dir, "default")
    before = folder_state(paths)
    other = "standard" if mongo_target.compat == "nx-27017" else "nx-27017"
    refused = cli("load", "--pending", env={**env, "CDC_MONGO_COMPAT": other})
    assert refused.returncode == 2
    assert f"set CDC_MONGO_COMPAT={mongo_target.compat} again" in refused.stderr
    assert folder_state(paths) == before
    assert cli("load", "--pending", env=env).returncode == 0


def fake_other_server(flavor: str) -> ServerIdentity:
    if flavor == "mysql":
        return ServerIdentity.mysql(str(uuid.uuid4()), "old-primary:3306")
    return ServerIdentity.mariadb(987_654, 0, "old-primary:3306")


def recorded_as(paths: WalPaths, server: ServerIdentity, settings: CaptureSettings) -> None:
    """Make ``identity.json`` say the WAL was captured from ``server`` (a former primary)."""
    identity = WalIdentity(
        source="default",
        server=server,
        server_since="2026-01-01T00:00:00+00:00",
        tables=settings.table_scope,
    )
    write_json_atomically(paths.identity, identity.to_dict())


def test_a_server_holding_the_wals_history_is_accepted_as_a_failover(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(capture_settings)
    source_server.execute(f"INSERT INTO {table} VALUES (1)")
    captured = capture_once(capture_settings)
    paths = WalPaths(capture_settings.staging_dir, "default")
    before = read_identity(paths)
    assert before is not None and before.server is not None
    old = fake_other_server(before.server.flavor)
    recorded_as(paths, old, capture_settings)

    source_server.execute(f"INSERT INTO {table} VALUES (2)")
    after_failover = capture_once(capture_settings)
    assert after_failover.rows == 1
    assert after_failover.notice and old.key in after_failover.notice
    assert before.server.key in after_failover.notice
    identity = read_identity(paths)
    assert identity is not None and identity.server is not None
    assert identity.server.same_server(before.server)
    [previous] = identity.previous_servers
    assert previous["key"] == old.key and previous["until"] == identity.server_since
    assert previous["wal_end_gtid"] == captured.end_gtid
    assert capture_once(capture_settings).notice is None  # recorded: no second notice


def test_a_server_lacking_the_wals_history_is_refused_naming_both(
    source_server: SourceServer, source_schema: str, capture_settings: CaptureSettings
) -> None:
    with connect(capture_settings.source_url) as connection:
        state = read_state(connection)
        current = read_server_identity(connection, state.flavor)
    paths = WalPaths(capture_settings.staging_dir, "default")
    paths.ensure()
    if state.flavor == "mysql":
        beyond = state.executed | GtidSet.parse(f"{uuid.uuid4()}:1-5", "mysql")
    else:
        beyond = GtidSet.parse(f"0-987654-{10**9}", "mariadb") | state.executed
    write_origin(paths, Origin(str(beyond), state.flavor, "", 0, "current"))
    old = fake_other_server(state.flavor)
    recorded_as(paths, old, capture_settings)
    before = folder_state(paths)
    with pytest.raises(WalServerError) as refused:
        capture_once(capture_settings)
    sentence = str(refused.value)
    assert old.key in sentence and f"CDC_MYSQL_URL reaches {current.describe()}" in sentence
    identity = read_identity(paths)
    assert identity is not None and identity.server == old
    assert "never executed" in sentence and "point CDC_MYSQL_URL back" in sentence
    assert folder_state(paths) == before


def test_through_dagster_the_other_pipelines_sensor_and_load_run_are_refused(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pipeline A (the test's capture settings) owns the folder; pipeline B's Dagster code (its
    own CDC_INCLUDE_TABLES) must neither register A's segments nor load them."""
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(capture_settings)
    source_server.execute(f"INSERT INTO {table} VALUES (1)")
    key = capture_once(capture_settings).partition_key
    assert key is not None
    env_b = pipeline_env(source_server, capture_settings, mongo_target, mongo_db_name)
    for name, value in {**env_b, "CDC_INCLUDE_TABLES": f"{source_schema}.other"}.items():
        monkeypatch.setenv(name, value)
    paths = WalPaths(capture_settings.staging_dir, "default")
    before = folder_state(paths)
    with dg.instance_for_test() as instance:
        with pytest.raises(WalIdentityError, match="this capture has CDC_INCLUDE_TABLES"):
            capture_sensor_tick(instance, source_server, mongo_target.uri)
        assert instance.get_dynamic_partitions("cdc_batches") == []
        instance.add_dynamic_partitions("cdc_batches", [key])
        job = defs.resolve_job_def(load_batch_job.name)
        result = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
        assert not result.success
        [failure] = [event for event in result.all_events if event.is_step_failure]
        assert "this load has CDC_INCLUDE_TABLES" in str(failure.step_failure_data.error)
    assert folder_state(paths) == before
    with mongo_target.client() as client:
        assert client[mongo_db_name][CHECKPOINTS].count_documents({}) == 0
