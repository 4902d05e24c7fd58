"""``cdc-pipeline recapture --from``: refuses applied segments and bad input with one line (exit
2); sets unloaded ones aside so the next capture writes the same transactions again."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cdc_pipeline.cli import main
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings
from cdc_pipeline.core.wal.segment import read_manifest
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline_tests.conftest import MongoTarget
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


def test_recapture_sets_unloaded_segments_aside_and_capture_writes_them_again(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pipeline_env: WalPaths,
) -> None:
    settings = replace(capture_settings, max_events_per_segment=2)
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(settings)
    for key in range(6):
        source_server.execute(f"INSERT INTO {table} VALUES ({key})")
    while capture_once(settings).manifest is not None:
        pass
    paths = WalPaths(settings.staging_dir, "default")
    before = [read_manifest(path) for path in list_segments(paths)]
    assert [m.sequence for m in before] == [1, 2, 3]
    run_load(paths, MongoSettings.from_env(), through_sequence=1)

    assert main(["recapture", "--from", "default-000000000001"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "already applied in MongoDB" in error
    assert main(["recapture", "--from", "banana"]) == 2
    assert "--from takes a partition key" in capsys.readouterr().err

    assert main(["recapture", "--from", "2"]) == 0
    assert "set aside 2 segments" in capsys.readouterr().out
    assert [path.name for path in list_segments(paths)] == ["seg-000000000001.parquet"]
    while capture_once(settings).manifest is not None:
        pass
    again = [read_manifest(path) for path in list_segments(paths)]
    assert [(m.start_gtid, m.end_gtid, m.row_count) for m in again] == [
        (m.start_gtid, m.end_gtid, m.row_count) for m in before
    ]
    run_load(paths, MongoSettings.from_env())
    with mongo_target.client() as client:
        assert client[mongo_db_name]["row_changes"].count_documents({}) == 6
