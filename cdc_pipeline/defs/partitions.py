"""The dynamic partitions ``cdc_batches`` (one set per source, ``defs.wiring``): one key per WAL
segment (``<source>-<12-digit seq>``).

Partitions come from the WAL on disk, not from what one tick or run did: every committed segment
without a partition gets one, so a crash between writing a segment and registering it (or a
segment written by the CLI or a snapshot) is picked up by the next registration.
"""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.core.wal.staging import WalPaths, partition_keys
from cdc_pipeline.defs.wiring import SINGLE

cdc_batches_partitions = SINGLE.partitions


def unregistered_keys(
    instance: dg.DagsterInstance,
    paths: WalPaths,
    partitions: dg.DynamicPartitionsDefinition = cdc_batches_partitions,
) -> list[str]:
    """Partition keys of the committed segments that have no partition yet, in order."""
    registered = set(instance.get_dynamic_partitions(str(partitions.name)))
    return [key for key in partition_keys(paths) if key not in registered]


def register_segments(
    instance: dg.DagsterInstance,
    paths: WalPaths,
    partitions: dg.DynamicPartitionsDefinition = cdc_batches_partitions,
) -> list[str]:
    """Add a partition for every committed segment that lacks one; returns the keys added."""
    new_keys = unregistered_keys(instance, paths, partitions)
    if new_keys:
        instance.add_dynamic_partitions(str(partitions.name), new_keys)
    return new_keys
