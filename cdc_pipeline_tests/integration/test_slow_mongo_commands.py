"""The loader's own MongoDB client survives commands that keep the server busy for seconds.

A mirror rebuild after a column change writes the whole table in bulk commands. On a server
that runs one command at a time (mongoeco, whose upserts also cost time in proportion to the
collection's size) a long bulk holds back the driver's heartbeat; when the heartbeat times out,
pymongo clears the pool and cancels the bulk in flight (``_OperationCancelled``), and retries of
the same bulk may meet the same fate: the load failed with ``SinkUnavailableError`` while the
server kept answering. So the load must end exact with no timed-out heartbeat. Against the
session's MongoDB through ``open_sink``, the client every load uses; MariaDB only (the source
side is not what is tested). On nx-27017 and a real MongoDB the bulks take milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import monitoring

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.load.loader import load_pending
from cdc_pipeline.core.load.rebaseline import source_rebaseline
from cdc_pipeline.core.load.rebuild import BULK_CHUNK
from cdc_pipeline.core.load.sink import open_sink
from cdc_pipeline.core.settings import MongoSettings, SourceUrl
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline_tests.conftest import MongoTarget, make_capture_settings
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


class _HeartbeatFailures(monitoring.ServerHeartbeatListener):
    """Records every failed heartbeat of the clients created while it is active."""

    def __init__(self) -> None:
        self.active = True
        self.failures: list[str] = []

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        if self.active:
            self.failures.append(f"{type(event.reply).__name__} after {event.duration:.1f} s")


@pytest.fixture
def heartbeat_failures() -> Iterator[list[str]]:
    """Failed heartbeats of the MongoDB clients created during the test (pymongo listeners are
    process-wide and cannot be removed: this one is switched off afterwards)."""
    listener = _HeartbeatFailures()
    monitoring.register(listener)
    yield listener.failures
    listener.active = False


@pytest.mark.parametrize("source_server", ["mariadb"], indirect=True)
def test_a_rebuild_whose_bulk_keeps_the_server_busy_for_seconds_completes(
    source_server: SourceServer,
    source_schema: str,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
    heartbeat_failures: list[str],
) -> None:
    table = f"`{source_schema}`.wide"
    # Two full bulks: on mongoeco (idle) the first takes about 6 s, the second about 17 s, so
    # at least one heartbeat (every 10 s) waits behind it for more than 5 s.
    rows = 2 * BULK_CHUNK
    digits = " UNION ".join(f"SELECT {digit} AS n" for digit in range(10))
    source_server.execute(
        f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(40), amount DECIMAL(10,2))",
        f"INSERT INTO {table} SELECT seq, CONCAT('name ', seq), seq / 4 FROM"
        f" (SELECT a.n * 1000 + b.n * 100 + c.n * 10 + d.n + 1 AS seq"
        f" FROM ({digits}) a, ({digits}) b, ({digits}) c, ({digits}) d) s WHERE seq <= {rows}",
    )
    # Capture starts after the rows exist: the only mirror write is the rebuild's.
    settings = make_capture_settings(source_server, source_schema, tmp_path / "staging")
    capture_once(settings)
    source_server.execute(f"ALTER TABLE {table} ADD COLUMN note VARCHAR(10) DEFAULT 'n'")
    while capture_once(settings).manifest is not None:
        pass

    mongo = MongoSettings(uri=mongo_target.uri, database=mongo_db_name, compat=mongo_target.compat)
    paths = WalPaths(settings.staging_dir, settings.source_name)
    started = time.monotonic()
    with (
        source_rebaseline(SourceUrl.parse(source_server.url)) as rebaseline,
        open_sink(mongo, rebaseline=rebaseline) as sink,
    ):
        result = load_pending(paths, sink)
        mirror = sink.database[sink.mirror(source_schema, "wide")]
        assert [line for s in result.loaded for line in s.apply.ddl_applied] == [
            f"{sink.mirror(source_schema, 'wide')} rebuilt from the source ({rows} rows)"
        ]
        assert mirror.count_documents({}) == rows
        assert mirror.count_documents({"note": "n"}) == rows
    assert heartbeat_failures == [], "the server was busy, not gone"
    print(f"{mongo_target.kind}: {rows}-row rebuild loaded in {time.monotonic() - started:.1f} s")
