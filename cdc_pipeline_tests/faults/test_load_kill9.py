"""kill -9 of the loader at seeded random instants: the end state equals an undisturbed load.

Touches the real path: ``cdc-pipeline load --pending`` as a subprocess against real MariaDB and
MySQL 9.7 (the WAL is captured from a seeded workload) and the session's MongoDB server. The
same WAL is loaded once without disturbance into a reference database; the disturbed database
must end byte-identical (every collection, every document, ``_cdc`` included). The seed is
printed; ``CDC_TEST_SEED`` replays it and ``CDC_SOAK_ITERATIONS`` lengthens the run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.load.documents import CHECKPOINTS
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.pipeline_checks import dump
from devtools.local_servers import SourceServer
from devtools.sample_workload import Workload

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ITERATIONS = int(os.environ.get("CDC_SOAK_ITERATIONS", "12"))


def load_command(
    server: SourceServer, staging: Path, mongo: MongoTarget, database: str
) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "CDC_MYSQL_URL": server.url,
        "CDC_STAGING_DIR": str(staging),
        "CDC_MONGO_URI": mongo.uri,
        "CDC_MONGO_DB": database,
        "CDC_MONGO_COMPAT": mongo.compat,
    }
    return [sys.executable, "-m", "cdc_pipeline.cli", "load", "--pending"], env


def without_timestamps(state: dict[str, list[str]]) -> dict[str, list[str]]:
    """The dump minus the checkpoint's wall-clock ``updated_at`` (the only non-WAL value)."""
    return {
        name: [doc.split('"updated_at"')[0] for doc in docs] if name == CHECKPOINTS else docs
        for name, docs in state.items()
    }


def test_kill9_of_the_loader_at_random_instants_ends_like_an_undisturbed_load(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("CDC_TEST_SEED", random.randrange(2**32)))
    print(f"seed={seed} (replay with CDC_TEST_SEED={seed})")
    rng = random.Random(seed)
    settings = replace(capture_settings, max_events_per_segment=2_500)
    workload = Workload(source_server, source_schema, seed=seed, max_rows=25)
    workload.create_tables()
    capture_once(settings)
    workload.start()
    # Enough rows that the loader is still busy when most of the kills land: with 1.5 s of
    # workload (about 12,000 row events, 3.5 s to load undisturbed) the faster loader of
    # 2026-12 had loaded everything after five killed runs of twelve.
    time.sleep(3.0)
    workload.stop()
    source_server.execute(f"ALTER TABLE `{source_schema}`.customers ADD COLUMN note VARCHAR(10)")
    source_server.execute(f"UPDATE `{source_schema}`.customers SET note = 'x' WHERE id < 50")
    while capture_once(settings).manifest is not None:
        pass
    segments = len(list(settings.staging_dir.glob("default/segments/seg-*.parquet")))

    reference_db = f"ref_{source_schema}"
    disturbed_db = f"kill_{source_schema}"
    command, env = load_command(source_server, settings.staging_dir, mongo_target, reference_db)
    started = time.monotonic()
    reference_run = subprocess.run(command, env=env, capture_output=True, text=True)
    assert reference_run.returncode == 0, reference_run.stderr
    undisturbed_seconds = time.monotonic() - started

    command, env = load_command(source_server, settings.staging_dir, mongo_target, disturbed_db)
    kills = 0
    for _ in range(ITERATIONS):
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # Short enough that most runs die mid-load, long enough that each makes progress.
        time.sleep(rng.uniform(0.3, 1.8))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr

    with mongo_target.client(tz_aware=True) as client:
        reference = without_timestamps(dump(client[reference_db]))
        disturbed = without_timestamps(dump(client[disturbed_db]))
        client.drop_database(reference_db)
        client.drop_database(disturbed_db)
    rows = len(reference.get("row_changes", []))
    print(
        f"{source_server.flavor}: {kills} kills in {ITERATIONS} loader runs over {segments}"
        f" segments, {rows} row events; undisturbed load {undisturbed_seconds:.1f} s"
    )
    assert kills >= ITERATIONS // 2, "too few kills landed mid-load to mean anything"
    assert rows > 1_000
    assert disturbed.keys() == reference.keys()
    for name in reference:
        assert disturbed[name] == reference[name], f"{name} differs after the kills"
