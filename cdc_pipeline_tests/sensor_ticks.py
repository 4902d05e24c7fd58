"""One evaluation of ``binlog_capture_sensor`` as the Dagster daemon does it, for tests."""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.defs.capture import binlog_capture_sensor
from cdc_pipeline.defs.resources import MongoSinkResource, SourceResource
from devtools.local_servers import SourceServer


def capture_sensor_tick(
    instance: dg.DagsterInstance, server: SourceServer, mongo_uri: str, cursor: str | None = None
) -> dg.SensorResult | dg.SkipReason:
    """Evaluate the sensor and apply its partition requests (the daemon's part of a tick)."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "source": SourceResource(url=server.url),
            "mongo": MongoSinkResource(uri=mongo_uri),
        },
    )
    result = binlog_capture_sensor(context)
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions("cdc_batches", list(request.partition_keys or []))
    return result  # type: ignore[no-any-return]
