"""The Dagster names of one source: its sensor, jobs, partitions, asset keys and resource keys.

``SINGLE`` is the single-source code location: the names of ../shared/CONTRACT.md
(``binlog_capture_sensor``, ``cdc_batches``, ``load_batch_job``, assets ``wal_segment`` and
``mongo_batch``, resources ``source``/``mongo``/``audit``). With CDC_SOURCES_FILE, each source
``shop`` gets the same definitions named ``shop__binlog_capture_sensor``,
``shop__cdc_batches``, ``shop__load_batch_job``, assets ``shop/wal_segment`` and
``shop/mongo_batch``, and resources ``shop__source``, ``shop__mongo``, ``shop__audit``.
Per-table assets carry the source name already (``[source, "source"|"mongodb", schema,
table]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dagster as dg

from cdc_pipeline.defs.resources import AuditResource, MongoSinkResource, SourceResource


@dataclass(frozen=True)
class SourceWiring:
    source_name: str | None = None
    """None: the single-source location (the contract's names, no prefix)."""
    pool: str | None = None
    """A Dagster pool the load step runs in (CDC_SOURCES_FILE ``mongo_pool``)."""

    def name(self, base: str) -> str:
        return base if self.source_name is None else f"{self.source_name}__{base}"

    def key(self, base: str) -> dg.AssetKey:
        return dg.AssetKey(base if self.source_name is None else [self.source_name, base])

    @property
    def group(self) -> str:
        """The asset group: ``cdc``, or the source's name."""
        return self.source_name or "cdc"

    @property
    def wal_segment(self) -> dg.AssetKey:
        return self.key("wal_segment")

    @property
    def mongo_batch(self) -> dg.AssetKey:
        return self.key("mongo_batch")

    @property
    def source_key(self) -> str:
        return self.name("source")

    @property
    def mongo_key(self) -> str:
        return self.name("mongo")

    @property
    def audit_key(self) -> str:
        return self.name("audit")

    @property
    def resource_keys(self) -> set[str]:
        return {self.source_key, self.mongo_key, self.audit_key}

    @cached_property
    def partitions(self) -> dg.DynamicPartitionsDefinition:
        return dg.DynamicPartitionsDefinition(name=self.name("cdc_batches"))

    def source(self, context: Any) -> SourceResource:
        return getattr(context.resources, self.source_key)  # type: ignore[no-any-return]

    def mongo(self, context: Any) -> MongoSinkResource:
        return getattr(context.resources, self.mongo_key)  # type: ignore[no-any-return]

    def audit(self, context: Any) -> AuditResource:
        return getattr(context.resources, self.audit_key)  # type: ignore[no-any-return]


SINGLE = SourceWiring()
