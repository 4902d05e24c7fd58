"""Three sources in one code location (CDC_SOURCES_FILE), on the real Dagster processes.

Two MariaDB servers (``shop`` on the session's server, ``billing`` on one started here, both
with server id 1 and GTID domain 0, so their GTIDs are the same numbers) and MySQL 9.7
(``crm``), into one MongoDB server, each source in its own database. The code location is the
one production runs (``dagster api grpc -m cdc_pipeline.definitions``), with ``dagster-daemon``,
``dagster-webserver`` and PostgreSQL storage; the three sensors are turned on and every load is
a run launched by them.

1. Concurrent workloads on all three (schema changes included); then every source's invariants:
   each row event in its ``row_changes`` once, no event staged twice, every mirror equal to its
   table, the checkpoint equal to the server's GTID state, every check of its
   ``<source>__audit_job`` passing.
2. Isolation: while one source is faulted, a marker row written on each other source reaches its
   change log within ``BUDGET_SECONDS`` (the same marker takes a few seconds undisturbed):
   ``shop`` backlogged by one 200,000-row transaction; ``crm`` halted on a row MongoDB refuses
   (a unique index on its mirror), with ``status`` naming the halt, then resumed; ``billing``
   killed -9, then restarted; ``billing`` purged past its position, with ``status`` naming the
   lost GTIDs (a stop: its checkpoint stays at what was captured).
3. ``shop`` and ``crm`` catch up and their invariants hold again.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from cdc_pipeline import cli
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.sources_file import find_source
from cdc_pipeline.core.wal.ledger import wal_end
from cdc_pipeline.core.wal.segment import read_rows
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline_tests.binlog_oracle import binlog_row_events, executed_gtids
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.faults.harness import seed_for, workload_for
from cdc_pipeline_tests.faults.real_dagster import RealDagster
from cdc_pipeline_tests.pipeline_checks import change_log_problems, mirror_differences
from devtools.local_servers import MariaDBServer, MySQLServer, SourceServer, new_data_dir
from devtools.postgres import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SENSOR_SECONDS = 5
BUDGET_SECONDS = 40.0
"""A marker on an undisturbed source reaches MongoDB in one sensor interval, a capture, a run
queued and started (a Dagster process: ~5 s here) and a load. 40 s is eight intervals: far above
that, and below what a source waiting behind another's 200,000-row load waits (~60-90 s)."""
BACKLOG_ROWS = 200_000


@dataclass
class Member:
    name: str
    server: SourceServer
    schema: str
    url_env: str
    database: str
    origin: str = ""
    marks: int = 0
    arrivals: list[float] = field(default_factory=list)
    staging: Path = Path()

    @property
    def paths(self) -> WalPaths:
        return WalPaths(self.staging, self.name)


@contextlib.contextmanager
def second_mariadb() -> Iterator[MariaDBServer]:
    server = MariaDBServer(new_data_dir("mariadb"))
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
        assert not server.is_running()


def sources_yaml(members: list[Member], staging: Path, compat: str) -> str:
    lines = [
        "defaults:",
        f"  mongo_compat: {compat}",
        f"  staging_dir: {staging}",
        "  tick_max_seconds: 2",
        "  segment_max_events: 5000",
        "  breaker_probe_seconds: 5",
        "  mongo_retry_seconds: 3",
        "  reconcile_wait_seconds: 5",
        "sources:",
    ]
    for member in members:
        lines += [
            f"  - name: {member.name}",
            f"    url_env: {member.url_env}",
            f"    server_id: {random.randint(10_000, 2**31)}",
            f"    include_tables: ['{member.schema}.*']",
            f"    mongo_db: {member.database}",
        ]
    return "\n".join(lines) + "\n"


class Location:
    """The three sources' pipeline on the real Dagster processes."""

    def __init__(
        self, members: list[Member], mongo: MongoTarget, postgres: PostgresServer, tmp: Path
    ):
        self.members = {member.name: member for member in members}
        self.mongo = mongo
        staging = tmp / "staging"
        for member in members:
            member.staging = staging
        self.file = tmp / "sources.yaml"
        self.file.write_text(sources_yaml(members, staging, mongo.compat))
        self.env = {
            "CDC_SOURCES_FILE": str(self.file),
            "CDC_MONGO_URI": mongo.uri,
            **{member.url_env: member.server.url for member in members},
        }
        database = f"dagster_{uuid.uuid4().hex[:8]}"
        postgres.create_database(database)
        self.real = RealDagster.create(
            tmp / "dagster", postgres.dagster_env(database), self.env, SENSOR_SECONDS
        )
        self._instance: dg.DagsterInstance | None = None

    @property
    def instance(self) -> dg.DagsterInstance:
        if self._instance is None:
            self._instance = self.real.instance()
        return self._instance

    def settings(self, member: Member) -> CaptureSettings:
        entry = find_source(member.name, {"CDC_SOURCES_FILE": str(self.file)})
        return CaptureSettings.from_env(entry.environ({**self.env}))

    def sensor(self, action: str, member: Member | None = None) -> None:
        if member is None:
            self.real.cli("sensor", action, "--start-all" if action == "start" else "--stop-all")
        else:
            self.real.cli("sensor", action, f"{member.name}__binlog_capture_sensor")

    def stop(self) -> None:
        self.real.stop()
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None

    # -- what MongoDB holds --------------------------------------------------------------
    def checkpoint(self, member: Member) -> str | None:
        with self.mongo.client() as client:
            document = client[member.database]["cdc_checkpoints"].find_one({"_id": member.name})
        return document["gtid"] if document else None

    def drained(self, member: Member) -> bool:
        have = self.checkpoint(member)
        flavor = member.server.flavor
        return have is not None and GtidSet.parse(have, flavor) == executed_gtids(member.server)  # type: ignore[arg-type]

    def wait_drained(self, members: list[Member], timeout: float) -> float:
        started = time.monotonic()
        while not all(self.drained(member) for member in members):
            assert time.monotonic() - started < timeout, (
                f"{[m.name for m in members if not self.drained(m)]} did not catch up in"
                f" {timeout:.0f} s; logs in {self.real.home.parent / 'logs'}"
            )
            time.sleep(0.5)
        return time.monotonic() - started

    def arrivals(self, members: list[Member], timeout: float = 180.0) -> dict[str, float]:
        """Write one marker row on each of ``members`` at once; seconds until each is in its
        source's change log (``timeout`` when it never came)."""
        sent: dict[str, tuple[int, float]] = {}
        for member in members:
            member.marks += 1
            member.server.execute(
                f"INSERT INTO `{member.schema}`.marks VALUES ({member.marks}, NOW(6))"
            )
            sent[member.name] = (member.marks, time.monotonic())
        took: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        with self.mongo.client() as client:
            while len(took) < len(members) and time.monotonic() < deadline:
                for member in members:
                    if member.name in took:
                        continue
                    mark, at = sent[member.name]
                    found = client[member.database]["row_changes"].find_one(
                        {"schema": member.schema, "table": "marks", "after.id": mark}, {"_id": 1}
                    )
                    if found is not None:
                        took[member.name] = round(time.monotonic() - at, 1)
                time.sleep(0.2)
        for member in members:
            took.setdefault(member.name, timeout)
            member.arrivals.append(took[member.name])
        return took

    def status(self, member: Member) -> tuple[int, str]:
        """``cdc-pipeline --source NAME status``: exit code and what it said on stderr."""
        saved = dict(os.environ)
        err = io.StringIO()
        try:
            os.environ.update(self.env)  # the CLI makes the source's settings its environment
            with redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(["--source", member.name, "status"])
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return code, err.getvalue()

    # -- the invariants ------------------------------------------------------------------
    def invariants(self, member: Member) -> list[str]:
        problems: list[str] = []
        expected = binlog_row_events(member.server, member.origin, member.schema)
        staged = collections.Counter(
            row["event_id"]
            for path in list_segments(member.paths)
            for row in read_rows(path)
            if row["op"] != "ddl"
        )
        twice = sum(count - 1 for count in staged.values() if count > 1)
        if twice:
            problems.append(f"{twice} events staged twice")
        with self.mongo.client(tz_aware=True) as client:
            database = client[member.database]
            problems += change_log_problems(expected, database, member.schema)
            problems += mirror_differences(member.server, member.schema, self.mongo.sink(database))
        if not self.drained(member):
            problems.append(f"checkpoint {self.checkpoint(member)} is not the source's state")
        problems += self.audit(member)
        print(f"{member.name}: {len(expected)} row events checked; problems: {problems or 'none'}")
        return problems

    def audit(self, member: Member) -> list[str]:
        """``<source>__audit_job`` of the multi-source code location, in process."""
        from cdc_pipeline.definitions import build_definitions

        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.env.items():
                patch.setenv(name, value)
            defs = build_definitions()
            with dg.instance_for_test() as instance:
                result = defs.resolve_job_def(f"{member.name}__audit_job").execute_in_process(
                    instance=instance, raise_on_error=False
                )
                evaluations = result.get_asset_check_evaluations()
        assert {str(e.asset_key.path[0]) for e in evaluations} == {member.name}
        assert len(evaluations) >= 5
        return [
            f"check {e.check_name} failed: {dict(e.metadata)}" for e in evaluations if not e.passed
        ]

    def wait_for_load_run(self, member: Member, since: float, timeout: float) -> None:
        """Until a load run of ``member`` created after ``since`` (Unix time) is running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.instance.get_run_records(
                filters=dg.RunsFilter(
                    job_name=f"{member.name}__load_batch_job",
                    statuses=[dg.DagsterRunStatus.STARTED],
                )
            )
            if any(record.create_timestamp.timestamp() > since for record in records):
                return
            time.sleep(0.2)
        raise AssertionError(f"no {member.name} load run started within {timeout:.0f} s")

    def load_runs(self, member: Member) -> list[dg.DagsterRun]:
        return list(
            self.instance.get_runs(
                filters=dg.RunsFilter(
                    job_name=f"{member.name}__load_batch_job",
                    statuses=[dg.DagsterRunStatus.SUCCESS],
                )
            )
        )


def isolated(location: Location, faulted: Member, what: str, still: Any = None) -> dict[str, float]:
    """Markers on every other source while ``faulted`` is faulted: each within the budget, and
    (``still``) before the fault's own work is done."""
    others = [m for m in location.members.values() if m is not faulted]
    took = location.arrivals(others)
    print(f"while {faulted.name} {what}: markers elsewhere took {took}")
    if still is not None:
        still()
    late = {name: seconds for name, seconds in took.items() if seconds > BUDGET_SECONDS}
    assert not late, (
        f"while {faulted.name} {what}, other sources were delayed past {BUDGET_SECONDS:g} s:"
        f" {late}; logs in {location.real.home.parent / 'logs'}"
    )
    return took


def test_three_sources_in_one_location_keep_their_invariants_and_isolate_each_others_faults(
    mariadb_server: MariaDBServer,
    mysql_server: MySQLServer,
    postgres_server: PostgresServer,
    mongo_target: MongoTarget,
    tmp_path: Path,
) -> None:
    seed = seed_for("multi-source")
    random.seed(seed)
    started = time.monotonic()
    tag = uuid.uuid4().hex[:6]
    with second_mariadb() as billing_server:
        shop, billing, crm = members = [
            Member("shop", mariadb_server, f"shop_{tag}", "SHOP_MYSQL_URL", f"cdc_shop_{tag}"),
            Member("billing", billing_server, f"bill_{tag}", "BILLING_URL", f"cdc_bill_{tag}"),
            Member("crm", mysql_server, f"crm_{tag}", "CRM_MYSQL_URL", f"cdc_crm_{tag}"),
        ]
        for member in members:
            member.server.execute(
                f"CREATE DATABASE `{member.schema}`",
                f"CREATE TABLE `{member.schema}`.marks (id INT PRIMARY KEY, at DATETIME(6))",
            )
        location = Location(members, mongo_target, postgres_server, tmp_path)
        try:
            for member in members:  # capture's origin, before any workload writes
                capture_once(location.settings(member))
                end = wal_end(member.paths)
                member.origin = str(end.gtid) if end else ""
            workloads = [
                workload_for(m.server, m.schema, seed + i, schema_change_every=30)
                for i, m in enumerate(members)
            ]
            location.real.start()
            location.sensor("start")
            # 1. all three at once
            for workload in workloads:
                workload.start()
            time.sleep(25)
            for workload in workloads:
                workload.stop()
            drained = location.wait_drained(members, 240)
            print(
                f"multi-source (seed {seed}): "
                + ", ".join(f"{w.committed_transactions} transactions" for w in workloads)
                + f"; all three drained {drained:.1f} s after the workloads stopped"
            )
            for member in members:
                assert location.load_runs(member), f"no {member.name}__load_batch_job run"
                assert location.invariants(member) == []
            baseline = location.arrivals(members)
            print(f"undisturbed: markers took {baseline}")

            # 2a. shop backlogged by one large transaction
            shop.server.execute(
                f"CREATE TABLE `{shop.schema}`.big (id INT PRIMARY KEY, pad VARCHAR(40))",
                f"INSERT INTO `{shop.schema}`.big SELECT seq, REPEAT('x', 32)"
                f" FROM `{shop.schema}`.seq_1_to_{BACKLOG_ROWS}",
            )
            location.wait_for_load_run(shop, since=time.time(), timeout=180)  # its load began

            def backlog_still_loading() -> None:
                assert not location.drained(shop), (
                    "the other sources' markers arrived only once shop's backlog was loaded:"
                    " they waited for it"
                )

            what = f"loaded a {BACKLOG_ROWS:,}-row transaction"
            isolated(location, shop, what, backlog_still_loading)
            backlog = location.wait_drained([shop], 420)
            print(f"shop's {BACKLOG_ROWS:,}-row transaction was loaded {backlog:.0f} s after")

            # 2b. crm halted on a row MongoDB refuses
            crm.server.execute(
                f"CREATE TABLE `{crm.schema}`.uniq (id INT PRIMARY KEY, code VARCHAR(8))",
                f"INSERT INTO `{crm.schema}`.uniq VALUES (1, 'a')",
            )
            location.wait_drained([crm], 120)
            with mongo_target.client() as client:
                mirror = client[crm.database][
                    mongo_target.sink(client[crm.database]).mirror(crm.schema, "uniq")
                ]
                index = mirror.create_index("code", unique=True)  # an operator's rule
                crm.server.execute(f"INSERT INTO `{crm.schema}`.uniq VALUES (2, 'a')")
                deadline = time.monotonic() + 120
                while "refused" not in (said := location.status(crm))[1]:
                    assert time.monotonic() < deadline, f"crm never halted: {said}"
                    time.sleep(1)
                assert said[0] == 1, said
                print(f"crm halted: {said[1].strip()}")
                isolated(location, crm, "was halted on a row MongoDB refuses")
                mirror.drop_index(index)
            location.wait_drained([crm], 120)  # resumed by its sensor, nothing else needed

            # 2c. billing's server killed
            billing.server.kill9()
            isolated(location, billing, "was down (kill -9)")
            billing.server.start()

            # 2d. billing purged past its position
            location.wait_drained([billing], 120)
            location.sensor("stop", billing)
            billing.server.execute(
                *(
                    f"INSERT INTO `{billing.schema}`.marks VALUES ({900 + n}, NOW(6))"
                    for n in range(5)
                )
            )
            end = wal_end(billing.paths)
            assert end is not None
            lost = executed_gtids(billing.server) - end.gtid
            assert lost.count() == 5
            billing.server.purge_binlogs()
            location.sensor("start", billing)
            code, said = location.status(billing)
            assert code == 1 and lost.describe() in said, said
            print(f"billing stopped: {said.strip()}")
            isolated(location, billing, "was purged past its position")
            assert wal_end(billing.paths).gtid == end.gtid  # type: ignore[union-attr]

            # 3. the others caught up; their invariants hold
            location.wait_drained([shop, crm], 120)
            for member in (shop, crm):
                assert location.invariants(member) == []
            under_fault = [s for m in (shop, billing, crm) for s in m.arrivals[1:]]
            print(
                f"multi-source isolation (seed {seed}): undisturbed markers median"
                f" {statistics.median(baseline.values()):.1f} s; under another source's fault"
                f" median {statistics.median(under_fault):.1f} s, max {max(under_fault):.1f} s"
                f" (budget {BUDGET_SECONDS:g} s); shop's backlog loaded {backlog:.0f} s after;"
                f" {time.monotonic() - started:.0f} s in all"
            )
        finally:
            location.stop()
