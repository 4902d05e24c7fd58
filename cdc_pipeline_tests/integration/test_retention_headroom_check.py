"""``binlog_retention_headroom`` through ``audit_job``: passes while capture keeps up; after the
source purges binlogs capture never read, it fails with severity ERROR and names the lost GTIDs
(the logic's own cases are in ``test_headroom.py``)."""

from __future__ import annotations

import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline_tests.audit import audit, value
from cdc_pipeline_tests.binlog_oracle import executed_gtids
from cdc_pipeline_tests.conftest import MongoTarget
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


def test_headroom_check_errors_and_names_gtids_after_a_purge(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    monkeypatch: pytest.MonkeyPatch,
    pipeline_env: WalPaths,
) -> None:
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(capture_settings)
    source_server.execute(f"INSERT INTO {table} VALUES (1)")
    capture_once(capture_settings)

    healthy = audit()["binlog_retention_headroom"]
    assert healthy.passed, healthy.metadata

    before = executed_gtids(source_server)
    source_server.execute(f"INSERT INTO {table} VALUES (2)")
    source_server.execute(f"INSERT INTO {table} VALUES (3)")
    lost = executed_gtids(source_server) - before
    source_server.purge_binlogs()

    purged = audit()["binlog_retention_headroom"]
    assert not purged.passed
    assert purged.severity.value == "ERROR"
    assert value(purged, "lost gtids") == str(lost)
    assert value(purged, "lost transactions") == 2
    assert lost.describe() in value(purged, "problems")[0]
    assert source_server.url not in str(purged.metadata)
