"""kill -9 of the pipeline through the Dagster path, at seeded instants, while a workload with
schema changes writes: during capture (scenario 1), mid-load (2), with frequent column changes
at any instant (6), and repeated restarts of everything, MongoDB and the source included (10).

Each kill takes down the stand-in daemon process with whatever it was doing: a sensor tick's
capture, a partition registration, or a ``load_batch_job`` run mid-batch. After the scenario
the pipeline runs undisturbed until caught up, and ``FaultPipeline.verify`` checks that nothing
was lost or duplicated and that every asset check passes.
"""

from __future__ import annotations

import collections
import random
import time
from pathlib import Path

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


def aimed_kills(
    pipeline: FaultPipeline, rng: random.Random, target: str, count: int
) -> collections.Counter[str]:
    """Start the daemon, wait for ``target`` ("capture", "load" or "any"), kill it inside."""
    landed: collections.Counter[str] = collections.Counter()
    for _ in range(count):
        pipeline.start()
        if target == "any":  # once it works (not while Python starts), at any instant
            pipeline.wait_for_phase("capture", timeout=20)
            time.sleep(rng.uniform(0.0, 2.5))
        elif not pipeline.wait_for_phase(target, timeout=20):
            landed["missed"] += 1
            pipeline.stop()
            continue
        elif target == "load":  # past the run's start-up, into validation and the writes
            time.sleep(rng.uniform(0.05, 0.5))
        else:
            time.sleep(rng.uniform(0.0, 0.1))
        landed[pipeline.kill9()] += 1
    return landed


@pytest.mark.parametrize(
    ("scenario", "target", "base_iterations", "schema_change_every"),
    [
        ("1 kill -9 during capture", "capture", 6, 25),
        ("2 kill -9 during a load run", "load", 6, 25),
        ("6 schema changes while killing", "any", 5, 4),
    ],
)
def test_kill9_loses_and_duplicates_nothing(
    scenario: str,
    target: str,
    base_iterations: int,
    schema_change_every: int,
    source_server: SourceServer,
    source_schema: str,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed = seed_for(scenario)
    rng = random.Random(seed)
    started = time.monotonic()
    pipeline = FaultPipeline(
        source_server, source_schema, mongo_target, mongo_db_name, tmp_path, monkeypatch
    )
    workload = workload_for(source_server, source_schema, seed, schema_change_every)
    pipeline.fix_origin()
    count = iterations(base_iterations)
    workload.start()
    try:
        landed = aimed_kills(pipeline, rng, target, count)
    finally:
        workload.stop()
        pipeline.stop()
    print(f"injection took {time.monotonic() - started:.1f} s")
    pipeline.settle()
    outcome = pipeline.verify(
        Outcome(scenario, source_server.flavor, seed, count, dict(landed)), workload, started
    )
    if target != "any":
        # A small segment loads in well under a second: some kills land after its run ended.
        assert landed[target] >= count // 3, f"too few kills landed in {target}: {landed}"
    assert landed["starting"] == 0, f"kills must land in the pipeline's work: {landed}"
    assert outcome.events_written > 200
    assert outcome.events_lost == 0 and outcome.events_duplicated == 0
    assert outcome.problems == []


def test_repeated_restarts_of_everything_lose_and_duplicate_nothing(
    source_server: SourceServer,
    source_schema: str,
    mongo_target: MongoTarget,
    killable_mongo: NxMongoServer,
    mongo_db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scenario 10: in a loop, kill -9 the daemon, MongoDB and the source at seeded instants and
    in a seeded order, restart them all, let the pipeline run a moment, and again."""
    scenario = "10 restarts of everything in a loop"
    seed = seed_for(scenario)
    rng = random.Random(seed)
    started = time.monotonic()
    pipeline = FaultPipeline(
        source_server, source_schema, mongo_target, mongo_db_name, tmp_path, monkeypatch
    )
    workload = workload_for(source_server, source_schema, seed, schema_change_every=10)
    pipeline.fix_origin()
    count = iterations(3)
    workload.start()
    try:
        for _ in range(count):
            pipeline.start()
            time.sleep(rng.uniform(2.0, 5.0))
            victims = [pipeline.kill9, killable_mongo.kill9, source_server.kill9]
            rng.shuffle(victims)
            for kill in victims:
                kill()
                time.sleep(rng.uniform(0.0, 0.3))
            source_server.restart()
            killable_mongo.restart()
    finally:
        workload.stop()
        pipeline.stop()
    print(f"injection took {time.monotonic() - started:.1f} s")
    pipeline.settle()
    injected = {"daemon, MongoDB and source killed together": count}
    outcome = pipeline.verify(
        Outcome(scenario, source_server.flavor, seed, count, injected), workload, started
    )
    assert workload.failed_transactions > 0  # the source really went away under the workload
    assert outcome.events_written > 200
    assert outcome.events_lost == 0 and outcome.events_duplicated == 0
    assert outcome.problems == []
