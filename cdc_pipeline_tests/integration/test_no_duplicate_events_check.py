"""``no_duplicate_events`` through ``audit_job``: passes on a healthy pipeline; fails, naming the
offenders, on a change-log document duplicated behind the pipeline's back, on a segment that
stages events a previous segment already holds (a WAL that still chains, so ``gtid_continuity``
cannot see it; the loader refuses to apply it), and on a row change applied a second time."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.errors import CorruptSegmentError
from cdc_pipeline.core.load.documents import ROW_CHANGES
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings
from cdc_pipeline.core.wal.segment import read_manifest, read_rows
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline.core.wal.writer import SegmentWriter
from cdc_pipeline_tests.audit import audit, value
from cdc_pipeline_tests.conftest import MongoTarget
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


def test_no_duplicate_events_names_events_staged_or_applied_twice(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    monkeypatch: pytest.MonkeyPatch,
    pipeline_env: WalPaths,
) -> None:
    settings = replace(capture_settings, max_events_per_segment=5)
    table = f"`{source_schema}`.t"
    source_server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT)")
    capture_once(settings)
    for i in range(20):
        source_server.execute(f"INSERT INTO {table} VALUES ({i}, {i})")
    while capture_once(settings).manifest is not None:
        pass
    paths = WalPaths(settings.staging_dir, "default")
    run_load(paths, MongoSettings.from_env())

    healthy = audit()["no_duplicate_events"]
    assert healthy.passed, healthy.metadata
    assert value(healthy, "events staged") == 20
    assert value(healthy, "change-log documents checked") == 20

    # A change-log document copied under another _id: the same event recorded twice.
    with mongo_target.client() as client:
        changes = client[mongo_db_name][ROW_CHANGES]
        original = changes.find_one({"row_index": 0}, sort=[("gtid", 1)])
        assert original is not None
        copy = {**original, "_id": f"{original['_id']}-copy"}
        changes.insert_one(copy)
        copied = audit()["no_duplicate_events"]
        assert not copied.passed
        assert copy["_id"] in value(copied, "first offenders")
        assert value(copied, "applied twice") >= 1
        changes.delete_one({"_id": copy["_id"]})
    assert audit()["no_duplicate_events"].passed

    # A segment that stages segment 2's events again and still chains (start == end == the
    # previous end): continuity is satisfied, duplicates are not.
    segments = list_segments(paths)
    second, last = read_manifest(segments[1]), read_manifest(segments[-1])
    writer = SegmentWriter(paths, last.sequence + 1)
    writer.append(read_rows(segments[1]))
    writer.commit(
        replace(
            second,
            sequence=last.sequence + 1,
            start_gtid=last.end_gtid,
            end_gtid=last.end_gtid,
            start_binlog_file=last.end_binlog_file,
            start_binlog_pos=last.end_binlog_pos,
            end_binlog_file=last.end_binlog_file,
            end_binlog_pos=last.end_binlog_pos,
        )
    )
    staged_twice = audit()
    duplicates = staged_twice["no_duplicate_events"]
    assert staged_twice["gtid_continuity"].passed  # the forged segment chains
    assert not duplicates.passed
    second_gtids = {row["gtid"] for row in read_rows(segments[1])}
    assert value(duplicates, "staged twice") == len(second_gtids)
    assert set(value(duplicates, "first offenders")) == second_gtids

    # The loader refuses it: its rows lie outside its own range (validation quarantines it).
    with pytest.raises(CorruptSegmentError, match="outside the segment's range"):
        run_load(paths, MongoSettings.from_env())
    assert (paths.quarantine / paths.segment(last.sequence + 1).name).exists()

    # A row change applied a second time by a later batch (what loading such a segment would
    # leave): the document now names a batch whose segment does not hold its transaction.
    with mongo_target.client() as client:
        changes = client[mongo_db_name][ROW_CHANGES]
        moved = changes.find_one({"batch": second.partition_key})
        assert moved is not None
        changes.update_one({"_id": moved["_id"]}, {"$set": {"batch": last.partition_key}})
    applied = audit()["no_duplicate_events"]
    assert not applied.passed
    assert moved["_id"] in value(applied, "first offenders")
    assert value(applied, "applied twice") == 2  # outside its batch, and one too many there
    assert value(applied, "missing from the change log") == 1  # one too few in its own batch
