"""Capture memory stays bounded for a transaction far larger than a tick: it streams to disk.

Runs ``cdc-pipeline capture --once`` as a child process and reads that child's own peak RSS
(``wait4``), once for an idle tick (the baseline) and once for one 200,000-row transaction.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration

ROWS = 200_000


def peak_rss_mib(env: dict[str, str]) -> tuple[float, str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "cdc_pipeline.cli", "capture", "--once", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # wait4 reports this child's own peak RSS (KiB on Linux).
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    stdout = child.stdout.read().decode() if child.stdout else ""
    stderr = child.stderr.read().decode() if child.stderr else ""
    assert child.returncode == 0, stderr
    return usage.ru_maxrss / 1024, stdout


def test_a_200k_row_transaction_is_captured_whole_with_bounded_memory(
    source_server: SourceServer, source_schema: str, tmp_path: Path
) -> None:
    table = f"`{source_schema}`.wide"
    source_server.execute(
        f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(40), amount DECIMAL(12,2),"
        " created DATETIME(6), doc JSON)"
    )
    env = {
        **os.environ,
        "CDC_MYSQL_URL": source_server.url,
        "CDC_STAGING_DIR": str(tmp_path / "staging"),
        "CDC_INCLUDE_TABLES": f"{source_schema}.*",
        "CDC_SERVER_ID": str(random.randint(10_000, 2**31)),
        "CDC_TICK_MAX_SECONDS": "5",
        "CDC_SEGMENT_MAX_EVENTS": "10000",
    }
    idle_mib, _ = peak_rss_mib(env)  # fixes the origin; the baseline of an idle tick
    with source_server.connect() as connection, connection.cursor() as cursor:
        if source_server.flavor == "mysql":
            cursor.execute("SET SESSION cte_max_recursion_depth = 1000000")
        else:
            cursor.execute("SET SESSION max_recursive_iterations = 1000000")
        cursor.execute(
            f"INSERT INTO {table} WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
            f" WHERE i < {ROWS}) SELECT i, CONCAT('name-', i), i / 100, NOW(6),"
            " JSON_OBJECT('i', i, 'tags', JSON_ARRAY('a', 'b')) FROM n"
        )
    big_mib, stdout = peak_rss_mib(env)
    result = json.loads(stdout)
    print(
        f"{source_server.flavor}: {ROWS:,}-row transaction captured whole in"
        f" {result['seconds']} s; peak RSS {big_mib:.0f} MiB vs {idle_mib:.0f} MiB for an idle"
        " tick"
    )
    assert result["transactions"] == 1 and result["rows"] == ROWS
    assert result["stopped_because"] in {"event_bound", "caught_up"}
    # Streaming keeps at most a few row groups in memory: growth is far below the data size.
    assert big_mib - idle_mib < 150, f"peak RSS grew by {big_mib - idle_mib:.0f} MiB"
