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
from cdc_pipeline.core.settings import table_scope_from_env
from cdc_pipeline.core.wal.ledger import pending_count
from cdc_pipeline.core.wal.staging import WalPaths, sequence_of_partition, source_of_partition
from cdc_pipeline.core.wal.validation import ValidatedSegment, validate_segment
from cdc_pipeline.defs.load_history import recent_loads
from cdc_pipeline.defs.tables import table_materializations
from cdc_pipeline.defs.wiring import SINGLE, SourceWiring

SCHEMA_CHECK = "schema_versions_valid"
WAL_SEGMENT = SINGLE.wal_segment
MONGO_BATCH = SINGLE.mongo_batch


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


def _check_result(validated: ValidatedSegment, segment_key: dg.AssetKey) -> dg.AssetCheckResult:
    report = validated.report
    return dg.AssetCheckResult(
        asset_key=segment_key,
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
    context: dg.OpExecutionContext,
    validated: ValidatedSegment,
    registered: set[str],
    segment_key: dg.AssetKey = WAL_SEGMENT,
) -> None:
    """A ``wal_segment`` materialization for a segment validated on the way (a predecessor
    loaded by this run, or every segment of ``catch_up_job``), so the UI shows it validated."""
    key = validated.manifest.partition_key
    if validated.ok and key in registered:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=segment_key, partition=key, metadata=wal_segment_metadata(validated)
            )
        )


def _segment_result(validated: ValidatedSegment, segment_key: dg.AssetKey) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        asset_key=segment_key,
        metadata=wal_segment_metadata(validated),
        check_results=[_check_result(validated, segment_key)],
    )


def _already_applied_result(
    paths: WalPaths, sequence: int, segment_key: dg.AssetKey
) -> dg.MaterializeResult:
    """For a re-run of a partition loaded before: validate what is still on disk (reported,
    never quarantined: it is applied already); a retired segment was validated at its load."""
    path = paths.segment(sequence)
    if path.exists():
        try:
            return _segment_result(validate_segment(path), segment_key)
        except CorruptSegmentError as error:
            problem = str(error)
        return dg.MaterializeResult(
            asset_key=segment_key,
            metadata={"segment": dg.MetadataValue.path(str(path))},
            check_results=[
                dg.AssetCheckResult(
                    asset_key=segment_key,
                    check_name=SCHEMA_CHECK,
                    passed=False,
                    metadata={"problem": problem},
                )
            ],
        )
    return dg.MaterializeResult(
        asset_key=segment_key,
        metadata={"segment": "retired (validated when it was loaded)"},
        check_results=[
            dg.AssetCheckResult(
                asset_key=segment_key,
                check_name=SCHEMA_CHECK,
                passed=True,
                metadata={"note": "applied before this run and since retired"},
            )
        ],
    )


def build_load(w: SourceWiring) -> tuple[dg.AssetsDefinition, Any]:
    """The source's ``load_segment`` (its ``wal_segment`` and ``mongo_batch``, one partition
    per segment) and ``load_batch_job``, named by ``w``."""

    @dg.multi_asset(
        name=w.name("load_segment"),
        partitions_def=w.partitions,
        group_name=w.group,
        required_resource_keys={w.source_key, w.mongo_key},
        pool=w.pool,
        specs=[
            dg.AssetSpec(
                w.wal_segment,
                kinds={"parquet"},
                description=(
                    "One WAL segment: a bounded slice of the source binlog captured by"
                    " binlog_capture_sensor into a Parquet file. Materializing it validates"
                    " the file."
                ),
            ),
            dg.AssetSpec(
                w.mongo_batch,
                deps=[w.wal_segment],
                kinds={"mongodb"},
                skippable=True,
                description=(
                    "The segment applied to MongoDB: row_changes, the mirror collections, DDL"
                    " effects and the cdc_checkpoints document (written after the data). Loads"
                    " every pending earlier segment first, so the checkpoint never skips a gap;"
                    " re-running changes nothing."
                ),
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                SCHEMA_CHECK,
                asset=w.wal_segment,
                blocking=True,
                description=(
                    "The segment's bytes and rows match what capture wrote, and every row has"
                    " exactly the columns of its declared schema version. Blocking: a failing"
                    " segment is quarantined and nothing of it is loaded."
                ),
            )
        ],
    )
    def load_segment(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        source, mongo = w.source(context), w.mongo(context)
        key = context.partition_key
        sequence = sequence_of_partition(key)
        paths = source.wal_paths(source_of_partition(key))
        registered = set(context.instance.get_dynamic_partitions(str(w.partitions.name)))
        validations: dict[str, ValidatedSegment] = {}

        def on_validated(validated: ValidatedSegment) -> None:
            validations[validated.manifest.partition_key] = validated
            if validated.manifest.partition_key != key:
                log_segment_materializations(context, validated, registered, w.wal_segment)

        def report_predecessor(load: SegmentLoad) -> None:
            # A predecessor loaded by this run gets its own materialization, so the UI is truthful.
            if load.partition_key != key and load.partition_key in registered:
                context.log_event(
                    dg.AssetMaterialization(
                        asset_key=w.mongo_batch,
                        partition=load.partition_key,
                        metadata={**load_metadata(load), "loaded by run of": key},
                    )
                )

        mongo_settings = mongo.mongo_settings()
        try:
            result = run_load(
                paths,
                mongo_settings,
                sequence,
                report_predecessor,
                source.capture_settings().source_url,  # to rebuild mirrors after column changes
                on_validated,
                # This pipeline's table settings, checked against the folder's record first.
                table_scope=table_scope_from_env(source.environ()),
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
            if key in validations:  # a failed blocking check: named in the UI
                yield _segment_result(validations[key], w.wal_segment)
            raise dg.Failure(description=str(error), allow_retries=False) from None
        for load in result.loaded:  # each table's MongoDB copy (defs.tables)
            for event in table_materializations(load, paths.source):
                context.log_event(event)
        own = [load for load in result.loaded if load.partition_key == key]
        if key in validations:
            yield _segment_result(validations[key], w.wal_segment)
        else:
            yield _already_applied_result(paths, sequence, w.wal_segment)
        metadata: dict[str, Any] = load_metadata(own[0]) if own else {"already applied": True}
        metadata["segments loaded by this run"] = len(result.loaded)
        metadata["checkpoint"] = result.checkpoint.last_partition if result.checkpoint else ""
        newest = {**metadata, "partition": key} if own else None
        metadata["recent loads"] = dg.MetadataValue.md(
            recent_loads(context.instance, newest, w.mongo_batch)
        )
        context.log.info(result.summary())
        yield dg.MaterializeResult(asset_key=w.mongo_batch, metadata=metadata)

    job = dg.define_asset_job(
        name=w.name("load_batch_job"),
        # The segment's own blocking check runs with it; the global audit checks do not (they read
        # all of the WAL and MongoDB, and belong to audit_job).
        selection=dg.AssetSelection.assets(w.wal_segment, w.mongo_batch).without_checks()
        | dg.AssetSelection.checks(dg.AssetCheckKey(w.wal_segment, SCHEMA_CHECK)),
        description="Validates and loads one WAL segment (one cdc_batches partition) into MongoDB.",
        # One step: run it in the run's own process rather than start a second one for it (a
        # Python process importing Dagster costs seconds, which every load would pay again).
        executor_def=dg.in_process_executor,
    )
    return load_segment, job


load_segment, load_batch_job = build_load(SINGLE)
