"""Column changes on a large table: what one ``ALTER`` costs the loader, and a killed rebuild.

Against a real MariaDB 10.11 (or MySQL 9.7, ``--source mysql``) and nx-27017 (or the MongoDB
``--mongo-uri`` names, in the ``standard`` mode), started and stopped here. A table of
``--rows`` rows (default 1,000,000) is filled before capture starts, then each change below is
captured and loaded on its own, timed from the start of the load to its end:

    rebuild      MODIFY COLUMN (a retype): the mirror is re-read from the source in key order
                 (the baseline, measured in the same run; it also creates the mirror);
    add default  ADD COLUMN … NOT NULL DEFAULT 5, made in place ($set);
    drop         DROP COLUMN, in place ($unset);
    rename       RENAME COLUMN, in place ($rename);
    resumed      a second retype whose load (``cdc-pipeline load --pending``) is killed -9 once
                 the rebuild has recorded half the rows; the next load resumes it. Timed: the
                 killed run and the resumed run.

Prints seconds and the ratio to the rebuild. Usage:
    python -m bench.alter_bench [--rows N] [--source mariadb|mysql] [--mongo-uri URI]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pymongo

from bench.servers import started_servers
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.load.documents import REBUILDS
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.load.sink import MongoSink
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl
from cdc_pipeline.core.wal.staging import WalPaths

SCHEMA = "alter_bench"
RESUMED = re.compile(r"resuming the rebuild after (\d+) rows")


def _capture(settings: CaptureSettings) -> None:
    while capture_once(settings).manifest is not None:
        pass


def _fill(server: Any, rows: int) -> None:
    server.execute(
        f"DROP DATABASE IF EXISTS {SCHEMA}",
        f"CREATE DATABASE {SCHEMA}",
        f"CREATE TABLE {SCHEMA}.wide (id INT PRIMARY KEY, a INT, b VARCHAR(40), c INT)",
    )
    with server.connect(autocommit=True) as connection, connection.cursor() as cursor:
        for start in range(1, rows + 1, 10_000):
            stop = min(start + 10_000, rows + 1)
            cursor.executemany(
                f"INSERT INTO {SCHEMA}.wide VALUES (%s, %s, %s, %s)",
                [(key, key, f"value {key}", key % 97) for key in range(start, stop)],
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--source", choices=("mariadb", "mysql"), default="mariadb")
    parser.add_argument("--mongo-uri")
    arguments = parser.parse_args(argv)
    rows = arguments.rows
    with (
        started_servers([arguments.source], arguments.mongo_uri) as servers,
        tempfile.TemporaryDirectory(prefix="alter-bench-") as workdir,
    ):
        server = servers.sources[arguments.source]
        print(f"filling {SCHEMA}.wide with {rows:,} rows on {arguments.source}...", flush=True)
        _fill(server, rows)
        staging = Path(workdir) / "staging"
        capture = CaptureSettings(
            source_url=SourceUrl.parse(server.url),
            staging_dir=staging,
            server_id=4242,
            include_tables=(f"{SCHEMA}.*",),
        )
        _capture(capture)
        # One row event, so the loader registers the table's schema version: an in-place change
        # needs to know every column that was ever in the key (without it, it rebuilds).
        server.execute(f"UPDATE {SCHEMA}.wide SET c = c + 1 WHERE id = 1")
        _capture(capture)
        mongo = MongoSettings(
            uri=servers.mongo_uri, database="alter_bench", compat=servers.mongo_compat
        )
        paths = WalPaths(staging, capture.source_name)

        run_load(paths, mongo, source_url=capture.source_url)

        def timed(statement: str) -> float:
            server.execute(statement)
            _capture(capture)
            started = time.monotonic()
            result = run_load(paths, mongo, source_url=capture.source_url)
            seconds = time.monotonic() - started
            for line in (line for item in result.loaded for line in item.apply.ddl_applied):
                print(f"    {line}", flush=True)
            return seconds

        figures: dict[str, float] = {}
        steps = {
            "rebuild": "MODIFY COLUMN b VARCHAR(60)",
            "add default": "ADD COLUMN d INT NOT NULL DEFAULT 5",
            "drop": "DROP COLUMN c",
            "rename": "RENAME COLUMN a TO a2",
        }
        for label, clause in steps.items():
            figures[label] = timed(f"ALTER TABLE {SCHEMA}.wide {clause}")
            print(f"{label:>12}: {figures[label]:8.1f} s", flush=True)

        server.execute(f"ALTER TABLE {SCHEMA}.wide MODIFY COLUMN b VARCHAR(80)")
        _capture(capture)
        killed, resumed, resumed_after = _killed_rebuild(server, staging, servers, rows)
        figures["killed run"], figures["resumed run"] = killed, resumed
        print(f"  killed run: {killed:8.1f} s (kill -9 at half the rows)")
        print(f" resumed run: {resumed:8.1f} s (resumed after {resumed_after:,} rows)")

        with pymongo.MongoClient(servers.mongo_uri) as client:
            sink = MongoSink(client["alter_bench"], mirror_style=mongo.mirror_name_style)
            count = client["alter_bench"][sink.mirror(SCHEMA, "wide")].count_documents({})
        if count != rows:
            print(f"the mirror holds {count:,} documents, not {rows:,}", file=sys.stderr)
            return 1
        baseline = figures["rebuild"]
        print(f"\n{rows:,} rows, {arguments.source} -> {servers.mongo_compat} MongoDB")
        print(f"{'operation':>12}  {'seconds':>8}  {'x rebuild':>9}")
        for label, seconds in figures.items():
            print(f"{label:>12}  {seconds:8.1f}  {seconds / baseline:9.3f}")
    return 0


def _killed_rebuild(
    server: Any, staging: Path, servers: Any, rows: int
) -> tuple[float, float, int]:
    env = {
        **os.environ,
        "CDC_MYSQL_URL": server.url,
        "CDC_STAGING_DIR": str(staging),
        "CDC_MONGO_URI": servers.mongo_uri,
        "CDC_MONGO_DB": "alter_bench",
        "CDC_MONGO_COMPAT": servers.mongo_compat,
        "CDC_INCLUDE_TABLES": f"{SCHEMA}.*",
    }
    command = [sys.executable, "-m", "cdc_pipeline.cli", "load", "--pending"]
    with pymongo.MongoClient(servers.mongo_uri) as client:
        progress = client["alter_bench"][REBUILDS]
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        while True:
            record = progress.find_one({}) or {}
            if record.get("rows", 0) >= rows // 2:
                os.kill(process.pid, signal.SIGKILL)
                break
            if process.poll() is not None:
                raise SystemExit("the load ended before half the rows were rebuilt")
            time.sleep(0.2)
        process.wait()
        killed = time.monotonic() - started
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    resumed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    found = RESUMED.search(done.stderr)
    return killed, resumed, int(found.group(1)) if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
