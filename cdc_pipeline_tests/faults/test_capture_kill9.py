"""kill -9 of capture at seeded random instants while a workload writes: no loss, no duplicate.

Touches the real path: ``cdc-pipeline capture --once`` as a subprocess against real MariaDB and
MySQL 9.7; the WAL is then compared with an independent read of the binlog
(``binlog_oracle``). Set ``CDC_SOAK_ITERATIONS`` for a longer run; the seed is printed and can
be replayed with ``CDC_TEST_SEED``.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdc_pipeline.core.wal.segment import read_manifest, read_rows, verify_segment
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline_tests.binlog_oracle import binlog_row_events
from devtools.local_servers import SourceServer
from devtools.sample_workload import Workload

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ITERATIONS = int(os.environ.get("CDC_SOAK_ITERATIONS", "12"))


def capture_command(
    server: SourceServer, schema: str, staging: Path
) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "CDC_MYSQL_URL": server.url,
        "CDC_STAGING_DIR": str(staging),
        "CDC_INCLUDE_TABLES": f"{schema}.*",
        "CDC_SERVER_ID": str(random.randint(10_000, 2**31)),
        "CDC_TICK_MAX_SECONDS": "2",
        "CDC_SEGMENT_MAX_EVENTS": "3000",
    }
    return [sys.executable, "-m", "cdc_pipeline.cli", "capture", "--once"], env


def test_kill9_of_capture_at_random_instants_loses_and_duplicates_nothing(
    source_server: SourceServer, source_schema: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CDC_TEST_SEED", random.randrange(2**32)))
    print(f"seed={seed} (replay with CDC_TEST_SEED={seed})")
    rng = random.Random(seed)
    staging = tmp_path / "staging"
    command, env = capture_command(source_server, source_schema, staging)
    workload = Workload(source_server, source_schema, seed=seed, max_rows=12, pause_seconds=0.01)
    workload.create_tables()
    subprocess.run(command, env=env, check=True, capture_output=True)  # fixes the origin
    paths = WalPaths(staging, "default")
    origin_gtid = json.loads(paths.origin.read_text())["gtid"]

    workload.start()
    kills = 0
    try:
        for _ in range(ITERATIONS):
            process = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            # A run lives ~0.5-1 s (interpreter start, connect, read to the source position; it
            # ends once caught up, so up to 1.5 s left half the kills after its exit in CI):
            # the instant falls inside it most of the time, at any phase.
            time.sleep(rng.uniform(0.05, 1.0))
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                kills += 1
            process.wait()
    finally:
        workload.stop()

    # Undisturbed ticks until caught up.
    for _ in range(200):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        if "nothing new" in done.stdout:
            break
    else:
        raise AssertionError("capture never caught up after the kills")

    segments = list_segments(paths)
    manifests = [verify_segment(segment) for segment in segments]
    # The segments chain: each starts exactly where the previous one ended.
    for previous, current in itertools.pairwise(manifests):
        assert current.start_gtid == previous.end_gtid
        assert current.sequence == previous.sequence + 1
    assert manifests[0].start_gtid == origin_gtid
    assert read_manifest(segments[-1]).end_gtid == manifests[-1].end_gtid

    staged = [
        (r["event_id"], r["table"], r["op"])
        for s in segments
        for r in read_rows(s)
        if r["op"] != "ddl"
    ]
    expected = binlog_row_events(source_server, origin_gtid, source_schema)
    duplicated = [key for key, count in collections.Counter(staged).items() if count > 1]
    lost = set(expected) - set(staged)
    extra = set(staged) - set(expected)
    print(
        f"{source_server.flavor}: {kills} kills in {ITERATIONS} runs, "
        f"{workload.committed_transactions} transactions, {len(expected)} row events in the "
        f"binlog, {len(staged)} staged in {len(segments)} segments, lost {len(lost)}, "
        f"duplicated {len(duplicated)}"
    )
    assert kills >= ITERATIONS // 2, "too few kills landed mid-run to mean anything"
    assert len(expected) > 500
    assert not duplicated and not lost and not extra
    assert staged == expected  # same order too
    assert not list(paths.segments.glob(".tmp-*"))
