"""``snapshot_job``: a consistent snapshot of the captured tables into the WAL (``core.snapshot``).

It writes snapshot segments and registers their partitions; the sensor's load runs (or
``catch_up_job``) load them like any other segment. Progress is logged after every segment and
the totals are the run's output metadata. Running it again after an interruption resumes.
"""

import dagster as dg

from cdc_pipeline.core.capture.snapshot import run_snapshot
from cdc_pipeline.core.capture.snapshot_plan import SnapshotProgress
from cdc_pipeline.defs.partitions import register_segments
from cdc_pipeline.defs.wiring import SINGLE, SourceWiring


class SnapshotConfig(dg.Config):
    tables: str = ""
    """Comma-separated ``schema.table`` patterns among the captured tables; empty: all of them."""


def build_snapshot(w: SourceWiring) -> dg.JobDefinition:
    """The source's ``snapshot_job`` (named by ``w``)."""

    @dg.op(
        name=w.name("take_snapshot"),
        description="Read the captured tables at one consistent point into WAL segments.",
        required_resource_keys={w.source_key},
    )
    def take_snapshot(context: dg.OpExecutionContext, config: SnapshotConfig) -> dg.Output[None]:
        source = w.source(context)
        settings = source.capture_settings()
        patterns = tuple(part.strip() for part in config.tables.split(",") if part.strip())

        def progress(step: SnapshotProgress) -> None:
            context.log.info(step.line())

        result = run_snapshot(settings, patterns, on_progress=progress)
        context.log.info(result.summary())
        register_segments(context.instance, source.wal_paths(), w.partitions)
        return dg.Output(
            None,
            metadata={
                "snapshot": result.snapshot_id,
                "gtid state": result.point_gtid or "(empty)",
                "consistency method": result.method,
                "resumed": result.resumed,
                "rows written": result.rows_written,
                "rows kept from an interrupted run": result.rows_kept_from_before,
                "segments written": result.segments_written,
                "stream segments before the snapshot": result.stream_segments,
                "recovered gtids": result.recovered or "none",
                "seconds": round(result.seconds, 1),
                "tables": dg.MetadataValue.json(result.to_dict()["tables"]),
            },
        )

    @dg.job(
        name=w.name("snapshot_job"),
        description=(
            "Consistent snapshot of the captured tables (config: tables) into WAL segments; the"
            " sensor's load runs apply them. Resumes after an interruption."
        ),
    )
    def snapshot_job() -> None:
        take_snapshot()

    return snapshot_job


snapshot_job = build_snapshot(SINGLE)
