"""End-to-end latency through the real sensor path: source commit to visible in MongoDB.

The paced writer of ``bench.latency_bench`` commits ``--rows``-row transactions at ``--rate``
per second for ``--seconds`` (default 100 x 10 = 1,000 rows/s for 60 s), each row stamped with
``written_at``. Meanwhile the stand-in Dagster daemon ``cdc_pipeline_tests.faults.daemon`` (a
process of its own, on a DAGSTER_HOME holding the repository's ``dagster.yaml``) evaluates the
real ``binlog_capture_sensor`` every ``--tick-seconds`` and executes every ``load_batch_job`` run
it requests, one after the other, as real Dagster runs (``execute_in_process``: no run-launcher
subprocess, which a production daemon would add). The stand-in sleeps the interval *after* a
tick and its runs, so it ticks at most as often as a Dagster sensor with that
``minimum_interval_seconds`` (production: 30 s, ``CAPTURE_INTERVAL_SECONDS``).

A poller in this process reads the table's mirror collection every ``--poll-seconds`` (an
index on ``written_at``, made before the run, keeps each read small) and records, once per
transaction, ``visible - written_at`` when all of its rows are visible (``visible``: the wall
clock when the read that saw them returned, so up to one poll period late). Figures: p50, p95
and max per run, against the target p95 <= interval + 10 s.

    python -m bench.sensor_latency                      # MariaDB, 60 s, interval 5 s
    python -m bench.sensor_latency --tick-seconds 2 --seconds 30

The report goes to ``bench/results/sensor-latency-<time>.json`` under the key
``sensor_latency`` (same per-run and median/min/max shapes as ``latency`` of ``bench.run``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymongo

from bench.child import PROJECT_ROOT
from bench.latency_bench import SCHEMA, _paced_writer, _percentiles
from bench.servers import started_servers

if TYPE_CHECKING:
    from devtools.local_servers import SourceServer

RESULTS = Path(__file__).resolve().parent / "results"
FORMAT = "cdc_pipeline-bench-sensor-latency/1"
TARGET_SLACK_SECONDS = 10.0
SOURCE_NAME = "default"


def _daemon_environment(
    server: SourceServer, mongo_uri: str, compat: str, database: str, table: str, phase: Path
) -> dict[str, str]:
    home = phase / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "DAGSTER_"))}
    return {
        **inherited,
        "CDC_MYSQL_URL": server.url,
        "CDC_MONGO_URI": mongo_uri,
        "CDC_MONGO_DB": database,
        "CDC_MONGO_COMPAT": compat,
        "CDC_STAGING_DIR": str(phase / "staging"),
        "CDC_SOURCE_NAME": SOURCE_NAME,
        "CDC_INCLUDE_TABLES": f"{SCHEMA}.{table}",
        "CDC_SERVER_ID": str(random.randint(10_000, 2**31)),
        "CDC_FAULT_PHASE": str(phase / "phase.json"),
        "DAGSTER_HOME": str(home),
    }


def _start_daemon(environment: dict[str, str], tick: float, log: Path) -> subprocess.Popen[bytes]:
    from devtools.local_servers import _die_with_parent

    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "cdc_pipeline_tests.faults.daemon"],
            cwd=PROJECT_ROOT,
            env={**environment, "CDC_FAULT_TICK_SECONDS": str(tick)},
            stdout=handle,
            stderr=handle,
            preexec_fn=_die_with_parent,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the daemon this module started, by its PID."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_first_tick(
    origin: Path, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not origin.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the daemon did not complete its first tick:\n{tail}")
        time.sleep(0.2)


def _write(
    server: SourceServer,
    table: str,
    options: dict[str, Any],
    phase: Path,
    seed: int,
    committed: list[float],
    holder: dict[str, Any],
) -> None:
    holder["writer"] = _paced_writer(
        server, table, options, phase / "written.json", seed, committed
    )


def _poll_visibility(
    collection: Any,
    committed: list[float],
    rows: int,
    writer: threading.Thread,
    poll_seconds: float,
    timeout: float,
) -> tuple[list[float], int]:
    """Read the mirror every ``poll_seconds`` until every committed transaction is visible."""
    latencies: list[float] = []
    reads = 0
    seen = 0  # committed[:seen] are fully visible
    deadline = time.monotonic() + timeout
    while True:
        if seen < len(committed):
            floor = committed[seen]
            found = collection.find({"written_at": {"$gte": floor}}, {"_id": 0, "written_at": 1})
            counts = collections.Counter(document["written_at"] for document in found)
            visible = time.time()
            reads += 1
            while seen < len(committed) and counts.get(committed[seen], 0) >= rows:
                latencies.append(visible - committed[seen])
                seen += 1
        if not writer.is_alive() and seen >= len(committed):
            return latencies, reads
        if time.monotonic() > deadline:
            raise TimeoutError(f"saw {seen} of {len(committed)} transactions in time")
        time.sleep(poll_seconds)


def bench_sensor_latency(
    server: SourceServer,
    mongo_uri: str,
    compat: str,
    options: dict[str, Any],
    runs: int,
    workdir: Path,
    seed: int,
) -> list[dict[str, Any]]:
    """``runs`` sensor phases, each on a fresh table, database, WAL and DAGSTER_HOME."""
    from cdc_pipeline.core.load.documents import mirror_collection
    from cdc_pipeline.core.wal.staging import WalPaths, list_segments

    results: list[dict[str, Any]] = []
    rows = int(options["rows_per_transaction"])
    tick = float(options["interval"])
    timeout = float(options["seconds"]) * 4 + 120
    server.execute(f"CREATE DATABASE IF NOT EXISTS `{SCHEMA}`")
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_uri)
    with contextlib.closing(client):
        for run in range(runs):
            table, database = f"sensor_{run}", f"bench_latency_sensor_{run}"
            client.drop_database(database)
            server.execute(
                f"DROP TABLE IF EXISTS `{SCHEMA}`.`{table}`",
                f"CREATE TABLE `{SCHEMA}`.`{table}` (id INT PRIMARY KEY,"
                " written_at DOUBLE NOT NULL, v INT NOT NULL)",
            )
            style = "underscore" if compat == "nx-27017" else "dotted"
            mirror = client[database][mirror_collection(SCHEMA, table, style)]
            mirror.create_index("written_at")
            phase = Path(tempfile.mkdtemp(prefix="latency-sensor-", dir=workdir))
            environment = _daemon_environment(server, mongo_uri, compat, database, table, phase)
            paths = WalPaths(Path(environment["CDC_STAGING_DIR"]), SOURCE_NAME)
            log = phase / "daemon.log"
            daemon = _start_daemon(environment, tick, log)
            try:
                _wait_for_first_tick(paths.origin, daemon, log, timeout=180)
                committed: list[float] = []
                holder: dict[str, Any] = {}
                load_before = os.getloadavg()
                writer = threading.Thread(
                    target=_write,
                    args=(server, table, options, phase, seed + run, committed, holder),
                )
                writer.start()
                try:
                    latencies, reads = _poll_visibility(
                        mirror, committed, rows, writer, float(options["poll_seconds"]), timeout
                    )
                finally:
                    writer.join()
                load_after = os.getloadavg()
                segments = len(list_segments(paths))
            finally:
                _stop(daemon)
            tick_failures = log.read_text(errors="replace").count("tick failed")
            if "writer" not in holder:
                raise RuntimeError("the paced writer failed (its error is printed above)")
            written = holder["writer"]
            summary = _percentiles(latencies)
            summary |= {
                "rows_written": written["transactions"] * rows,
                "writer_seconds": round(written["seconds"], 2),
                "writer_rows_per_second": round(
                    written["transactions"] * rows / written["seconds"], 1
                )
                if written["seconds"] > 0
                else None,
                "segments": segments,
                "mirror_reads": reads,
                "tick_failures": tick_failures,
                "load_average_before": [round(value, 2) for value in load_before],
                "load_average_after": [round(value, 2) for value in load_after],
            }
            results.append(summary)
            client.drop_database(database)
            shutil.rmtree(phase, ignore_errors=True)
    server.execute(f"DROP DATABASE IF EXISTS `{SCHEMA}`")
    return results


def sensor_latency_figures(runs: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
    """Median (min-max) over runs of each percentile, and the target check on the p95."""
    from bench.report import stats

    interval = float(options["interval"])
    target = interval + TARGET_SLACK_SECONDS
    series = {key: stats(run[key] for run in runs) for key in ("p50", "p95", "max")}
    series |= {"transactions": [run["transactions"] for run in runs], "runs": runs}
    worst_p95 = series["p95"]["max"]
    return {
        "status": "measured",
        "unit": "seconds from the source commit to visible in MongoDB (mirror collection)",
        "path": "binlog_capture_sensor + load_batch_job runs in cdc_pipeline_tests.faults.daemon",
        "workload": options,
        "sensor_interval_seconds": interval,
        "target_p95_seconds": target,
        "target_met": worst_p95 is not None and worst_p95 <= target,
        "series": {"sensor": series},
    }


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sensor_latency", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--sources", default="mariadb", help="mariadb and/or mysql, comma-separated"
    )
    parser.add_argument("--mongo-uri", default=os.environ.get("BENCH_MONGO_URI"))
    parser.add_argument("--seconds", type=float, default=60.0, help="writer length (default 60)")
    parser.add_argument("--rate", type=float, default=100.0, help="transactions/s (default 100)")
    parser.add_argument("--rows", type=int, default=10, help="rows per transaction (default 10)")
    parser.add_argument(
        "--tick-seconds",
        type=float,
        default=5.0,
        help="the daemon's pause between sensor ticks (CDC_FAULT_TICK_SECONDS; default 5;"
        " production sensor: 30)",
    )
    parser.add_argument("--poll-seconds", type=float, default=0.2, help="mirror poll period")
    parser.add_argument("--runs", type=int, default=1, help="runs per source (default 1)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=RESULTS)
    arguments = parser.parse_args(argv)
    arguments.sources = [part.strip() for part in arguments.sources.split(",") if part.strip()]
    if arguments.runs < 1 or arguments.seconds <= 0:
        parser.error("--runs must be at least 1 and --seconds positive")
    return arguments


def main(argv: list[str] | None = None) -> int:
    from bench.machine import describe_machine

    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    options = {
        "seconds": arguments.seconds,
        "rate": arguments.rate,
        "rows_per_transaction": arguments.rows,
        "interval": arguments.tick_seconds,
        "poll_seconds": arguments.poll_seconds,
    }
    started_at = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="cdc_pipeline_bench-"))
    by_source: dict[str, Any] = {}
    try:
        with started_servers(arguments.sources, arguments.mongo_uri) as servers:
            machine = describe_machine(servers)
            for source in arguments.sources:
                print(f"{source}: {arguments.runs} sensor-path run(s)", flush=True)
                runs = bench_sensor_latency(
                    servers.sources[source],
                    servers.mongo_uri,
                    servers.mongo_compat,
                    options,
                    arguments.runs,
                    workdir,
                    arguments.seed,
                )
                by_source[source] = sensor_latency_figures(runs, options)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "format": FORMAT,
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "command": " ".join(["python -m bench.sensor_latency", *sys.argv[1:]]),
        "notes": [
            "the stand-in daemon executes runs in process (no run-launcher subprocess) and"
            " pauses --tick-seconds after each tick and its runs",
            "visible: wall clock when the mirror read that saw all of a transaction's rows"
            " returned (up to one poll period late)",
            "shared machine: see machine and each run's load averages; absolute figures vary",
        ],
        "machine": machine,
        "sensor_latency": {"status": "measured", "by_source": by_source},
    }
    arguments.out.mkdir(parents=True, exist_ok=True)
    stamp = report["started_at"][:19].replace(":", "").replace("-", "")
    path = arguments.out / f"sensor-latency-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    for source, figures in by_source.items():
        for run in figures["series"]["sensor"]["runs"]:
            print(
                f"{source}: interval {figures['sensor_interval_seconds']} s, p50 {run['p50']} s,"
                f" p95 {run['p95']} s, max {run['max']} s over {run['transactions']}"
                f" transactions; writer {run['writer_rows_per_second']} rows/s;"
                f" {run['segments']} segments; target p95 <= {figures['target_p95_seconds']} s:"
                f" {'met' if figures['target_met'] else 'NOT met'}"
            )
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
