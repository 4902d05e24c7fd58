"""``source_sink_reconciliation`` through ``audit_job``: passes on a healthy pipeline; fails with
severity ERROR, naming the keys, when a mirror document is removed or altered behind the
pipeline's back (the comparison's own cases are in ``test_reconcile.py``)."""

from __future__ import annotations

import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline_tests.audit import audit, value
from cdc_pipeline_tests.conftest import MongoTarget
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


def test_reconciliation_check_names_removed_and_altered_documents(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    monkeypatch: pytest.MonkeyPatch,
    pipeline_env: WalPaths,
) -> None:
    table = f"`{source_schema}`.accounts"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, owner VARCHAR(20))")
    capture_once(capture_settings)
    for key in range(1, 11):
        source_server.execute(f"INSERT INTO {table} VALUES ({key}, 'owner{key}')")
    capture_once(capture_settings)
    run_load(WalPaths(capture_settings.staging_dir, "default"), MongoSettings.from_env())

    healthy = audit()["source_sink_reconciliation"]
    assert healthy.passed, healthy.metadata
    assert value(healthy, "tables equal") == 1 and value(healthy, "source rows") == 10

    with mongo_target.client() as client:
        mirror = mongo_target.sink(client[mongo_db_name]).mirror(source_schema, "accounts")
        collection = client[mongo_db_name][mirror]
        collection.delete_one({"_id": 3})
        collection.update_one({"_id": 7}, {"$set": {"owner": "mallory"}})
    broken = audit()["source_sink_reconciliation"]
    assert not broken.passed
    assert broken.severity.value == "ERROR"
    assert value(broken, "tables different") == 1
    [result] = value(broken, "tables")
    assert result["missing_keys"] == ["3"]
    assert [entry["key"] for entry in result["differing_keys"]] == ["7"]
    assert result["differing_keys"][0]["fields"] == ["owner"]
    assert "mallory" not in str(broken.metadata)  # keys and field names only, never values
