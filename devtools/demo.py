"""``make demo``: the pipeline end to end on local servers, recorded in a Dagster home.

Starts a local MariaDB and the MongoDB stand-in nx-27017 (or uses ``CDC_MYSQL_URL`` /
``CDC_MONGO_URI`` when set), writes a small shop database with a live workload that includes a
schema change, and runs the pipeline through the real ``dagster-daemon`` on the persistent
instance in ``.dagster_home``: ``binlog_capture_sensor`` ticks every few seconds and launches a
``load_batch_job`` run per segment, then ``audit_job`` runs every check. ``make ui`` afterwards
shows the ticks, the sensor-launched runs and the checks. It prints a short summary and stops
every process and server it started (the sensor is turned off again).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo
import pymysql

from cdc_pipeline.core.settings import SourceUrl
from devtools.local_servers import (
    MariaDBServer,
    NxMongoServer,
    SourceServer,
    _die_with_parent,
    new_data_dir,
    stop_process_group,
)
from devtools.sample_workload import Workload

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_ROOT = Path(os.environ.get("CDC_DEMO_ROOT") or PROJECT_ROOT)
"""Where ``.dagster_home`` and ``.cdc_staging`` go: the clone (``make ui`` reads them there);
the UI test points it at a temporary folder."""
DAGSTER_HOME = DEMO_ROOT / ".dagster_home"
STAGING = DEMO_ROOT / ".cdc_staging"
SOURCE_NAME = "demo"
SENSOR_SECONDS = 5
BIN = Path(sys.executable).parent
DATABASE = "shop"


def _prepare_home() -> None:
    DAGSTER_HOME.mkdir(exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", DAGSTER_HOME / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(DAGSTER_HOME)


DAEMON_WAIT_SECONDS = 180
"""How long the demo waits for the daemon's sensor and load runs to apply everything."""


def _dagster(*args: str) -> None:
    """A ``dagster`` command on the demo's home and the project's workspace; quiet unless it
    fails."""
    done = subprocess.run(
        [str(BIN / "dagster"), *args, "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dagster {' '.join(args)} failed: {done.stderr.strip()[-500:]}")


@contextlib.contextmanager
def _daemon() -> Iterator[subprocess.Popen[bytes]]:
    """``dagster-daemon run`` on the demo's home (its own session, so its code server and run
    workers stop with it), with ``binlog_capture_sensor`` turned on; both stopped on exit, so
    ``make ui`` later shows the ticks and runs without ticking against stopped servers."""
    for key in _stale_partitions():
        _instance().delete_dynamic_partition("cdc_batches", key)
    _dagster("sensor", "start", "binlog_capture_sensor")
    with (DAGSTER_HOME / "demo-daemon.log").open("wb") as log:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        yield daemon
    finally:
        stop_process_group(daemon, timeout=30)
        _dagster("sensor", "stop", "binlog_capture_sensor")


def _instance() -> Any:
    """The process's one Dagster instance (on the demo's home), opened on first use."""
    import dagster as dg

    return dg.DagsterInstance.get()


def _stale_partitions() -> list[str]:
    """Partitions an earlier demo registered, whose WAL the demo has deleted."""
    keys = _instance().get_dynamic_partitions("cdc_batches")
    return [key for key in keys if key.startswith(f"{SOURCE_NAME}-")]


_SINCE = datetime.now(UTC)
"""When this demo began: ``.dagster_home`` keeps earlier demos' runs (``make ui`` shows them),
and a failed run of an earlier ``FAULT=`` demo must not count against this one."""


def _runs() -> tuple[int, int, int]:
    """Load runs the sensor launched during this demo: (finished, failed, not finished yet)."""
    import dagster as dg

    runs = _instance().get_runs(
        dg.RunsFilter(
            job_name="load_batch_job",
            tags={"dagster/sensor_name": "binlog_capture_sensor"},
            created_after=_SINCE,
        )
    )
    done = [run for run in runs if run.is_finished]
    failed = [run for run in done if run.status != dg.DagsterRunStatus.SUCCESS]
    return len(done), len(failed), len(runs) - len(done)


def _wait_until_applied(daemon: subprocess.Popen[bytes]) -> bool:
    """Wait for the daemon to capture and load everything the source executed; a line every
    few seconds. False when it did not within ``DAEMON_WAIT_SECONDS``."""
    from cdc_pipeline.core.audit.status import read_status
    from cdc_pipeline.core.settings import MongoSettings
    from cdc_pipeline.core.wal.staging import WalPaths

    paths = WalPaths(STAGING, SOURCE_NAME)
    source = SourceUrl.parse(os.environ["CDC_MYSQL_URL"])
    deadline = time.monotonic() + DAEMON_WAIT_SECONDS
    shown = ""
    while time.monotonic() < deadline and daemon.poll() is None:
        status = read_status(paths, source, MongoSettings.from_env())
        finished, failed, running = _runs()
        line = (
            f"  {finished} load runs finished ({failed} failed), {running} queued or running;"
            f" {status.lag_transactions if status.lag_transactions is not None else '?'}"
            " transactions not applied yet"
        )
        if line != shown:
            print(line, flush=True)
            shown = line
        if status.lag_transactions == 0 and running == 0 and finished:
            return True
        time.sleep(3)
    return False


FAULTS = ("mongo-outage",)
OUTAGE_SECONDS = 60
"""At most this long waiting for the breaker to open (it opens after a run's retry budget)."""


def _mongo_outage(mongo: NxMongoServer) -> None:
    """``make demo FAULT=mongo-outage``: MongoDB down while the workload and capture go on; the
    load runs fail, the breaker opens and probes; then MongoDB comes back and the backlog
    drains by itself."""
    from cdc_pipeline.core.audit.status import read_status
    from cdc_pipeline.core.settings import MongoSettings
    from cdc_pipeline.core.wal.staging import WalPaths

    mongo.stop()
    print("  MongoDB stopped: capture goes on, load runs fail until the breaker opens", flush=True)
    stopped = time.monotonic()
    paths = WalPaths(STAGING, SOURCE_NAME)
    while time.monotonic() - stopped < OUTAGE_SECONDS:
        status = read_status(paths, None, None)
        if status.breaker == "open":
            print(f"  breaker open after {time.monotonic() - stopped:.0f} s", flush=True)
            break
        time.sleep(2)
    time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))  # a few probe intervals down
    status = read_status(paths, None, MongoSettings.from_env())
    print(f"  breaker {status.breaker}: {status.breaker_text}", flush=True)
    mongo.start()
    print("  MongoDB back: the breaker's next probe loads the backlog", flush=True)


def main() -> int:
    started = time.monotonic()
    fault = os.environ.get("FAULT", "").strip()
    if fault and (fault not in FAULTS or os.environ.get("CDC_MONGO_URI")):
        print(
            f"make demo: FAULT={fault} is not a fault the demo knows (it knows"
            f" {', '.join(FAULTS)}, on its own MongoDB: leave CDC_MONGO_URI unset).",
            file=sys.stderr,
        )
        return 2
    _prepare_home()
    shutil.rmtree(STAGING / SOURCE_NAME, ignore_errors=True)  # the demo's own WAL only
    mariadb = None if os.environ.get("CDC_MYSQL_URL") else MariaDBServer(new_data_dir("demo-db"))
    mongo = None if os.environ.get("CDC_MONGO_URI") else NxMongoServer(new_data_dir("demo-nx"))
    try:
        if mariadb is not None:
            mariadb.start()
            os.environ["CDC_MYSQL_URL"] = mariadb.url
        if mongo is not None:
            mongo.start()
            os.environ["CDC_MONGO_URI"] = mongo.uri
            os.environ["CDC_MONGO_COMPAT"] = "nx-27017"
        os.environ.setdefault("CDC_MONGO_DB", "cdc_demo")
        os.environ["CDC_SOURCE_NAME"] = SOURCE_NAME
        os.environ["CDC_STAGING_DIR"] = str(STAGING)
        os.environ["CDC_INCLUDE_TABLES"] = f"{DATABASE}.*"
        os.environ["CDC_TICK_MAX_SECONDS"] = "4"
        os.environ["CDC_SENSOR_INTERVAL_SECONDS"] = str(SENSOR_SECONDS)
        # A short retry budget and probe interval, so an outage shows within the demo.
        os.environ.setdefault("CDC_MONGO_RETRY_SECONDS", "5")
        os.environ.setdefault("CDC_BREAKER_PROBE_SECONDS", "10")
        if mariadb is None:
            print("Using CDC_MYSQL_URL: the demo writes a 'shop' database there.")
        from cdc_pipeline.core.capture.tick import capture_once
        from cdc_pipeline.core.settings import CaptureSettings

        source: SourceServer = mariadb or _external_source()
        source.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
        workload = Workload(source, DATABASE, seed=2026, max_rows=10, pause_seconds=0.02)
        workload.create_tables()
        capture_once(CaptureSettings.from_env())  # fixes where capture starts
        print("Workload running; the pipeline runs through Dagster:")
        workload.start()
        time.sleep(2)
        source.execute(f"ALTER TABLE `{DATABASE}`.customers ADD COLUMN tier VARCHAR(10)")
        source.execute(f"UPDATE `{DATABASE}`.customers SET tier = 'gold' WHERE id % 5 = 0")
        print(
            f"Dagster: dagster-daemon runs binlog_capture_sensor every {SENSOR_SECONDS} s;"
            " it launches a load_batch_job run per captured segment:"
        )
        with _daemon() as daemon:
            try:
                time.sleep(8)
                if fault == "mongo-outage" and mongo is not None:
                    _mongo_outage(mongo)
            finally:
                workload.stop()
            applied = _wait_until_applied(daemon)
        finished, failed, _ = _runs()
        outcome = {"runs": finished, "failed": failed, "applied": applied}
        checks = _run_audit()
        _summary(workload, outcome, time.monotonic() - started, checks)
        # On the embedded server every check must pass; an external source may hold rows from
        # before capture began, which reconciliation rightly reports (a snapshot loads them).
        checks_ok = all(checks.values()) or mariadb is None
        # Under FAULT=mongo-outage load runs fail on purpose; what counts is the recovery.
        return 0 if applied and (fault or not failed) and checks_ok else 1
    finally:
        if mongo is not None:
            mongo.cleanup()
        if mariadb is not None:
            mariadb.cleanup()


class _ExternalSource(SourceServer):
    """The operator's server from CDC_MYSQL_URL, for the sample workload (never started here)."""

    def __init__(self, url: str):
        self._url = SourceUrl.parse(url)

    def connect(self, **kwargs: object) -> Any:
        options: dict[str, Any] = {**self._url.connect_kwargs(), "autocommit": True}
        options.update(kwargs)
        return pymysql.connect(**options)


def _external_source() -> SourceServer:
    return _ExternalSource(os.environ["CDC_MYSQL_URL"])


def _run_audit() -> dict[str, bool]:
    """``audit_job`` once: every global check, recorded in the demo's Dagster home."""
    import dagster as dg

    from cdc_pipeline.definitions import defs

    result = defs.resolve_job_def("audit_job").execute_in_process(
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    checks: dict[str, bool] = {}
    tables = [e for e in result.get_asset_check_evaluations() if e.check_name == "matches_source"]
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name != "matches_source":
            checks[evaluation.check_name] = evaluation.passed
    if tables:
        passed = sum(e.passed for e in tables)
        checks[f"matches_source ({passed} of {len(tables)} tables)"] = passed == len(tables)
    return checks


def _summary(
    workload: Workload,
    outcome: dict[str, object],
    seconds: float,
    checks: dict[str, bool],
) -> None:
    from cdc_pipeline.core.audit.status import read_status
    from cdc_pipeline.core.settings import MongoSettings
    from cdc_pipeline.core.wal.staging import WalPaths

    settings = MongoSettings.from_env()
    status = read_status(
        WalPaths(STAGING, SOURCE_NAME), SourceUrl.parse(os.environ["CDC_MYSQL_URL"]), settings
    )
    with pymongo.MongoClient(settings.uri, serverSelectionTimeoutMS=5000) as client:
        database = client[settings.database]
        changes = database["row_changes"].count_documents({})
        mirrors = {
            name: database[name].count_documents({})
            for name in sorted(database.list_collection_names())
            if name.startswith(DATABASE)
        }
    print()
    print(f"transactions written   {workload.committed_transactions:,}")
    print(f"row events loaded      {changes:,} into {settings.redacted()} row_changes")
    print(f"mirrors                {mirrors}")
    print(
        f"load runs              {outcome['runs']} launched by the sensor,"
        f" {outcome['failed']} failed"
        + ("" if outcome["applied"] else "; NOT caught up (see .dagster_home/demo-daemon.log)")
    )
    print(f"lag                    {status.lag_seconds} s, {status.lag_transactions} transactions")
    for name, passed in sorted(checks.items()):
        print(f"check {name:<34}{'passed' if passed else 'FAILED (see the UI: make ui)'}")
    print(f"WAL                    {STAGING / SOURCE_NAME}")
    print(f"Dagster home           {DAGSTER_HOME} (make ui: the sensor's ticks, runs, checks)")
    print(f"demo finished in {seconds:.0f} s; every server it started is stopped")


if __name__ == "__main__":
    sys.exit(main())
