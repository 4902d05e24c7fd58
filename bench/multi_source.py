"""Several sources in one code location, through the real Dagster processes: 1, 2 and 4 sources.

For each source count N, the first N of (MariaDB, MySQL 9.7, MariaDB, MariaDB) each get a
schema, one CDC_SOURCES_FILE lists them, and the real code server, ``dagster-daemon`` and
webserver run on PostgreSQL storage with every source's sensor on (interval ``--sensor-seconds``)
into one nx-27017 MongoDB, each source in its own database. Every source then runs the seeded
workload for ``--seconds`` (a transaction of 1 to 6 rows, then ``--pause`` s; paced, because
nx-27017's updates slow down as a mirror grows, which an unpaced run turns into the figure)
while a marker row is written on each source every 2 s and timed from its commit to its
arrival in that source's mirror. Reported per N: row events
applied per second (all sources, from the first write until every source drained), marker p50,
p95 and max, the machine's CPU busy share during the window, and that every source's invariants
hold afterwards (each row event in its change log once, mirrors equal, checkpoint equal, every
check of ``<source>__audit_job`` passing).

``--backlog-rows`` (default 1,000,000; 0 skips it): with two sources (MariaDB, MySQL), one
transaction of that many rows on the MariaDB source; once its load run runs, markers on the
MySQL source every 2 s until the backlog is loaded: their latency, against the same markers
before the backlog, shows whether one source's backlog delays another. The code server's peak
RSS (where the sensors capture) is sampled too.

    python -m bench.multi_source                        # 1, 2, 4 sources; 60 s each; 1M backlog
    python -m bench.multi_source --counts 2 --seconds 20 --backlog-rows 0

The report goes to ``bench/results/multi-source-<time>.json`` and is printed as a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.latency_bench import _percentiles
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.wal.ledger import wal_end
from cdc_pipeline_tests.binlog_oracle import binlog_row_events
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.faults.multi_location import Location, Member
from devtools.local_servers import (
    MariaDBServer,
    MySQLServer,
    NxMongoServer,
    SourceServer,
    new_data_dir,
)
from devtools.postgres import PostgresServer
from devtools.sample_workload import Workload

RESULTS = Path(__file__).resolve().parent / "results"
FORMAT = "cdc_pipeline-bench-multi-source/1"
MARK_EVERY = 2.0


def _busy_share(since: tuple[float, float]) -> float:
    """The machine's CPU busy share since ``since`` (a ``_cpu_times()`` reading)."""
    busy, total = _cpu_times()
    return round((busy - since[0]) / max(total - since[1], 1e-9), 3)


def _cpu_times() -> tuple[float, float]:
    fields = [float(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _rss_mib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Markers:
    """A marker row on each member every ``MARK_EVERY`` s, timed to its mirror, in a thread."""

    def __init__(self, location: Location, members: list[Member]):
        self.location, self.members = location, members
        self.latencies: dict[str, list[float]] = {member.name: [] for member in members}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            took = self.location.arrivals(self.members, timeout=300)
            for name, seconds in took.items():
                self.latencies[name].append(seconds)
            self._stop.wait(MARK_EVERY)

    def __enter__(self) -> Markers:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=600)

    def all(self) -> list[float]:
        return [seconds for values in self.latencies.values() for seconds in values]


def _prepare(location: Location, members: list[Member]) -> None:
    for member in members:
        capture_once(location.settings(member))
        end = wal_end(member.paths)
        member.origin = str(end.gtid) if end else ""


def _members(servers: list[SourceServer], tag: str) -> list[Member]:
    names = ["alpha", "beta", "gamma", "delta"]
    members = []
    for index, server in enumerate(servers):
        name = names[index]
        schema = f"{name}_{tag}"
        server.execute(
            f"CREATE DATABASE `{schema}`",
            f"CREATE TABLE `{schema}`.marks (id INT PRIMARY KEY, at DATETIME(6))",
        )
        members.append(
            Member(name, server, schema, f"{name.upper()}_MYSQL_URL", f"cdc_{name}_{tag}")
        )
    return members


def _drain(location: Location, members: list[Member], rows: int) -> dict[str, Any]:
    """The ceiling: ``rows`` inserts per source (1,000-row transactions) written while the
    sensors are off, then the seconds until every source has loaded them."""
    if rows <= 0:
        return {}
    location.sensor("stop")
    per = 1_000
    for member in members:
        member.server.execute(
            f"CREATE TABLE `{member.schema}`.bulk (id INT PRIMARY KEY, pad VARCHAR(40))"
        )
        for base in range(0, rows, per):
            member.server.execute(
                "SET SESSION cte_max_recursion_depth = 2000"
                if member.server.flavor == "mysql"
                else "SET SESSION max_recursive_iterations = 2000",
                f"INSERT INTO `{member.schema}`.bulk WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL"
                f" SELECT n + 1 FROM s WHERE n < {per}) SELECT {base} + n, REPEAT('x', 32) FROM s",
            )
    cpu = _cpu_times()
    started = time.monotonic()
    location.sensor("start")
    location.wait_drained(members, 1800)
    seconds = time.monotonic() - started
    busy = _busy_share(cpu)
    return {
        "rows_per_source": rows,
        "seconds": round(seconds, 1),
        "rows_per_second": round(rows * len(members) / seconds),
        "cpu_busy_share": busy,
    }


def run_count(
    servers: list[SourceServer],
    mongo: MongoTarget,
    postgres: PostgresServer,
    seconds: float,
    sensor_seconds: int,
    folder: Path,
    pause: float,
    drain_rows: int,
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    folder.mkdir(parents=True)
    members = _members(servers, tag)
    location = Location(members, mongo, postgres, folder, sensor_seconds)
    try:
        _prepare(location, members)
        workloads = [
            Workload(m.server, m.schema, seed=i, max_rows=6, pause_seconds=pause)
            for i, m in enumerate(members)
        ]
        for workload in workloads:
            workload.create_tables()
        location.real.start()
        location.sensor("start")
        cpu = _cpu_times()
        started = time.monotonic()
        with Markers(location, members) as markers:
            for workload in workloads:
                workload.start()
            time.sleep(seconds)
            for workload in workloads:
                workload.stop()
        wrote = time.monotonic() - started
        busy = _busy_share(cpu)
        drained = location.wait_drained(members, 900)
        elapsed = time.monotonic() - started
        events = {m.name: len(binlog_row_events(m.server, m.origin, m.schema)) for m in members}
        drain = _drain(location, members, drain_rows)
        problems = {m.name: location.invariants(m) for m in members}
        latency = _percentiles(markers.all())
        return {
            "drain": drain,
            "sources": len(members),
            "flavors": [m.server.flavor for m in members],
            "write_seconds": round(wrote, 1),
            "drain_seconds_after_writes": round(drained, 1),
            "row_events": events,
            "row_events_per_second": round(sum(events.values()) / elapsed),
            "per_source_per_second": {n: round(c / elapsed) for n, c in events.items()},
            "transactions": sum(w.committed_transactions for w in workloads),
            "marker_latency_seconds": latency,
            "marker_latency_by_source": {
                name: _percentiles(values) for name, values in markers.latencies.items()
            },
            "cpu_busy_share": busy,
            "invariants": {name: found or "ok" for name, found in problems.items()},
        }
    finally:
        location.stop()


def run_backlog(
    servers: list[SourceServer],
    mongo: MongoTarget,
    postgres: PostgresServer,
    rows: int,
    sensor_seconds: int,
    folder: Path,
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    folder.mkdir(parents=True)
    members = _members(servers[:2], tag)
    big, other = members
    location = Location(members, mongo, postgres, folder, sensor_seconds)
    try:
        _prepare(location, members)
        location.real.start()
        location.sensor("start")
        before = [location.arrivals([other])[other.name] for _ in range(5)]
        big.server.execute(
            f"CREATE TABLE `{big.schema}`.big (id INT PRIMARY KEY, pad VARCHAR(40))",
        )
        location.wait_drained([big], 120)
        inserted, since = time.monotonic(), time.time()
        big.server.execute(
            f"INSERT INTO `{big.schema}`.big SELECT seq, REPEAT('x', 32)"
            f" FROM `{big.schema}`.seq_1_to_{rows}"
        )
        wrote = time.monotonic() - inserted
        peak_rss = 0.0
        code_server = location.real.processes["code_server"].pid
        deadline = time.monotonic() + 1800
        while True:  # capture runs in the code server (the sensor), then its load run starts
            peak_rss = max(peak_rss, _rss_mib(code_server))
            try:
                location.wait_for_load_run(big, since=since, timeout=1.0)
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the backlog's load run never started"
        captured = time.monotonic() - inserted
        during: list[float] = []
        while not location.drained(big):
            during.append(location.arrivals([other])[other.name])
            peak_rss = max(peak_rss, _rss_mib(code_server))
            assert time.monotonic() < deadline, "the backlog was not loaded in 30 min"
            time.sleep(MARK_EVERY)
        loaded = time.monotonic() - inserted
        problems = {m.name: location.invariants(m) for m in members}
        return {
            "backlog_rows": rows,
            "backlog_source": big.server.flavor,
            "other_source": other.server.flavor,
            "insert_seconds": round(wrote, 1),
            "until_its_load_run_seconds": round(captured, 1),
            "until_loaded_seconds": round(loaded, 1),
            "other_marker_before": _percentiles(before),
            "other_marker_during_backlog_load": _percentiles(during),
            "code_server_peak_rss_mib": round(peak_rss),
            "invariants": {name: found or "ok" for name, found in problems.items()},
        }
    finally:
        location.stop()


def _drained(drain: dict[str, Any]) -> str:
    if not drain:
        return ""
    return (
        f"{drain['rows_per_second']:,} ({drain['cpu_busy_share']:.0%};"
        f" {drain['rows_per_source']:,} rows/source in {drain['seconds']} s)"
    )


def _table(report: dict[str, Any]) -> str:
    lines = [
        "| sources | paced: row events/s (all) | per source | marker p50 / p95 / max (s) |"
        " CPU busy | backlog drained: rows/s (CPU busy) | invariants |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in report["counts"]:
        latency = run["marker_latency_seconds"]
        ok = all(value == "ok" for value in run["invariants"].values())
        lines.append(
            f"| {run['sources']} ({', '.join(run['flavors'])}) | {run['row_events_per_second']:,}"
            f" | {', '.join(f'{v:,}' for v in run['per_source_per_second'].values())}"
            f" | {latency['p50']} / {latency['p95']} / {latency['max']}"
            f" | {run['cpu_busy_share']:.0%}"
            f" | {_drained(run['drain'])} | {'hold' if ok else run['invariants']} |"
        )
    backlog = report.get("backlog")
    if backlog:
        lines.append("")
        lines.append(
            f"{backlog['backlog_rows']:,}-row transaction on {backlog['backlog_source']}: its load"
            f" run began {backlog['until_its_load_run_seconds']} s after the insert, loaded"
            f" {backlog['until_loaded_seconds']} s after; markers on {backlog['other_source']}"
            f" before: {backlog['other_marker_before']}, during its load:"
            f" {backlog['other_marker_during_backlog_load']}; code server peak RSS"
            f" {backlog['code_server_peak_rss_mib']} MiB; invariants {backlog['invariants']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1,2,4", help="source counts (default 1,2,4)")
    parser.add_argument("--seconds", type=float, default=60.0, help="workload seconds per count")
    parser.add_argument("--sensor-seconds", type=int, default=5)
    parser.add_argument(
        "--pause",
        type=float,
        default=0.02,
        help="seconds between one source's transactions (1-6 rows each); 0: as fast as it can",
    )
    parser.add_argument("--backlog-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--drain-rows",
        type=int,
        default=30_000,
        help="rows per source written while the sensors are off, then timed until loaded",
    )
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.counts.split(",") if part.strip()]
    wanted = max([*counts, 2 if args.backlog_rows else 0])
    started: list[Any] = []
    report: dict[str, Any] = {
        "format": FORMAT,
        "at": datetime.now(UTC).isoformat(),
        "seconds": args.seconds,
        "sensor_seconds": args.sensor_seconds,
        "pause_seconds": args.pause,
        "counts": [],
    }
    try:
        kinds = ["mariadb", "mysql", "mariadb", "mariadb"][:wanted]
        servers: list[SourceServer] = []
        for kind in kinds:
            server: SourceServer = (
                MySQLServer() if kind == "mysql" else MariaDBServer(new_data_dir("bench-mariadb"))
            )
            started.append(server)
            server.start()
            servers.append(server)
        nx = NxMongoServer(new_data_dir("bench-nx"))
        started.append(nx)
        nx.start()
        postgres = PostgresServer(new_data_dir("bench-postgres"))
        started.append(postgres)
        postgres.start()
        mongo = MongoTarget(uri=nx.uri, kind="nx-27017", server=nx)
        with tempfile.TemporaryDirectory(prefix="cdc-multi-bench-") as folder:
            for count in counts:
                print(f"{count} sources ...", file=sys.stderr)
                report["counts"].append(
                    run_count(
                        servers[:count],
                        mongo,
                        postgres,
                        args.seconds,
                        args.sensor_seconds,
                        Path(folder) / f"n{count}",
                        args.pause,
                        args.drain_rows,
                    )
                )
            if args.backlog_rows:
                print(f"{args.backlog_rows:,}-row backlog ...", file=sys.stderr)
                report["backlog"] = run_backlog(
                    servers,
                    mongo,
                    postgres,
                    args.backlog_rows,
                    args.sensor_seconds,
                    Path(folder) / "backlog",
                )
    finally:
        for server in reversed(started):
            server.cleanup()
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = RESULTS / f"multi-source-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(_table(report))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
