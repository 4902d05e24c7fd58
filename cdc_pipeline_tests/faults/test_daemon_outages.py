"""Source outages while the pipeline runs through the stand-in daemon and a workload writes: the
source killed -9 and restarted (scenario 4); and the binlog connection dropped while the server
stays up, its dump thread KILLed (5: the library would silently reconnect and replay; capture
must refuse that and resume exactly). MongoDB's short outages (3) run under the real Dagster
processes (``test_real_daemon.py``), its long outage here (``test_mongo_outage.py``). In 4 and 5
capture reads the source through a ``SlowLink`` and the fault is aimed while a 2,000-row
transaction is in flight on it, so the stream breaks inside the transaction (a transaction is
never split: the half read must be dropped and read again whole). Without the link the break
never lands inside one: see ``proxy.py``.

The daemon runs throughout; failed ticks and failed runs are part of the scenario. Afterwards it
runs undisturbed until caught up and ``FaultPipeline.verify`` checks every invariant.
"""

from __future__ import annotations

import collections
import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest

from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.faults.harness import (
    FaultPipeline,
    Outcome,
    iterations,
    seed_for,
    workload_for,
)
from cdc_pipeline_tests.faults.proxy import SlowLink
from devtools.local_servers import SourceServer

pytestmark = [pytest.mark.integration, pytest.mark.faults]

Injector = Callable[[random.Random, collections.Counter[str]], None]


BULK_ROWS = 2_000
"""One transaction of this many rows takes capture a few tenths of a second to read: a fault
aimed just after its read began lands inside a transaction, where it tests something."""


class BulkWriter:
    """Writes one large transaction into ``<schema>.bulk`` per call (ids never reused)."""

    def __init__(self, server: SourceServer, schema: str):
        self.server, self.table, self.next_id = server, f"`{schema}`.bulk", 1
        server.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (id INT PRIMARY KEY, payload VARCHAR(40))"
        )

    def write(self) -> None:
        rows = ", ".join(
            f"({self.next_id + n}, 'row {self.next_id + n} of a large transaction')"
            for n in range(BULK_ROWS)
        )
        self.server.execute(f"INSERT INTO {self.table} VALUES {rows}")
        self.next_id += BULK_ROWS


def reading_thread(server: SourceServer) -> int | None:
    """The id of the source's binlog dump thread, if one is running."""
    rows = server.execute(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'"
    )
    return int(rows[0][0]) if rows else None


def in_flight(link: SlowLink, rng: random.Random) -> bool:
    """Wait until a large transaction is on its way through the link, then a little more."""
    if not link.wait_for_flow(20_000, timeout=10):
        return False
    time.sleep(rng.uniform(0.0, 0.15))  # the 2,000 rows take about 0.6 s through the link
    return True


def source_crashes(server: SourceServer, bulk: BulkWriter, link: SlowLink) -> Injector:
    """The source killed -9 and its link reset while a large transaction is in flight."""

    def inject(rng: random.Random, done: collections.Counter[str]) -> None:
        bulk.write()
        aimed = in_flight(link, rng)
        server.kill9()
        if link.cut() and aimed:
            done["source killed -9 while capture read a large transaction"] += 1
        else:
            done["source killed -9 between reads"] += 1
        time.sleep(rng.uniform(0.2, 2.0))
        server.restart()
        time.sleep(rng.uniform(0.5, 2.0))

    return inject


def dump_thread_kills(server: SourceServer, bulk: BulkWriter, link: SlowLink) -> Injector:
    """The binlog connection reset while a large transaction is in flight, its dump thread
    KILLed; the server stays up."""

    def inject(rng: random.Random, done: collections.Counter[str]) -> None:
        bulk.write()
        aimed = in_flight(link, rng)
        thread_id = reading_thread(server)
        if link.cut() and aimed:
            done["binlog connection dropped during a read"] += 1
        if thread_id is not None:
            with contextlib.suppress(pymysql.err.OperationalError):  # it may have ended
                server.execute(f"KILL {thread_id}")
        time.sleep(rng.uniform(0.5, 1.5))

    return inject


AIMED_AT = {
    "4": "source killed -9 while capture read a large transaction",
    "5": "binlog connection dropped during a read",
}


@pytest.mark.parametrize(
    ("scenario", "base_iterations"),
    [
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
    seed = seed_for(scenario)
    rng = random.Random(seed)
    started = time.monotonic()
    link = SlowLink(source_server.port)  # capture reads the source through it
    request.addfinalizer(link.close)
    through_link = {"CDC_MYSQL_URL": link.url(source_server.url)}
    pipeline = FaultPipeline(
        source_server,
        source_schema,
        mongo_target,
        mongo_db_name,
        tmp_path,
        monkeypatch,
        **through_link,
    )
    if scenario.startswith("4"):
        inject = source_crashes(source_server, BulkWriter(source_server, source_schema), link)
    else:
        inject = dump_thread_kills(source_server, BulkWriter(source_server, source_schema), link)
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
        link.full_speed()
    print(f"injection took {time.monotonic() - started:.1f} s: {dict(done)}")
    pipeline.settle()
    outcome = pipeline.verify(
        Outcome(scenario, source_server.flavor, seed, count, dict(done)), workload, started
    )
    aimed = AIMED_AT[scenario[0]]
    assert done[aimed] >= 1, f"no fault landed where it was aimed ({aimed}): {dict(done)}"
    assert outcome.events_written > 200
    assert outcome.events_lost == 0 and outcome.events_duplicated == 0
    assert outcome.problems == []
