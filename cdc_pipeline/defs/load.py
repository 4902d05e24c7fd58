"""The partitioned side: one run of ``load_batch_job`` per WAL segment (partition of cdc_batches).

Thin wiring: the asset resolves the segment of its partition and calls ``core``.
"""

import dagster as dg

from cdc_pipeline.core.settings import staging_dir_from_env
from cdc_pipeline.core.wal import (
    WalPaths,
    sequence_of_partition,
    source_of_partition,
    verify_segment,
)
from cdc_pipeline.defs.partitions import cdc_batches_partitions


@dg.asset(
    name="wal_segment",
    partitions_def=cdc_batches_partitions,
    group_name="cdc",
    kinds={"parquet"},
    description=(
        "One WAL segment: a bounded slice of the source binlog captured by binlog_capture_sensor"
        " into a Parquet file. Materializing it verifies the file against its manifest"
        " (checksum, counts) and records what it holds."
    ),
)
def wal_segment(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    key = context.partition_key
    paths = WalPaths(staging_dir_from_env(), source_of_partition(key))
    path = paths.segment(sequence_of_partition(key))
    manifest = verify_segment(path)
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
        }
    )


load_batch_job = dg.define_asset_job(
    name="load_batch_job",
    selection=[wal_segment],
    description="Loads one WAL segment (one cdc_batches partition).",
)
