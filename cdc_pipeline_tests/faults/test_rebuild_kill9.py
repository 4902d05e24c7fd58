"""kill -9 of the loader in the middle of a mirror rebuild: the next run resumes where it stopped.

Touches the real path: ``cdc-pipeline load --pending`` as a subprocess against real MariaDB and
MySQL 9.7 and the session's MongoDB server. A retyped column (``MODIFY``, which cannot be
changed in place) makes the loader rebuild a 40,000-row mirror from the source table; the
loader is killed twice mid-rebuild (once in the first run, once in the resumed one) while the
source keeps changing, in key ranges both before and after where the rebuild stopped. The next
runs must say they resume (not re-read the table), and the end state must equal the source.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from cdc_pipeline.core.load.documents import REBUILDS, rebuild_collection
from cdc_pipeline.core.load.rebuild import BULK_CHUNK
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.faults.test_load_kill9 import load_command
from cdc_pipeline_tests.integration.test_load import capture_all
from cdc_pipeline_tests.pipeline_checks import mirror_differences
from devtools.local_servers import SourceServer

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ROWS = 40_000
RESUMED = re.compile(r"resuming the rebuild after (\d+) rows")


def kill_mid_rebuild(
    command: list[str], env: dict[str, str], progress: Callable[[], int], beyond: int
) -> tuple[int, str]:
    """Start a load, kill -9 it once the rebuild has written more than ``beyond`` rows;
    returns the rows recorded when it died and what it wrote to stderr."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while progress() <= beyond:
            assert process.poll() is None, "the load ended before it could be killed mid-rebuild"
            assert time.monotonic() < deadline, "the rebuild made no progress in 300 s"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate()
    return progress(), stderr.decode()


def test_a_rebuild_killed_twice_resumes_at_its_last_key_and_ends_equal_to_the_source(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    db = source_schema
    settings = replace(capture_settings, max_events_per_segment=5_000)
    source_server.execute(f"CREATE TABLE `{db}`.big (id INT PRIMARY KEY, a INT, b VARCHAR(20))")
    with source_server.connect(autocommit=True) as connection, connection.cursor() as cursor:
        for start in range(1, ROWS + 1, 5_000):
            cursor.executemany(
                f"INSERT INTO `{db}`.big VALUES (%s, %s, %s)",
                [(key, key, f"b{key}") for key in range(start, start + 5_000)],
            )
    capture_all(settings)
    source_server.execute(
        f"ALTER TABLE `{db}`.big MODIFY COLUMN b VARCHAR(40)",  # a retype: a rebuild
        f"UPDATE `{db}`.big SET a = -a WHERE id IN (1, {ROWS})",
    )
    capture_all(settings)
    command, env = load_command(source_server, settings.staging_dir, mongo_target, mongo_db_name)

    with mongo_target.client(tz_aware=True) as client:
        database = client[mongo_db_name]
        sink = mongo_target.sink(database)
        mirror = sink.mirror(db, "big")

        def progress() -> int:
            record = database[REBUILDS].find_one({"_id": mirror})
            return int(record["rows"]) if record else 0

        first, _ = kill_mid_rebuild(command, env, progress, 3 * BULK_CHUNK)
        assert 0 < first < ROWS
        # The source goes on changing below and above where the rebuild stopped.
        source_server.execute(
            f"UPDATE `{db}`.big SET b = 'changed' WHERE id IN (2, {first + 10}, {ROWS - 1})",
            f"DELETE FROM `{db}`.big WHERE id IN (3, {first + 20})",
            f"INSERT INTO `{db}`.big VALUES ({ROWS + 1}, 0, 'late'), (0, 0, 'first')",
        )
        capture_all(settings)
        second, stderr = kill_mid_rebuild(command, env, progress, first + 3 * BULK_CHUNK)
        resumed = [int(rows) for rows in RESUMED.findall(stderr)]
        assert resumed and resumed[0] >= first, stderr
        assert second < ROWS, "the second kill landed after the rebuild"

        finished = subprocess.run(command, env=env, capture_output=True, text=True)
        assert finished.returncode == 0, finished.stderr
        resumed = [int(rows) for rows in RESUMED.findall(finished.stderr)]
        assert resumed and resumed[0] >= second, finished.stderr
        print(
            f"{source_server.flavor}: killed at {first} and {second} of {ROWS} rows; the runs"
            f" resumed after {resumed[0]} rows"
        )
        assert mirror_differences(source_server, db, sink) == []
        assert database[REBUILDS].count_documents({}) == 0
        assert rebuild_collection(mirror, sink.mirror_style) not in database.list_collection_names()
