"""End-to-end latency under a steady workload: source commit to visible in MongoDB.

A paced writer (a thread of the parent) commits ``rows_per_transaction``-row transactions at
``rate`` per second for ``seconds``, each row carrying ``written_at`` (wall clock just before
its INSERT). Meanwhile one loop in a fresh process moves the data and, each time data became
visible in MongoDB, records ``visible - written_at`` once per transaction:

    * ``product``: ``capture_once`` then ``run_load``, back to back (``--latency-interval``
      seconds apart; the Dagster sensor itself ticks at most every 30 s, which adds up to that
      much on top: this measures the pipeline's own floor, not the scheduler's cadence);
    * ``stream`` (the baseline): a bare blocking mysql-replication stream that ``insert_many``s
      each transaction's rows into MongoDB at its commit: no WAL, no validation, no batching.

A third path, the real Dagster sensor (``binlog_capture_sensor`` and the ``load_batch_job``
runs it requests, in the stand-in daemon), is measured by ``python -m bench.sensor_latency``
with this module's paced writer.

The two phases run one after the other (never side by side on the two cores), each on a fresh
table with the same pace and seed. Figures: p50, p95 and max latency per run.
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymongo

from bench.capture_bench import SOURCE_NAME, bare_connection
from bench.child import run_child

if TYPE_CHECKING:
    from devtools.local_servers import SourceServer

SCHEMA = "bench_latency"


def _percentiles(latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    if not ordered:
        return {"transactions": 0, "p50": None, "p95": None, "max": None}
    return {
        "transactions": len(ordered),
        "p50": round(statistics.median(ordered), 4),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4),
        "max": round(ordered[-1], 4),
    }


def _total_written(stop_file: Path) -> int | None:
    try:
        return int(json.loads(stop_file.read_text())["transactions"])
    except (OSError, ValueError, KeyError):
        return None


# -- the measured loops (run inside ``bench.child``) --------------------------------------------
def measure_product_latency(arguments: dict[str, Any]) -> dict[str, Any]:
    """capture_once + run_load in a loop until every written transaction was seen in MongoDB."""
    import pandas  # noqa: F401  (pyarrow imports it on the first write: keep it out of the loop)

    from cdc_pipeline.core.capture.tick import capture_once
    from cdc_pipeline.core.load.loader import run_load
    from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl
    from cdc_pipeline.core.wal.staging import WalPaths

    staging = Path(arguments["staging"])
    settings = CaptureSettings(
        source_url=SourceUrl.parse(arguments["url"]),
        staging_dir=staging,
        source_name=SOURCE_NAME,
        server_id=int(arguments["server_id"]),
        include_tables=(arguments["include"],),
        start_position=arguments["start_gtid"],
    )
    mongo = MongoSettings(
        uri=arguments["mongo_uri"], database=arguments["database"], compat=arguments["compat"]
    )
    stop_file = Path(arguments["stop_file"])
    deadline = time.monotonic() + float(arguments["timeout"])
    latencies: list[float] = []
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(arguments["mongo_uri"])
    with contextlib.closing(client):
        changes = client[arguments["database"]]["row_changes"]
        while True:
            capture_once(settings)
            loaded = run_load(WalPaths(staging, SOURCE_NAME), mongo).loaded
            visible = time.time()
            if loaded:
                batches = [item.partition_key for item in loaded]
                written = {
                    document["after"]["written_at"]
                    for document in changes.find({"batch": {"$in": batches}}, {"after": 1})
                }
                latencies.extend(visible - value for value in written)
            total = _total_written(stop_file)
            if total is not None and len(latencies) >= total:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {len(latencies)} of {total} transactions in time")
            time.sleep(float(arguments["interval"]))
    return {"seconds": 0.0, "rows": 0, "latencies": latencies}


def measure_stream_latency(arguments: dict[str, Any]) -> dict[str, Any]:
    """A bare blocking stream inserting each transaction's rows at its commit."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, XidEvent
    from pymysqlreplication.row_event import WriteRowsEvent

    stop_file = Path(arguments["stop_file"])
    deadline = time.monotonic() + float(arguments["timeout"])
    latencies: list[float] = []
    stream = BinLogStreamReader(
        connection_settings=bare_connection(arguments),
        server_id=int(arguments["server_id"]),
        blocking=True,
        is_mariadb=arguments["flavor"] == "mariadb",
        auto_position=arguments["start_gtid"],
        only_events=[GtidEvent, MariadbGtidEvent, XidEvent, WriteRowsEvent, HeartbeatLogEvent],
        only_tables=[arguments["table"]],
        only_schemas=[SCHEMA],
        slave_heartbeat=0.5,
        enable_logging=False,
    )
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(arguments["mongo_uri"])
    with contextlib.closing(client), contextlib.closing(stream):
        changes = client[arguments["database"]]["row_changes"]
        documents: list[dict[str, Any]] = []
        for event in stream:
            if isinstance(event, WriteRowsEvent):
                documents.extend(dict(row["values"]) for row in event.rows)
            elif isinstance(event, XidEvent) and documents:
                changes.insert_many(documents)
                visible = time.time()
                latencies.extend(visible - w for w in {d["written_at"] for d in documents})
                documents = []
            if isinstance(event, XidEvent | HeartbeatLogEvent):
                total = _total_written(stop_file)
                if total is not None and len(latencies) >= total:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"saw {len(latencies)} of {total} transactions in time")
    return {"seconds": 0.0, "rows": 0, "latencies": latencies}


# -- the writer and the runs ----------------------------------------------------------------------
def _paced_writer(
    server: SourceServer,
    table: str,
    options: dict[str, Any],
    stop_file: Path,
    seed: int,
    committed: list[float] | None = None,
) -> dict[str, float]:
    """Commit a transaction every 1/rate s for ``seconds``; then write the count to stop_file.

    ``committed`` (when given) gets each transaction's ``written_at`` once it committed. Returns
    the transactions written and the seconds from the first INSERT to the last commit.
    """
    rng = random.Random(seed)
    rows = int(options["rows_per_transaction"])
    period = 1.0 / float(options["rate"])
    end = time.monotonic() + float(options["seconds"])
    next_at = time.monotonic()
    transactions = 0
    first_at = last_at = time.time()
    with (
        contextlib.closing(server.connect(autocommit=False)) as connection,
        connection.cursor() as cursor,
    ):
        first_at = time.time()
        while next_at < end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            first = transactions * rows
            written_at = time.time()
            cursor.executemany(
                f"INSERT INTO `{SCHEMA}`.`{table}` (id, written_at, v) VALUES (%s, %s, %s)",
                [(first + i, written_at, rng.randint(0, 10**9)) for i in range(rows)],
            )
            connection.commit()
            last_at = time.time()
            if committed is not None:
                committed.append(written_at)
            transactions += 1
            next_at += period
    stop_file.write_text(json.dumps({"transactions": transactions}))
    return {"transactions": transactions, "seconds": last_at - first_at}


def _run_phase(
    server: SourceServer,
    table: str,
    options: dict[str, Any],
    stop_file: Path,
    seed: int,
    task: str,
    arguments: dict[str, Any],
) -> dict[str, Any]:
    """The measuring loop in a child process, the paced writer in a thread beside it."""
    holder: dict[str, Any] = {}

    def run() -> None:
        holder["figures"] = run_child(task, arguments, float(arguments["timeout"]) + 60)

    loop = threading.Thread(target=run)
    loop.start()
    time.sleep(1.0)  # let the loop connect before the first commit
    _paced_writer(server, table, options, stop_file, seed)
    loop.join()
    if "figures" not in holder:
        raise RuntimeError(f"the {task} loop failed (its error is printed above)")
    return dict(holder["figures"])


def bench_latency(
    server: SourceServer,
    mongo_uri: str,
    compat: str,
    options: dict[str, Any],
    runs: int,
    workdir: Path,
    seed: int,
) -> dict[str, list[dict[str, Any]]]:
    """``runs`` rounds of a product phase then a stream phase; per run the latency summary."""
    from cdc_pipeline.core.mysql.source import read_state

    results: dict[str, list[dict[str, Any]]] = {"product": [], "stream": []}
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_uri)
    timeout = float(options["seconds"]) * 4 + 120
    server.execute(f"CREATE DATABASE IF NOT EXISTS `{SCHEMA}`")
    with contextlib.closing(client):
        for round_number in range(runs):
            for series in ("product", "stream"):
                table = f"{series}_{round_number}"
                database = f"bench_latency_{series}_{round_number}"
                client.drop_database(database)
                server.execute(
                    f"DROP TABLE IF EXISTS `{SCHEMA}`.`{table}`",
                    f"CREATE TABLE `{SCHEMA}`.`{table}` (id INT PRIMARY KEY,"
                    " written_at DOUBLE NOT NULL, v INT NOT NULL)",
                )
                with contextlib.closing(server.connect()) as connection:
                    start = str(read_state(connection).executed)
                phase = Path(tempfile.mkdtemp(prefix=f"latency-{series}-", dir=workdir))
                stop_file = phase / "written.json"
                common = {
                    "mongo_uri": mongo_uri,
                    "database": database,
                    "start_gtid": start,
                    "server_id": random.randint(10_000, 2**31),
                    "stop_file": str(stop_file),
                    "timeout": timeout,
                }
                if series == "product":
                    task = "latency_product"
                    arguments = {
                        **common,
                        "url": server.url,
                        "staging": str(phase / "staging"),
                        "include": f"{SCHEMA}.{table}",
                        "compat": compat,
                        "interval": float(options["interval"]),
                    }
                else:
                    task = "latency_stream"
                    arguments = {**common, "port": server.port, "flavor": server.flavor}
                    arguments["table"] = table
                figures = _run_phase(
                    server, table, options, stop_file, seed + round_number, task, arguments
                )
                client.drop_database(database)
                summary = _percentiles(figures["latencies"])
                summary["peak_rss_mib"] = figures["peak_rss_mib"]
                results[series].append(summary)
    server.execute(f"DROP DATABASE IF EXISTS `{SCHEMA}`")
    return results


def latency_figures(
    results: dict[str, list[dict[str, Any]]], options: dict[str, Any]
) -> dict[str, Any]:
    """Median over runs of each percentile; ratio = product p50 / stream p50 (>1: slower)."""
    from bench.report import stats

    series = {}
    for name, runs in results.items():
        series[name] = {key: stats(run[key] for run in runs) for key in ("p50", "p95", "max")} | {
            "transactions": [run["transactions"] for run in runs],
            "runs": runs,
        }
    product, stream = series["product"]["p50"]["median"], series["stream"]["p50"]["median"]
    return {
        "status": "measured",
        "unit": "seconds from the source commit to visible in MongoDB",
        "workload": options,
        "baseline": "stream",
        "series": series,
        "ratio_vs_baseline": round(product / stream, 3) if product and stream else None,
    }
