"""A killable stand-in for the Dagster daemon, run as a subprocess by the fault tests.

``python -m cdc_pipeline_tests.faults.daemon`` with the CDC_* variables and DAGSTER_HOME set
loops as the daemon does for this pipeline: evaluate ``binlog_capture_sensor`` with its stored
cursor, add the partitions it asks for, and launch every run it requests (deduplicated by run
key) as a real ``load_batch_job`` run on the instance, one after the other, as the queue's
one-loader-per-source limit would. The whole process can be killed -9 at any instant: during
capture, between capture and registration, or mid-load.

A run a previous incarnation left STARTED (its worker, this process, was killed) is failed by
the sensor's first tick, as under the real daemon (``defs.load_runs``); this stand-in does not
do it for the sensor. A run it left NOT_STARTED (killed between creating the run and its
RUN_START) is launched again at start, as Dagster's sensor daemon resumes a tick interrupted
before it submitted the runs it had created (``_resume_tick``, within 24 h).

The current phase is written to ``$CDC_FAULT_PHASE`` before each step, so a test can aim its
kills and count where they landed. Two marks come from inside the work, by instrumentation of
this process only (the product code is unchanged):

* ``commit`` while capture commits a segment (``SegmentWriter.commit``: footer, fsync, digest,
  rename), ``capture`` again once it returned;
* ``writing`` from a load's first change-log write (a pymongo command listener sees the first
  ``insert``/``update``/``delete`` on ``row_changes``) until its checkpoint write succeeded, then
  ``checkpointed``. A kill that lands in ``writing`` leaves applied data without its checkpoint:
  the state idempotent writes and checkpoint-after-data exist for.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import dagster as dg
from pymongo import monitoring

from cdc_pipeline.core.wal.segment import Manifest
from cdc_pipeline.core.wal.staging import write_json_atomically
from cdc_pipeline.core.wal.writer import SegmentWriter
from cdc_pipeline.definitions import defs
from cdc_pipeline.defs.capture import binlog_capture_sensor
from cdc_pipeline.defs.resources import MongoSinkResource, SourceResource

PHASE_FILE = Path(os.environ.get("CDC_FAULT_PHASE", "phase.json"))
WRITES = {"insert", "update", "delete"}
CHECKPOINTS = "cdc_checkpoints"
current_phase = ""


def note_phase(path: Path, phase: str) -> None:
    """Replace the phase file atomically (no fsync: a killed process's writes stay in the page
    cache, and a mark must cost microseconds, not an fsync, inside the work it marks)."""
    global current_phase
    current_phase = phase
    temp = path.with_name(f".tmp-{path.name}")
    temp.write_text(json.dumps({"phase": phase, "pid": os.getpid(), "at": time.time()}))
    os.replace(temp, path)


class LoadWriteMarks(monitoring.CommandListener):  # type: ignore[misc]
    """Marks ``writing`` at a load's first change-log write, ``checkpointed`` after its
    checkpoint write succeeded."""

    def __init__(self) -> None:
        self.checkpoint_writes: set[int] = set()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name, target = event.command_name, event.command.get(event.command_name)
        if name in WRITES and target == "row_changes":
            if current_phase.startswith(("load", "checkpointed")):  # a run loads several
                note_phase(PHASE_FILE, "writing " + current_phase.split(" ", 1)[-1])
        elif current_phase.startswith("writing") and (name, target) == ("update", CHECKPOINTS):
            self.checkpoint_writes.add(event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id in self.checkpoint_writes:
            self.checkpoint_writes.discard(event.request_id)
            note_phase(PHASE_FILE, current_phase.replace("writing", "checkpointed", 1))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.checkpoint_writes.discard(event.request_id)


def mark_segment_commits() -> None:
    """Wrap ``SegmentWriter.commit`` so the phase says ``commit`` while a segment is committed."""
    original = SegmentWriter.commit

    def commit(self: SegmentWriter, manifest: Manifest) -> Path:
        note_phase(PHASE_FILE, "commit")
        try:
            return original(self, manifest)
        finally:
            note_phase(PHASE_FILE, "capture")

    SegmentWriter.commit = commit  # type: ignore[method-assign]


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


def resume_unlaunched_runs(instance: dg.DagsterInstance, job: dg.JobDefinition) -> None:
    """Launch the load runs a killed incarnation created but never started, in creation order
    (the real daemon submits such runs when it resumes the interrupted tick)."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=job.name, statuses=[dg.DagsterRunStatus.NOT_STARTED])
    )
    for run in reversed(runs):  # get_runs is newest first
        instance.delete_run(run.run_id)  # replaced by the run launched for the same request
        note_phase(PHASE_FILE, f"load {run.tags.get('dagster/partition')}")
        job.execute_in_process(
            instance=instance,
            partition_key=run.tags.get("dagster/partition"),
            tags=dict(run.tags),
            raise_on_error=False,
        )


def main() -> int:
    monitoring.register(LoadWriteMarks())  # before any MongoClient exists
    mark_segment_commits()
    interval = float(os.environ.get("CDC_FAULT_TICK_SECONDS", "0.5"))
    phase_file = PHASE_FILE
    cursor_file = phase_file.with_name("sensor-cursor.json")
    job = defs.resolve_job_def("load_batch_job")
    with dg.DagsterInstance.get() as instance:
        note_phase(phase_file, "start")
        resume_unlaunched_runs(instance, job)
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
