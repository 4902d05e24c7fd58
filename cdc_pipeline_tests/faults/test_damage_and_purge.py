"""Scenario 8, a corrupted segment, and scenario 9, the binlog purged past capture's position,
through the Dagster path while a workload writes.

8: a byte of a segment not yet loaded is flipped. Its load run refuses and quarantines it,
loading halts there (nothing after it is applied) and ``gtid_continuity`` names the hole; the
operator's procedure (``recapture_from``, which ``cdc-pipeline recapture`` runs) sets the
segments aside, the sensor writes them again from the binlog and a resume run loads them: every
invariant holds again.

9: transactions capture never read are purged from the source. Capture stops loudly naming the
lost GTIDs, never skips them; what was captured before is loaded; ``binlog_retention_headroom``
fails with severity ERROR naming exactly the lost GTIDs and ``replication_lag`` fails too.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from cdc_pipeline import cli
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.ledger import wal_end
from cdc_pipeline.core.wal.recapture import recapture_from
from cdc_pipeline_tests.audit import audit, value
from cdc_pipeline_tests.binlog_oracle import executed_gtids
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.faults.harness import FaultPipeline, Outcome, seed_for, workload_for
from devtools.local_servers import SourceServer

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_corrupted_segment_is_quarantined_then_recaptured_from_the_binlog(
    source_server: SourceServer,
    source_schema: str,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scenario = "8 corrupted segment, re-captured"
    seed = seed_for(scenario)
    rng = random.Random(seed)
    started = time.monotonic()
    pipeline = FaultPipeline(
        source_server, source_schema, mongo_target, mongo_db_name, tmp_path, monkeypatch
    )
    workload = workload_for(source_server, source_schema, seed, schema_change_every=20)
    pipeline.fix_origin()
    settings = CaptureSettings.from_env(pipeline.env)
    workload.start()
    pipeline.start()
    wait_until(pipeline.loaded_something, 60, "a first load")
    time.sleep(rng.uniform(0.0, 3.0))
    pipeline.stop()  # the sensor is stopped; the workload goes on
    time.sleep(1.0)
    damaged = capture_once(settings).segment  # captured, not loaded yet
    assert damaged is not None
    # A segment after it (were the damaged one the newest, the next tick would simply capture
    # it again once quarantined: the operator's procedure is for one with successors).
    source_server.execute(f"INSERT INTO `{source_schema}`.evolving (id, v) VALUES (-1, -1)")
    assert capture_once(settings).segment is not None
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    sequence = int(damaged.stem.split("-")[1])

    pipeline.start()
    quarantined = pipeline.paths.quarantine / damaged.name
    wait_until(quarantined.exists, 60, "the damaged segment to be quarantined")
    time.sleep(2.0)  # later runs halt at the hole
    pipeline.stop()
    broken = audit()
    assert not broken["gtid_continuity"].passed
    problems = value(broken["gtid_continuity"], "first problems")
    assert any(f"segments {sequence}..{sequence} are missing" in p for p in problems), problems
    with mongo_target.client() as client:
        checkpoint = client[mongo_db_name]["cdc_checkpoints"].find_one({"_id": "default"})
    applied_through = checkpoint["last_sequence"] if checkpoint else 0
    assert applied_through == sequence - 1, "nothing after the damaged segment may be applied"

    set_aside = recapture_from(pipeline.paths, sequence, applied_through)
    # The loader already moved the damaged one into quarantine/; the later ones are set aside.
    assert set_aside.moved and set_aside.moved[0] == f"seg-{sequence + 1:012d}.parquet"
    workload.stop()
    pipeline.settle()
    outcome = pipeline.verify(
        Outcome(
            scenario, source_server.flavor, seed, 1, {"segments re-captured": len(set_aside.moved)}
        ),
        workload,
        started,
    )
    assert outcome.events_lost == 0 and outcome.events_duplicated == 0
    assert outcome.problems == []


def test_a_purge_past_capture_halts_loudly_and_the_checks_name_the_lost_gtids(
    source_server: SourceServer,
    source_schema: str,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scenario = "9 binlog purged past capture"
    seed = seed_for(scenario)
    rng = random.Random(seed)
    started = time.monotonic()
    pipeline = FaultPipeline(
        source_server,
        source_schema,
        mongo_target,
        mongo_db_name,
        tmp_path,
        monkeypatch,
        CDC_LAG_WARN_SECONDS="1",
    )
    workload = workload_for(source_server, source_schema, seed, schema_change_every=20)
    pipeline.fix_origin()
    workload.start()
    pipeline.start()
    wait_until(pipeline.loaded_something, 60, "a first load")
    time.sleep(rng.uniform(0.0, 3.0))
    pipeline.stop()
    time.sleep(1.5)  # written, never captured
    workload.stop()
    end = wal_end(pipeline.paths)
    assert end is not None
    lost = executed_gtids(source_server) - end.gtid
    assert lost.count() > 0
    source_server.purge_binlogs()

    pipeline.start()
    wait_until(
        lambda: "BinlogPurgedError" in pipeline.log.read_text(errors="replace"),
        60,
        "capture to refuse the purged position",
    )
    with mongo_target.client() as client:
        checkpoints = client[mongo_db_name]["cdc_checkpoints"]

        def loaded_what_was_captured() -> bool:
            document = checkpoints.find_one({"_id": "default"})
            return document is not None and document["gtid"] == str(end.gtid)

        wait_until(loaded_what_was_captured, 60, "the captured part to be loaded")
    time.sleep(1.0)
    pipeline.stop()
    log = pipeline.log.read_text(errors="replace")
    assert lost.describe() in log, "capture's error must name the lost GTIDs"
    assert wal_end(pipeline.paths).gtid == end.gtid  # type: ignore[union-attr]  # nothing skipped

    # status stops with the same sentence: exit 1, the lost GTIDs named
    assert cli.main(["status"]) == 1
    said = capsys.readouterr().err
    assert said.startswith("cdc-pipeline: the source purged binlogs") and lost.describe() in said

    checks = audit()
    headroom = checks["binlog_retention_headroom"]
    assert not headroom.passed and headroom.severity.value == "ERROR"
    assert value(headroom, "lost gtids") == str(lost)
    assert not checks["replication_lag"].passed
    assert value(checks["replication_lag"], "lag transactions") == lost.count()
    assert checks["gtid_continuity"].passed and checks["no_duplicate_events"].passed
    print(
        f"{scenario} on {source_server.flavor} (seed {seed}): {lost.count()} transactions lost"
        f" to the purge, named by capture and binlog_retention_headroom;"
        f" {time.monotonic() - started:.0f} s"
    )
