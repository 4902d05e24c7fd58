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
   mirror within ``BUDGET_SECONDS`` (the same marker takes a few seconds undisturbed):
   ``shop`` backlogged by one 200,000-row transaction; ``crm`` halted on a row MongoDB refuses
   (a unique index on its mirror), with ``status`` naming the halt, then resumed; ``billing``
   killed -9, then restarted; ``billing`` purged past its position, with ``status`` naming the
   lost GTIDs (a stop: its checkpoint stays at what was captured).
3. ``shop`` and ``crm`` catch up and their invariants hold again.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.wal.ledger import wal_end
from cdc_pipeline_tests.binlog_oracle import executed_gtids
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.faults.harness import seed_for, workload_for
from cdc_pipeline_tests.faults.multi_location import Location, Member, second_mariadb
from devtools.local_servers import MariaDBServer, MySQLServer
from devtools.postgres import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SENSOR_SECONDS = 5
BUDGET_SECONDS = 40.0
"""A marker on an undisturbed source reaches MongoDB in one sensor interval, a capture, a run
queued and started (a Dagster process: ~5 s here) and a load. 40 s is eight intervals: far above
that, and below what a source waiting behind another's 200,000-row load waits (~60-90 s)."""
BACKLOG_ROWS = 200_000


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
            time.sleep(15)
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
