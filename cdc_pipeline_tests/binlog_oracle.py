"""An independent read of the binlog, to check the WAL against: the test oracle.

Deliberately simple and separate from ``core.binlog``: a plain BinLogStreamReader from a GTID
state until the stream goes quiet, counting the row events of one schema per transaction.
"""

from __future__ import annotations

import random
import time

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import GtidEvent, HeartbeatLogEvent, MariadbGtidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc_pipeline.local_servers import SourceServer

_OPS = {WriteRowsEvent: "insert", UpdateRowsEvent: "update", DeleteRowsEvent: "delete"}


def binlog_row_events(
    server: SourceServer, start_gtid: str, schema: str, timeout: float = 120.0
) -> list[tuple[str, str, str]]:
    """``(event_id, table, op)`` for every row change of ``schema`` after ``start_gtid``."""
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": server.port, "user": "root"},
        server_id=random.randint(10_000, 2**31),
        blocking=True,
        auto_position=start_gtid,
        is_mariadb=server.flavor == "mariadb",
        only_events=[GtidEvent, MariadbGtidEvent, HeartbeatLogEvent, *_OPS],
        slave_heartbeat=1,
        enable_logging=False,
    )
    events: list[tuple[str, str, str]] = []
    gtid, index = "", 0
    deadline = time.monotonic() + timeout
    try:
        for event in stream:
            if isinstance(event, HeartbeatLogEvent):
                break  # caught up: the server had nothing more to send for a second
            if isinstance(event, GtidEvent | MariadbGtidEvent):
                gtid, index = str(event.gtid), 0
            elif event.schema == schema:
                for _ in event.rows:
                    events.append((f"{gtid}#{index}", event.table, _OPS[type(event)]))
                    index += 1
            if time.monotonic() > deadline:
                raise TimeoutError("the oracle did not reach the end of the binlog")
    finally:
        stream.close()
    return events
