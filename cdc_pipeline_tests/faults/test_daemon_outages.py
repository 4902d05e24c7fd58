"""Outages while the pipeline runs through the Dagster path and a workload writes: MongoDB
killed and restarted after short pauses (scenario 3; the long outage is
``test_mongo_outage.py``), the source killed -9 and restarted (4), and the binlog connection
dropped while the server stays up, by ``KILL`` of its dump thread (5: the library would
silently reconnect and replay; capture must refuse that and resume exactly).

The daemon runs throughout; failed ticks and failed runs are part of the scenario. Afterwards it
runs undisturbed until caught up and ``FaultPipeline.verify`` checks every invariant.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest

from cdc_pipeline.local_servers import NxMongoServer, SourceServer
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.faults.harness import (
    FaultPipeline,
    Outcome,
    iterations,
    seed_for,
    workload_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

Injector = Callable[[random.Random, collections.Counter[str]], None]


def mongo_blips(mongo: NxMongoServer) -> Injector:
    def inject(rng: random.Random, done: collections.Counter[str]) -> None:
        time.sleep(rng.uniform(1.0, 3.0))
        mongo.kill9()
        time.sleep(rng.uniform(0.5, 6.0))  # some shorter than the 3 s retry budget, some longer
        mongo.restart()
        done["MongoDB killed and restarted"] += 1

    return inject


def source_crashes(server: SourceServer) -> Injector:
    def inject(rng: random.Random, done: collections.Counter[str]) -> None:
        time.sleep(rng.uniform(1.0, 4.0))
        server.kill9()
        time.sleep(rng.uniform(0.2, 2.0))
        server.restart()
        done["source killed -9 and restarted"] += 1

    return inject


def dump_thread_kills(server: SourceServer) -> Injector:
    def inject(rng: random.Random, done: collections.Counter[str]) -> None:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            rows = server.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'"
            )
            for (thread_id,) in rows:
                try:
                    server.execute(f"KILL {int(thread_id)}")
                    done["binlog dump thread killed"] += 1
                except pymysql.err.OperationalError:
                    pass  # it ended by itself in between
            if rows:
                time.sleep(rng.uniform(0.5, 2.0))
            time.sleep(0.05)

    return inject


@pytest.mark.parametrize(
    ("scenario", "base_iterations"),
    [
        ("3 MongoDB short outages", 4),
        ("4 source killed -9 and restarted", 4),
        ("5 binlog connection dropped (KILL dump thread)", 4),
    ],
)
def test_outages_lose_and_duplicate_nothing(
    scenario: str,
    base_iterations: int,
    source_server: SourceServer,
    source_schema: str,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if scenario.startswith("3"):
        inject = mongo_blips(request.getfixturevalue("killable_mongo"))
    elif scenario.startswith("4"):
        inject = source_crashes(source_server)
    else:
        inject = dump_thread_kills(source_server)
    seed = seed_for(scenario)
    rng = random.Random(seed)
    started = time.monotonic()
    pipeline = FaultPipeline(
        source_server, source_schema, mongo_target, mongo_db_name, tmp_path, monkeypatch
    )
    workload = workload_for(source_server, source_schema, seed, schema_change_every=20)
    pipeline.fix_origin()
    count = iterations(base_iterations)
    done: collections.Counter[str] = collections.Counter()
    workload.start()
    pipeline.start()
    try:
        for _ in range(count):
            inject(rng, done)
    finally:
        workload.stop()
    print(f"injection took {time.monotonic() - started:.1f} s: {dict(done)}")
    pipeline.settle()
    outcome = pipeline.verify(
        Outcome(scenario, source_server.flavor, seed, count, dict(done)), workload, started
    )
    assert sum(done.values()) >= count
    assert outcome.events_written > 200
    assert outcome.events_lost == 0 and outcome.events_duplicated == 0
    assert outcome.problems == []
