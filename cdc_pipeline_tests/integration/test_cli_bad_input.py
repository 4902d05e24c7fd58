"""``cdc-pipeline`` as a subprocess given bad input: one sentence saying what is wrong and what to
do, a non-zero exit, no traceback and no secret; and ``--json`` output that parses."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo.errors import OperationFailure

from cdc_pipeline import cli
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline_tests.conftest import MongoTarget, make_capture_settings
from cdc_pipeline_tests.integration.test_cli_errors import (
    PROJECT,
    Run,
    cdc_user,
    run_cli,
)
from devtools.local_servers import MariaDBServer, SourceServer, free_port, new_data_dir

pytestmark = pytest.mark.integration

SECRET = "Sekr1t-pw"
BAD_SOURCE_URLS = {
    "port out of range": f"mysql://cdc:{SECRET}@127.0.0.1:99999999",
    "unbalanced bracket": f"mysql://cdc:{SECRET}@[127.0.0.1:3306",
}
WAL_COMMANDS = [["load", "--pending"], ["status"], ["verify"], ["recapture", "--from", "1"]]
"""Commands that read an existing WAL (all but status also write in it)."""


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """An existing, empty CDC_STAGING_DIR."""
    path = tmp_path / "wal"
    path.mkdir()
    return path


def unreachable_env(staging: Path) -> dict[str, str]:
    """Syntactically valid settings pointing at ports nothing listens on."""
    return {
        "CDC_STAGING_DIR": str(staging),
        "CDC_MYSQL_URL": f"mysql://cdc:{SECRET}@127.0.0.1:{free_port()}",
        "CDC_MONGO_URI": f"mongodb://cdc:{SECRET}@127.0.0.1:{free_port()}/?directConnection=true",
    }


# -- 1. a wrong URL ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", BAD_SOURCE_URLS.values(), ids=BAD_SOURCE_URLS.keys())
@pytest.mark.parametrize("command", [["doctor"], ["capture", "--once"], *WAL_COMMANDS[:3]])
def test_an_unparsable_source_url_is_named(command: list[str], url: str, staging: Path) -> None:
    env = {**unreachable_env(staging), "CDC_MYSQL_URL": url}
    line = run_cli(*command, env=env).assert_one_line_failure(2, SECRET)
    assert "CDC_MYSQL_URL is not a valid URL; write it as mysql://user:password@host:port" in line


@pytest.mark.parametrize(
    "uri",
    [
        f"http://cdc:{SECRET}@127.0.0.1:27017",
        f"mongodb://cdc:{SECRET}@127.0.0.1:notaport",
        f"mongodb://cdc:{SECRET}@p@ss@127.0.0.1:27017",
    ],
    ids=["wrong scheme", "port not a number", "unescaped @ in the password"],
)
@pytest.mark.parametrize("command", WAL_COMMANDS)
def test_a_bad_mongo_uri_is_named(command: list[str], uri: str, staging: Path) -> None:
    env = {**unreachable_env(staging), "CDC_MONGO_URI": uri}
    line = run_cli(*command, env=env).assert_one_line_failure(2, SECRET, "p@ss")
    assert "CDC_MONGO_URI is not" in line
    assert "mongodb://" in line and ("export it" in line or "write it" in line)


def test_doctor_names_a_bad_mongo_uri(staging: Path) -> None:
    env = {**unreachable_env(staging), "CDC_MONGO_URI": f"mongodb://cdc:{SECRET}@h:notaport"}
    run = run_cli("doctor", env=env)
    run.assert_one_line_failure(1, SECRET)
    assert "FAIL mongo: CDC_MONGO_URI is not a valid MongoDB URI (ValueError)" in run.stdout


# -- 2. and 3. a bad password, an unreachable source -----------------------------------------


def test_status_and_verify_refuse_a_bad_password(
    source_server: SourceServer, mongo_target: MongoTarget, staging: Path
) -> None:
    with cdc_user(source_server, "SELECT") as (name, password):
        wrong = f"Wr0ng-{uuid.uuid4().hex[:8]}"
        env = {
            "CDC_STAGING_DIR": str(staging),
            "CDC_MYSQL_URL": f"mysql://{name}:{wrong}@127.0.0.1:{source_server.port}",
            "CDC_MONGO_URI": mongo_target.uri,
        }
        status, verify = run_cli("status", env=env), run_cli("verify", env=env)
    line = status.assert_one_line_failure(1, wrong, password)
    assert line.startswith(f"cdc-pipeline: status is partial: the source mysql://{name}:***@")
    assert f"refused user '{name}' (wrong password or no such user); fix the credentials" in line
    line = verify.assert_one_line_failure(2, wrong, password)
    assert f"refused user '{name}'" in line and "fix the credentials in CDC_MYSQL_URL" in line


def test_status_and_verify_report_an_unreachable_source(
    mongo_target: MongoTarget, staging: Path
) -> None:
    env = {**unreachable_env(staging), "CDC_MONGO_URI": mongo_target.uri}
    port = env["CDC_MYSQL_URL"].rsplit(":", 1)[1]
    sentence = f"cannot reach the source at 127.0.0.1:{port} (MySQL error 2003); check that"
    line = run_cli("status", env=env).assert_one_line_failure(1, SECRET)
    assert line.startswith("cdc-pipeline: status is partial: " + sentence)
    line = run_cli("verify", env=env).assert_one_line_failure(2, SECRET)
    assert line.startswith("cdc-pipeline: " + sentence)


@pytest.fixture(scope="module")
def mongo_down_runs(
    mariadb_server: MariaDBServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Run]]:
    """Each MongoDB-needing command against a MongoDB that is not there, run concurrently: each
    waits out pymongo's 5 s server selection once (CDC_MONGO_RETRY_SECONDS=1 allows one try).
    The source only has to answer, so MariaDB alone is enough."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    mariadb_server.execute(f"CREATE DATABASE `{schema}`")
    staging = tmp_path_factory.mktemp("mongo_down") / "wal"
    capture_once(make_capture_settings(mariadb_server, schema, staging))  # verify needs a WAL
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CDC_")},
        **unreachable_env(staging),
        "CDC_MYSQL_URL": mariadb_server.url,
        "CDC_INCLUDE_TABLES": f"{schema}.*",
        "CDC_MONGO_RETRY_SECONDS": "1",
    }
    commands = {"doctor": ["doctor"], "catch-up": ["catch-up"], **{c[0]: c for c in WAL_COMMANDS}}
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "cdc_pipeline.cli", *command],
            env=env,
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, command in commands.items()
    }
    runs = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        runs[name] = Run(process.returncode, out, err)
    yield runs
    mariadb_server.execute(f"DROP DATABASE IF EXISTS `{schema}`")


@pytest.mark.parametrize("command", ["load", "verify", "recapture", "catch-up"])
def test_an_unreachable_mongo_is_one_sentence(
    mongo_down_runs: dict[str, Run], command: str
) -> None:
    line = mongo_down_runs[command].assert_one_line_failure(2, SECRET)
    assert line.startswith("cdc-pipeline: MongoDB at mongodb://***@127.0.0.1:")
    assert "did not answer (ServerSelectionTimeoutError, 1 try in" in line
    assert "start it or correct the host and port in CDC_MONGO_URI" in line
    if command == "load":
        assert line.endswith(
            "run 'cdc-pipeline load --pending' again: captured segments wait in the WAL."
        )
    if command == "catch-up":
        assert line.endswith(
            "run 'cdc-pipeline catch-up' again: what was captured waits in the WAL."
        )


def test_status_and_doctor_report_an_unreachable_mongo(mongo_down_runs: dict[str, Run]) -> None:
    status = mongo_down_runs["status"]
    line = status.assert_one_line_failure(1, SECRET)
    assert line.startswith("cdc-pipeline: status is partial: MongoDB at mongodb://***@127.0.0.1:")
    assert "start MongoDB or correct CDC_MONGO_URI" in line
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    assert "not reachable now (mongodb://***@127.0.0.1:" in lines["mongodb"]
    # The breaker as the loader last recorded it (a concurrent load may have opened it).
    assert lines["breaker"].endswith("(as the loader last recorded it)")
    doctor = mongo_down_runs["doctor"]
    doctor.assert_one_line_failure(1, SECRET)
    assert "FAIL mongo: MongoDB at mongodb://***@127.0.0.1:" in doctor.stdout
    assert "fix: start MongoDB or correct the host and port in CDC_MONGO_URI" in doctor.stdout


def test_refused_mongo_credentials_are_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # nx-27017 has no users, so the server's refusal (code 18) is raised in-process.
    def refuse(args: object) -> int:
        raise OperationFailure("Authentication failed.", code=18)

    monkeypatch.setattr(cli, "_load", refuse)
    monkeypatch.setenv("CDC_MONGO_URI", f"mongodb://cdc:{SECRET}@127.0.0.1:27017")
    assert cli.main(["load", "--pending"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "cdc-pipeline: MongoDB at mongodb://***@127.0.0.1:27017/cdc refused the credentials"
        " (code 18); correct the user and password in CDC_MONGO_URI or grant that user"
        " readWrite on CDC_MONGO_DB.\n"
    )


# -- 4. a missing grant ------------------------------------------------------------------------


def test_capture_and_status_name_a_missing_binlog_monitor_grant(
    source_server: SourceServer, staging: Path
) -> None:
    with cdc_user(source_server, "SELECT") as (name, password):
        env = {
            "CDC_STAGING_DIR": str(staging),
            "CDC_MYSQL_URL": f"mysql://{name}:{password}@127.0.0.1:{source_server.port}",
        }
        capture, status = run_cli("capture", "--once", env=env), run_cli("status", env=env)
    sentence = (
        "the source user may not list binary logs; grant it: GRANT REPLICATION CLIENT ON *.*"
        " (MySQL) or GRANT BINLOG MONITOR ON *.* (MariaDB)."
    )
    assert capture.assert_one_line_failure(2, password) == f"cdc-pipeline: {sentence}"
    assert status.assert_one_line_failure(1, password).endswith(f"is partial: {sentence}")


def test_capture_names_a_missing_replication_slave_grant(
    source_server: SourceServer, source_schema: str, tmp_path: Path
) -> None:
    settings = make_capture_settings(source_server, source_schema, tmp_path / "wal")
    capture_once(settings)  # fixes the origin, so the next capture must read the binlog
    source_server.execute(f"CREATE TABLE `{source_schema}`.t (id INT PRIMARY KEY)")
    monitor = "BINLOG MONITOR" if source_server.flavor == "mariadb" else "REPLICATION CLIENT"
    with cdc_user(source_server, f"{monitor}, SELECT") as (name, password):
        env = {
            "CDC_STAGING_DIR": str(settings.staging_dir),
            "CDC_MYSQL_URL": f"mysql://{name}:{password}@127.0.0.1:{source_server.port}",
            "CDC_INCLUDE_TABLES": f"{source_schema}.*",
        }
        line = run_cli("capture", "--once", env=env).assert_one_line_failure(2, password)
    assert line == (
        "cdc-pipeline: the source user may not read the binlog (MySQL error 1227); grant it:"
        " GRANT REPLICATION SLAVE ON *.* TO the user of CDC_MYSQL_URL."
    )


def test_verify_names_a_missing_select_grant(
    source_server: SourceServer, source_schema: str, mongo_target: MongoTarget, staging: Path
) -> None:
    grants = "REPLICATION SLAVE, " + (
        "BINLOG MONITOR" if source_server.flavor == "mariadb" else "REPLICATION CLIENT"
    )
    with cdc_user(source_server, grants) as (name, password):
        env = {
            "CDC_STAGING_DIR": str(staging),
            "CDC_MYSQL_URL": f"mysql://{name}:{password}@127.0.0.1:{source_server.port}",
            "CDC_MONGO_URI": mongo_target.uri,
            "CDC_INCLUDE_TABLES": f"{source_schema}.*",
        }
        line = run_cli("verify", env=env).assert_one_line_failure(2, password)
    assert line == (
        f"cdc-pipeline: the source user '{name}'@'127.0.0.1' may not read {source_schema}.*"
        f" (MySQL error 1142), so verify cannot compare it; run GRANT SELECT ON"
        f" `{source_schema}`.* TO '{name}'@'127.0.0.1';"
    )


# -- 5. a wrong binlog setting -----------------------------------------------------------------


class _StatementMariaDB(MariaDBServer):
    """MariaDB started with binlog_format=STATEMENT: what a default-configured server may have."""

    def _command(self) -> list[str]:
        swap = {"--binlog-format=ROW": "--binlog-format=STATEMENT"}
        return [swap.get(option, option) for option in super()._command()]


@pytest.fixture(scope="module")
def statement_server() -> Iterator[MariaDBServer]:
    # MariaDB only: the check reads @@global variables the same way on both flavors, and a
    # second MySQL 9.7 instance would cost far more start-up time than it could find.
    server = _StatementMariaDB(new_data_dir("mariadb-statement"))
    server.start()
    yield server
    server.cleanup()


@pytest.mark.parametrize(
    ("name", "wrong", "right"),
    [("binlog_format", "STATEMENT", "ROW"), ("binlog_row_image", "MINIMAL", "FULL")],
)
def test_a_wrong_binlog_setting_is_named_with_its_fix(
    statement_server: MariaDBServer, staging: Path, name: str, wrong: str, right: str
) -> None:
    if name == "binlog_row_image":  # started with STATEMENT: fix that, break this instead
        statement_server.execute("SET GLOBAL binlog_format = 'ROW'")
        statement_server.execute("SET GLOBAL binlog_row_image = 'MINIMAL'")
    else:
        statement_server.execute("SET GLOBAL binlog_format = 'STATEMENT'")
        statement_server.execute("SET GLOBAL binlog_row_image = 'FULL'")
    env = {"CDC_STAGING_DIR": str(staging), "CDC_MYSQL_URL": statement_server.url}
    line = run_cli("capture", "--once", env=env).assert_one_line_failure(2)
    assert line == (
        f"cdc-pipeline: the source has {name}={wrong} but capture needs {right}, or rows would"
        f" be mis-mapped; run SET GLOBAL {name}='{right}' and make it permanent in the server"
        " config (see 'cdc-pipeline doctor')."
    )
    doctor = run_cli("doctor", env=env)
    doctor.assert_one_line_failure(1)
    assert f"FAIL {name}: {name} is {wrong}, but " in doctor.stdout
    assert (
        f"fix: SET GLOBAL {name} = '{right}'; and {name}={right} under [mariadbd]" in doctor.stdout
    )
    assert not list_segments(WalPaths(staging, "default"))


# -- 6. a missing or unusable staging folder --------------------------------------------------


def test_capture_creates_the_staging_folder_but_not_its_missing_parents(tmp_path: Path) -> None:
    root = tmp_path / "not-mounted" / "cdc" / "wal"
    env = {"CDC_STAGING_DIR": str(root), "CDC_MYSQL_URL": f"mysql://cdc:{SECRET}@127.0.0.1:1"}
    line = run_cli("capture", "--once", env=env).assert_one_line_failure(2, SECRET)
    assert line == (
        f"cdc-pipeline: CDC_STAGING_DIR {root} does not exist and neither does its parent"
        f" {root.parent}; create it (mkdir -p {root}) or correct CDC_STAGING_DIR."
    )
    doctor = run_cli("doctor", env=env)
    assert f"FAIL staging: {root}/default cannot be created because {root.parent} is not an" in (
        doctor.stdout
    )
    assert f"fix: create it (mkdir -p {root}) or correct CDC_STAGING_DIR" in doctor.stdout
    assert not (tmp_path / "not-mounted").exists()


@pytest.mark.parametrize("command", WAL_COMMANDS)
def test_commands_that_read_the_wal_need_it_to_exist(command: list[str], tmp_path: Path) -> None:
    root = tmp_path / "typo"
    line = run_cli(*command, env=unreachable_env(root)).assert_one_line_failure(2, SECRET)
    assert line == (
        f"cdc-pipeline: CDC_STAGING_DIR {root} does not exist, so there is no WAL to read; point"
        " it at the folder capture writes to, or run 'cdc-pipeline capture --once' first."
    )
    assert not root.exists()


@pytest.mark.parametrize("command", [["capture", "--once"], *WAL_COMMANDS])
def test_a_staging_path_that_is_a_file_is_named(command: list[str], tmp_path: Path) -> None:
    root = tmp_path / "wal"
    root.write_text("not a folder")
    line = run_cli(*command, env=unreachable_env(root)).assert_one_line_failure(2, SECRET)
    assert line == (
        f"cdc-pipeline: CDC_STAGING_DIR needs {root} to be a folder, but it is a file; point"
        " CDC_STAGING_DIR at a folder."
    )


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """A folder this user cannot write in: mode 555, or for root a read-only tmpfs on it."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)]
    if not shutil.which("mount") or subprocess.run(mount, check=False).returncode != 0:
        pytest.skip("root cannot make a read-only folder here (mount failed)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("command", [["capture", "--once"], ["load", "--pending"]])
def test_a_read_only_staging_folder_is_named(command: list[str], tmp_path: Path) -> None:
    with read_only_folder(tmp_path / "wal") as root:
        run = run_cli(*command, env=unreachable_env(root))
    assert run.assert_one_line_failure(2, SECRET) == (
        f"cdc-pipeline: {root} is not writable by this user, and the WAL is written there; make"
        " it writable or point CDC_STAGING_DIR at a writable folder."
    )
