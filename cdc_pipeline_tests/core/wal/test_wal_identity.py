"""``core.wal.identity``: comparing a staging folder's record with a capture's or a load's settings,
adopting what is missing, failover by GTID history, and the file on disk (atomic, no secrets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdc_pipeline.core.errors import WalIdentityError
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl
from cdc_pipeline.core.wal.identity import (
    CAPTURE_FACTS,
    LOAD_FACTS,
    Observed,
    ServerIdentity,
    WalIdentity,
    adopt,
    check_identity,
    check_load_identity,
    compare,
    identity_problems,
    read_identity,
)
from cdc_pipeline.core.wal.staging import WalPaths

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "5b1a9e2c-0d4f-11ef-8f3a-0242ac120002"
A = ServerIdentity.mysql(UUID_A, "db-a:3306")
B = ServerIdentity.mysql(UUID_B, "db-b:3306")
WHERE = Path("/staging/default")
NOW = "2026-12-02T12:00:00+00:00"


def mysql(text: str) -> GtidSet:
    return GtidSet.parse(text, "mysql")


def recorded(**fields: object) -> WalIdentity:
    base: dict[str, object] = {
        "source": "default",
        "server": A,
        "server_since": "2026-01-01T00:00:00+00:00",
        "tables": {"CDC_INCLUDE_TABLES": ("shop.a",)},
        "mirror_style": "dotted",
        "mongo_compat": "standard",
    }
    base.update(fields)
    return WalIdentity(**base)  # type: ignore[arg-type]


def test_the_same_configuration_is_accepted() -> None:
    observed = Observed(
        "capture",
        server=A,
        executed=mysql(f"{UUID_A}:1-10"),
        captured=mysql(f"{UUID_A}:1-8"),
        tables={"CDC_INCLUDE_TABLES": ("shop.a",)},
    )
    result = compare(recorded(), observed, WHERE)
    assert result.refusals == [] and result.failover is None


def test_the_order_and_repeats_of_patterns_do_not_matter() -> None:
    record = recorded(tables={"CDC_INCLUDE_TABLES": ("shop.b", "shop.a")})
    observed = Observed("capture", tables={"CDC_INCLUDE_TABLES": ("shop.a", "shop.b", "shop.a")})
    assert compare(record, observed, WHERE).refusals == []


def test_another_include_list_is_refused_naming_both_values() -> None:
    observed = Observed("capture", tables={"CDC_INCLUDE_TABLES": ("shop.b",)})
    [refusal] = compare(recorded(), observed, WHERE).refusals
    assert "captured with CDC_INCLUDE_TABLES=shop.a" in refusal
    assert "this capture has CDC_INCLUDE_TABLES=shop.b" in refusal
    assert "set CDC_INCLUDE_TABLES=shop.a again" in refusal and "CDC_STAGING_DIR" in refusal
    assert str(WHERE) in refusal


def test_an_unset_include_list_is_a_value_of_its_own() -> None:
    observed = Observed("load", tables={"CDC_INCLUDE_TABLES": ()})
    [refusal] = compare(recorded(), observed, WHERE).refusals
    assert "this load has CDC_INCLUDE_TABLES unset" in refusal
    back = compare(recorded(tables={"CDC_INCLUDE_TABLES": ()}), Observed("x", tables={}), WHERE)
    assert back.refusals == []  # a caller that knows no table setting compares none


def test_a_scope_variable_the_record_predates_reads_as_unset() -> None:
    """A folder recorded before CDC_EXCLUDE_TABLES (say) existed excluded nothing."""
    observed_same = Observed("capture", tables={"CDC_INCLUDE_TABLES": ("shop.a",), "X": ()})
    assert compare(recorded(), observed_same, WHERE).refusals == []
    observed_new = Observed("capture", tables={"CDC_INCLUDE_TABLES": ("shop.a",), "X": ("s.t",)})
    [refusal] = compare(recorded(), observed_new, WHERE).refusals
    assert "captured with X unset but this capture has X=s.t" in refusal


def test_another_mirror_style_is_refused_naming_cdc_mongo_compat() -> None:
    observed = Observed("load", mirror_style="underscore", mongo_compat="nx-27017")
    [refusal] = compare(recorded(), observed, WHERE).refusals
    assert "dotted mirror names" in refusal and "underscore ones" in refusal
    assert "set CDC_MONGO_COMPAT=standard again" in refusal


def test_a_replica_holding_the_whole_wal_is_accepted_as_a_failover() -> None:
    captured = mysql(f"{UUID_A}:1-8")
    observed = Observed(
        "capture", server=B, executed=mysql(f"{UUID_A}:1-9,{UUID_B}:1-3"), captured=captured
    )
    result = compare(recorded(), observed, WHERE)
    assert result.refusals == []
    assert result.failover is not None
    assert UUID_A in result.failover and UUID_B in result.failover


def test_a_server_missing_captured_transactions_is_refused_naming_both() -> None:
    observed = Observed(
        "capture", server=B, executed=mysql(f"{UUID_A}:1-5"), captured=mysql(f"{UUID_A}:1-8")
    )
    result = compare(recorded(), observed, WHERE)
    [refusal] = result.refusals
    assert result.failover is None
    assert UUID_A in refusal and UUID_B in refusal and "never executed 3 of" in refusal
    assert result.server_refused
    assert "point CDC_MYSQL_URL back" in refusal


def test_a_server_of_the_other_flavor_is_refused() -> None:
    other = ServerIdentity.mariadb(1, 0, "m:3306")
    observed = Observed(
        "capture",
        server=other,
        executed=GtidSet.parse("0-1-100", "mariadb"),
        captured=mysql(f"{UUID_A}:1-8"),
    )
    [refusal] = compare(recorded(), observed, WHERE).refusals
    assert "MariaDB server (server_id 1, gtid_domain_id 0" in refusal


def test_mariadb_servers_differ_by_server_id_or_domain() -> None:
    assert ServerIdentity.mariadb(1, 0).same_server(ServerIdentity.mariadb(1, 0, "elsewhere"))
    assert not ServerIdentity.mariadb(1, 0).same_server(ServerIdentity.mariadb(2, 0))
    assert not ServerIdentity.mariadb(1, 0).same_server(ServerIdentity.mariadb(1, 1))


def test_a_mariadb_failover_is_judged_by_domain_positions() -> None:
    record = recorded(server=ServerIdentity.mariadb(1, 0))
    captured = GtidSet.parse("0-1-50", "mariadb")
    replica = ServerIdentity.mariadb(2, 0)
    ahead = Observed(
        "capture", server=replica, executed=GtidSet.parse("0-2-60", "mariadb"), captured=captured
    )
    assert compare(record, ahead, WHERE).failover is not None
    behind = Observed(
        "capture", server=replica, executed=GtidSet.parse("0-2-40", "mariadb"), captured=captured
    )
    assert compare(record, behind, WHERE).refusals


def test_adopt_fills_only_missing_facts_of_the_callers_kind() -> None:
    empty = WalIdentity(source="default")
    observed = Observed(
        "load",
        tables={"CDC_INCLUDE_TABLES": ("shop.a",)},
        mirror_style="underscore",
        mongo_compat="nx-27017",
    )
    loaded = adopt(empty, observed, LOAD_FACTS, NOW)
    assert loaded.tables is None  # a load never records the tables: capture owns them
    assert (loaded.mirror_style, loaded.mongo_compat) == ("underscore", "nx-27017")
    assert loaded.created_at == loaded.updated_at == NOW
    captured = adopt(
        loaded, Observed("capture", server=A, tables={"T": ("b.*", "a.*")}), CAPTURE_FACTS, NOW
    )
    assert captured.server == A and captured.tables == {"T": ("a.*", "b.*")}
    again = adopt(captured, Observed("load", mirror_style="dotted"), LOAD_FACTS, "later")
    assert again == captured  # recorded facts are never overwritten


def test_adopt_keeps_the_replaced_server_with_its_time() -> None:
    record = recorded()
    observed = Observed("capture", server=B, captured=mysql(f"{UUID_A}:1-8"))
    moved = adopt(record, observed, CAPTURE_FACTS, NOW)
    assert moved.server == B and moved.server_since == NOW
    [previous] = moved.previous_servers
    assert previous["key"] == f"server_uuid {UUID_A}"
    assert previous["since"] == record.server_since and previous["until"] == NOW
    assert previous["wal_end_gtid"] == f"{UUID_A}:1-8"


def test_the_file_round_trips_and_holds_no_secret(tmp_path: Path) -> None:
    secret = "Pw-s3cret"
    settings = CaptureSettings(
        source_url=SourceUrl.parse(f"mysql://cdc:{secret}@db-a:3306"),
        staging_dir=tmp_path,
        include_tables=("shop.*",),
    )
    paths = WalPaths(tmp_path, "default")
    observed = Observed(
        "capture", server=A, executed=mysql(f"{UUID_A}:1-3"), tables=settings.table_scope
    )
    assert check_identity(paths, observed, CAPTURE_FACTS) is None
    text = paths.identity.read_text()
    assert secret not in text and "mysql://" not in text and "cdc:" not in text
    assert read_identity(paths) == WalIdentity.from_dict(json.loads(text))
    assert [p.name for p in paths.root.iterdir() if p.name.startswith(".tmp")] == []


def test_a_refusal_writes_nothing(tmp_path: Path) -> None:
    paths = WalPaths(tmp_path, "default")
    check_identity(paths, Observed("capture", server=A, tables={"T": ("a.*",)}), CAPTURE_FACTS)
    before = paths.identity.read_bytes()
    with pytest.raises(WalIdentityError, match="T=a"):
        check_identity(paths, Observed("capture", server=A, tables={"T": ("b.*",)}), CAPTURE_FACTS)
    assert paths.identity.read_bytes() == before


def test_the_load_check_records_then_enforces_the_mirror_style(tmp_path: Path) -> None:
    paths = WalPaths(tmp_path, "default")
    standard = MongoSettings(uri="mongodb://h:1", compat="standard")
    check_load_identity(paths, standard, None)
    check_load_identity(paths, standard, None)
    with pytest.raises(WalIdentityError, match="CDC_MONGO_COMPAT=standard again"):
        check_load_identity(paths, MongoSettings(uri="mongodb://h:1", compat="nx-27017"), None)
    assert identity_problems(paths, Observed("status", mirror_style="dotted")) == []


def test_an_unreadable_file_is_refused_not_replaced(tmp_path: Path) -> None:
    paths = WalPaths(tmp_path, "default")
    paths.ensure()
    paths.identity.write_text("{not json")
    with pytest.raises(WalIdentityError, match="cannot be read"):
        check_identity(paths, Observed("capture", server=A), CAPTURE_FACTS)
    assert paths.identity.read_text() == "{not json"
    assert identity_problems(paths, Observed("status"))
