"""The doctor against the real MariaDB and MySQL 9.7 servers: live settings and grants, MongoDB.

Each test that breaks a setting on the shared servers restores the original value in ``finally``;
``binlog_checksum`` is broken only on a private server (see that test). ``log_bin``, ``gtid_mode``
and ``enforce_gtid_consistency`` cannot be switched off on a running GTID server without
side effects, so only the unit tests cover them.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc_pipeline.core.audit.doctor import check_mongo, check_source, run_doctor
from cdc_pipeline.core.audit.doctor_rules import Finding
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl
from cdc_pipeline_tests.conftest import SOURCE_FLAVORS, MongoTarget
from devtools.local_servers import (
    MariaDBServer,
    MySQLServer,
    SourceServer,
    free_port,
    new_data_dir,
)

pytestmark = pytest.mark.integration


def _by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.check: finding for finding in findings}


@contextlib.contextmanager
def _global_set(server: SourceServer, name: str, value: str) -> Iterator[None]:
    """SET GLOBAL ``name`` for the body; the original value is always put back."""
    original = str(server.execute(f"SHOW GLOBAL VARIABLES LIKE '{name}'")[0][1])
    server.execute(f"SET GLOBAL {name} = '{value}'")
    try:
        yield
    finally:
        server.execute(f"SET GLOBAL {name} = '{original}'")
        assert str(server.execute(f"SHOW GLOBAL VARIABLES LIKE '{name}'")[0][1]) == original


@contextlib.contextmanager
def _cdc_user(server: SourceServer, grants: str) -> Iterator[SourceUrl]:
    """A throwaway user on 127.0.0.1 holding ``grants`` (kept out of the binlog), then dropped."""
    name = f"u_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex[:8]}"
    account = f"'{name}'@'127.0.0.1'"
    server.execute(
        "SET sql_log_bin = 0",
        f"CREATE USER {account} IDENTIFIED BY '{password}'",
        f"GRANT {grants} ON *.* TO {account}",
    )
    try:
        yield SourceUrl(host="127.0.0.1", port=server.port, user=name, password=password)
    finally:
        server.execute("SET sql_log_bin = 0", f"DROP USER IF EXISTS {account}")


def test_a_healthy_server_passes_every_source_check(source_server: SourceServer) -> None:
    findings = check_source(SourceUrl.parse(source_server.url))
    assert [f for f in findings if not f.ok] == []
    checks = _by_check(findings)
    assert source_server.flavor in checks["connection"].detail
    expected = (
        {"gtid_mode", "binlog_transaction_compression", "binlog_row_value_options"}
        if source_server.flavor == "mysql"
        else {"gtid_strict_mode", "log_bin_compress"}
    )
    assert expected <= set(checks)


LIVE_FLIPS = [
    ("binlog_format", "STATEMENT", "binlog_format = 'ROW'"),
    ("binlog_row_image", "MINIMAL", "binlog_row_image = 'FULL'"),
    ("binlog_row_metadata", "MINIMAL", "binlog_row_metadata = 'FULL'"),
]


@pytest.mark.parametrize(("name", "bad", "fix_part"), LIVE_FLIPS)
def test_a_broken_dynamic_setting_fails_with_its_fix(
    source_server: SourceServer, name: str, bad: str, fix_part: str
) -> None:
    url = SourceUrl.parse(source_server.url)
    with _global_set(source_server, name, bad):
        findings = check_source(url)
    failed = [f for f in findings if not f.ok]
    assert [f.check for f in failed] == [name]
    assert bad in failed[0].detail
    statement = "SET PERSIST" if source_server.flavor == "mysql" else "SET GLOBAL"
    assert failed[0].fix is not None
    assert failed[0].fix.startswith(f"{statement} {fix_part};")
    assert all(f.ok for f in check_source(url)), "the original value was not restored"


@pytest.fixture(params=SOURCE_FLAVORS)
def private_source(request: pytest.FixtureRequest) -> Iterator[SourceServer]:
    """A source server of our own, for a change that leaves a mark in the binlog for good."""
    server: SourceServer = (
        MariaDBServer(new_data_dir("mariadb")) if request.param == "mariadb" else MySQLServer()
    )
    server.start()
    yield server
    server.cleanup()


def test_binlog_checksum_none_fails_on_a_private_server(private_source: SourceServer) -> None:
    # Not on the shared servers: the events of a binlog file written with binlog_checksum=NONE
    # are read 4 bytes short for ever after (measured: rotate events name "bin.00" instead of
    # "bin.000003"), which would corrupt every later test that reads the binlog from its start.
    url = SourceUrl.parse(private_source.url)
    with _global_set(private_source, "binlog_checksum", "NONE"):
        findings = check_source(url)
    failed = [f for f in findings if not f.ok]
    assert [f.check for f in failed] == ["binlog_checksum"]
    assert "CRC32 trailer" in failed[0].detail
    statement = "SET PERSIST" if private_source.flavor == "mysql" else "SET GLOBAL"
    assert failed[0].fix is not None
    assert failed[0].fix.startswith(f"{statement} binlog_checksum = 'CRC32';")
    assert all(f.ok for f in check_source(url))


@pytest.mark.parametrize(
    ("name", "bad"),
    [("binlog_transaction_compression", "ON"), ("binlog_row_value_options", "PARTIAL_JSON")],
)
def test_mysql_settings_the_reader_cannot_decode_fail(
    mysql_server: SourceServer, name: str, bad: str
) -> None:
    with _global_set(mysql_server, name, bad):
        finding = _by_check(check_source(SourceUrl.parse(mysql_server.url)))[name]
    assert not finding.ok
    assert finding.fix is not None
    assert finding.fix.startswith(f"SET PERSIST {name} = ")


@pytest.mark.parametrize(("name", "bad"), [("gtid_strict_mode", "OFF"), ("log_bin_compress", "ON")])
def test_mariadb_gtid_strictness_and_compression_fail(
    mariadb_server: SourceServer, name: str, bad: str
) -> None:
    with _global_set(mariadb_server, name, bad):
        finding = _by_check(check_source(SourceUrl.parse(mariadb_server.url)))[name]
    assert not finding.ok
    assert finding.fix is not None
    assert finding.fix.startswith(f"SET GLOBAL {name} = ")
    assert "under [mariadbd]" in finding.fix


def test_a_user_with_only_select_is_told_which_grant_to_run(source_server: SourceServer) -> None:
    with _cdc_user(source_server, "SELECT") as url:
        finding = _by_check(check_source(url))["grants"]
        assert not finding.ok
        assert "REPLICATION SLAVE" in finding.detail
        assert finding.fix is not None
        assert finding.fix.startswith("GRANT REPLICATION SLAVE, ")
        assert finding.fix.endswith(f"ON *.* TO '{url.user}'@'127.0.0.1';")
        assert url.password not in str(finding.to_dict())

        source_server.execute("SET sql_log_bin = 0", finding.fix)
        findings = check_source(url)
        assert [f for f in findings if not f.ok] == []


def test_a_user_who_sees_no_table_fails_with_the_grant(source_server: SourceServer) -> None:
    """With CDC_INCLUDE_TABLES unset, a user holding SELECT on one empty schema passed every
    check although it could read none of the tables capture would meet."""
    empty, shop = f"e_{uuid.uuid4().hex[:8]}", f"s_{uuid.uuid4().hex[:8]}"
    source_server.execute(
        "SET sql_log_bin = 0",
        f"CREATE DATABASE `{empty}`",
        f"CREATE DATABASE `{shop}`",
        f"CREATE TABLE `{shop}`.orders (id INT PRIMARY KEY)",
    )
    replication = (
        "REPLICATION SLAVE, BINLOG MONITOR"
        if source_server.flavor == "mariadb"
        else "REPLICATION SLAVE, REPLICATION CLIENT"
    )
    try:
        with _cdc_user(source_server, replication) as url:
            source_server.execute(
                "SET sql_log_bin = 0", f"GRANT SELECT ON `{empty}`.* TO '{url.user}'@'127.0.0.1'"
            )
            findings = _by_check(check_source(url))
            assert findings["grants"].ok  # SELECT somewhere is all the grants rule can ask
            finding = findings["tables"]
            assert not finding.ok and "can see none of the tables" in finding.detail
            assert finding.fix == f"GRANT SELECT ON *.* TO '{url.user}'@'127.0.0.1';"
            source_server.execute("SET sql_log_bin = 0", finding.fix)
            after = _by_check(check_source(url))["tables"]
            assert after.ok and not after.advice and "tables to capture" in after.detail
    finally:
        source_server.execute(
            "SET sql_log_bin = 0",
            f"DROP DATABASE IF EXISTS `{empty}`",
            f"DROP DATABASE IF EXISTS `{shop}`",
        )


def test_a_wrong_password_is_one_connection_finding(source_server: SourceServer) -> None:
    with _cdc_user(source_server, "SELECT") as url:
        wrong = SourceUrl(host=url.host, port=url.port, user=url.user, password="not-it-42")
        findings = check_source(wrong)
    assert [(f.check, f.ok) for f in findings] == [("connection", False)]
    assert "refused user" in findings[0].detail
    assert "not-it-42" not in str(findings[0].to_dict())


def test_an_unreachable_source_is_one_connection_finding() -> None:
    url = SourceUrl(host="127.0.0.1", port=free_port(), user="cdc", password="s3cret-pw")
    findings = check_source(url)
    assert [(f.check, f.ok) for f in findings] == [("connection", False)]
    assert "cannot reach" in findings[0].detail
    assert "s3cret-pw" not in str(findings[0].to_dict())


def test_mongo_answers(mongo_target: MongoTarget) -> None:
    findings = check_mongo(MongoSettings(uri=mongo_target.uri))
    assert [(f.check, f.ok) for f in findings] == [("mongo", True)]


def test_a_closed_mongo_port_fails_without_showing_the_uri() -> None:
    port = free_port()
    uri = f"mongodb://cdc:m0ngo-secret@127.0.0.1:{port}/?directConnection=true"
    findings = check_mongo(MongoSettings(uri=uri), timeout_s=0.5)
    assert [(f.check, f.ok) for f in findings] == [("mongo", False)]
    text = str(findings[0].to_dict())
    assert f"127.0.0.1:{port}" in text
    assert "m0ngo-secret" not in text
    assert "directConnection" not in text
    assert findings[0].fix is not None


def test_run_doctor_on_a_healthy_setup_passes(
    source_server: SourceServer, mongo_target: MongoTarget, tmp_path: Path
) -> None:
    capture = CaptureSettings(
        source_url=SourceUrl.parse(source_server.url), staging_dir=tmp_path / "wal"
    )
    findings = run_doctor(capture, MongoSettings(uri=mongo_target.uri))
    assert [f for f in findings if not f.ok] == []
    assert {"connection", "grants", "mongo", "staging", "staging_space"} <= {
        f.check for f in findings
    }
    missing = _by_check(run_doctor(capture, None))["mongo"]
    assert not missing.ok
    assert "CDC_MONGO_URI" in missing.detail


@pytest.mark.parametrize(
    "uri",
    ["mongodb://cdc:m0ngo-secret@127.0.0.1:notaport/", "mongodb://cdc:m0ngo-secret@/?w=bogus"],
)
def test_an_unusable_mongo_uri_is_a_finding_not_a_crash(uri: str) -> None:
    findings = check_mongo(MongoSettings(uri=uri), timeout_s=0.5)
    assert [(f.check, f.ok) for f in findings] == [("mongo", False)]
    assert "m0ngo-secret" not in str(findings[0].to_dict())
