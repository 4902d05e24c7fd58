"""The one Dagster code location of cdc_pipeline (``dagster ... -m cdc_pipeline.definitions``).

Without CDC_SOURCES_FILE: one source, configured by the CDC_* variables, under the names of
../shared/CONTRACT.md. With it: every source of the file gets its own sensor, partitions, jobs,
assets, checks and resources, named after it (``defs.wiring``), its resources' settings taken
from the file and shown in the UI.

Nothing here reads a secret: the resources read the URL/URI variables when a run or a tick
needs them, so secrets never appear in the UI's run configs.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from cdc_pipeline.core.sources_file import SourceEntry, read_sources
from cdc_pipeline.defs.capture import build_capture_sensor
from cdc_pipeline.defs.catch_up import build_catch_up
from cdc_pipeline.defs.checks import build_audit, build_checks
from cdc_pipeline.defs.load import build_load
from cdc_pipeline.defs.resources import AuditResource, MongoSinkResource, SourceResource
from cdc_pipeline.defs.snapshot import build_snapshot
from cdc_pipeline.defs.tables import captured_tables, table_specs
from cdc_pipeline.defs.wiring import SINGLE, SourceWiring


def source_definitions(
    w: SourceWiring, resources: dict[str, Any], environ: dict[str, str] | None
) -> dg.Definitions:
    """Everything one source needs, named by ``w``; ``environ``: its settings (None: the
    process's CDC_* variables)."""
    tables = captured_tables(environ)
    load_segment, load_batch_job = build_load(w)
    checks = build_checks(tables, w)
    audit_job, audit_schedule = build_audit(checks, w)
    prefix = "" if w.source_name is None else f"{w.source_name}_"
    return dg.Definitions(
        assets=[load_segment, *table_specs(tables, w.mongo_batch, prefix)],
        asset_checks=checks,
        jobs=[load_batch_job, build_catch_up(w), audit_job, build_snapshot(w)],
        sensors=[build_capture_sensor(w, load_batch_job)],
        schedules=[audit_schedule],
        resources=resources,
    )


_SOURCE_FIELDS = {
    "CDC_STAGING_DIR": "staging_dir",
    "CDC_SERVER_ID": "server_id",
    "CDC_INCLUDE_TABLES": "include_tables",
    "CDC_START_POSITION": "start_position",
    "CDC_SEGMENT_MAX_EVENTS": "segment_max_events",
    "CDC_TICK_MAX_SECONDS": "tick_max_seconds",
    "CDC_RETENTION_HOURS": "retention_hours",
    "CDC_EXCLUDE_TABLES": "exclude_tables",
    "CDC_EXCLUDE_COLUMNS": "exclude_columns",
    "CDC_MASK_COLUMNS": "mask_columns",
}
_MONGO_FIELDS = {
    "CDC_MONGO_DB": "database",
    "CDC_MONGO_COMPAT": "compat",
    "CDC_MONGO_RETRY_SECONDS": "retry_seconds",
    "CDC_BREAKER_PROBE_SECONDS": "breaker_probe_seconds",
    "CDC_ON_UNLOADABLE": "on_unloadable",
}
_AUDIT_FIELDS = {
    "CDC_LAG_WARN_SECONDS": "lag_warn_seconds",
    "CDC_LAG_ERROR_SECONDS": "lag_error_seconds",
    "CDC_LAG_WARN_TRANSACTIONS": "lag_warn_transactions",
    "CDC_RETENTION_WARN_SECONDS": "retention_warn_seconds",
    "CDC_RECONCILE_WAIT_SECONDS": "reconcile_wait_seconds",
}


def _fields(entry: SourceEntry, names: dict[str, str]) -> dict[str, str]:
    return {
        field: entry.settings[variable]
        for variable, field in names.items()
        if variable in entry.settings
    }


def entry_resources(entry: SourceEntry, w: SourceWiring) -> dict[str, Any]:
    """The three resources of a file's source, its settings as their fields (shown in the UI;
    a malformed value fails the tick or run that reads it, with its sentence)."""
    return {
        w.source_key: SourceResource(
            source_name=entry.name,
            sources_file_entry=entry.name,
            url_variable=entry.url_variable,
            **_fields(entry, _SOURCE_FIELDS),  # type: ignore[arg-type]
        ),
        w.mongo_key: MongoSinkResource(
            sources_file_entry=entry.name,
            uri_variable=entry.secret_variables["CDC_MONGO_URI"],
            **_fields(entry, _MONGO_FIELDS),  # type: ignore[arg-type]
        ),
        w.audit_key: AuditResource(
            sources_file_entry=entry.name,
            **_fields(entry, _AUDIT_FIELDS),  # type: ignore[arg-type]
        ),
    }


def build_definitions() -> dg.Definitions:
    entries = read_sources()
    if entries is None:
        resources = {
            "source": SourceResource(),
            "mongo": MongoSinkResource(),
            "audit": AuditResource(),
        }
        return source_definitions(SINGLE, resources, None)
    parts = []
    for entry in entries:
        w = SourceWiring(entry.name, entry.mongo_pool)
        parts.append(source_definitions(w, entry_resources(entry, w), entry.environ()))
    return dg.Definitions.merge(*parts)


defs = build_definitions()
