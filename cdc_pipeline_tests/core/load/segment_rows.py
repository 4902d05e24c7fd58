"""A segment row for the load tests: every WAL column, of one insert into ``shop.items`` by
default, in the transaction ``0-1-<seq>``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def segment_row(seq: int, index: int = 0, **changes: Any) -> dict[str, Any]:
    """Row ``index`` of transaction ``seq``, without images unless ``changes`` give them."""
    gtid = f"0-1-{seq}"
    return {
        "event_id": f"{gtid}#{index}",
        "gtid": gtid,
        "row_index": index,
        "source": "default",
        "schema": "shop",
        "table": "items",
        "op": "insert",
        "pk": None,
        "before": None,
        "after": None,
        "schema_version": "v1",
        "binlog_file": "bin.000001",
        "binlog_pos": 4 + seq,
        "committed_at": START + timedelta(seconds=seq),
        "statement": None,
    } | changes
