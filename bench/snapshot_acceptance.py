"""The snapshot's acceptance run at full size: snapshot, stream, load, then every exactness check.

Per source (a fresh local MariaDB and/or MySQL 9.7, and the MongoDB stand-in nx-27017):

1. a database with a mixed-type keyed table of ``--rows`` rows (ints, utf8mb4 varchar, decimal,
   datetime(6), JSON) and a keyless table of 1,000 rows, filled before the pipeline starts;
2. a writer thread committing small transactions (updates, inserts, deletes) at a steady
   ``--writer-tps`` during the whole snapshot and ``--writer-tail`` seconds after it;
3. ``cdc-pipeline snapshot --json`` in a fresh process: wall time and peak RSS (``wait4``'s
   ``ru_maxrss`` when it exceeds this process's own peak, else VmHWM polled every 0.2 s: Linux
   carries the spawning process's high-water RSS into a child's ``ru_maxrss`` at exec). With
   ``--kill-at F`` the process is killed with SIGKILL once the committed snapshot rows (the
   segment manifests) reach F of the keyed table, half a segment's reading time later (so the
   kill lands mid-segment, the typical case, not just after a commit), then run again; the
   resumed run's rows kept, rows written and the estimated rows read but lost are recorded;
4. the writer stops; ``cdc-pipeline capture --once`` until nothing new, then ``cdc-pipeline
   load --pending`` in a fresh process: wall time and peak RSS;
5. the checks of ``integration/test_snapshot.py``: every mirror equals its source table, the
   keyed table's WAL replays without a change doubled or lost, the checkpoint equals the
   source's GTID state, no event staged or applied twice, the WAL chains, and the change log
   holds every row change after the (first) snapshot point exactly once (an independent binlog
   read).

A summary table goes to stdout and a JSON report to ``bench/results/`` (git-ignored).

    python -m bench.snapshot_acceptance --rows 20000 --sources mariadb
    python -m bench.snapshot_acceptance --rows 1000000 --sources mariadb,mysql
    python -m bench.snapshot_acceptance --rows 1000000 --sources mariadb --kill-at 0.5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo
from pymongo.database import Database

from bench.machine import describe_machine
from bench.servers import started_servers
from cdc_pipeline.core.audit.duplicates import check_change_log, check_wal
from cdc_pipeline.core.load.documents import MIRROR_STATUS, ROW_CHANGES
from cdc_pipeline.core.load.sink import MongoSink
from cdc_pipeline.core.wal.continuity import check_chain, gather_chain
from cdc_pipeline.core.wal.segment import read_manifest
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline_tests.binlog_oracle import binlog_row_events
from cdc_pipeline_tests.pipeline_checks import (
    checkpoint_matches_source,
    mirror_differences,
    replay_problems,
)
from devtools.local_servers import SourceServer

RESULTS = Path(__file__).resolve().parent / "results"
FORMAT = "cdc_pipeline-snapshot-acceptance/1"
SCHEMA = "acceptance"
KEYED = "big"
KEYLESS = "nokey"
KEYLESS_ROWS = 1_000
FILL_BATCH = 5_000
NEW_IDS_FROM = 2_000_000_000
DEFAULT_SEGMENT_ROWS = 50_000  # CDC_SEGMENT_MAX_EVENTS's default
POLL_SECONDS = 0.2
MYSQL_CHROOT = Path.home() / ".cache" / "cdc_pipeline" / "mysql-9.7-root"


def _log(text: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {text}", flush=True)


# --- the source tables and the concurrent writer -------------------------------------------


def fill_tables(server: SourceServer, schema: str, rows: int) -> float:
    """Create the keyed and keyless tables and fill them; returns the seconds it took."""
    started = time.monotonic()
    server.execute(
        f"DROP DATABASE IF EXISTS `{schema}`",
        f"CREATE DATABASE `{schema}` CHARACTER SET utf8mb4",
        f"CREATE TABLE `{schema}`.`{KEYED}` (id BIGINT PRIMARY KEY, grp INT NOT NULL,"
        " small SMALLINT, name VARCHAR(40), amount DECIMAL(12,2), doc JSON,"
        " updated DATETIME(6))",
        f"CREATE TABLE `{schema}`.`{KEYLESS}` (x INT, y VARCHAR(10))",
    )
    with (
        contextlib.closing(server.connect(charset="utf8mb4")) as connection,
        connection.cursor() as cursor,
    ):
        for start in range(0, rows, FILL_BATCH):
            cursor.executemany(
                f"INSERT INTO `{schema}`.`{KEYED}` VALUES (%s, %s, %s, %s, %s, %s, NOW(6))",
                [
                    (
                        n,
                        n % 97,
                        None if n % 11 == 0 else n % 30_000 - 15_000,
                        f"row {n} ünï",
                        f"{n % 1_000_000}.{n % 100:02d}",
                        json.dumps({"n": n, "tags": ["a", n % 5], "ok": n % 2 == 0}),
                    )
                    for n in range(start, min(start + FILL_BATCH, rows))
                ],
            )
            if start and start % 200_000 == 0:
                _log(f"  filled {start:,} rows")
        cursor.executemany(
            f"INSERT INTO `{schema}`.`{KEYLESS}` VALUES (%s, %s)",
            [(n % 50, f"y{n}") for n in range(KEYLESS_ROWS)],
        )
    return time.monotonic() - started


class Writer:
    """Small transactions at a steady rate from a thread until stopped: in each, 1 to 3 changes
    to the keyed table (60% updates, 20% deletes, 20% inserts of new keys) and, one time in five,
    an insert into the keyless table."""

    def __init__(self, server: SourceServer, schema: str, rows: int, rate: float, seed: int):
        self.server, self.schema, self.rows, self.rate = server, schema, rows, rate
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.transactions = 0
        self.statements = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="writer")

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)

    def _run(self) -> None:
        try:
            with contextlib.closing(
                self.server.connect(autocommit=False, charset="utf8mb4")
            ) as connection:
                cursor = connection.cursor()
                next_id = NEW_IDS_FROM
                next_at = time.monotonic()
                big = f"`{self.schema}`.`{KEYED}`"
                while not self.stop.is_set():
                    for _ in range(self.random.randint(1, 3)):
                        n = self.random.randrange(self.rows)
                        kind = self.random.random()
                        if kind < 0.6:
                            cursor.execute(
                                f"UPDATE {big} SET name = %s, amount = amount + 1,"
                                " doc = JSON_SET(doc, '$.upd', %s), updated = NOW(6)"
                                " WHERE id = %s",
                                (f"upd {self.transactions}", self.transactions, n),
                            )
                        elif kind < 0.8:
                            cursor.execute(f"DELETE FROM {big} WHERE id = %s", (n,))
                        else:
                            next_id += 1
                            cursor.execute(
                                f"INSERT INTO {big} VALUES (%s, 1, -1, 'new ✓', 1.50,"
                                " '[1, 2]', NOW(6))",
                                (next_id,),
                            )
                        self.statements += 1
                    if self.random.random() < 0.2:
                        cursor.execute(
                            f"INSERT INTO `{self.schema}`.`{KEYLESS}` VALUES (%s, 'live')",
                            (self.transactions,),
                        )
                        self.statements += 1
                    connection.commit()
                    self.transactions += 1
                    next_at += 1.0 / self.rate
                    pause = next_at - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    elif pause < -1.0:  # far behind on a busy machine: do not burst to catch up
                        next_at = time.monotonic()
        except BaseException as error:  # reported by the run
            self.error = error


# --- running the CLI in a fresh, measured process ------------------------------------------


@dataclass
class Measured:
    """One CLI process: exit code, wall seconds, peak RSS, output, and whether we killed it."""

    command: list[str]
    code: int
    seconds: float
    peak_rss_mib: float
    polled_vmhwm_mib: float
    ru_maxrss_mib: float
    stdout: str
    stderr: str
    killed: bool = False
    killed_after: float | None = None

    def json(self) -> Any:
        return json.loads(self.stdout)

    def figures(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "seconds": round(self.seconds, 2),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "polled_vmhwm_mib": round(self.polled_vmhwm_mib, 1),
            "ru_maxrss_mib": round(self.ru_maxrss_mib, 1),
            "killed": self.killed,
        }


def _vmhwm_kib(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_measured(
    arguments: list[str],
    env: dict[str, str],
    workdir: Path,
    label: str,
    kill_when: Callable[[float], bool] | None = None,
) -> Measured:
    """Run ``python -m cdc_pipeline.cli ARGUMENTS``; ``kill_when(elapsed)`` returning True
    (checked every poll) kills it with SIGKILL."""
    command = [sys.executable, "-m", "cdc_pipeline.cli", *arguments]
    out_path, err_path = workdir / f"{label}.out", workdir / f"{label}.err"
    # Linux carries the spawning process's high-water RSS into the child's ru_maxrss at exec,
    # so ru_maxrss is the child's own peak only when it exceeds ours; else use the polled VmHWM.
    parent_kib = _vmhwm_kib(os.getpid())
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        polled, killed, killed_after = 0, False, None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            polled = max(polled, _vmhwm_kib(process.pid))
            elapsed = time.monotonic() - started
            if not killed and kill_when is not None and kill_when(elapsed):
                os.kill(process.pid, signal.SIGKILL)
                killed, killed_after = True, elapsed
            time.sleep(POLL_SECONDS)
        seconds = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code  # reaped by wait4: tell Popen so it does not wait again
    return Measured(
        command=arguments,
        code=code,
        seconds=seconds,
        peak_rss_mib=(usage.ru_maxrss if usage.ru_maxrss > parent_kib else polled) / 1024,
        polled_vmhwm_mib=polled / 1024,
        ru_maxrss_mib=usage.ru_maxrss / 1024,
        stdout=out_path.read_text(),
        stderr=err_path.read_text(),
        killed=killed,
        killed_after=killed_after,
    )


def _require(run: Measured, what: str) -> None:
    if run.code != 0:
        raise RuntimeError(f"{what} exited {run.code}: {run.stderr.strip()[-2000:]}")


# --- the WAL as the manifests tell it ------------------------------------------------------


def snapshot_segments(paths: WalPaths) -> list[dict[str, Any]]:
    """Each committed snapshot segment's manifest ``snapshot`` part, its rows and commit time."""
    found = []
    for path in list_segments(paths):
        with contextlib.suppress(Exception):
            manifest = read_manifest(path)
            if manifest.kind == "snapshot":
                found.append(
                    {
                        **(manifest.snapshot or {}),
                        "rows": manifest.row_count,
                        "sequence": manifest.sequence,
                        "mtime": path.stat().st_mtime,
                    }
                )
    return found


def committed_rows(paths: WalPaths, table: str = KEYED) -> int:
    return sum(
        info["rows"] for info in snapshot_segments(paths) if info["table"].endswith(f".{table}")
    )


def capture_until_idle(env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """``capture --once`` until a tick finds nothing new; wall time and the largest peak RSS."""
    started, ticks, rows, transactions, peak = time.monotonic(), 0, 0, 0, 0.0
    for tick in range(1, 1_000):
        run = run_measured(["capture", "--once", "--json"], env, workdir, f"capture-{tick}")
        _require(run, f"capture tick {tick}")
        result = run.json()
        peak = max(peak, run.peak_rss_mib)
        if result["segment"] is None:
            break
        ticks += 1
        rows += int(result["rows"])
        transactions += int(result["transactions"])
    else:
        raise RuntimeError("capture never caught up in 1,000 ticks")
    return {
        "segments": ticks,
        "rows": rows,
        "transactions": transactions,
        "seconds": round(time.monotonic() - started, 2),
        "peak_rss_mib": round(peak, 1),
    }


# --- the checks ----------------------------------------------------------------------------


def run_checks(
    server: SourceServer,
    paths: WalPaths,
    mongo_uri: str,
    compat: str,
    database_name: str,
    stream_start: str,
) -> dict[str, Any]:
    """The invariants of ``integration/test_snapshot.py``; each with its result and seconds."""
    checks: dict[str, Any] = {}

    def timed(name: str, action: Callable[[], tuple[bool, Any]]) -> None:
        started = time.monotonic()
        try:
            ok, detail = action()
        except Exception as error:  # a check that cannot run is a failed check
            ok, detail = False, f"{type(error).__name__}: {error}"
        checks[name] = {"ok": ok, "detail": detail, "seconds": round(time.monotonic() - started, 1)}
        _log(f"  check {name}: {'ok' if ok else 'FAILED'} ({checks[name]['seconds']} s)")
        if not ok:
            _log(f"    {str(detail)[:1500]}")

    nx = compat == "nx-27017"
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
        database: Database[Any] = client[database_name]
        sink = MongoSink(
            database, mirror_style="underscore" if nx else "dotted", decimals_as_strings=nx
        )

        def mirrors() -> tuple[bool, Any]:
            differences = mirror_differences(server, SCHEMA, sink)
            return differences == [], differences

        def replay() -> tuple[bool, Any]:
            problems = replay_problems(paths, KEYED)
            return problems == [], problems

        def checkpoint() -> tuple[bool, Any]:
            matches, applied, wanted = checkpoint_matches_source(server, database)
            return matches, {"applied": applied, "source": wanted}

        def wal() -> tuple[bool, Any]:
            report = check_wal(paths)
            return report.ok, {"events": report.events, "problems": report.problems}

        def change_log() -> tuple[bool, Any]:
            applied_through = read_manifest(list_segments(paths)[-1]).sequence
            report = check_change_log(database, paths, applied_through)
            detail = {"documents": report.change_log_documents, "problems": report.problems}
            return report.ok, detail

        def chain() -> tuple[bool, Any]:
            links, origin, flavor, notes = gather_chain(paths)
            if flavor is None:
                return False, "no flavor in the WAL"
            report = check_chain(links, flavor, origin)
            return report.ok and not notes, {
                "links": len(links),
                "problems": report.problems + notes,
            }

        def change_log_vs_binlog() -> tuple[bool, Any]:
            expected = sorted(binlog_row_events(server, stream_start, SCHEMA, timeout=600))
            logged = [
                (document["_id"], document["table"], document["op"])
                for document in database[ROW_CHANGES].find(
                    {"schema": SCHEMA}, {"table": 1, "op": 1}
                )
            ]
            changes = sorted(item for item in logged if item[2] != "snapshot")
            snapshot_tables = sorted({item[1] for item in logged if item[2] == "snapshot"})
            missing = sorted(set(expected) - set(changes))
            extra = sorted(set(changes) - set(expected))
            ok = changes == expected and set(snapshot_tables) <= {KEYLESS}
            return ok, {
                "binlog_row_events_after_point": len(expected),
                "logged_changes": len(changes),
                "keyless_snapshot_rows": sum(1 for item in logged if item[2] == "snapshot"),
                "missing": missing[:3],
                "extra": extra[:3],
                "tables_with_snapshot_rows": snapshot_tables,
            }

        def no_stale_mark() -> tuple[bool, Any]:
            marks = database[MIRROR_STATUS].count_documents({})
            return marks == 0, {"cdc_mirror_status_documents": marks}

        timed("checkpoint_matches_source", checkpoint)
        timed("check_wal", wal)
        timed("check_change_log", change_log)
        timed("wal_chain", chain)
        timed("no_snapshot_mark_left", no_stale_mark)
        timed("change_log_equals_binlog_after_point", change_log_vs_binlog)
        timed("replay_problems", replay)
        timed("mirror_differences", mirrors)
    return checks


# --- one source ----------------------------------------------------------------------------


@dataclass
class SourceRun:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)


def _cli_env(
    server: SourceServer, staging: Path, mongo_uri: str, compat: str, database: str, segment: int
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CDC_") or key == "CDC_MYSQL_CHROOT"
    }
    env.update(
        {
            "CDC_MYSQL_URL": server.url,
            "CDC_STAGING_DIR": str(staging),
            "CDC_INCLUDE_TABLES": f"{SCHEMA}.*",
            "CDC_SERVER_ID": "4242",
            "CDC_MONGO_URI": mongo_uri,
            "CDC_MONGO_DB": database,
            "CDC_SEGMENT_MAX_EVENTS": str(segment),
        }
    )
    if compat != "standard":
        env["CDC_MONGO_COMPAT"] = compat
    return env


def _snapshot_with_kill(
    options: argparse.Namespace,
    env: dict[str, str],
    workdir: Path,
    paths: WalPaths,
    writer: Writer,
    rows_at_start: int,
) -> dict[str, Any]:
    """Snapshot, SIGKILL mid-segment past ``--kill-at``, run again; the figures of both."""
    segment = options.segment_rows
    threshold = options.kill_at * rows_at_start
    state: dict[str, float] = {}

    def kill_when(elapsed: float) -> bool:
        if "kill_at" in state:
            return elapsed >= state["kill_at"]
        done = committed_rows(paths)
        if done < threshold:
            return False
        rate = done / elapsed if elapsed > 0 else 0.0
        # Half a segment's reading time after the threshold's commit: mid-segment.
        state["rate"] = rate
        state["kill_at"] = elapsed + (0.5 * segment / rate if rate else 0.0)
        return False

    before = writer.transactions
    first = run_measured(["snapshot", "--json"], env, workdir, "snapshot-killed", kill_when)
    during_first = writer.transactions - before
    if not first.killed:
        _require(first, "snapshot (meant to be killed)")
        raise RuntimeError("the snapshot finished before it reached --kill-at; use more --rows")
    kill_wall = time.time()
    killed_at = snapshot_segments(paths)
    kept = sum(info["rows"] for info in killed_at)
    keyed_kept = sum(info["rows"] for info in killed_at if info["table"].endswith(f".{KEYED}"))
    last_commit = max((info["mtime"] for info in killed_at), default=kill_wall)
    since_commit = max(0.0, kill_wall - last_commit)
    rate = state.get("rate", 0.0)
    in_flight = min(segment, round(rate * since_commit))
    _log(
        f"  killed after {first.killed_after:.1f} s: {len(killed_at)} segments, {kept:,} rows"
        f" committed; {since_commit:.1f} s since the last commit at ~{rate:,.0f} rows/s"
    )
    time.sleep(1.0)  # the writer goes on between the two runs: the resumed view is later
    before = writer.transactions
    second = run_measured(["snapshot", "--json"], env, workdir, "snapshot-resumed")
    during_second = writer.transactions - before
    _require(second, "resumed snapshot")
    resumed = second.json()
    finished = snapshot_segments(paths)
    unchanged = [
        {k: v for k, v in info.items() if k != "mtime"} for info in finished[: len(killed_at)]
    ] == [{k: v for k, v in info.items() if k != "mtime"} for info in killed_at]
    total_written = kept + int(resumed["rows_written"])
    return {
        "killed_run": {
            **first.figures(),
            "killed_after_seconds": round(first.killed_after or 0.0, 2),
            "segments_committed": len(killed_at),
            "rows_committed": kept,
            "keyed_rows_committed": keyed_kept,
            "committed_rows_per_second": round(rate),
            "seconds_since_last_commit_at_kill": round(since_commit, 2),
            "writer_transactions": during_first,
        },
        "resumed_run": {
            **second.figures(),
            "result": resumed,
            "writer_transactions": during_second,
        },
        "rows_kept_from_before": int(resumed["rows_kept_from_before"]),
        "rows_written_by_resumed_run": int(resumed["rows_written"]),
        "rows_written_by_both_runs": total_written,
        "committed_segments_unchanged": unchanged,
        "rows_read_but_lost_estimate": in_flight,
        "rows_read_but_lost_how": (
            "the killed run's committed rows/s times the seconds from its last segment commit"
            " to the kill, capped at one segment (CDC_SEGMENT_MAX_EVENTS): the rows of the"
            " segment being written, which the resumed run reads again. Committed rows are never"
            " read or written again, so rows written by both runs = the table's rows at the"
            " views (+/- the writer's inserts and deletes), with no overlap."
        ),
        "snapshot_seconds_both_runs": round(first.seconds + second.seconds, 2),
        "point_gtids": sorted({info["point"]["gtid"] for info in finished}),
        "first_point": killed_at[0]["point"]["gtid"] if killed_at else resumed["point_gtid"],
        "result": resumed,
        "peak_rss_mib": round(max(first.peak_rss_mib, second.peak_rss_mib), 1),
        "writer_transactions": during_first + during_second,
    }


def run_source(name: str, options: argparse.Namespace, stamp: str) -> dict[str, Any]:
    rows = options.rows
    report: dict[str, Any] = {"source": name, "rows": rows, "keyless_rows": KEYLESS_ROWS}
    with (
        started_servers([name], options.mongo_uri) as servers,
        tempfile.TemporaryDirectory(prefix=f"snapshot-acceptance-{name}-") as temp,
    ):
        server = servers.sources[name]
        workdir = Path(temp)
        report["machine"] = describe_machine(servers)
        database_name = f"snapshot_acceptance_{name}_{stamp}".lower()
        staging = workdir / "wal"
        env = _cli_env(
            server,
            staging,
            servers.mongo_uri,
            servers.mongo_compat,
            database_name,
            options.segment_rows,
        )
        paths = WalPaths(staging, "default")
        _log(f"{name}: filling {rows:,} + {KEYLESS_ROWS:,} rows")
        report["fill_seconds"] = round(fill_tables(server, SCHEMA, rows), 1)
        _log(f"{name}: filled in {report['fill_seconds']} s")

        writer = Writer(server, SCHEMA, rows, options.writer_tps, options.seed)
        writer.start()
        time.sleep(1.0)
        load_before = os.getloadavg()
        started_tx = writer.transactions
        if options.kill_at is None:
            _log(f"{name}: snapshot (writer at {options.writer_tps:g} tx/s)")
            run = run_measured(["snapshot", "--json"], env, workdir, "snapshot")
            during = writer.transactions - started_tx
            _require(run, "snapshot")
            result = run.json()
            snapshot: dict[str, Any] = {
                **run.figures(),
                "result": result,
                "writer_transactions": during,
                "first_point": result["point_gtid"],
            }
        else:
            _log(f"{name}: snapshot, killed at {options.kill_at:.0%}, then resumed")
            snapshot = _snapshot_with_kill(options, env, workdir, paths, writer, rows)
            result = snapshot["result"]
            snapshot["seconds"] = snapshot["snapshot_seconds_both_runs"]
        snapshot["load_average_before"] = [round(value, 2) for value in load_before]
        snapshot["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
        seconds = snapshot["seconds"]
        written = sum(table["rows"] for table in result["tables"].values())
        snapshot["rows_per_second"] = round(written / seconds) if seconds else None
        snapshot["writer_tps_during"] = round(snapshot["writer_transactions"] / seconds, 1)
        _log(
            f"{name}: snapshot {written:,} rows in {seconds:.1f} s ({snapshot['rows_per_second']:,}"
            f" rows/s), peak RSS {snapshot['peak_rss_mib']:.0f} MiB,"
            f" {snapshot['writer_transactions']:,} concurrent transactions"
        )
        report["snapshot"] = snapshot
        time.sleep(options.writer_tail)
        writer.finish()
        report["writer"] = {
            "transactions": writer.transactions,
            "statements": writer.statements,
            "target_tps": options.writer_tps,
            "error": repr(writer.error) if writer.error else None,
        }
        if writer.error is not None:
            raise RuntimeError(f"the writer failed: {writer.error!r}")

        _log(f"{name}: capture --once until nothing new")
        report["capture"] = capture_until_idle(env, workdir)
        _log(f"{name}: capture {report['capture']}")
        _log(f"{name}: load --pending")
        load = run_measured(["load", "--pending", "--json"], env, workdir, "load")
        _require(load, "load --pending")
        loaded = load.json()
        report["load"] = {
            **load.figures(),
            "partitions": len(loaded["loaded"]),
            "rows": sum(int(item["rows"]) for item in loaded["loaded"]),
            "pending_after": loaded["pending_after"],
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
        }
        report["load"]["rows_per_second"] = round(report["load"]["rows"] / load.seconds)
        _log(
            f"{name}: load {report['load']['rows']:,} rows in {load.seconds:.1f} s, peak RSS"
            f" {load.peak_rss_mib:.0f} MiB"
        )
        with contextlib.closing(server.connect()) as connection, connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM `{SCHEMA}`.`{KEYED}`")
            report["keyed_rows_at_end"] = int(cursor.fetchone()[0])
        report["wal_segments"] = len(list_segments(paths))
        _log(f"{name}: checks")
        report["checks"] = run_checks(
            server,
            paths,
            servers.mongo_uri,
            servers.mongo_compat,
            database_name,
            snapshot["first_point"],
        )
        report["all_checks_ok"] = all(check["ok"] for check in report["checks"].values())
        cleanup: pymongo.MongoClient[dict[str, Any]]
        with contextlib.suppress(Exception), pymongo.MongoClient(servers.mongo_uri) as cleanup:
            cleanup.drop_database(database_name)
    return report


# --- report --------------------------------------------------------------------------------


def summary_table(reports: list[dict[str, Any]]) -> str:
    rows = [
        (
            "source",
            "rows",
            "snapshot s",
            "rows/s",
            "snap RSS MiB",
            "concurrent tx",
            "capture s",
            "load s",
            "load RSS MiB",
            "checks",
        )
    ]
    for report in reports:
        snapshot, load = report.get("snapshot", {}), report.get("load", {})
        failed = [name for name, check in report.get("checks", {}).items() if not check["ok"]]
        rows.append(
            (
                report["source"],
                f"{report['rows']:,}",
                f"{snapshot.get('seconds', 0):.1f}",
                f"{snapshot.get('rows_per_second') or 0:,}",
                f"{snapshot.get('peak_rss_mib', 0):.0f}",
                f"{snapshot.get('writer_transactions', 0):,}",
                f"{report.get('capture', {}).get('seconds', 0):.1f}",
                f"{load.get('seconds', 0):.1f}",
                f"{load.get('peak_rss_mib', 0):.0f}",
                report.get("error") or ("all ok" if not failed else "FAILED: " + ",".join(failed)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    for report in reports:
        snapshot = report.get("snapshot", {})
        if "rows_kept_from_before" in snapshot:
            lines.append(
                f"{report['source']} kill -9 at {snapshot['killed_run']['killed_after_seconds']} s:"
                f" {snapshot['rows_kept_from_before']:,} rows kept,"
                f" {snapshot['rows_written_by_resumed_run']:,} written by the resumed run"
                f" ({snapshot['resumed_run']['seconds']} s),"
                f" ~{snapshot['rows_read_but_lost_estimate']:,} rows read again"
            )
    return "\n".join(lines)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.snapshot_acceptance", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows of the keyed table (default 1000000)"
    )
    parser.add_argument(
        "--sources",
        default="mariadb",
        help="comma-separated: mariadb, mysql (MySQL 9.7 needs 'make mysql-chroot')",
    )
    parser.add_argument(
        "--kill-at",
        type=float,
        default=None,
        metavar="F",
        help="kill -9 the snapshot mid-segment once F (0..1) of the keyed rows are committed,"
        " then resume it",
    )
    parser.add_argument(
        "--segment-rows",
        type=int,
        default=DEFAULT_SEGMENT_ROWS,
        help=f"CDC_SEGMENT_MAX_EVENTS (default {DEFAULT_SEGMENT_ROWS}, the product's default)",
    )
    parser.add_argument(
        "--writer-tps", type=float, default=50.0, help="writer transactions/s (default 50)"
    )
    parser.add_argument(
        "--writer-tail",
        type=float,
        default=5.0,
        help="seconds the writer goes on after the snapshot (default 5)",
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--mongo-uri",
        default=os.environ.get("BENCH_MONGO_URI"),
        help="a real MongoDB instead of starting nx-27017 (or BENCH_MONGO_URI)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    options = parser.parse_args(argv)
    options.sources = [part.strip() for part in options.sources.split(",") if part.strip()]
    for source in options.sources:
        if source not in ("mariadb", "mysql"):
            parser.error(f"unknown source '{source}': use mariadb or mysql")
    if options.kill_at is not None and not 0 < options.kill_at < 1:
        parser.error("--kill-at must be between 0 and 1")
    if options.rows < 1 or options.segment_rows < 1 or options.writer_tps <= 0:
        parser.error("--rows, --segment-rows and --writer-tps must be positive")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_arguments(sys.argv[1:] if argv is None else argv)
    if "mysql" in options.sources and MYSQL_CHROOT.exists():
        os.environ.setdefault("CDC_MYSQL_CHROOT", str(MYSQL_CHROOT))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    reports: list[dict[str, Any]] = []
    started = time.monotonic()
    for name in options.sources:
        try:
            reports.append(run_source(name, options, stamp))
        except Exception as error:
            _log(f"{name}: FAILED: {type(error).__name__}: {error}")
            reports.append({"source": name, "rows": options.rows, "error": f"{error}"[:4000]})
    document = {
        "format": FORMAT,
        "started_at": stamp,
        "seconds": round(time.monotonic() - started, 1),
        "options": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(options).items()
            if key != "mongo_uri"
        },
        "peak_rss_mib_of_this_process": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
        "runs": reports,
    }
    options.out.mkdir(parents=True, exist_ok=True)
    kind = "-kill" if options.kill_at is not None else ""
    path = options.out / f"snapshot-acceptance-{stamp}-{options.rows}{kind}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print()
    print(summary_table(reports))
    print(f"\nreport: {path}")
    ok = all(report.get("all_checks_ok") for report in reports)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
