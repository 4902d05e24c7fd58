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

from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.faults.harness import (
    FaultPipeline,
    Outcome,
    iterations,
    seed_for,
    workload_for,
)
from devtools.local_servers import NxMongoServer, SourceServer

pytestmark = [pytest.mark.integration, pytest.mark.faults]


AIMS = {
    # target: (phase waited for, delay range after it in seconds)
    "capture": ("capture", (0.0, 0.1)),  # anywhere in a tick's read
    "commit": ("commit", (0.0, 0.004)),  # inside a segment's commit (a few ms)
    "load": ("load", (0.05, 0.5)),  # past the run's start-up: validation or the writes
    "writing": ("writing", (0.0, 0.08)),  # after a change-log write, before the checkpoint
}


def aimed_kills(
    pipeline: FaultPipeline, rng: random.Random, targets: tuple[str, ...], count: int
) -> collections.Counter[str]:
    """Start the daemon, wait for the next target's phase, kill it inside; targets rotate.
    The counter holds the phase each kill really landed in (``missed``: never reached)."""
    landed: collections.Counter[str] = collections.Counter()
    for index in range(count):
        target = targets[index % len(targets)]
        pipeline.start()
        if target == "any":  # once it works (not while Python starts), at any instant
            pipeline.wait_for_phase("capture", timeout=20)
            time.sleep(rng.uniform(0.0, 2.5))
        else:
            phase, (low, high) = AIMS[target]
            if not pipeline.wait_for_phase(phase, timeout=20):
                landed["missed"] += 1
                pipeline.stop()
                continue
            time.sleep(rng.uniform(low, high))
        landed[pipeline.kill9()] += 1
    return landed


@pytest.mark.parametrize(
    ("scenario", "targets", "base_iterations", "schema_change_every"),
    [
        ("1 kill -9 during capture", ("capture", "commit"), 6, 25),
        ("2 kill -9 during a load run", ("writing", "load"), 6, 25),
        ("6 schema changes while killing", ("any",), 5, 4),
    ],
)
def test_kill9_loses_and_duplicates_nothing(
    scenario: str,
    targets: tuple[str, ...],
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
        landed = aimed_kills(pipeline, rng, targets, count)
    finally:
        workload.stop()
        pipeline.stop()
    print(f"injection took {time.monotonic() - started:.1f} s")
    pipeline.settle()
    outcome = pipeline.verify(
        Outcome(scenario, source_server.flavor, seed, count, dict(landed)), workload, started
    )
    if targets[0] != "any":
        # The aimed phase must really be hit: a kill inside a segment's commit (1), a kill
        # between a load's first change-log write and its checkpoint (2). A small segment
        # commits in milliseconds and loads in under a second, so some kills land just after.
        aimed = AIMS[targets[0]][0]
        assert landed[aimed] >= count // 4, f"too few kills landed in {aimed}: {landed}"
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
