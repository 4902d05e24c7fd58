"""A killable stand-in for the Dagster daemon, run as a subprocess by the fault tests.

``python -m cdc_pipeline_tests.faults.daemon`` with the CDC_* variables and DAGSTER_HOME set
loops as the daemon does for this pipeline: evaluate ``binlog_capture_sensor`` with its stored
cursor, add the partitions it asks for, and launch every run it requests (deduplicated by run
key) as a real ``load_batch_job`` run on the instance, one after the other, as the queue's
one-loader-per-source limit would. The whole process can be killed -9 at any instant: during
capture, between capture and registration, or mid-load.

On start it fails the runs a previous incarnation left STARTED: what Dagster's run monitoring
does for a run whose worker died (``dagster.yaml``: ``run_monitoring``), so the sensor sees no
load in flight and requests a resume run. The current phase is written to ``$CDC_FAULT_PHASE``
before each step, so a test can aim its kills and count where they landed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import dagster as dg

from cdc_pipeline.core.wal import write_json_atomically
from cdc_pipeline.definitions import defs
from cdc_pipeline.defs.capture import binlog_capture_sensor
from cdc_pipeline.defs.resources import MongoSinkResource, SourceResource

LIVE = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def note_phase(path: Path, phase: str) -> None:
    write_json_atomically(path, {"phase": phase, "pid": os.getpid(), "at": time.time()})


def fail_dead_runs(instance: dg.DagsterInstance) -> int:
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=LIVE))
    for run in runs:
        instance.report_run_failed(run, "run worker died (killed with its daemon)")
    return len(runs)


def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "source": SourceResource(url=os.environ["CDC_MYSQL_URL"]),
            "mongo": MongoSinkResource(uri=os.environ["CDC_MONGO_URI"]),
        },
    )
    result = binlog_capture_sensor(context)
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions("cdc_batches", list(request.partition_keys or []))
    return result  # type: ignore[no-any-return]


def main() -> int:
    interval = float(os.environ.get("CDC_FAULT_TICK_SECONDS", "0.5"))
    phase_file = Path(os.environ["CDC_FAULT_PHASE"])
    cursor_file = phase_file.with_name("sensor-cursor.json")
    job = defs.resolve_job_def("load_batch_job")
    with dg.DagsterInstance.get() as instance:
        note_phase(phase_file, "start")
        fail_dead_runs(instance)
        while True:
            note_phase(phase_file, "capture")
            saved = json.loads(cursor_file.read_text()) if cursor_file.exists() else {}
            cursor = saved.get("cursor")
            try:
                result = tick(instance, cursor)
            except Exception as error:  # a failed tick: the daemon logs it and ticks again
                print(f"tick failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
                note_phase(phase_file, "idle")
                time.sleep(interval)
                continue
            if isinstance(result, dg.SensorResult):
                if result.cursor is not None:
                    write_json_atomically(cursor_file, {"cursor": result.cursor})
                for request in result.run_requests or []:
                    key_tag = {"dagster/run_key": request.run_key or ""}
                    if instance.get_runs(filters=dg.RunsFilter(tags=key_tag), limit=1):
                        continue
                    note_phase(phase_file, f"load {request.partition_key}")
                    job.execute_in_process(
                        instance=instance,
                        partition_key=request.partition_key,
                        tags={**request.tags, **key_tag},
                        raise_on_error=False,
                    )
            note_phase(phase_file, "idle")
            time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
