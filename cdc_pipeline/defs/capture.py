"""``binlog_capture_sensor``: each tick captures one bounded slice of the binlog into the WAL.

Thin wiring around ``core.capture.capture_once``. The partitions it registers come from the WAL
on disk, not from this tick's result: every committed segment without a partition gets one, so a
crash between writing a segment and registering it (or a segment written by the CLI) is picked up
by the next tick. The cursor is informational only; the WAL is the truth.

When capture fails (source down, binlog purged, staging disk full), the tick still registers
and loads what the WAL already holds, logs the error, and fails when it had nothing else to do,
so the failure shows in the UI while the backlog keeps draining. The exception: a staging
folder that another server or configuration writes (``WalIdentityError``) fails the tick at
once, with nothing registered or launched: that WAL is not this pipeline's to load.

While the MongoDB breaker is open (a load run exhausted its retries), capture goes on, new
partitions are registered without runs, and at most one probe run per probe interval is
launched, for the newest partition: a load run loads every pending predecessor, so one
successful probe drains the whole backlog.

A load run whose worker died with its code server (kill -9, a lost host) stays STARTED with the
default run launcher and would hold the source's queue slot: each tick first fails such runs
(``defs.load_runs``). A load run that died leaves segments pending with no run to load them
once no new segment arrives; when nothing is queued or running for the source and segments
are pending, the sensor requests one resume run for the newest partition, at most once per
CDC_BREAKER_PROBE_SECONDS (the time is kept in the cursor).

Retention (``core.retention``): while the breaker is closed, each tick reads MongoDB's checkpoint
(3 s budget; skipped when unreachable), deletes loaded segments older than CDC_RETENTION_HOURS
(never the newest, never one whose load run is queued or running) and deletes their partitions,
so the number of partitions stays bounded.
"""

import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.errors import CaptureLockedError, CdcError, WalIdentityError
from cdc_pipeline.core.load.breaker import breaker_of
from cdc_pipeline.core.load.retention import retire_loaded, retired_partitions
from cdc_pipeline.core.settings import sensor_interval_from_env
from cdc_pipeline.core.wal.ledger import pending_count
from cdc_pipeline.core.wal.staging import partition_keys, sequence_of_partition
from cdc_pipeline.defs.load import load_batch_job
from cdc_pipeline.defs.load_runs import SOURCE_TAG, fail_dead_load_runs, loader_tags
from cdc_pipeline.defs.partitions import unregistered_keys
from cdc_pipeline.defs.wiring import SINGLE, SourceWiring

CAPTURE_INTERVAL_SECONDS = sensor_interval_from_env()


def sequences_in_flight(instance: dg.DagsterInstance, source_name: str) -> set[int]:
    """Segments whose load runs are queued or running: retention leaves them (and what follows)."""
    statuses = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=statuses, tags={SOURCE_TAG: source_name})
    )
    keys = (run.tags.get("dagster/partition") for run in runs)
    return {sequence_of_partition(key) for key in keys if key}


def build_capture_sensor(w: SourceWiring, load_job: Any) -> dg.SensorDefinition:
    """The source's ``binlog_capture_sensor`` (named by ``w``), requesting ``load_job`` runs."""
    partitions = w.partitions

    @dg.sensor(
        name=w.name("binlog_capture_sensor"),
        job=load_job,
        required_resource_keys={w.source_key, w.mongo_key},
        minimum_interval_seconds=CAPTURE_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Captures the source binlog into Parquet WAL segments (one per tick that found"
            " changes), adds a cdc_batches partition per segment and requests its load_batch_job"
            " run; while"
            " MongoDB is down it keeps capturing and sends one probe run per interval. Loaded"
            " segments older than CDC_RETENTION_HOURS are deleted with their partitions."
        ),
    )
    def binlog_capture_sensor(
        context: dg.SensorEvaluationContext, **_resources: Any
    ) -> dg.SensorResult | dg.SkipReason:
        # Called directly (tests), Dagster passes the required resources as keywords too.
        source, mongo = w.source(context), w.mongo(context)
        settings = source.capture_settings()
        retention = source.retention()  # a bad value fails the tick before capture
        mongo_settings = mongo.mongo_settings()
        paths = source.wal_paths()
        # First, before capture: a run whose worker died frees its queue slot now, so a load run
        # queued behind it starts while this tick captures.
        dead = fail_dead_load_runs(context.instance, settings.source_name)
        capture_error: CdcError | None = None
        try:
            result = capture_once(settings)
            message = result.summary()
            if result.error or result.notice:
                context.log.warning(message)
        except WalIdentityError as error:
            context.log.error(f"capture refused: {error}")
            raise
        except CdcError as error:
            # Capture cannot go on (source down, binlog purged, disk full...): what is already in
            # the WAL still gets its partitions and runs; the tick fails unless it launched some.
            capture_error = error
            context.log.error(f"capture failed: {error}")
            message = f"capture failed: {error}"
            result = None
        if dead:
            message += f"; failed {len(dead)} load runs whose worker is gone: {', '.join(dead)}"
            context.log.warning(message)
        breaker = breaker_of(paths, mongo_settings.breaker_probe_seconds)
        state = breaker.read()
        in_flight: set[int] = set()
        if state.state == "closed":
            in_flight = sequences_in_flight(context.instance, settings.source_name)
            retirement = retire_loaded(paths, mongo_settings, retention, keep=in_flight)
            message += "; " + retirement.summary()
        registered = context.instance.get_dynamic_partitions(str(partitions.name))
        for key in retired_partitions(paths, registered):  # also those a killed tick left behind
            context.instance.delete_dynamic_partition(str(partitions.name), key)
        new_keys = unregistered_keys(context.instance, paths, partitions)
        all_keys = partition_keys(paths)
        run_requests: list[dg.RunRequest] = []
        previous = _cursor(context.cursor)
        resumed_at = previous.get("resumed_at")
        if state.state == "closed":
            run_requests = [
                dg.RunRequest(
                    run_key=key, partition_key=key, tags=loader_tags(settings.source_name)
                )
                for key in new_keys
            ]
            pending = pending_count(paths)
            if (
                not run_requests
                and not in_flight
                and pending
                and _due(resumed_at, mongo_settings.breaker_probe_seconds)
            ):
                newest = all_keys[-1]
                resumed_at = datetime.now(UTC).isoformat()
                run_requests = [
                    dg.RunRequest(
                        run_key=f"resume:{newest}:{resumed_at}",
                        partition_key=newest,
                        tags={**loader_tags(settings.source_name), "cdc/resume": "true"},
                    )
                ]
                message += (
                    f"; {pending} segments pending and no load run: resuming through {newest}"
                )
        else:
            message += "; " + breaker.describe(pending_count(paths))
            if all_keys and breaker.allow_run():
                newest = all_keys[-1]
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                run_requests = [
                    dg.RunRequest(
                        run_key=f"probe:{newest}:{stamp}",
                        partition_key=newest,
                        tags={**loader_tags(settings.source_name), "cdc/probe": "true"},
                    )
                ]
                breaker.record_probe()
                message += "; launched a probe load"
        snapshot_running = isinstance(capture_error, CaptureLockedError) and "snapshot" in message
        if capture_error is not None and not new_keys and not run_requests and not snapshot_running:
            raise capture_error
        if not new_keys and not run_requests:
            return dg.SkipReason(message)
        context.log.info(message)
        cursor = {
            "last_partition": all_keys[-1] if all_keys else None,
            "captured_gtid": result.end_gtid if result else previous.get("captured_gtid"),
            "source_gtid": result.source_gtid if result else previous.get("source_gtid"),
            "sink": state.state,
            "resumed_at": resumed_at,
            "message": message,
        }
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=(
                [partitions.build_add_request(new_keys)] if new_keys else []
            ),
            cursor=json.dumps(cursor),
        )

    return binlog_capture_sensor


def _cursor(text: str | None) -> dict[str, object]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _due(last: object, interval_seconds: float) -> bool:
    if not isinstance(last, str):
        return True
    try:
        elapsed = datetime.now(UTC) - datetime.fromisoformat(last)
    except ValueError:
        return True
    return elapsed.total_seconds() >= interval_seconds


binlog_capture_sensor = build_capture_sensor(SINGLE, load_batch_job)
