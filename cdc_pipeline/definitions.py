"""The one Dagster code location of cdc_pipeline (``dagster ... -m cdc_pipeline.definitions``).

Nothing here reads the environment at import time: the resources read their CDC_* variables
when a run or a tick needs them, so secrets never appear in the UI's run configs.
"""

import dagster as dg

from cdc_pipeline.defs.capture import binlog_capture_sensor
from cdc_pipeline.defs.catch_up import catch_up_job
from cdc_pipeline.defs.checks import build_audit, build_checks
from cdc_pipeline.defs.load import MONGO_BATCH, load_batch_job, load_segment
from cdc_pipeline.defs.resources import AuditResource, MongoSinkResource, SourceResource
from cdc_pipeline.defs.snapshot import snapshot_job
from cdc_pipeline.defs.tables import captured_tables, table_specs

tables = captured_tables()
checks = build_checks(tables)
audit_job, audit_schedule = build_audit(checks)

defs = dg.Definitions(
    assets=[load_segment, *table_specs(tables, MONGO_BATCH)],
    asset_checks=checks,
    jobs=[load_batch_job, catch_up_job, audit_job, snapshot_job],
    sensors=[binlog_capture_sensor],
    schedules=[audit_schedule],
    resources={
        "source": SourceResource(),
        "mongo": MongoSinkResource(),
        "audit": AuditResource(),
    },
)
