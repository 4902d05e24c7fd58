"""Dagster resources: every setting of the source, the sink and the checks, as typed fields.

Secrets (the source URL with its password, the MongoDB URI) never enter Dagster's config: the
``url`` and ``uri`` fields stay unset in ``definitions.py`` and the value is read from
CDC_MYSQL_URL / CDC_MONGO_URI when a run or a tick needs it, so the UI shows no secret, and a
variable that is not set fails the run with the project's one sentence (a ``dg.EnvVar`` fails
Dagster's config processing first, as a long traceback). Every other setting is a field of its
resource, listed with its description in the UI's resource
view: a value given in ``definitions.py`` (or a run config) wins; a field left unset takes its
``CDC_*`` variable, else the default of ../shared/CONTRACT.md. The names, defaults and checks
live in ``core.settings``; the resources pass plain settings objects down to ``core``.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from pydantic import Field

from cdc_pipeline.core.settings import (
    AUDIT_VARIABLES,
    MONGO_VARIABLES,
    SOURCE_VARIABLES,
    AuditSettings,
    CaptureSettings,
    MongoSettings,
    overlay,
    retention_from_env,
    source_name_from_env,
    staging_dir_from_env,
)
from cdc_pipeline.core.sources_file import find_source
from cdc_pipeline.core.wal.staging import WalPaths


def _unset(variable: str, default: str) -> str:
    return f"unset: ${variable}, else {default}"


class SourceResource(dg.ConfigurableResource):
    """The MySQL or MariaDB server whose binlog is captured, and the staging folder of its WAL."""

    url: str | None = Field(
        default=None,
        description="mysql://user:password@host:port (unset: $CDC_MYSQL_URL, read when needed)",
    )
    source_name: str | None = Field(
        default=None,
        description="names the staging sub-folder, partitions and checkpoint ("
        + _unset("CDC_SOURCE_NAME", "default")
        + ")",
    )
    staging_dir: str | None = Field(
        default=None,
        description="root of the Parquet WAL (" + _unset("CDC_STAGING_DIR", ".cdc_staging") + ")",
    )
    server_id: int | None = Field(
        default=None,
        description="replica server id of the binlog reader ("
        + _unset("CDC_SERVER_ID", "4270001")
        + ")",
    )
    include_tables: str | None = Field(
        default=None,
        description="comma-separated schema.table patterns ("
        + _unset("CDC_INCLUDE_TABLES", "every table outside the system schemas")
        + ")",
    )
    start_position: str | None = Field(
        default=None,
        description="where an empty WAL starts: current, earliest or a GTID state ("
        + _unset("CDC_START_POSITION", "current")
        + ")",
    )
    segment_max_events: int | None = Field(
        default=None,
        description="row events after which a tick stops at the next commit ("
        + _unset("CDC_SEGMENT_MAX_EVENTS", "50000")
        + ")",
    )
    tick_max_seconds: int | None = Field(
        default=None,
        description="seconds after which a tick stops at the next commit ("
        + _unset("CDC_TICK_MAX_SECONDS", "20")
        + ")",
    )
    retention_hours: float | None = Field(
        default=None,
        description="keep loaded segments this long, 0: delete once loaded ("
        + _unset("CDC_RETENTION_HOURS", "24")
        + ")",
    )
    exclude_tables: str | None = Field(
        default=None,
        description="schema.table patterns never captured ("
        + _unset("CDC_EXCLUDE_TABLES", "none")
        + ")",
    )
    exclude_columns: str | None = Field(
        default=None,
        description="schema.table.column patterns never written to the WAL ("
        + _unset("CDC_EXCLUDE_COLUMNS", "none")
        + ")",
    )
    mask_columns: str | None = Field(
        default=None,
        description="columns stored as a keyed hash (" + _unset("CDC_MASK_COLUMNS", "none") + ")",
    )
    sources_file_entry: str | None = Field(
        default=None,
        description="the CDC_SOURCES_FILE source these settings belong to: unset fields and the"
        " secrets (its url_env, mask_key_env) come from that entry, not from CDC_* variables",
    )
    url_variable: str | None = Field(
        default=None,
        description="the variable holding the source URL (shown, never its value)",
    )

    def environ(self) -> dict[str, str]:
        """What ``core.settings`` reads for this source: this resource's values over its
        CDC_SOURCES_FILE entry, else over the process's CDC_* variables."""
        fields = {name: getattr(self, name) for name in SOURCE_VARIABLES}
        return overlay(SOURCE_VARIABLES, fields, entry_environ(self.sources_file_entry))

    def capture_settings(self) -> CaptureSettings:
        """Capture settings: this resource's values over the CDC_* variables."""
        return CaptureSettings.from_env(self.environ())

    def wal_paths(self, source_name: str | None = None) -> WalPaths:
        """The WAL of this source (or of ``source_name``, as a partition key names it); needs
        no URL."""
        environ = self.environ()
        return WalPaths(staging_dir_from_env(environ), source_name or source_name_from_env(environ))

    def retention(self) -> timedelta:
        return retention_from_env(self.environ())


class MongoSinkResource(dg.ConfigurableResource):
    """The MongoDB database the change log and mirror collections are loaded into."""

    uri: str | None = Field(
        default=None, description="a MongoDB URI (unset: $CDC_MONGO_URI, read when needed)"
    )
    database: str | None = Field(
        default=None, description="the target database (" + _unset("CDC_MONGO_DB", "cdc") + ")"
    )
    compat: str | None = Field(
        default=None,
        description="standard, or nx-27017 for the test stand-in ("
        + _unset("CDC_MONGO_COMPAT", "standard")
        + ")",
    )
    retry_seconds: int | None = Field(
        default=None,
        description="how long one load retries transient MongoDB errors ("
        + _unset("CDC_MONGO_RETRY_SECONDS", "30")
        + ")",
    )
    breaker_probe_seconds: int | None = Field(
        default=None,
        description="while MongoDB is down, the least time between two probe loads ("
        + _unset("CDC_BREAKER_PROBE_SECONDS", "60")
        + ")",
    )
    on_unloadable: str | None = Field(
        default=None,
        description="a row MongoDB refuses: halt or dead-letter ("
        + _unset("CDC_ON_UNLOADABLE", "halt")
        + ")",
    )
    sources_file_entry: str | None = Field(
        default=None,
        description="the CDC_SOURCES_FILE source this sink serves (unset fields and the URI's"
        " variable come from that entry)",
    )
    uri_variable: str | None = Field(
        default=None, description="the variable holding the MongoDB URI (shown, never its value)"
    )

    def environ(self) -> dict[str, str]:
        """What ``core.settings`` reads for this sink (as ``SourceResource.environ``)."""
        fields = {name: getattr(self, name) for name in MONGO_VARIABLES}
        return overlay(MONGO_VARIABLES, fields, entry_environ(self.sources_file_entry))

    def mongo_settings(self) -> MongoSettings:
        return MongoSettings.from_env(self.environ())


class AuditResource(dg.ConfigurableResource):
    """What the global checks judge against."""

    lag_warn_seconds: float | None = Field(
        default=None,
        description="replication_lag warns past this ("
        + _unset("CDC_LAG_WARN_SECONDS", "300")
        + ")",
    )
    lag_error_seconds: float | None = Field(
        default=None,
        description="replication_lag errors past this ("
        + _unset("CDC_LAG_ERROR_SECONDS", "3600")
        + ")",
    )
    lag_warn_transactions: int | None = Field(
        default=None,
        description="replication_lag warns when more transactions are missing ("
        + _unset("CDC_LAG_WARN_TRANSACTIONS", "100000")
        + ")",
    )
    retention_warn_seconds: float | None = Field(
        default=None,
        description="binlog_retention_headroom warns when the needed binlog expires sooner ("
        + _unset("CDC_RETENTION_WARN_SECONDS", "21600")
        + ")",
    )
    reconcile_wait_seconds: float | None = Field(
        default=None,
        description="how long source_sink_reconciliation waits for a busy table ("
        + _unset("CDC_RECONCILE_WAIT_SECONDS", "60")
        + ")",
    )

    sources_file_entry: str | None = Field(
        default=None,
        description="the CDC_SOURCES_FILE source these thresholds belong to",
    )

    def audit_settings(self) -> AuditSettings:
        fields = {name: getattr(self, name) for name in AUDIT_VARIABLES}
        base = entry_environ(self.sources_file_entry)
        return AuditSettings.from_env(overlay(AUDIT_VARIABLES, fields, base))


def entry_environ(name: str | None) -> dict[str, str] | None:
    """The environment of source ``name`` of CDC_SOURCES_FILE (None: the process's own)."""
    return None if name is None else find_source(name).environ()
