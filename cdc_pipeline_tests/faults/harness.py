"""The fault suite's harness: the pipeline as a killable daemon process, a seeded workload, and
the invariants checked after every scenario.

``FaultPipeline`` runs ``cdc_pipeline_tests.faults.daemon`` (sensor ticks plus the load runs they
request, as real Dagster runs on a DAGSTER_HOME of its own) against real servers; a scenario
injects its fault while a ``Workload`` writes, then ``settle`` lets the pipeline catch up
undisturbed and ``verify`` checks, against independent reads of the source and its binlog:

* every row event of the binlog is in ``row_changes`` (none lost) and no event was staged or
  applied twice (the WAL's events are counted across segments);
* every mirror equals its source table, the checkpoint equals the source's GTID state;
* every asset check of ``audit_job`` passes.

Each scenario prints one result line and appends it as JSON to ``$CDC_FAULT_RESULTS`` (when
set), which is where the README's table comes from.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.segment import read_rows
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline_tests.audit import audit
from cdc_pipeline_tests.binlog_oracle import binlog_row_events, executed_gtids
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.pipeline_checks import (
    change_log_problems,
    checkpoint_matches_source,
    mirror_differences,
)
from devtools.local_servers import SourceServer, _die_with_parent
from devtools.sample_workload import Workload

SOAK = float(os.environ.get("CDC_SOAK_FACTOR", "1"))
"""Multiplies every scenario's iteration count (``CDC_SOAK_FACTOR=10`` for a longer soak)."""


def iterations(base: int) -> int:
    return max(1, round(base * SOAK))


def seed_for(name: str) -> int:
    """``CDC_TEST_SEED`` replays a run; otherwise a fresh seed, printed by the scenario."""
    fixed = os.environ.get("CDC_TEST_SEED")
    return int(fixed) if fixed else random.randrange(2**32)


@dataclass
class Outcome:
    scenario: str
    source: str
    seed: int
    iterations: int
    injected: dict[str, int] = field(default_factory=dict)
    transactions: int = 0
    schema_changes: int = 0
    events_written: int = 0
    events_lost: int = 0
    events_duplicated: int = 0
    segments: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    recovery_median: float | None = None
    recovery_max: float | None = None
    """Real-daemon scenarios: seconds from each restart to the start of the next successful
    load run (median and max), its budget, and the latest end of such a run."""
    recovery_budget: float | None = None
    loaded_max: float | None = None

    def report(self) -> None:
        print(
            f"{self.scenario} on {self.source} (seed {self.seed}): {self.iterations} iterations,"
            f" injected {self.injected}, {self.transactions} transactions"
            f" ({self.schema_changes} schema changes), {self.events_written} row events written,"
            f" {self.events_lost} lost, {self.events_duplicated} duplicated, {self.segments}"
            f" segments, {self.seconds:.0f} s"
            + (
                f", restart to the next successful load's start median {self.recovery_median} s,"
                f" max {self.recovery_max} s (budget {self.recovery_budget:g} s), its end at"
                f" most {self.loaded_max} s"
                if self.recovery_budget
                else ""
            )
            + f"; problems: {self.problems or 'none'}"
        )
        target = os.environ.get("CDC_FAULT_RESULTS")
        if target:
            with open(target, "a") as handle:
                handle.write(json.dumps(asdict(self)) + "\n")


class CheckedPipeline:
    """What every fault scenario checks at its end, whatever runs the pipeline: the servers,
    the test's schema and MongoDB database, its staging folder and its CDC_* variables."""

    def __init__(
        self, server: SourceServer, schema: str, mongo: MongoTarget, database: str, tmp_path: Path
    ):
        self.server, self.schema, self.mongo, self.database = server, schema, mongo, database
        self.env = {
            "CDC_MYSQL_URL": server.url,
            "CDC_MONGO_URI": mongo.uri,
            "CDC_MONGO_DB": database,
            "CDC_MONGO_COMPAT": mongo.compat,
            "CDC_STAGING_DIR": str(tmp_path / "staging"),
            "CDC_INCLUDE_TABLES": f"{schema}.*",
            "CDC_SERVER_ID": str(random.randint(10_000, 2**31)),
            "CDC_TICK_MAX_SECONDS": "2",
            "CDC_SEGMENT_MAX_EVENTS": "400",
            "CDC_BREAKER_PROBE_SECONDS": "3",
            "CDC_MONGO_RETRY_SECONDS": "3",
        }
        self.paths = WalPaths(Path(self.env["CDC_STAGING_DIR"]), "default")
        self.origin = ""

    def fix_origin(self) -> str:
        """Capture's starting point, before the workload writes anything."""
        capture_once(CaptureSettings.from_env(self.env))
        self.origin = json.loads(self.paths.origin.read_text())["gtid"]
        return self.origin

    def loaded_something(self) -> bool:
        with self.mongo.client() as client:
            return client[self.database]["cdc_checkpoints"].find_one({"_id": "default"}) is not None

    def drained(self) -> bool:
        with self.mongo.client() as client:
            checkpoint = client[self.database]["cdc_checkpoints"].find_one({"_id": "default"})
        if checkpoint is None:
            return False
        applied = GtidSet.parse(checkpoint["gtid"], self.server.flavor)  # type: ignore[arg-type]
        return applied == executed_gtids(self.server)

    def verify(
        self,
        outcome: Outcome,
        workload: Workload | None = None,
        started: float | None = None,
        report: bool = True,
    ) -> Outcome:
        """Check every invariant; fill the outcome's figures and problems. The audit runs with
        this pipeline's CDC_* variables in the environment. ``report=False``: the caller reports
        (the real-daemon scenario reports one outcome per kill target instead)."""
        if started is not None:
            outcome.seconds = time.monotonic() - started
            print(f"scenario and settling took {outcome.seconds:.1f} s")
        if workload is not None:
            outcome.transactions = workload.committed_transactions
            outcome.schema_changes = workload.schema_changes
        expected = binlog_row_events(self.server, self.origin, self.schema)
        outcome.events_written = len(expected)
        segments = list_segments(self.paths)
        outcome.segments = len(segments)
        staged = collections.Counter(
            row["event_id"] for path in segments for row in read_rows(path) if row["op"] != "ddl"
        )
        outcome.events_duplicated = sum(count - 1 for count in staged.values() if count > 1)
        with self.mongo.client(tz_aware=True) as client:
            database = client[self.database]
            applied = {
                document["_id"]
                for document in database["row_changes"].find({"schema": self.schema}, {"_id": 1})
            }
            outcome.events_lost = sum(1 for event_id, _, _ in expected if event_id not in applied)
            outcome.problems += change_log_problems(expected, database, self.schema)
            sink = self.mongo.sink(database)
            outcome.problems += mirror_differences(self.server, self.schema, sink)
            matches, have, want = checkpoint_matches_source(self.server, database)
            if not matches:
                outcome.problems.append(f"checkpoint {have} != source {want}")
        print(f"invariants checked at {time.monotonic() - (started or 0):.1f} s")
        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.env.items():
                patch.setenv(name, value)
            evaluations = audit()
        for name, evaluation in evaluations.items():
            if not evaluation.passed:
                outcome.problems.append(f"check {name} failed: {dict(evaluation.metadata)}")
        if report:
            outcome.report()
        return outcome


class FaultPipeline(CheckedPipeline):
    """The pipeline of one scenario run by the stand-in daemon (``faults/daemon.py``): its own
    staging folder, DAGSTER_HOME and daemon process."""

    def __init__(
        self,
        server: SourceServer,
        schema: str,
        mongo: MongoTarget,
        database: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        **settings: str,
    ):
        super().__init__(server, schema, mongo, database, tmp_path)
        self.home = tmp_path / "dagster_home"
        self.home.mkdir()
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        # Create the instance's storage here, once: a kill of the daemon's first start would
        # otherwise leave SQLite tables half made (Dagster's own first-run migration).
        dg.DagsterInstance.from_config(str(self.home)).dispose()
        self.log = tmp_path / "daemon.log"
        self.env.update(
            {
                "CDC_FAULT_PHASE": str(tmp_path / "phase.json"),
                "CDC_FAULT_TICK_SECONDS": "0.3",
                "DAGSTER_HOME": str(self.home),
                **settings,
            }
        )
        self.paths = WalPaths(Path(self.env["CDC_STAGING_DIR"]), "default")  # may be overridden
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)  # audit() and capture_once in this process
        self.process: subprocess.Popen[bytes] | None = None
        self.origin = ""

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cdc_pipeline_tests.faults.daemon"],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )

    def phase(self) -> str:
        try:
            data = json.loads(Path(self.env["CDC_FAULT_PHASE"]).read_text())
        except (OSError, ValueError):
            return "starting"
        if self.process is None or data.get("pid") != self.process.pid:
            return "starting"
        return str(data["phase"]).split(" ")[0]

    def kill9(self) -> str:
        """Kill the daemon (and the run it is executing); return the phase it was in."""
        assert self.process is not None
        phase = self.phase()
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return phase

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill9()

    def wait_for_phase(self, wanted: str, timeout: float = 30.0) -> bool:
        """Poll the daemon's phase mark every 2 ms (a segment commit lasts a few ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.phase() == wanted:
                return True
            time.sleep(0.002)
        return False

    def settle(self, timeout: float = 180.0) -> None:
        """Run undisturbed until MongoDB holds everything the source executed, then stop."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        deadline = time.monotonic() + timeout
        while not self.drained():
            if time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"the pipeline did not catch up in {timeout:.0f} s:\n{tail}")
            time.sleep(0.5)
        self.stop()


def workload_for(
    server: SourceServer, schema: str, seed: int, schema_change_every: int = 0
) -> Workload:
    workload = Workload(
        server,
        schema,
        seed=seed,
        max_rows=6,
        pause_seconds=0.12,
        schema_change_every=schema_change_every,
    )
    workload.create_tables()
    return workload
