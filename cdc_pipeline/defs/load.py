"""The partitioned side: one run of ``load_batch_job`` per WAL segment (partition of cdc_batches).

Two assets per partition: ``wal_segment`` validates the segment (its blocking check
``schema_versions_valid`` stops the run before anything is written when the segment is damaged
or its rows do not match their schema versions), then ``mongo_batch`` loads it, with every
pending predecessor first. Thin wiring: the work is in ``core.validation`` and ``core.loader``.
"""

from typing import Any

import dagster as dg

from cdc_pipeline.core.errors import CorruptSegmentError
from cdc_pipeline.core.load.loader import (
    SegmentLoad,
    breaker_of,
    pending_count,
    quarantine,
    run_load,
)
from cdc_pipeline.core.load.retry import SinkUnavailableError
from cdc_pipeline.core.settings import SourceUrl, staging_dir_from_env
from cdc_pipeline.core.wal.segment import WalPaths, sequence_of_partition, source_of_partition
from cdc_pipeline.core.wal.validation import validate_segment
from cdc_pipeline.defs.load_history import recent_loads
from cdc_pipeline.defs.partitions import cdc_batches_partitions
from cdc_pipeline.defs.resources import MongoSinkResource, SourceResource

SCHEMA_CHECK = "schema_versions_valid"


def wal_paths(partition_key: str) -> WalPaths:
    return WalPaths(staging_dir_from_env(), source_of_partition(partition_key))


@dg.asset(
    name="wal_segment",
    partitions_def=cdc_batches_partitions,
    group_name="cdc",
    kinds={"parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset="wal_segment",
            blocking=True,
            description=(
                "The segment's bytes and rows match what capture wrote, and every row has"
                " exactly the columns of its declared schema version. Blocking: a failing"
                " segment is quarantined and nothing of it is loaded."
            ),
        )
    ],
    description=(
        "One WAL segment: a bounded slice of the source binlog captured by binlog_capture_sensor"
        " into a Parquet file. Materializing it validates the file."
    ),
)
def wal_segment(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    key = context.partition_key
    paths = wal_paths(key)
    path = paths.segment(sequence_of_partition(key))
    try:
        manifest, report = validate_segment(path)
    except CorruptSegmentError as error:
        if path.exists():
            quarantine(paths, path, str(error))
        return dg.MaterializeResult(
            metadata={"segment": dg.MetadataValue.path(str(path))},
            check_results=[
                dg.AssetCheckResult(
                    check_name=SCHEMA_CHECK,
                    passed=False,
                    metadata={"problem": str(error), "quarantined": path.name},
                )
            ],
        )
    if not report.ok:
        quarantine(paths, path, report.summary())
    per_table = {table: dict(ops) for table, ops in sorted(manifest.counts.items())}
    return dg.MaterializeResult(
        metadata={
            "rows": manifest.row_count,
            "ddl statements": manifest.ddl_count,
            "transactions": manifest.transaction_count,
            "gtid range": f"{manifest.first_gtid} .. {manifest.last_gtid}",
            "end gtid state": manifest.end_gtid,
            "binlog end": f"{manifest.end_binlog_file}:{manifest.end_binlog_pos}",
            "rows by table and op": dg.MetadataValue.json(per_table),
            "first committed at": manifest.first_committed_at or "",
            "last committed at": manifest.last_committed_at or "",
            "segment": dg.MetadataValue.path(str(path)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=SCHEMA_CHECK,
                passed=report.ok,
                metadata={
                    "rows checked": report.rows_checked,
                    "problems": report.problem_count,
                    "first problems": dg.MetadataValue.json(report.problems),
                    "schema versions": dg.MetadataValue.json(report.versions),
                },
            )
        ],
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


@dg.asset(
    name="mongo_batch",
    partitions_def=cdc_batches_partitions,
    group_name="cdc",
    kinds={"mongodb"},
    deps=["wal_segment"],
    description=(
        "The segment applied to MongoDB: row_changes, the mirror collections, DDL effects and the"
        " cdc_checkpoints document (written after the data). Loads every pending earlier segment"
        " first, so the checkpoint never skips a gap; re-running changes nothing."
    ),
)
def mongo_batch(
    context: dg.AssetExecutionContext, mongo: MongoSinkResource, source: SourceResource
) -> dg.MaterializeResult:
    key = context.partition_key
    paths = wal_paths(key)
    existing = set(context.instance.get_dynamic_partitions(cdc_batches_partitions.name))

    def report_predecessor(load: SegmentLoad) -> None:
        # A predecessor loaded by this run gets its own materialization, so the UI is truthful.
        if load.partition_key != key and load.partition_key in existing:
            context.log_event(
                dg.AssetMaterialization(
                    asset_key="mongo_batch",
                    partition=load.partition_key,
                    metadata={**load_metadata(load), "loaded by run of": key},
                )
            )

    mongo_settings = mongo.mongo_settings()
    try:
        result = run_load(
            paths,
            mongo_settings,
            sequence_of_partition(key),
            report_predecessor,
            SourceUrl.parse(source.url),  # to rebuild mirrors after column changes
        )
    except SinkUnavailableError as error:
        raise dg.Failure(
            description=(
                f"{error} "
                + breaker_of(paths, mongo_settings.breaker_probe_seconds).describe(
                    pending_count(paths)
                )
                + "."
            ),
            allow_retries=False,
        ) from None
    own = [load for load in result.loaded if load.partition_key == key]
    metadata: dict[str, Any] = load_metadata(own[0]) if own else {"already applied": True}
    metadata["segments loaded by this run"] = len(result.loaded)
    metadata["checkpoint"] = result.checkpoint.last_partition if result.checkpoint else ""
    newest = {**metadata, "partition": key} if own else None
    metadata["recent loads"] = dg.MetadataValue.md(recent_loads(context.instance, newest))
    context.log.info(result.summary())
    return dg.MaterializeResult(metadata=metadata)


load_batch_job = dg.define_asset_job(
    name="load_batch_job",
    # The segment's own blocking check runs with it; the global audit checks do not (they read
    # all of the WAL and MongoDB, and belong to audit_job).
    selection=dg.AssetSelection.assets(wal_segment, mongo_batch).without_checks()
    | dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("wal_segment"), SCHEMA_CHECK)),
    description="Validates and loads one WAL segment (one cdc_batches partition) into MongoDB.",
)
