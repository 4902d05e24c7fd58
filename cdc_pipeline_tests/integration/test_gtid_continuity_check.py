"""``gtid_continuity`` through ``audit_job``: passes on a healthy pipeline, fails on a deleted
segment and on a checkpoint that does not match its segment, naming what is wrong."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings
from cdc_pipeline.core.wal.staging import WalPaths, file_digest_path
from cdc_pipeline_tests.audit import audit as run_audit
from cdc_pipeline_tests.conftest import MongoTarget
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


def audit() -> dg.AssetCheckEvaluation:
    return run_audit()["gtid_continuity"]


def test_gtid_continuity_fails_exactly_on_a_broken_chain_or_checkpoint(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pipeline_env: WalPaths,
) -> None:
    settings = replace(capture_settings, max_events_per_segment=5)
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    capture_once(settings)
    for i in range(20):
        source_server.execute(f"INSERT INTO {table} VALUES ({i})")
    while capture_once(settings).manifest is not None:
        pass
    paths = WalPaths(settings.staging_dir, "default")
    run_load(paths, MongoSettings.from_env())

    healthy = audit()
    assert healthy.passed, healthy.metadata

    # A deleted segment: the hole is named by its GTIDs.
    segment = paths.segment(2)
    moved = tmp_path / segment.name
    segment.rename(moved)
    digest = file_digest_path(segment)
    digest.rename(tmp_path / digest.name)
    broken = audit()
    assert not broken.passed
    problems = broken.metadata["first problems"].value
    assert any("segments 2..2 are missing" in p for p in problems)  # type: ignore[union-attr]
    assert broken.metadata["missing gtid ranges"].value  # the GTIDs of the hole
    moved.rename(segment)
    (tmp_path / digest.name).rename(digest)
    assert audit().passed

    # A checkpoint that claims more than its segment holds.
    with mongo_target.client() as client:
        checkpoints = client[mongo_db_name]["cdc_checkpoints"]
        document = checkpoints.find_one({"_id": "default"})
        assert document is not None
        checkpoints.update_one(
            {"_id": "default"}, {"$set": {"last_sequence": document["last_sequence"] - 1}}
        )
    mismatch = audit()
    assert not mismatch.passed
    assert any("checkpoint" in p for p in mismatch.metadata["first problems"].value)  # type: ignore[union-attr]
