"""The partitioned side: one run of ``load_batch_job`` per WAL segment (partition of cdc_batches).

One step materializes two assets per partition: ``wal_segment`` (the segment, validated: its
blocking check ``schema_versions_valid`` fails when the segment is damaged or its rows do not
match their schema versions, and nothing of it is written), then ``mongo_batch`` (the segment
applied, with every pending predecessor first). The segment is read from disk once: validated
and applied from that one read (``core.load.loader``). Thin wiring: the work is in ``core``.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from cdc_pipeline.core.errors import CdcError, CorruptSegmentError, SinkUnavailableError
from cdc_pipeline.core.load.breaker import breaker_of
from cdc_pipeline.core.load.loader import SegmentLoad, run_load
from cdc_pipeline.core.settings import SOURCE_VARIABLES, overlay, table_scope_from_env
from cdc_pipeline.core.wal.ledger import pending_count
from cdc_pipeline.core.wal.staging import WalPaths, sequence_of_partition, source_of_partition
from cdc_pipeline.core.wal.validation import ValidatedSegment, validate_segment
from cdc_pipeline.defs.load_history import recent_loads
from cdc_pipeline.defs.partitions import cdc_batches_partitions
from cdc_pipeline.defs.resources import MongoSinkResource, SourceResource
from cdc_pipeline.defs.tables import table_materializations

SCHEMA_CHECK = "schema_versions_valid"
WAL_SEGMENT = dg.AssetKey("wal_segment")
MONGO_BATCH = dg.AssetKey("mongo_batch")


def wal_segment_metadata(validated: ValidatedSegment) -> dict[str, Any]:
    """What a validated segment holds, for its ``wal_segment`` materialization."""
    manifest = validated.manifest
    per_table = {table: dict(ops) for table, ops in sorted(manifest.counts.items())}
    return {
        "rows": manifest.row_count,
        "ddl statements": manifest.ddl_count,
        "transactions": manifest.transaction_count,
        "gtid range": f"{manifest.first_gtid} .. {manifest.last_gtid}",
        "end gtid state": manifest.end_gtid,
        "binlog end": f"{manifest.end_binlog_file}:{manifest.end_binlog_pos}",
        "rows by table and op": dg.MetadataValue.json(per_table),
        "first committed at": manifest.first_committed_at or "",
        "last committed at": manifest.last_committed_at or "",
        "segment": dg.MetadataValue.path(str(validated.segment.path)),
    }


def _check_result(validated: ValidatedSegment) -> dg.AssetCheckResult:
    report = validated.report
    return dg.AssetCheckResult(
        asset_key=WAL_SEGMENT,
        check_name=SCHEMA_CHECK,
        passed=report.ok,
        metadata={
            "rows checked": report.rows_checked,
            "problems": report.problem_count,
            "first problems": dg.MetadataValue.json(report.problems),
            "schema versions": dg.MetadataValue.json(report.versions),
        },
    )


def load_metadata(load: SegmentLoad) -> dict[str, Any]:
    return {
        "rows": load.rows,
        "ddl statements": load.ddl,
        "rows by table and op": dg.MetadataValue.json(load.apply.counts),
        "gtid range": f"{load.first_gtid} .. {load.last_gtid}",
        "applied through gtid": load.end_gtid,
        "lag at load (s)": round(load.lag_seconds, 1) if load.lag_seconds is not None else -1,
        "duration (s)": round(load.seconds, 3),
        "rows per second": round(load.rows_per_second),
        "mirror upserts": load.apply.mirror_upserts,
        "mirror deletes": load.apply.mirror_deletes,
        "ddl applied": dg.MetadataValue.json(load.apply.ddl_applied),
        "tables without a primary key (change log only)": dg.MetadataValue.json(
            load.apply.tables_without_key
        ),
        "new schema versions": dg.MetadataValue.json(load.new_schema_versions),
    }


def log_segment_materializations(
    context: dg.OpExecutionContext, validated: ValidatedSegment, registered: set[str]
) -> None:
    """A ``wal_segment`` materialization for a segment validated on the way (a predecessor
    loaded by this run, or every segment of ``catch_up_job``), so the UI shows it validated."""
    key = validated.manifest.partition_key
    if validated.ok and key in registered:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=WAL_SEGMENT, partition=key, metadata=wal_segment_metadata(validated)
            )
        )


def _segment_result(validated: ValidatedSegment) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        asset_key=WAL_SEGMENT,
        metadata=wal_segment_metadata(validated),
        check_results=[_check_result(validated)],
    )


def _already_applied_result(paths: WalPaths, sequence: int) -> dg.MaterializeResult:
    """For a re-run of a partition loaded before: validate what is still on disk (reported,
    never quarantined: it is applied already); a retired segment was validated at its load."""
    path = paths.segment(sequence)
    if path.exists():
        try:
            return _segment_result(validate_segment(path))
        except CorruptSegmentError as error:
            problem = str(error)
        return dg.MaterializeResult(
            asset_key=WAL_SEGMENT,
            metadata={"segment": dg.MetadataValue.path(str(path))},
            check_results=[
                dg.AssetCheckResult(
                    asset_key=WAL_SEGMENT,
                    check_name=SCHEMA_CHECK,
                    passed=False,
                    metadata={"problem": problem},
                )
            ],
        )
    return dg.MaterializeResult(
        asset_key=WAL_SEGMENT,
        metadata={"segment": "retired (validated when it was loaded)"},
        check_results=[
            dg.AssetCheckResult(
                asset_key=WAL_SEGMENT,
                check_name=SCHEMA_CHECK,
                passed=True,
                metadata={"note": "applied before this run and since retired"},
            )
        ],
    )


@dg.multi_asset(
    name="load_segment",
    partitions_def=cdc_batches_partitions,
    group_name="cdc",
    specs=[
        dg.AssetSpec(
            WAL_SEGMENT,
            kinds={"parquet"},
            description=(
                "One WAL segment: a bounded slice of the source binlog captured by"
                " binlog_capture_sensor into a Parquet file. Materializing it validates the file."
            ),
        ),
        dg.AssetSpec(
            MONGO_BATCH,
            deps=[WAL_SEGMENT],
            kinds={"mongodb"},
            skippable=True,
            description=(
                "The segment applied to MongoDB: row_changes, the mirror collections, DDL"
                " effects and the cdc_checkpoints document (written after the data). Loads every"
                " pending earlier segment first, so the checkpoint never skips a gap; re-running"
                " changes nothing."
            ),
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset=WAL_SEGMENT,
            blocking=True,
            description=(
                "The segment's bytes and rows match what capture wrote, and every row has"
                " exactly the columns of its declared schema version. Blocking: a failing"
                " segment is quarantined and nothing of it is loaded."
            ),
        )
    ],
)
def load_segment(
    context: dg.AssetExecutionContext, source: SourceResource, mongo: MongoSinkResource
) -> Iterator[dg.MaterializeResult]:
    key = context.partition_key
    sequence = sequence_of_partition(key)
    paths = source.wal_paths(source_of_partition(key))
    registered = set(context.instance.get_dynamic_partitions(cdc_batches_partitions.name))
    validations: dict[str, ValidatedSegment] = {}

    def on_validated(validated: ValidatedSegment) -> None:
        validations[validated.manifest.partition_key] = validated
        if validated.manifest.partition_key != key:
            log_segment_materializations(context, validated, registered)

    def report_predecessor(load: SegmentLoad) -> None:
        # A predecessor loaded by this run gets its own materialization, so the UI is truthful.
        if load.partition_key != key and load.partition_key in registered:
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=MONGO_BATCH,
                    partition=load.partition_key,
                    metadata={**load_metadata(load), "loaded by run of": key},
                )
            )

    mongo_settings = mongo.mongo_settings()
    # The table settings this run is given (resource field or variable), as the CLI's load.
    given = {name: getattr(source, name) for name in SOURCE_VARIABLES}
    try:
        result = run_load(
            paths,
            mongo_settings,
            sequence,
            report_predecessor,
            source.capture_settings().source_url,  # to rebuild mirrors after column changes
            on_validated,
            # This pipeline's table settings, checked against the folder's record first.
            table_scope=table_scope_from_env(overlay(SOURCE_VARIABLES, given)),
            progress=context.log.info,  # a long mirror rebuild's progress
            mask_key=source.capture_settings().governance.mask_key,
        )
    except SinkUnavailableError as error:
        breaker = breaker_of(paths, mongo_settings.breaker_probe_seconds)
        raise dg.Failure(
            description=f"{error} {breaker.describe(pending_count(paths))}.",
            allow_retries=False,
        ) from None
    except CdcError as error:
        if key in validations:
            yield _segment_result(validations[key])  # a failed blocking check: named in the UI
        raise dg.Failure(description=str(error), allow_retries=False) from None
    for load in result.loaded:  # each table's MongoDB copy (defs.tables)
        for event in table_materializations(load, paths.source):
            context.log_event(event)
    own = [load for load in result.loaded if load.partition_key == key]
    if key in validations:
        yield _segment_result(validations[key])
    else:
        yield _already_applied_result(paths, sequence)
    metadata: dict[str, Any] = load_metadata(own[0]) if own else {"already applied": True}
    metadata["segments loaded by this run"] = len(result.loaded)
    metadata["checkpoint"] = result.checkpoint.last_partition if result.checkpoint else ""
    newest = {**metadata, "partition": key} if own else None
    metadata["recent loads"] = dg.MetadataValue.md(recent_loads(context.instance, newest))
    context.log.info(result.summary())
    yield dg.MaterializeResult(asset_key=MONGO_BATCH, metadata=metadata)


load_batch_job = dg.define_asset_job(
    name="load_batch_job",
    # The segment's own blocking check runs with it; the global audit checks do not (they read
    # all of the WAL and MongoDB, and belong to audit_job).
    selection=dg.AssetSelection.assets(WAL_SEGMENT, MONGO_BATCH).without_checks()
    | dg.AssetSelection.checks(dg.AssetCheckKey(WAL_SEGMENT, SCHEMA_CHECK)),
    description="Validates and loads one WAL segment (one cdc_batches partition) into MongoDB.",
    # One step: run it in the run's own process rather than start a second one for it (a
    # Python process importing Dagster costs seconds, which every load would pay again).
    executor_def=dg.in_process_executor,
)
