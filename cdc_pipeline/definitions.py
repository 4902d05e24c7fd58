"""The one Dagster code location of cdc_pipeline (``dagster ... -m cdc_pipeline.definitions``).

Without CDC_SOURCES_FILE: one source, configured by the CDC_* variables, under the names of
../shared/CONTRACT.md. With it: every source of the file gets its own sensor, partitions, jobs,
assets, checks and resources, named after it (``defs.wiring``), its resources' settings taken
from the file and shown in the UI.

Nothing here reads a secret: the resources read the URL/URI variables when a run or a tick
needs them, so secrets never appear in the UI's run configs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from cdc_pipeline.core.settings import AUDIT_VARIABLES, MONGO_VARIABLES, SOURCE_VARIABLES
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


def _fields(entry: SourceEntry, variables: Mapping[str, str]) -> dict[str, str]:
    """The resource fields (``core.settings``' field -> variable tables) the entry sets; the
    secrets and the name are not among its settings, so ``url``/``uri`` stay unset."""
    return {
        field: entry.settings[variable]
        for field, variable in variables.items()
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
            **_fields(entry, SOURCE_VARIABLES),  # type: ignore[arg-type]
        ),
        w.mongo_key: MongoSinkResource(
            sources_file_entry=entry.name,
            uri_variable=entry.secret_variables["CDC_MONGO_URI"],
            **_fields(entry, MONGO_VARIABLES),  # type: ignore[arg-type]
        ),
        w.audit_key: AuditResource(
            sources_file_entry=entry.name,
            **_fields(entry, AUDIT_VARIABLES),  # type: ignore[arg-type]
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
