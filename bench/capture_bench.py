"""Capture throughput: rows per second from the binlog to committed WAL segments.

What is measured, on one backlog's binlog range, in separate processes:
    * ``product``: ``cdc_pipeline.core.capture.tick.capture_once`` with the default
      ``CaptureSettings`` bounds, called until it reports ``caught_up`` (every tick connects,
      checks the source, decodes, converts to Extended JSON, writes zstd Parquet, fsyncs,
      digests and renames, exactly as the sensor does);
    * ``library`` (the baseline): a bare mysql-replication ``BinLogStreamReader`` over the same
      GTID range that decodes every row (``event.rows``) and discards it: the ceiling of the
      pure-Python decoder the product is built on;
    * ``reference``: ``mariadb-binlog -v`` (MariaDB) or the chroot's ``mysqlbinlog -v`` (MySQL)
      over the same binlog files and positions, its output's ``### INSERT/UPDATE/DELETE`` lines
      counted: the machine's C decoder, as a reference, not a target.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.child import run_child

if TYPE_CHECKING:  # the measured children import only what their loop needs
    from bench.workload import Backlog
    from devtools.local_servers import SourceServer

SOURCE_NAME = "bench"
_ROW_MARKERS = (b"### INSERT INTO ", b"### UPDATE ", b"### DELETE FROM ")


@dataclass
class CaptureRuns:
    """The figures of every run, and one WAL the load benchmark reuses (the first product run)."""

    product: list[dict[str, Any]]
    library: list[dict[str, Any]]
    reference: list[dict[str, Any]]
    reference_command: str
    wal_staging: Path


def task_timeout(rows: int) -> float:
    """A generous bound for one measured task (a stuck server must not hang the run)."""
    return 300.0 + rows * 0.02


# -- the measured tasks (run inside ``bench.child``) --------------------------------------------
def measure_product_capture(arguments: dict[str, Any]) -> dict[str, Any]:
    """capture_once until caught up; rows are the row events written into segments."""
    import pandas  # noqa: F401  (pyarrow imports it on the first write: keep it untimed)

    from cdc_pipeline.core.capture.tick import capture_once
    from cdc_pipeline.core.settings import CaptureSettings, SourceUrl

    settings = CaptureSettings(
        source_url=SourceUrl.parse(arguments["url"]),
        staging_dir=Path(arguments["staging"]),
        source_name=SOURCE_NAME,
        server_id=int(arguments["server_id"]),
        include_tables=(arguments["include"],),
        start_position=arguments["start_gtid"],
    )
    rows = segments = ticks = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    while True:
        result = capture_once(settings)
        ticks += 1
        rows += result.rows
        segments += result.segment is not None
        if result.error:
            raise RuntimeError(f"capture stopped early: {result.error}")
        if result.stopped_because == "caught_up":
            break
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": rows,
        "segments": segments,
        "ticks": ticks,
    }


def measure_library_capture(arguments: dict[str, Any]) -> dict[str, Any]:
    """A bare BinLogStreamReader from the same GTID state; stops at the commit after the last
    expected row. Imports nothing of cdc_pipeline (its decoder fixes stay uninstalled)."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, XidEvent
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    expected = int(arguments["expected_rows"])
    stream = BinLogStreamReader(
        connection_settings=bare_connection(arguments),
        server_id=int(arguments["server_id"]),
        blocking=True,  # blocking=False is broken on MariaDB (FIELD-NOTES)
        is_mariadb=arguments["flavor"] == "mariadb",
        auto_position=arguments["start_gtid"],
        only_events=[
            GtidEvent,
            MariadbGtidEvent,
            XidEvent,
            WriteRowsEvent,
            UpdateRowsEvent,
            DeleteRowsEvent,
            HeartbeatLogEvent,
        ],
        slave_heartbeat=1.0,
        enable_logging=False,
    )
    rows = 0
    deadline = time.monotonic() + float(arguments["timeout"])
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        for event in stream:
            if isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                rows += len(event.rows)  # decodes every row; the values are discarded
            elif isinstance(event, XidEvent) and rows >= expected:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the library loop read {rows} of {expected} rows in time")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        stream.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": rows}


# -- the reference: the server's own C decoder ----------------------------------------------------
def reference_command(server: SourceServer, backlog: Backlog) -> list[str]:
    """``mariadb-binlog -v`` / ``mysqlbinlog -v`` over exactly the backlog's binlog range."""
    from devtools.local_servers import MySQLServer

    positions = [
        "-v",
        f"--start-position={backlog.start.binlog_pos}",
        f"--stop-position={backlog.end.binlog_pos}",
    ]
    if isinstance(server, MySQLServer):
        files = [f"{server.inner}/data/{name}" for name in backlog.binlog_files]
        return ["chroot", str(server.chroot), "/usr/bin/mysqlbinlog", *positions, *files]
    tool = shutil.which("mariadb-binlog") or "mariadb-binlog"
    files = [str(server.data_dir / "data" / name) for name in backlog.binlog_files]
    return [tool, *positions, *files]


def measure_reference(command: list[str], timeout: float) -> dict[str, Any]:
    """Time the tool from start to exit, counting row lines in its output (1 MiB at a time)."""
    rows = 0
    partial = b""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors) as process:
            assert process.stdout is not None
            while chunk := process.stdout.read(1 << 20):
                data = partial + chunk
                end = data.rfind(b"\n") + 1  # count whole lines only; the rest waits
                rows += sum(data.count(marker, 0, end) for marker in _ROW_MARKERS)
                partial = data[end:]
            code = process.wait(timeout=timeout)
        seconds = time.perf_counter() - started
        rows += sum(partial.count(marker) for marker in _ROW_MARKERS)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"{command[0]} exited {code}: {stderr[-500:]}")
    return {
        "seconds": seconds,
        "rows": rows,
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
    }


# -- the runs -------------------------------------------------------------------------------------
def bench_capture(server: SourceServer, backlog: Backlog, runs: int, workdir: Path) -> CaptureRuns:
    """``runs`` rounds of product, library and reference over the backlog; product and library
    swap order every round so neither always runs first."""
    timeout = task_timeout(backlog.rows)
    command = reference_command(server, backlog)
    product: list[dict[str, Any]] = []
    library: list[dict[str, Any]] = []
    reference: list[dict[str, Any]] = []
    kept: Path | None = None
    for round_number in range(runs):
        staging = Path(tempfile.mkdtemp(prefix="capture-", dir=workdir))

        def run_product(staging: Path = staging) -> None:
            figures = run_child(
                "capture_product",
                {
                    "url": server.url,
                    "staging": str(staging),
                    "server_id": random.randint(10_000, 2**31),
                    "include": backlog.include_pattern,
                    "start_gtid": backlog.start.gtid,
                },
                timeout,
            )
            product.append(checked(figures, backlog, "product capture"))

        def run_library() -> None:
            figures = run_child(
                "capture_library",
                {
                    "port": server.port,
                    "flavor": server.flavor,
                    "server_id": random.randint(10_000, 2**31),
                    "start_gtid": backlog.start.gtid,
                    "expected_rows": backlog.rows,
                    "timeout": timeout,
                },
                timeout + 30,
            )
            library.append(checked(figures, backlog, "library loop"))

        order = [run_product, run_library] if round_number % 2 == 0 else [run_library, run_product]
        for step in order:
            step()
        reference.append(checked(measure_reference(command, timeout), backlog, command[0]))
        if kept is None:
            kept = staging
        else:
            shutil.rmtree(staging, ignore_errors=True)
    assert kept is not None
    return CaptureRuns(product, library, reference, " ".join(command), kept)


def bare_connection(arguments: dict[str, Any]) -> dict[str, Any]:
    """Connection settings of the bare mysql-replication loops (root on the local server)."""
    return {"host": "127.0.0.1", "port": int(arguments["port"]), "user": "root", "passwd": ""}


def checked(figures: dict[str, Any], backlog: Backlog, what: str) -> dict[str, Any]:
    """The figures of one run, refused unless it handled exactly the backlog's rows."""
    if figures["rows"] != backlog.rows:
        raise RuntimeError(
            f"{what} handled {figures['rows']:,} rows on a backlog of {backlog.rows:,}:"
            " the figures would compare different work"
        )
    figures["seconds"] = round(figures["seconds"], 4)
    return figures
