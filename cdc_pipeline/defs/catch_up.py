"""``catch_up_job``: capture until caught up with the source, then load everything pending.

For CI and cron: ``dagster job execute -m cdc_pipeline.definitions -j catch_up_job`` (or, with
the checks and without a Dagster instance, ``cdc-pipeline catch-up``). It runs the same code as
the sensor and the load runs (``capture_once``, ``run_load``), registers the partitions of the
segments it captured, and reports them as materialized. A failure is the project's one
sentence (a ``dg.Failure``), printed as one line by ``sentence_console``.
"""

import dagster as dg

from cdc_pipeline.core.audit.explain import explain_failure
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.errors import CdcError
from cdc_pipeline.core.load.loader import SegmentLoad, run_load
from cdc_pipeline.core.settings import mongo_where, source_name_from_env
from cdc_pipeline.core.wal.validation import ValidatedSegment
from cdc_pipeline.defs.console import sentence_console
from cdc_pipeline.defs.load import load_metadata, log_segment_materializations
from cdc_pipeline.defs.load_runs import loader_tags
from cdc_pipeline.defs.partitions import register_segments
from cdc_pipeline.defs.resources import MongoSinkResource, SourceResource
from cdc_pipeline.defs.tables import table_materializations
from cdc_pipeline.defs.wiring import SINGLE, SourceWiring

MAX_TICKS = 10_000


_HINT = ", then run catch_up_job again: what was captured waits in the WAL"


def _catch_up(
    context: dg.OpExecutionContext,
    source: SourceResource,
    mongo: MongoSinkResource,
    w: SourceWiring,
) -> dg.Output[None]:
    settings = source.capture_settings()
    paths = source.wal_paths()
    captured = 0
    for _ in range(MAX_TICKS):
        result = capture_once(settings)
        if result.manifest is None:
            break
        captured += 1
        context.log.info(result.summary())
        if result.error:
            raise dg.Failure(description=result.error)
    register_segments(context.instance, paths, w.partitions)
    registered = set(context.instance.get_dynamic_partitions(str(w.partitions.name)))

    def validated(segment: ValidatedSegment) -> None:
        log_segment_materializations(context, segment, registered, w.wal_segment)

    def report(load: SegmentLoad) -> None:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=w.mongo_batch, partition=load.partition_key, metadata=load_metadata(load)
            )
        )
        for event in table_materializations(load, paths.source):
            context.log_event(event)

    loaded = run_load(
        paths,
        mongo.mongo_settings(),
        None,
        report,
        settings.source_url,
        on_validated=validated,
        progress=context.log.info,
        mask_key=settings.governance.mask_key,
    )
    context.log.info(loaded.summary())
    return dg.Output(
        None,
        metadata={
            "segments captured": captured,
            "segments loaded": len(loaded.loaded),
            "rows loaded": sum(item.rows for item in loaded.loaded),
            "checkpoint": loaded.checkpoint.last_partition if loaded.checkpoint else "",
            "checkpoint gtid": loaded.checkpoint.gtid if loaded.checkpoint else "",
        },
    )


def build_catch_up(w: SourceWiring) -> dg.JobDefinition:
    """The source's ``catch_up_job`` (named by ``w``), in its loader slot."""

    @dg.op(
        name=w.name("catch_up"),
        description="Capture ticks until the WAL reaches the source position, then load it all.",
        required_resource_keys={w.source_key, w.mongo_key},
    )
    def catch_up(context: dg.OpExecutionContext) -> dg.Output[None]:
        source, mongo = w.source(context), w.mongo(context)
        try:
            return _catch_up(context, source, mongo, w)
        except dg.Failure:
            raise
        except Exception as error:
            sentence = explain_failure(error, mongo_where(mongo.environ()), _HINT)
            if sentence is None and isinstance(error, CdcError):
                sentence = str(error)
            if sentence is None:
                raise
            raise dg.Failure(description=sentence, allow_retries=False) from None

    @dg.job(
        name=w.name("catch_up_job"),
        description="Capture until caught up with the source, then load every pending segment.",
        # The source's loader slot, like the sensor's load runs (ordered against them in the queue).
        tags=loader_tags(w.source_name or source_name_from_env()),
        logger_defs={"console": sentence_console},
        # One step, run in the run's own process: no second interpreter to start, and its log
        # lines (the failure's sentence too) come from one process in order.
        executor_def=dg.in_process_executor,
        config={"loggers": {"console": {}}},  # Dagster uses a job's loggers only when configured
    )
    def catch_up_job() -> None:
        catch_up()

    return catch_up_job


catch_up_job = build_catch_up(SINGLE)
