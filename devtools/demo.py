"""``make demo``: the pipeline end to end on local servers, recorded in a Dagster home.

Starts a local MariaDB and the MongoDB stand-in nx-27017 (or uses ``CDC_MYSQL_URL`` /
``CDC_MONGO_URI`` when set), writes a small shop database with a live workload that includes a
schema change, then runs the pipeline through Dagster as the daemon would: sensor ticks of
``binlog_capture_sensor`` whose ``load_batch_job`` runs execute on the persistent instance in
``.dagster_home`` (browse them with ``make ui``), and a final ``catch_up_job``. It prints a short
summary and stops every server it started.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pymongo
import pymysql

from cdc_pipeline.core.settings import SourceUrl
from devtools.local_servers import MariaDBServer, NxMongoServer, SourceServer, new_data_dir
from devtools.sample_workload import Workload

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAGSTER_HOME = PROJECT_ROOT / ".dagster_home"
STAGING = PROJECT_ROOT / ".cdc_staging"
SOURCE_NAME = "demo"
DATABASE = "shop"


def _prepare_home() -> None:
    DAGSTER_HOME.mkdir(exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", DAGSTER_HOME / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(DAGSTER_HOME)


def _run_pipeline() -> dict[str, object]:
    import dagster as dg

    from cdc_pipeline.definitions import defs
    from cdc_pipeline.defs.capture import binlog_capture_sensor

    instance = dg.DagsterInstance.get()
    for key in instance.get_dynamic_partitions("cdc_batches"):
        if key.startswith(f"{SOURCE_NAME}-"):  # left by an earlier demo, whose WAL is gone
            instance.delete_dynamic_partition("cdc_batches", key)
    resources = defs.get_repository_def().get_top_level_resources()
    job = defs.resolve_job_def("load_batch_job")
    runs = failed = 0
    for _ in range(6):
        context = dg.build_sensor_context(
            instance=instance,
            resources={"source": resources["source"], "mongo": resources["mongo"]},
        )
        result = binlog_capture_sensor(context)
        if isinstance(result, dg.SensorResult):
            for request in result.dynamic_partitions_requests or []:
                instance.add_dynamic_partitions("cdc_batches", list(request.partition_keys or []))
            for run in result.run_requests or []:
                outcome = job.execute_in_process(
                    instance=instance,
                    partition_key=run.partition_key,
                    tags=run.tags,
                    raise_on_error=False,
                )
                runs += 1
                failed += not outcome.success
            print(f"  tick: {len(result.run_requests or [])} load runs")
        else:
            print(f"  tick: {result.skip_message}")
        time.sleep(1)
    catch_up = defs.resolve_job_def("catch_up_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    return {"runs": runs, "failed": failed, "catch_up": catch_up.success}


def main() -> int:
    started = time.monotonic()
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
        os.environ["CDC_TICK_MAX_SECONDS"] = "5"
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
        try:
            outcome = _run_pipeline()
        finally:
            workload.stop()
        outcome_tail = _run_pipeline_tail()
        checks = _run_audit()
        _summary(workload, outcome, outcome_tail, time.monotonic() - started, checks)
        # On the embedded server every check must pass; an external source may hold rows from
        # before capture began, which reconciliation rightly reports (a snapshot loads them).
        checks_ok = all(checks.values()) or mariadb is None
        return 0 if outcome["catch_up"] and outcome_tail and checks_ok else 1
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


def _run_pipeline_tail() -> bool:
    import dagster as dg

    from cdc_pipeline.definitions import defs

    result = defs.resolve_job_def("catch_up_job").execute_in_process(
        instance=dg.DagsterInstance.get(), raise_on_error=False
    )
    return bool(result.success)


def _run_audit() -> dict[str, bool]:
    """``audit_job`` once: every global check, recorded in the demo's Dagster home."""
    import dagster as dg

    from cdc_pipeline.definitions import defs

    result = defs.resolve_job_def("audit_job").execute_in_process(
        instance=dg.DagsterInstance.get(), raise_on_error=False
    )
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _summary(
    workload: Workload,
    outcome: dict[str, object],
    tail: bool,
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
        f"load runs              {outcome['runs']} ({outcome['failed']} failed), catch_up_job "
        f"{'succeeded' if outcome['catch_up'] and tail else 'FAILED'}"
    )
    print(f"lag                    {status.lag_seconds} s, {status.lag_transactions} transactions")
    for name, passed in sorted(checks.items()):
        print(f"check {name:<27}{'passed' if passed else 'FAILED (see the UI: make ui)'}")
    print(f"WAL                    {STAGING / SOURCE_NAME}")
    print(f"Dagster home           {DAGSTER_HOME} (make ui to browse the runs)")
    print(f"demo finished in {seconds:.0f} s; every server it started is stopped")


if __name__ == "__main__":
    sys.exit(main())
