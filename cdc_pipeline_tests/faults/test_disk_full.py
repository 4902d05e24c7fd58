"""Scenario 7: the staging disk fills up while the pipeline runs through the Dagster path.

The WAL lives on a small tmpfs mounted for the test (needs root, as in CI; skipped otherwise,
saying so). Capture fails its ticks with one clear sentence while the disk is full, loses
nothing, and resumes by itself once the filesystem is grown back.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.faults.harness import FaultPipeline, Outcome, seed_for, workload_for
from devtools.local_servers import SourceServer

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FULL_MESSAGE = "the staging disk is full"


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def test_a_full_staging_disk_pauses_capture_loudly_and_loses_nothing(
    source_server: SourceServer,
    source_schema: str,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scenario = "7 staging disk full"
    seed = seed_for(scenario)
    started = time.monotonic()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    with small_filesystem(tmp_path / "small", "256k") as disk:
        pipeline = FaultPipeline(
            source_server,
            source_schema,
            mongo_target,
            mongo_db_name,
            tmp_path,
            monkeypatch,
            CDC_STAGING_DIR=str(disk / "staging"),
        )
        workload = workload_for(source_server, source_schema, seed, schema_change_every=20)
        pipeline.fix_origin()
        workload.start()
        pipeline.start()
        try:
            deadline = time.monotonic() + 90
            while FULL_MESSAGE not in pipeline.log.read_text(errors="replace"):
                assert time.monotonic() < deadline, "the disk never filled up"
                time.sleep(0.5)
            full_at = time.monotonic()
            time.sleep(random.Random(seed).uniform(3.0, 6.0))  # ticks keep failing meanwhile
            failed_ticks = pipeline.log.read_text(errors="replace").count(FULL_MESSAGE)
            grow(disk, "64m")
        finally:
            workload.stop()
        print(f"disk full after {full_at - started:.1f} s; {failed_ticks} ticks refused")
        pipeline.settle()
        outcome = pipeline.verify(
            Outcome(scenario, source_server.flavor, seed, 1, {"ticks refused": failed_ticks}),
            workload,
            started,
        )
        assert not list((disk / "staging").glob("default/segments/.tmp-*")), "temp file left"
    assert failed_ticks >= 2
    assert outcome.events_lost == 0 and outcome.events_duplicated == 0
    assert outcome.problems == []
