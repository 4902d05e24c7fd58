"""Load runs: the tags that give each source one loader slot in the run queue, and failing the
load runs whose worker died, so a dead run never holds that slot.

Every run that loads carries ``loader_tags(source)``: the load runs the sensor requests and
``catch_up_job``; ``dagster.yaml`` limits ``cdc/loader`` to one run per value.
``binlog_capture_sensor`` calls ``fail_dead_load_runs`` at every tick. With a run launcher that
can check a worker's health (Kubernetes, Docker), Dagster's run monitoring does this and this
does nothing. With the default launcher (each run a process on the code server's host, where
the sensor runs too) monitoring cannot: a run whose worker was killed together with its code
server stays STARTED until ``max_runtime_seconds``, and every later load run of its source
waits QUEUED behind it (measured: docs/decisions.md). Failing it frees the slot; the segments
it left pending are loaded by the next load run, as after any failed load.
"""

import dagster as dg

from cdc_pipeline.core.load.run_workers import worker_gone

LOADER_TAG = "cdc/loader"
SOURCE_TAG = "cdc/source"


def loader_tags(source_name: str) -> dict[str, str]:
    """Run tags that the queue in dagster.yaml limits to one loader run per source."""
    return {LOADER_TAG: source_name, SOURCE_TAG: source_name}


def _worker(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of a run's worker and when it started, from the run's RUN_START event."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_START, limit=1
    ).records
    if not records:
        return None
    entry = records[0].event_log_entry
    pid = entry.dagster_event.pid if entry.dagster_event is not None else None
    return (pid, entry.timestamp) if pid is not None else None


def fail_dead_load_runs(instance: dg.DagsterInstance, source_name: str) -> list[str]:
    """Report every STARTED run of ``source_name`` whose worker process is gone as failed;
    returns one line per run failed."""
    if instance.run_launcher.supports_check_run_worker_health:
        return []
    failed = []
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED], tags={SOURCE_TAG: source_name}
        )
    )
    for run in runs:
        worker = _worker(instance, run.run_id)
        if worker is None or not worker_gone(*worker):
            continue
        pid = worker[0]
        instance.report_run_failed(
            run,
            f"the run's worker process (pid {pid}) is gone: it was killed, or its host or code"
            " server stopped; binlog_capture_sensor failed the run so it no longer holds the"
            " loader's queue slot. The next load run loads what it left pending (the checkpoint"
            " is written after the data, so nothing is lost or applied twice).",
        )
        partition = run.tags.get("dagster/partition", run.job_name)
        failed.append(f"{partition} (run {run.run_id[:8]}, worker pid {pid})")
    return failed
