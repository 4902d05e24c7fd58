"""Pure doctor rules: each source setting and grant rule fails on its broken value, with a fix."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from cdc_pipeline.core.audit.doctor import check_staging
from cdc_pipeline.core.audit.doctor_rules import Finding, evaluate_source, tables_finding
from cdc_pipeline.core.gtid import Flavor
from cdc_pipeline.core.mysql.grants import parse_grant

MYSQL_GOOD = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
    "binlog_checksum": "CRC32",
    "binlog_transaction_compression": "OFF",
    "binlog_row_value_options": "",
    "gtid_mode": "ON",
    "enforce_gtid_consistency": "ON",
}
MARIADB_GOOD = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
    "binlog_checksum": "CRC32",
    "gtid_strict_mode": "ON",
}
GOOD = {"mysql": MYSQL_GOOD, "mariadb": MARIADB_GOOD}
GOOD_GRANTS: dict[str, list[str]] = {
    "mysql": ["GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`"],
    "mariadb": [
        "GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `cdc`@`%`"
        " IDENTIFIED BY PASSWORD '*D821809F681A40A6E379B50D0463EFAE20BDD122'"
    ],
}
FLAVORS: list[Flavor] = ["mysql", "mariadb"]


def _by_check(findings: list[Finding]) -> dict[str, Finding]:
    checks = [finding.check for finding in findings]
    assert len(checks) == len(set(checks)), checks
    return {finding.check: finding for finding in findings}


def _evaluate(
    flavor: Flavor,
    grants: list[str] | None = None,
    include: tuple[str, ...] = (),
    changes: dict[str, str] | None = None,
    **named_changes: str,
) -> dict[str, Finding]:
    variables = {**GOOD[flavor], **(changes or {}), **named_changes}
    grant_lines = GOOD_GRANTS[flavor] if grants is None else grants
    return _by_check(evaluate_source(flavor, variables, grant_lines, "cdc", include))


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_correctly_configured_source_passes_every_check(flavor: Flavor) -> None:
    findings = _evaluate(flavor)
    assert all(finding.ok and finding.fix is None for finding in findings.values()), findings
    expected = {
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "binlog_checksum",
        "grants",
    }
    expected |= (
        {
            "binlog_transaction_compression",
            "binlog_row_value_options",
            "gtid_mode",
            "enforce_gtid_consistency",
        }
        if flavor == "mysql"
        else {"gtid_strict_mode", "log_bin_compress"}
    )
    assert set(findings) == expected


BROKEN = [
    ("binlog_format", "STATEMENT", "binlog_format = 'ROW'"),
    ("binlog_format", "MIXED", "binlog_format = 'ROW'"),
    ("binlog_row_image", "MINIMAL", "binlog_row_image = 'FULL'"),
    ("binlog_row_image", "NOBLOB", "binlog_row_image = 'FULL'"),
    ("binlog_row_metadata", "MINIMAL", "binlog_row_metadata = 'FULL'"),
    ("binlog_checksum", "NONE", "binlog_checksum = 'CRC32'"),
]


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize(("name", "bad", "fix_part"), BROKEN)
def test_each_dynamic_binlog_setting_fails_with_the_flavors_fix(
    flavor: Flavor, name: str, bad: str, fix_part: str
) -> None:
    finding = _evaluate(flavor, changes={name: bad})[name]
    assert not finding.ok
    assert bad in finding.detail
    assert finding.fix is not None
    if flavor == "mysql":
        assert finding.fix.startswith(f"SET PERSIST {fix_part};")
    else:
        assert finding.fix.startswith(f"SET GLOBAL {fix_part};")
        assert "under [mariadbd] in the server config" in finding.fix
    # Every other check still passes: one broken setting makes exactly one failure.
    assert [f.check for f in _evaluate(flavor, changes={name: bad}).values() if not f.ok] == [name]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_values_are_compared_case_insensitively(flavor: Flavor) -> None:
    findings = _evaluate(flavor, binlog_format="row", binlog_row_image="full", log_bin="1")
    assert all(finding.ok for finding in findings.values())


@pytest.mark.parametrize("flavor", FLAVORS)
def test_log_bin_off_needs_a_config_line_and_a_restart(flavor: Flavor) -> None:
    # Not covered live: log_bin cannot be switched off on a running server.
    finding = _evaluate(flavor, log_bin="OFF")["log_bin"]
    assert not finding.ok
    assert finding.fix is not None
    section = "[mysqld]" if flavor == "mysql" else "[mariadbd]"
    assert section in finding.fix
    assert "restart" in finding.fix
    assert "SET " not in finding.fix


def test_mysql_transaction_compression_must_be_off() -> None:
    for value in ("ON", "1"):
        finding = _evaluate("mysql", binlog_transaction_compression=value)[
            "binlog_transaction_compression"
        ]
        assert not finding.ok
        assert "silently drops compressed transactions" in finding.detail
        assert finding.fix is not None
        assert finding.fix.startswith("SET PERSIST binlog_transaction_compression = OFF;")


def test_mysql_without_a_compression_variable_passes() -> None:
    variables = {k: v for k, v in MYSQL_GOOD.items() if k != "binlog_transaction_compression"}
    findings = _by_check(evaluate_source("mysql", variables, GOOD_GRANTS["mysql"], "cdc"))
    assert findings["binlog_transaction_compression"].ok


def test_mysql_partial_json_updates_fail() -> None:
    finding = _evaluate("mysql", binlog_row_value_options="PARTIAL_JSON")[
        "binlog_row_value_options"
    ]
    assert not finding.ok
    assert "PARTIAL_JSON" in finding.detail
    assert finding.fix is not None
    assert finding.fix.startswith("SET PERSIST binlog_row_value_options = '';")


@pytest.mark.parametrize(
    ("mode", "steps"),
    [
        ("OFF", ["OFF_PERMISSIVE", "ON_PERMISSIVE", "ON"]),
        ("OFF_PERMISSIVE", ["ON_PERMISSIVE", "ON"]),
        ("ON_PERMISSIVE", ["ON"]),
    ],
)
def test_mysql_gtid_mode_fix_walks_the_allowed_steps(mode: str, steps: list[str]) -> None:
    finding = _evaluate("mysql", gtid_mode=mode)["gtid_mode"]
    assert not finding.ok
    assert finding.fix is not None
    statements = [f"SET PERSIST gtid_mode = {step};" for step in steps]
    assert " ".join(statements) in finding.fix
    assert "gtid_mode = OFF;" not in finding.fix


def test_mysql_enforce_gtid_consistency_must_be_on() -> None:
    for value in ("OFF", "WARN"):
        finding = _evaluate("mysql", enforce_gtid_consistency=value)["enforce_gtid_consistency"]
        assert not finding.ok
        assert finding.fix == "SET PERSIST enforce_gtid_consistency = ON;"


def test_mariadb_strict_gtid_mode_is_required() -> None:
    finding = _evaluate("mariadb", gtid_strict_mode="OFF")["gtid_strict_mode"]
    assert not finding.ok
    assert finding.fix is not None
    assert finding.fix.startswith("SET GLOBAL gtid_strict_mode = ON;")
    assert "gtid_strict_mode=ON under [mariadbd]" in finding.fix


def test_mariadb_compressed_binlog_events_fail() -> None:
    finding = _evaluate("mariadb", log_bin_compress="ON")["log_bin_compress"]
    assert not finding.ok
    assert finding.fix is not None
    assert finding.fix.startswith("SET GLOBAL log_bin_compress = OFF;")
    assert _evaluate("mariadb", log_bin_compress="OFF")["log_bin_compress"].ok


def test_an_old_server_without_row_metadata_fails() -> None:
    variables = {k: v for k, v in MYSQL_GOOD.items() if k != "binlog_row_metadata"}
    finding = _by_check(evaluate_source("mysql", variables, GOOD_GRANTS["mysql"], "cdc"))[
        "binlog_row_metadata"
    ]
    assert not finding.ok
    assert "8.0.1" in finding.detail


def test_variable_names_may_come_upper_case() -> None:
    variables = {name.upper(): value for name, value in MYSQL_GOOD.items()}
    findings = evaluate_source("mysql", variables, GOOD_GRANTS["mysql"], "cdc")
    assert all(finding.ok for finding in findings)


# -- grants ----------------------------------------------------------------------------------

MYSQL_ROOT = [
    "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, SHUTDOWN, PROCESS, FILE,"
    " REFERENCES, INDEX, ALTER, SHOW DATABASES, SUPER, CREATE TEMPORARY TABLES, LOCK TABLES,"
    " EXECUTE, REPLICATION SLAVE, REPLICATION CLIENT, CREATE VIEW, SHOW VIEW, CREATE ROUTINE,"
    " ALTER ROUTINE, CREATE USER, EVENT, TRIGGER, CREATE TABLESPACE, CREATE ROLE, DROP ROLE"
    " ON *.* TO `root`@`127.0.0.1` WITH GRANT OPTION",
    "GRANT ALLOW_NONEXISTENT_DEFINER,APPLICATION_PASSWORD_ADMIN,BINLOG_ADMIN,"
    "REPLICATION_APPLIER,REPLICATION_SLAVE_ADMIN ON *.* TO `root`@`127.0.0.1` WITH GRANT OPTION",
]


@pytest.mark.parametrize(
    ("flavor", "lines"),
    [
        ("mysql", MYSQL_ROOT),
        ("mysql", ["GRANT ALL PRIVILEGES ON *.* TO `cdc`@`%` WITH GRANT OPTION"]),
        ("mariadb", ["GRANT ALL PRIVILEGES ON *.* TO `cdc`@`localhost` WITH GRANT OPTION"]),
        ("mariadb", ["GRANT ALL ON *.* TO 'cdc'@'%'"]),
        # MariaDB's older name of BINLOG MONITOR is accepted.
        ("mariadb", ["GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cdc'@'%'"]),
        (
            "mysql",
            [
                "GRANT USAGE ON *.* TO `cdc`@`%`",
                "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`",
                "GRANT SELECT ON `shop`.* TO `cdc`@`%`",
            ],
        ),
        (
            "mariadb",
            [
                "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `cdc`@`%` IDENTIFIED BY"
                " PASSWORD '*D821809F681A40A6E379B50D0463EFAE20BDD122'",
                "GRANT PROXY ON ``@`%` TO `cdc`@`%`",
                "GRANT SELECT ON `shop`.`orders` TO `cdc`@`%`",
            ],
        ),
    ],
)
def test_grant_lines_that_suffice(flavor: Flavor, lines: list[str]) -> None:
    finding = _evaluate(flavor, grants=lines)["grants"]
    assert finding.ok, finding


@pytest.mark.parametrize("flavor", FLAVORS)
def test_select_only_lacks_the_replication_privileges(flavor: Flavor) -> None:
    lines = ["GRANT SELECT ON *.* TO `u_x`@`127.0.0.1`"]
    finding = _by_check(evaluate_source(flavor, GOOD[flavor], lines, "u_x"))["grants"]
    assert not finding.ok
    client = "BINLOG MONITOR" if flavor == "mariadb" else "REPLICATION CLIENT"
    assert f"lacks REPLICATION SLAVE, {client}" in finding.detail
    assert finding.fix == f"GRANT REPLICATION SLAVE, {client} ON *.* TO 'u_x'@'127.0.0.1';"


@pytest.mark.parametrize("flavor", FLAVORS)
def test_no_privileges_at_all_needs_the_full_grant(flavor: Flavor) -> None:
    lines = ["GRANT USAGE ON *.* TO `cdc`@`%`"]
    finding = _evaluate(flavor, grants=lines)["grants"]
    client = "BINLOG MONITOR" if flavor == "mariadb" else "REPLICATION CLIENT"
    assert not finding.ok
    assert finding.fix == f"GRANT REPLICATION SLAVE, {client}, SELECT ON *.* TO 'cdc'@'%';"


def test_mysql_replication_client_alone_is_missing() -> None:
    lines = ["GRANT SELECT, REPLICATION SLAVE ON *.* TO `cdc`@`10.0.0.%`"]
    finding = _evaluate("mysql", grants=lines)["grants"]
    assert not finding.ok
    assert finding.fix == "GRANT REPLICATION CLIENT ON *.* TO 'cdc'@'10.0.0.%';"


def test_mysql_dynamic_privileges_do_not_stand_in_for_replication_slave() -> None:
    lines = [
        "GRANT SELECT, REPLICATION CLIENT ON *.* TO `cdc`@`%`",
        "GRANT BINLOG_ADMIN,REPLICATION_SLAVE_ADMIN ON *.* TO `cdc`@`%`",
    ]
    finding = _evaluate("mysql", grants=lines)["grants"]
    assert not finding.ok
    assert "REPLICATION SLAVE" in finding.detail


def test_replication_privileges_on_one_schema_do_not_count() -> None:
    lines = ["GRANT ALL PRIVILEGES ON `shop`.* TO `cdc`@`%`"]
    finding = _evaluate("mysql", grants=lines)["grants"]
    assert not finding.ok
    assert finding.fix == "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cdc'@'%';"


def test_role_grants_are_not_expanded_and_say_so() -> None:
    lines = ["GRANT USAGE ON *.* TO `cdc`@`%`", "GRANT `cdc_role`@`%` TO `cdc`@`%`"]
    finding = _evaluate("mysql", grants=lines)["grants"]
    assert not finding.ok
    assert "roles are not counted" in finding.detail


def test_the_password_hash_in_a_grant_line_never_reaches_the_finding() -> None:
    lines = [
        "GRANT SELECT ON *.* TO `cdc`@`%` IDENTIFIED BY PASSWORD"
        " '*D821809F681A40A6E379B50D0463EFAE20BDD122'"
    ]
    finding = _evaluate("mariadb", grants=lines)["grants"]
    assert "D821809F" not in str(finding.to_dict())
    assert finding.fix is not None
    assert finding.fix.endswith("TO 'cdc'@'%';")


def test_select_must_cover_the_included_schemas() -> None:
    base = "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`"
    only_shop = [base, "GRANT SELECT ON `shop`.* TO `cdc`@`%`"]
    assert _evaluate("mysql", grants=only_shop, include=("shop.*",))["grants"].ok
    assert _evaluate("mysql", grants=only_shop, include=("shop.orders",))["grants"].ok
    finding = _evaluate("mysql", grants=only_shop, include=("shop.*", "billing.invoices"))["grants"]
    assert not finding.ok
    assert "SELECT on billing.invoices" in finding.detail
    assert finding.fix == "GRANT SELECT ON `billing`.* TO 'cdc'@'%';"
    # One table granted covers that table, not its neighbours.
    one_table = [base, "GRANT SELECT ON `shop`.`orders` TO `cdc`@`%`"]
    assert _evaluate("mysql", grants=one_table, include=("shop.orders",))["grants"].ok
    assert not _evaluate("mysql", grants=one_table, include=("shop.*",))["grants"].ok


def test_schema_grant_wildcards_follow_like_rules() -> None:
    base = "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`"
    lines = [base, "GRANT SELECT ON `shop\\_%`.* TO `cdc`@`%`"]
    assert _evaluate("mysql", grants=lines, include=("shop_eu.*",))["grants"].ok
    assert not _evaluate("mysql", grants=lines, include=("shopeu.*",))["grants"].ok


def test_a_wildcard_schema_pattern_without_grants_asks_for_global_select() -> None:
    lines = ["GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`"]
    finding = _evaluate("mysql", grants=lines, include=("shop_*.orders",))["grants"]
    assert not finding.ok
    assert finding.fix == "GRANT SELECT ON *.* TO 'cdc'@'%';"


@pytest.mark.parametrize(
    ("line", "privileges", "schema", "table"),
    [
        ("GRANT ALL PRIVILEGES ON *.* TO `a`@`%`", {"ALL"}, None, None),
        (
            "GRANT SELECT (`id`, `name`), INSERT (`id`) ON `db`.`t` TO `a`@`%`",
            {"SELECT", "INSERT"},
            "db",
            "t",
        ),
        ("GRANT SELECT ON TABLE `my``db`.* TO 'a'@'h'", {"SELECT"}, "my`db", None),
        ("GRANT SELECT ON `on db`.`to t` TO `a`@`%`", {"SELECT"}, "on db", "to t"),
        (
            "GRANT REPLICATION SLAVE,  BINLOG MONITOR ON *.* TO `a`@`%` WITH GRANT OPTION",
            {"REPLICATION SLAVE", "BINLOG MONITOR"},
            None,
            None,
        ),
    ],
)
def test_parse_grant_variants(
    line: str, privileges: set[str], schema: str | None, table: str | None
) -> None:
    grant = parse_grant(line)
    assert grant is not None
    assert (set(grant.privileges), grant.schema, grant.table) == (privileges, schema, table)


@pytest.mark.parametrize(
    "line",
    [
        "GRANT `reader`@`%` TO `a`@`%`",
        "GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION",
        "GRANT EXECUTE ON PROCEDURE `db`.`p` TO `a`@`%`",
        "REVOKE SELECT ON `mysql`.* FROM `a`@`%`",
        "",
    ],
)
def test_lines_that_grant_no_table_privileges_are_skipped(line: str) -> None:
    assert parse_grant(line) is None


# -- staging ---------------------------------------------------------------------------------


def test_staging_that_exists_is_probed_and_left_clean(tmp_path: Path) -> None:
    findings = _by_check(check_staging(tmp_path))
    assert findings["staging"].ok
    assert findings["staging_space"].ok
    assert "bytes free" in findings["staging_space"].detail
    assert list(tmp_path.iterdir()) == []


def test_staging_that_does_not_exist_yet_is_not_created(tmp_path: Path) -> None:
    target = tmp_path / "wal" / "default"
    findings = _by_check(check_staging(target))
    assert findings["staging"].ok
    assert "will create" in findings["staging"].detail
    assert not (tmp_path / "wal").exists()


def test_staging_pointing_at_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "wal").write_text("not a folder")
    findings = _by_check(check_staging(tmp_path / "wal" / "default"))
    assert not findings["staging"].ok
    assert findings["staging"].fix is not None
    assert "CDC_STAGING_DIR" in findings["staging"].fix


def test_staging_without_free_space_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = SimpleNamespace(total=10, used=9, free=1)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage)
    space = _by_check(check_staging(tmp_path))["staging_space"]
    assert not space.ok
    assert "only 1 bytes free" in space.detail
    assert space.fix is not None


def test_a_fix_belongs_to_failures_only() -> None:
    with pytest.raises(ValueError, match="failures only"):
        Finding("x", True, "fine", "do something")
    with pytest.raises(ValueError, match="failures only"):
        Finding("x", False, "broken", None)
    with pytest.raises(ValueError, match="passing checks only"):
        Finding("x", False, "broken", "fix it", "and some advice")
    assert Finding("x", False, "broken", "fix it").to_dict() == {
        "check": "x",
        "ok": False,
        "detail": "broken",
        "fix": "fix it",
        "advice": None,
    }


REPLICATION = "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`"


@pytest.mark.parametrize(
    ("grants", "include", "fix"),
    [
        # SELECT on another schema passed the grants rule, yet no captured table is visible.
        ([REPLICATION, "GRANT SELECT ON `other`.* TO `cdc`@`%`"], (), "GRANT SELECT ON *.* TO"),
        ([REPLICATION], ("shop.*", "crm.users"), "GRANT SELECT ON `shop`.* TO"),
        ([REPLICATION], ("shop.*", "s*.t"), "GRANT SELECT ON *.* TO"),
    ],
)
def test_seeing_no_table_to_capture_fails_with_the_grant(
    grants: list[str], include: tuple[str, ...], fix: str
) -> None:
    visible = [("mysql", "user"), ("other", "t")] if include else [("mysql", "user")]
    finding = tables_finding(visible, grants, "cdc", include)
    assert not finding.ok
    assert "can see none of the tables" in finding.detail
    assert finding.fix is not None and finding.fix.startswith(fix)
    if include == ("shop.*", "crm.users"):
        assert finding.fix.endswith("GRANT SELECT ON `crm`.* TO 'cdc'@'%';")


def test_seeing_a_table_to_capture_passes_and_an_empty_source_warns() -> None:
    grants = [REPLICATION, "GRANT SELECT ON *.* TO `cdc`@`%`"]
    seen = tables_finding([("shop", "orders"), ("mysql", "user")], grants, "cdc", ("shop.*",))
    assert seen.ok and not seen.advice and "1 tables to capture (shop.orders)" in seen.detail
    empty = tables_finding([("mysql", "user")], grants, "cdc")
    assert empty.ok and empty.advice and "exists yet" in empty.detail
