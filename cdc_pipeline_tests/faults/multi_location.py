"""Several sources of one CDC_SOURCES_FILE on the real Dagster processes, for the multi-source
fault test and ``bench.multi_source``: the sources' servers and schemas (``Member``), the file,
``RealDagster`` with PostgreSQL storage (``Location``), markers timed from commit to change log,
and each source's invariants checked against its server and binlog."""

from __future__ import annotations

import collections
import contextlib
import io
import os
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from cdc_pipeline import cli
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.sources_file import find_source
from cdc_pipeline.core.wal.segment import read_rows
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline_tests.binlog_oracle import binlog_row_events, executed_gtids
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.faults.real_dagster import RealDagster
from cdc_pipeline_tests.pipeline_checks import change_log_problems, mirror_differences
from devtools.local_servers import MariaDBServer, SourceServer, new_data_dir
from devtools.postgres import PostgresServer


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
        self,
        members: list[Member],
        mongo: MongoTarget,
        postgres: PostgresServer,
        tmp: Path,
        sensor_seconds: int = 5,
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
            tmp / "dagster", postgres.dagster_env(database), self.env, sensor_seconds
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
        if member is None and action == "start":
            self.real.cli("sensor", "start", "--start-all")
        elif member is None:  # 'dagster sensor stop' takes one name
            for each in self.members.values():
                self.real.cli("sensor", "stop", f"{each.name}__binlog_capture_sensor")
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
        source's mirror (written with its change log, before the checkpoint; ``timeout`` when
        it never came)."""
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
                    # the mirror, by key: a change-log query scans the whole collection on
                    # the stand-in (no index), which slows everything once it is large
                    database = client[member.database]
                    mirror = database[self.mongo.sink(database).mirror(member.schema, "marks")]
                    found = mirror.find_one({"_id": mark}, {"_id": 1})
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
