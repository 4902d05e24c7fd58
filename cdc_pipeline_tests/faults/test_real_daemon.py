"""kill -9 of the real Dagster processes, with PostgreSQL storage, at seeded instants.

The pipeline runs as production runs it: ``dagster-daemon run``, a code server (``dagster api
grpc``), ``dagster-webserver``, the default run launcher (each load run a subprocess of the code
server), ``dagster.postgres.yaml`` on a real PostgreSQL server, ``binlog_capture_sensor`` turned
on. While a workload writes (a column added, renamed, retyped or dropped every 25 transactions),
the kills rotate over the targets, each aimed with the phase marks of ``faults/marks``:

* scenario 1, the code server, where the sensor captures: inside a segment's commit or a tick;
* scenario 2, a run worker alone: between a load's first change-log write and its checkpoint,
  or anywhere in the load;
* scenario 6, the daemon alone, at any instant;
* scenario 10, everything together: the daemon, the code server with its run workers and the
  webserver (as a kill of ``dagster dev``'s process group does), every other time MongoDB and
  the source too, aimed at a load's writes;
* scenario 3, MongoDB killed and restarted after 0.5 to 6 s, every other time during a load's
  writes.

After each kill the killed processes start again at once, and the time until the next load run
succeeds is measured: at most two sensor intervals, or a dead run is holding the loader's queue
slot. Afterwards the pipeline runs undisturbed until caught up, and every invariant is checked:
no row event lost or duplicated, every mirror equal to its source, the checkpoint equal to the
source, every ``audit_job`` check passing. The two sources run side by side, each with its own
MongoDB server, PostgreSQL database and Dagster processes.
"""

from __future__ import annotations

import collections
import os
import queue
import random
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.faults.harness import (
    CheckedPipeline,
    Outcome,
    iterations,
    seed_for,
    workload_for,
)
from cdc_pipeline_tests.faults.real_dagster import RealDagster
from devtools.local_servers import NxMongoServer, SourceServer, new_data_dir
from devtools.postgres import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SENSOR_SECONDS = 10
"""The capture sensor's interval in these scenarios (production default 30 s): short enough for
the suite, long enough that a Dagster process restarts well inside two of them."""
BUDGET_SECONDS = 2 * SENSOR_SECONDS
SCENARIOS = {
    "code_server": "1 code server killed during capture (real daemon)",
    "run_worker": "2 run worker killed during a load (real daemon)",
    "mongo": "3 MongoDB killed and restarted (real daemon)",
    "daemon": "6 daemon killed while the schema changes (real daemon)",
    "all": "10 everything killed together (real daemon)",
}


class MainThread:
    """Runs calls from the kill threads on the test's main thread. A server or Dagster process
    dies with the thread that started it (``PR_SET_PDEATHSIG``), so every start and restart
    must come from the thread that outlives the scenario."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()

    def call(self, function: Callable[[], Any]) -> Any:
        if threading.current_thread() is threading.main_thread():
            return function()
        future: Future[Any] = Future()
        self.calls.put((function, future))
        return future.result()

    def serve(self, threads: list[threading.Thread]) -> None:
        """Run queued calls until every thread has ended."""
        while any(thread.is_alive() for thread in threads) or not self.calls.empty():
            try:
                function, future = self.calls.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                future.set_result(function())
            except BaseException as error:
                future.set_exception(error)


MAIN = MainThread()


@dataclass
class Kill:
    target: str
    landed: str
    recovery: float | None
    """Seconds from the restart (or the kill, when nothing had to be restarted) to the end of
    the next successful load run; None when none came within the wait."""


class RealPipeline(CheckedPipeline):
    """One source's pipeline on the real Dagster processes, with its own MongoDB server."""

    def __init__(
        self,
        server: SourceServer,
        schema: str,
        tmp_path: Path,
        postgres: PostgresServer,
    ):
        self.mongo_server = NxMongoServer(new_data_dir("nx-27017"))
        self.mongo_server.start()
        mongo = MongoTarget(uri=self.mongo_server.uri, server=self.mongo_server)
        super().__init__(server, schema, mongo, f"cdc_{uuid.uuid4().hex[:8]}", tmp_path)
        self.env["CDC_BREAKER_PROBE_SECONDS"] = str(SENSOR_SECONDS)
        database = f"dagster_{uuid.uuid4().hex[:8]}"
        postgres.create_database(database)
        self.real = RealDagster.create(
            tmp_path / "dagster", postgres.dagster_env(database), self.env, SENSOR_SECONDS
        )
        self.kills: list[Kill] = []
        self.timeline: list[str] = []
        self._instance: dg.DagsterInstance | None = None

    @property
    def instance(self) -> dg.DagsterInstance:
        if self._instance is None:
            self._instance = self.real.instance()
        return self._instance

    def start(self) -> None:
        self.real.start()
        self.real.start_sensor()

    def stop(self) -> None:
        self.real.stop()
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None

    def cleanup(self) -> None:
        self.stop()
        self.mongo_server.cleanup()

    def next_load(self, since: float, timeout: float = 120.0) -> float | None:
        """Seconds from ``since`` (Unix time) to the end of the first load run that succeeded
        after it; None if none did within ``timeout``."""
        deadline = time.monotonic() + timeout
        after = datetime.fromtimestamp(since, UTC)
        while time.monotonic() < deadline:
            records = self.instance.get_run_records(
                filters=dg.RunsFilter(job_name="load_batch_job", updated_after=after)
            )
            done = [
                r
                for r in records
                if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
                and r.end_time is not None
                and r.end_time > since
            ]
            if done:
                first = min(done, key=lambda r: r.end_time or 0.0)
                self.timeline.append(
                    f"run {first.dagster_run.tags.get('dagster/partition')}: created"
                    f" {first.create_timestamp.timestamp() - since:+.1f} started"
                    f" {(first.start_time or since) - since:+.1f} ended"
                    f" {(first.end_time or since) - since:+.1f} s"
                )
                return (first.end_time or since) - since
            time.sleep(0.25)
        return None

    def settle(self, timeout: float = 300.0) -> None:
        """Run undisturbed until MongoDB holds everything the source executed, then stop."""
        self.real.start()
        deadline = time.monotonic() + timeout
        while not self.drained():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the pipeline did not catch up in {timeout:.0f} s; logs in"
                    f" {self.real.home.parent / 'logs'}"
                )
            time.sleep(0.5)
        self.stop()

    # -- the kills ---------------------------------------------------------------------------
    def _alive(self, pid: int | None) -> bool:
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _wait_for(self, role: str, phases: tuple[str, ...], timeout: float = 60.0) -> int | None:
        """A live process of ``role`` in one of ``phases``: its pid (None after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            phase, pid = self.real.phase(role)
            if phase in phases and self._alive(pid):
                return pid
            time.sleep(0.002)
        return None

    def kill(self, target: str, rng: random.Random, turn: int) -> Kill:
        """One seeded kill of ``target``, the restart of what was killed, and the time until
        the next successful load."""
        real = self.real
        if target == "code_server":
            phase = "commit" if turn % 2 else "capture"
            pid = self._wait_for("capture", (phase,))
            time.sleep(rng.uniform(0.0, 0.004 if phase == "commit" else 0.3))
            landed = real.phase("capture")[0] if pid == real.processes["code_server"].pid else "?"
            real.kill9("code_server")
            restarted = time.time()
            MAIN.call(lambda: real.start("code_server"))
        elif target == "run_worker":
            phase = "writing" if turn % 2 else "load"
            pid = self._wait_for("load", (phase,))
            if pid is None:
                return Kill(target, "missed", self.next_load(time.time()))
            time.sleep(rng.uniform(0.0, 0.05 if phase == "writing" else 0.3))
            landed = self.real.phase("load")[0]
            os.kill(pid, signal.SIGKILL)
            restarted = time.time()
        elif target == "daemon":
            time.sleep(rng.uniform(0.0, SENSOR_SECONDS))
            landed = "any"
            real.kill9("daemon")
            restarted = time.time()
            MAIN.call(lambda: real.start("daemon"))
        elif target == "mongo":
            aimed = turn % 2 == 1 and self._wait_for("load", ("writing",)) is not None
            if not aimed:
                time.sleep(rng.uniform(0.0, 3.0))
            self.mongo_server.kill9()
            landed = "writing" if aimed and real.phase("load")[0] == "writing" else "any"
            time.sleep(rng.uniform(0.5, 6.0))
            MAIN.call(self.mongo_server.restart)
            restarted = time.time()
        else:  # all
            aimed = self._wait_for("load", ("writing",), timeout=30) is not None
            landed = real.phase("load")[0] if aimed else "any"
            real.kill9("all")
            if turn % 2:
                victims = [self.mongo_server, self.server]
                rng.shuffle(victims)
                for victim in victims:
                    victim.kill9()
                    time.sleep(rng.uniform(0.0, 0.3))
                MAIN.call(self.server.restart)
                MAIN.call(self.mongo_server.restart)
                landed += " +MongoDB +source"
            restarted = time.time()
            MAIN.call(real.start)
        for role in ("capture", "load"):  # a dead process's last mark must not aim the next kill
            (real.marks / f"{role}.json").unlink(missing_ok=True)
        kill = Kill(target, landed, self.next_load(restarted))
        self.kills.append(kill)
        return kill


def _run_kills(pipeline: RealPipeline, seed: int, per_target: int, errors: list[str]) -> None:
    rng = random.Random(seed)
    targets = ["code_server", "run_worker", "daemon", "all"]
    try:
        MAIN.call(pipeline.start)
        if pipeline.next_load(time.time() - 1, timeout=180) is None:
            raise AssertionError("no load run succeeded after the start")
        for turn in range(per_target):
            order = list(targets)
            rng.shuffle(order)
            if turn % 3 == 0:
                order.append("mongo")
            for target in order:
                kill = pipeline.kill(target, rng, turn)
                detail = pipeline.timeline[-1] if pipeline.timeline else ""
                print(f"{pipeline.server.flavor}: {kill} {detail}", flush=True)
    except BaseException as error:  # reported by the test after both threads end
        errors.append(f"{pipeline.server.flavor}: {type(error).__name__}: {error}")


def summarize(pipeline: RealPipeline, seed: int, workload_stats: dict[str, int]) -> list[Outcome]:
    """One outcome line per scenario (kill target), with its recovery times."""
    outcomes = []
    by_target: dict[str, list[Kill]] = collections.defaultdict(list)
    for kill in pipeline.kills:
        by_target[kill.target].append(kill)
    for target, kills in by_target.items():
        times = [kill.recovery for kill in kills if kill.recovery is not None]
        injected = dict(collections.Counter(kill.landed for kill in kills))
        outcome = Outcome(SCENARIOS[target], pipeline.server.flavor, seed, len(kills), injected)
        outcome.recovery_median = round(statistics.median(times), 1) if times else None
        outcome.recovery_max = round(max(times), 1) if times else None
        outcome.recovery_budget = BUDGET_SECONDS
        outcome.transactions = workload_stats["transactions"]
        outcome.schema_changes = workload_stats["schema_changes"]
        outcomes.append(outcome)
    return outcomes


@pytest.mark.timeout(2400)
def test_kill9_of_the_real_dagster_processes_loses_and_stalls_nothing(
    request: pytest.FixtureRequest,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    flavors = [name for name in ("mariadb", "mysql") if name in _sources()]
    seed = seed_for("real daemon")
    print(f"seed {seed}; sensor interval {SENSOR_SECONDS} s; sources {flavors}")
    started = time.monotonic()
    per_target = iterations(10)
    pipelines, workloads = [], []
    for index, flavor in enumerate(flavors):
        server: SourceServer = request.getfixturevalue(f"{flavor}_server")
        schema = f"t_{uuid.uuid4().hex[:10]}"
        server.execute(f"CREATE DATABASE `{schema}`")
        pipeline = RealPipeline(server, schema, tmp_path / flavor, postgres_server)
        pipelines.append(pipeline)
        workload = workload_for(server, schema, seed + index, schema_change_every=25)
        workloads.append(workload)
        pipeline.fix_origin()
    errors: list[str] = []
    threads = [
        threading.Thread(target=_run_kills, args=(pipeline, seed + index, per_target, errors))
        for index, pipeline in enumerate(pipelines)
    ]
    try:
        for workload in workloads:
            workload.start()
        for thread in threads:
            thread.start()
        MAIN.serve(threads)
        for thread in threads:
            thread.join()
        for workload in workloads:
            workload.stop()
        assert errors == []
        print(f"injection took {time.monotonic() - started:.1f} s")
        for pipeline, workload in zip(pipelines, workloads, strict=True):
            pipeline.settle()
            stats = {
                "transactions": workload.committed_transactions,
                "schema_changes": workload.schema_changes,
            }
            checked = pipeline.verify(
                Outcome("real daemon: all kills", pipeline.server.flavor, seed, 0),
                workload,
                started,
            )
            for outcome in summarize(pipeline, seed, stats):
                outcome.events_written = checked.events_written
                outcome.events_lost, outcome.events_duplicated = (
                    checked.events_lost,
                    checked.events_duplicated,
                )
                outcome.segments, outcome.seconds = checked.segments, checked.seconds
                outcome.problems = checked.problems
                outcome.report()
            assert checked.events_written > 500
            assert checked.events_lost == 0 and checked.events_duplicated == 0
            assert checked.problems == []
            for target in ("code_server", "run_worker", "daemon", "all"):
                count = sum(kill.target == target for kill in pipeline.kills)
                assert count >= per_target, f"{target}: only {count} kills"
            slow = [
                kill
                for kill in pipeline.kills
                if kill.recovery is None or kill.recovery > BUDGET_SECONDS
            ]
            assert slow == [], f"loading did not resume within {BUDGET_SECONDS} s: {slow}"
    finally:
        for workload in workloads:
            workload.stop()
        for pipeline in pipelines:
            pipeline.cleanup()


def _sources() -> list[str]:
    return [
        name.strip()
        for name in os.environ.get("CDC_TEST_SOURCES", "mariadb,mysql").split(",")
        if name.strip()
    ]
