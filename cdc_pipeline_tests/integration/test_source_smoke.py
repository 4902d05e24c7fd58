"""Smoke test of each real source server: a row written is read back from the binlog with its GTID.

It also shows that column names come from the binlog's own metadata (binlog_row_metadata=FULL):
the column is renamed after the insert, and the old event still carries the old name.
"""

from __future__ import annotations

import random
import time

import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, XidEvent
from pymysqlreplication.row_event import WriteRowsEvent

from cdc_pipeline.core.gtid import GtidSet, parse_gtid
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


def _executed_gtids(server: SourceServer) -> str:
    query = "SELECT @@gtid_binlog_pos" if server.flavor == "mariadb" else "SELECT @@gtid_executed"
    return str(server.execute(query)[0][0])


def test_row_event_round_trips_with_gtid_and_binlog_column_names(
    source_server: SourceServer, source_schema: str
) -> None:
    source_server.execute(
        f"CREATE TABLE `{source_schema}`.people (id INT PRIMARY KEY, name VARCHAR(20))"
    )
    before = _executed_gtids(source_server)
    source_server.execute(f"INSERT INTO `{source_schema}`.people VALUES (1, 'alpha')")
    after_insert = _executed_gtids(source_server)
    source_server.execute(f"ALTER TABLE `{source_schema}`.people RENAME COLUMN name TO label")

    flavor = source_server.flavor
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": source_server.port, "user": "root"},
        server_id=random.randint(1000, 2**31),
        blocking=True,
        auto_position=before,
        is_mariadb=source_server.flavor == "mariadb",
        only_events=[GtidEvent, MariadbGtidEvent, WriteRowsEvent, XidEvent, HeartbeatLogEvent],
        only_schemas=None,
        slave_heartbeat=1,
    )
    gtid = None
    rows: list[dict[str, object]] = []
    deadline = time.monotonic() + 20
    try:
        for event in stream:
            if isinstance(event, GtidEvent | MariadbGtidEvent):
                gtid = event.gtid
            elif isinstance(event, WriteRowsEvent) and event.schema == source_schema:
                rows.extend(row["values"] for row in event.rows)
            elif isinstance(event, XidEvent) and rows:
                break
            assert time.monotonic() < deadline, "the insert never arrived in the binlog stream"
    finally:
        stream.close()

    assert rows == [{"id": 1, "name": "alpha"}]
    assert gtid is not None
    # The row's GTID is the one transaction between the two server states we read.
    new = GtidSet.parse(after_insert, flavor) - GtidSet.parse(before, flavor)
    assert new == GtidSet.of([parse_gtid(gtid)])
