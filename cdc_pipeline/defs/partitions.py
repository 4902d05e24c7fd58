"""The dynamic partitions ``cdc_batches``: one key per WAL segment (``<source>-<12-digit seq>``)."""

from __future__ import annotations

import dagster as dg

cdc_batches_partitions = dg.DynamicPartitionsDefinition(name="cdc_batches")
