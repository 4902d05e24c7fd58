"""An independent read of the binlog, to check the WAL against: the test oracle.

Deliberately simple and separate from ``core.binlog``: a plain BinLogStreamReader from a GTID
state until it has seen every transaction the server had executed when the read began,
counting the row events of one schema per transaction.
"""

from __future__ import annotations

import random
import time

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc_pipeline.core.gtid import GtidSet, parse_gtid
from devtools.local_servers import SourceServer

_OPS = {WriteRowsEvent: "insert", UpdateRowsEvent: "update", DeleteRowsEvent: "delete"}


def executed_gtids(server: SourceServer) -> GtidSet:
    query = "SELECT @@gtid_binlog_pos" if server.flavor == "mariadb" else "SELECT @@gtid_executed"
    return GtidSet.parse(str(server.execute(query)[0][0] or ""), server.flavor)  # type: ignore[arg-type]


def binlog_row_events(
    server: SourceServer, start_gtid: str, schema: str, timeout: float = 120.0
) -> list[tuple[str, str, str]]:
    """``(event_id, table, op)`` for every row change of ``schema`` after ``start_gtid``."""
    flavor = server.flavor
    remaining = executed_gtids(server) - GtidSet.parse(start_gtid, flavor)  # type: ignore[arg-type]
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": server.port, "user": "root"},
        server_id=random.randint(10_000, 2**31),
        blocking=True,
        auto_position=start_gtid,
        is_mariadb=flavor == "mariadb",
        only_events=[GtidEvent, MariadbGtidEvent, HeartbeatLogEvent, XidEvent, *_OPS],
        slave_heartbeat=1,
        enable_logging=False,
    )
    events: list[tuple[str, str, str]] = []
    gtid, index = "", 0
    deadline = time.monotonic() + timeout
    try:
        for event in stream:
            if isinstance(event, GtidEvent | MariadbGtidEvent):
                # Every transaction starts with its GTID event; once the last one the server
                # had when we began has started, we only need to read it to its end.
                if not remaining:
                    break
                gtid, index = str(event.gtid), 0
                remaining = remaining - GtidSet.of([parse_gtid(gtid)])
            elif isinstance(event, HeartbeatLogEvent | XidEvent):
                pass
            elif event.schema == schema:
                count = len(event.rows)
                events.extend(
                    (f"{gtid}#{index + offset}", event.table, _OPS[type(event)])
                    for offset in range(count)
                )
                index += count
            if isinstance(event, HeartbeatLogEvent | XidEvent) and not remaining:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the oracle did not reach the end; missing {remaining}")
    finally:
        stream.close()
    return events
