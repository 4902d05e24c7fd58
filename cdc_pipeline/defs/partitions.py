"""The dynamic partitions ``cdc_batches``: one key per WAL segment (``<source>-<12-digit seq>``).

Partitions come from the WAL on disk, not from what one tick or run did: every committed segment
without a partition gets one, so a crash between writing a segment and registering it (or a
segment written by the CLI or a snapshot) is picked up by the next registration.
"""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.core.wal.staging import WalPaths, partition_keys

cdc_batches_partitions = dg.DynamicPartitionsDefinition(name="cdc_batches")


def unregistered_keys(instance: dg.DagsterInstance, paths: WalPaths) -> list[str]:
    """Partition keys of the committed segments that have no partition yet, in order."""
    registered = set(instance.get_dynamic_partitions(cdc_batches_partitions.name))
    return [key for key in partition_keys(paths) if key not in registered]


def register_segments(instance: dg.DagsterInstance, paths: WalPaths) -> list[str]:
    """Add a partition for every committed segment that lacks one; returns the keys added."""
    new_keys = unregistered_keys(instance, paths)
    if new_keys:
        instance.add_dynamic_partitions(cdc_batches_partitions.name, new_keys)
    return new_keys
