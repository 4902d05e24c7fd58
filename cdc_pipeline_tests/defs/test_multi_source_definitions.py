"""With CDC_SOURCES_FILE, one code location holds every source's definitions, named after it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from cdc_pipeline.definitions import build_definitions
from cdc_pipeline.defs.wiring import SourceWiring

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FILE = """
defaults:
  mongo_compat: nx-27017
  staging_dir: {staging}
sources:
  - name: shop
    url_env: SHOP_URL
    include_tables: [shop.orders, shop.customers]
    segment_max_events: 2000
  - name: billing
    url_env: BILLING_URL
    server_id: 4270002
    mongo_pool: mongo_loads
    on_unloadable: dead-letter
  - name: crm
    url_env: CRM_URL
    mongo_db: crm_copy
    lag_warn_seconds: 60
"""
PER_SOURCE = {"load_batch_job", "catch_up_job", "audit_job", "snapshot_job"}


@pytest.fixture
def sources_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(FILE.format(staging=tmp_path / "staging"))
    monkeypatch.setenv("CDC_SOURCES_FILE", str(path))
    monkeypatch.setenv("SHOP_URL", "mysql://shop:shop-pw-1@127.0.0.1:3306")
    monkeypatch.setenv("BILLING_URL", "mysql://bill:bill-pw-2@127.0.0.1:3307")
    monkeypatch.setenv("CRM_URL", "mysql://crm:crm-pw-3@127.0.0.1:3308")
    monkeypatch.setenv("CDC_MONGO_URI", "mongodb://w:mongo-pw-4@127.0.0.1:27017")
    monkeypatch.setenv("CDC_INCLUDE_TABLES", "leak.*")  # the process's: used by no source
    return path


def test_every_source_gets_its_own_named_definitions(sources_file: Path) -> None:
    repository = build_definitions().get_repository_def()
    jobs = {job.name for job in repository.get_all_jobs()} - {"__ASSET_JOB"}
    names = ("shop", "billing", "crm")
    assert jobs == {f"{name}__{job}" for name in names for job in PER_SOURCE}
    assert {sensor.name for sensor in repository.sensor_defs} == {
        f"{name}__binlog_capture_sensor" for name in names
    }
    assert {schedule.name for schedule in repository.schedule_defs} == {
        f"{name}__audit_schedule" for name in names
    }
    graph = repository.asset_graph
    keys = set(graph.get_all_asset_keys())
    for name in names:
        w = SourceWiring(name)
        assert {w.wal_segment, w.mongo_batch} <= keys
        checks = {key.name for key in graph.asset_check_keys if key.asset_key.path[0] == name}
        assert {
            "gtid_continuity",
            "no_duplicate_events",
            "schema_versions_valid",
            "binlog_retention_headroom",
            "replication_lag",
            "source_sink_reconciliation",
        } <= checks
        job = repository.get_job(f"{name}__load_batch_job")
        assert job.partitions_def == dg.DynamicPartitionsDefinition(name=f"{name}__cdc_batches")
    # The include patterns that name one table exactly show as that source's table assets.
    assert dg.AssetKey(["shop", "mongodb", "shop", "orders"]) in keys
    assert not any(key.path[0] == "leak" or "leak" in key.path for key in keys)
    # billing's loads run in the Dagster pool its entry names
    load = graph.get(dg.AssetKey(["billing", "mongo_batch"]))
    assert load.pools == {"mongo_loads"}
    assert not graph.get(dg.AssetKey(["shop", "mongo_batch"])).pools


def test_resources_show_each_source_settings_and_no_secret(sources_file: Path) -> None:
    definitions = build_definitions()
    resources = definitions.resources
    assert resources is not None
    shop, billing = resources["shop__source"], resources["billing__source"]
    assert shop.source_name == "shop" and shop.url_variable == "SHOP_URL"
    assert shop.include_tables == "shop.orders,shop.customers"
    assert shop.segment_max_events == 2000 and billing.server_id == 4270002
    assert resources["billing__mongo"].on_unloadable == "dead-letter"
    assert resources["crm__mongo"].database == "crm_copy"
    assert resources["shop__mongo"].database == "cdc_shop"
    assert resources["crm__audit"].lag_warn_seconds == 60
    shown = repr(resources)
    for secret in ("shop-pw-1", "bill-pw-2", "crm-pw-3", "mongo-pw-4"):
        assert secret not in shown
    # read when a run needs them, from the variable each entry names
    assert billing.capture_settings().source_url.password == "bill-pw-2"
    assert billing.capture_settings().include_tables == ()  # not the process's leak.*
    assert resources["crm__mongo"].mongo_settings().uri.endswith("@127.0.0.1:27017")


def _validate(env_file: Path | None) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "CDC_SOURCES_FILE"}
    if env_file is not None:
        env["CDC_SOURCES_FILE"] = str(env_file)
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-m",
            "cdc_pipeline.definitions",
        ],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dagster_validates_the_location_and_refuses_a_bad_file_in_one_sentence(
    sources_file: Path, tmp_path: Path
) -> None:
    done = _validate(sources_file)
    assert done.returncode == 0, done.stderr[-2000:]
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - name: shop\n    url: mysql://u:leaked-pw@h\n")
    done = _validate(bad)
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "secrets stay in the environment" in said
    assert "leaked-pw" not in said


def test_the_cli_acts_on_one_source_and_names_it_without_secrets(
    sources_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from cdc_pipeline import cli

    saved = dict(os.environ)  # the CLI makes the chosen source's settings its environment
    try:
        _cli_checks(cli, monkeypatch, capsys)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _cli_checks(cli: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    assert cli.main(["status"]) == 2
    said = capsys.readouterr().err
    assert said.strip() == (
        "cdc-pipeline: CDC_SOURCES_FILE lists 3 sources (shop, billing, crm); choose one with"
        " --source NAME."
    )
    assert cli.main(["--source", "nope", "status"]) == 2
    assert "has no source named 'nope' (it has: shop, billing, crm)" in capsys.readouterr().err
    monkeypatch.setenv("BILLING_URL", "mysql://bill:bill-pw-2@127.0.0.1:1")
    monkeypatch.setenv("CDC_MONGO_URI", "mongodb://w:mongo-pw-4@127.0.0.1:1")
    code = cli.main(["--source", "billing", "doctor"])
    out = capsys.readouterr()
    assert code == 1
    assert "127.0.0.1:1" in out.out  # billing's server, from the variable its entry names
    assert "/staging/billing" in out.out  # its own staging sub-folder
    for secret in ("bill-pw-2", "mongo-pw-4", "shop-pw-1"):
        assert secret not in out.out + out.err
    monkeypatch.delenv("CDC_SOURCES_FILE")
    assert cli.main(["--source", "shop", "status"]) == 2
    assert "--source shop needs CDC_SOURCES_FILE" in capsys.readouterr().err
