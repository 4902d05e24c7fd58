"""Global asset checks and the audit job that runs them; thin wiring over ``core``.

- ``gtid_continuity`` (``core.continuity``): the WAL chains from where capture began without
  holes or overlaps, and the checkpoint equals the end of the segment it names.
- ``no_duplicate_events`` (``core.duplicates``): no event staged twice, no row change applied
  twice.
- ``replication_lag`` (``core.status`` + ``core.lag``): seconds and transactions MongoDB is
  behind the source, against thresholds.
- ``source_sink_reconciliation`` (``core.reconcile``): every mirror against its source table,
  row by row, at a point the checkpoint covers for that table; names differing keys.
- ``binlog_retention_headroom`` (``core.headroom``): how far capture's position is from being
  purged on the source; warns before expiry reaches it, errors when GTIDs were lost.

Each check is an asset check of a partitioned asset but looks at the whole pipeline, so it runs
unpartitioned in ``audit_job`` (and from the UI); its severity says how urgent a failure is.
``source_sink_reconciliation`` also reports each table as its mirror asset's ``matches_source``
check (``defs.tables``); the checks and ``audit_job`` are built for the tables the code location
knows (``build_checks``, ``build_audit``).
"""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from cdc_pipeline.core.audit.duplicates import DuplicateReport, check_change_log, check_wal
from cdc_pipeline.core.audit.headroom import headroom_for
from cdc_pipeline.core.audit.lag import judge_lag
from cdc_pipeline.core.audit.reconcile.run import reconcile
from cdc_pipeline.core.audit.status import read_status
from cdc_pipeline.core.capture.snapshot_plan import describe_recovery, read_recoveries
from cdc_pipeline.core.errors import CdcError
from cdc_pipeline.core.load.retry import RetryPolicy
from cdc_pipeline.core.load.sink import open_sink, read_checkpoint
from cdc_pipeline.core.wal.continuity import check_with_checkpoint, gather_chain
from cdc_pipeline.defs.tables import TABLE_CHECK, TableAsset, table_check_specs
from cdc_pipeline.defs.wiring import SINGLE, SourceWiring

CHECK_DEADLINE = 5.0
"""Checks report an unreachable MongoDB quickly rather than wait out an outage."""


def _not_measured(
    what: str, error: CdcError, key: dg.AssetCheckKey | None = None
) -> dg.AssetCheckResult:
    """A check that could not look (source or MongoDB unreachable): a warning naming why."""
    located = {"asset_key": key.asset_key, "check_name": key.name} if key else {}
    return dg.AssetCheckResult(
        **located,  # type: ignore[arg-type]
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"problems": _capped([f"{what}: {error}"])},
    )


def _capped(values: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.json(values[:20])


def global_checks(w: SourceWiring) -> list[dg.AssetChecksDefinition]:
    """The four checks that need no table list, on the source's assets (named by ``w``)."""

    @dg.asset_check(
        asset=w.wal_segment,
        name="gtid_continuity",
        required_resource_keys={w.source_key, w.mongo_key},
        description=(
            "The WAL's segments chain without holes or overlaps from where capture began, and the"
            " applied checkpoint in MongoDB equals the end of the segment it names."
        ),
    )
    def gtid_continuity(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        source, mongo = w.source(context), w.mongo(context)
        paths = source.wal_paths()
        links, origin, flavor, notes = gather_chain(paths)
        if flavor is None:
            return dg.AssetCheckResult(passed=True, metadata={"segments": 0, "note": "nothing yet"})
        checkpoint = None
        sink_note = ""
        try:
            checkpoint = read_checkpoint(mongo.mongo_settings(), paths.source, CHECK_DEADLINE)
        except CdcError as error:
            sink_note = f"checkpoint not checked: {error}"
        report = check_with_checkpoint(
            links,
            flavor,
            origin,
            checkpoint.last_sequence if checkpoint else None,
            checkpoint.gtid if checkpoint else None,
        )
        problems = notes + report.problems
        recovered = [describe_recovery(entry) for entry in read_recoveries(paths)]
        return dg.AssetCheckResult(
            passed=not problems,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"{len(recovered)} gaps recovered by snapshots; newest: {recovered[-1]}"
                if recovered
                else None
            ),
            metadata={
                "recovered gaps": dg.MetadataValue.json(recovered[-20:]),
                "segments checked": len(links),
                "first segment": links[0].sequence if links else 0,
                "last segment": links[-1].sequence if links else 0,
                "problems": len(problems),
                "first problems": dg.MetadataValue.json(problems[:20]),
                "missing gtid ranges": dg.MetadataValue.json(report.missing[:20]),
                "overlapping gtid ranges": dg.MetadataValue.json(report.overlapping[:20]),
                "checkpoint": checkpoint.last_partition if checkpoint else sink_note or "none yet",
            },
        )

    @dg.asset_check(
        asset=w.mongo_batch,
        name="no_duplicate_events",
        required_resource_keys={w.source_key, w.mongo_key},
        description=(
            "No event is staged in two WAL segments (or twice in one), and no row change was"
            " applied twice in MongoDB: every change-log document of a loaded batch belongs to"
            " that batch's segment, once. Covers the segments still on disk."
        ),
    )
    def no_duplicate_events(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        source, mongo = w.source(context), w.mongo(context)
        paths = source.wal_paths()
        report = check_wal(paths, DuplicateReport())
        sink_note = ""
        try:
            with open_sink(mongo.mongo_settings(), RetryPolicy(deadline=CHECK_DEADLINE)) as sink:
                checkpoint = sink.read_checkpoint(paths.source)
                applied_through = checkpoint.last_sequence if checkpoint else 0
                check_change_log(sink.database, paths, applied_through, report)
        except CdcError as error:
            sink_note = f"MongoDB not checked: {error}"
        return dg.AssetCheckResult(
            passed=report.ok and not sink_note,
            severity=dg.AssetCheckSeverity.ERROR if not report.ok else dg.AssetCheckSeverity.WARN,
            metadata={
                "segments checked": report.segments,
                "events staged": report.events,
                "staged twice": report.staged_twice,
                "batches checked in MongoDB": report.batches_checked,
                "change-log documents checked": report.change_log_documents,
                "applied twice": report.applied_twice,
                "missing from the change log": report.missing_from_change_log,
                "first offenders": _capped(report.offenders),
                "first problems": _capped(report.problems + ([sink_note] if sink_note else [])),
            },
        )

    @dg.asset_check(
        asset=w.mongo_batch,
        name="replication_lag",
        required_resource_keys=w.resource_keys,
        description=(
            "Seconds and transactions between the source and the checkpoint applied in MongoDB."
            " Warns past CDC_LAG_WARN_SECONDS (300) or CDC_LAG_WARN_TRANSACTIONS (100,000), errors"
            " past CDC_LAG_ERROR_SECONDS (3600)."
        ),
    )
    def replication_lag(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        source, mongo, audit = w.source(context), w.mongo(context), w.audit(context)
        thresholds = audit.audit_settings().lag
        settings = source.capture_settings()
        status = read_status(source.wal_paths(), settings.source_url, mongo.mongo_settings())
        verdict = judge_lag(status, thresholds)
        figures: dict[str, float | int] = {}
        if status.lag_seconds is not None:
            figures["lag seconds"] = round(status.lag_seconds, 1)
        if status.lag_transactions is not None:
            figures["lag transactions"] = status.lag_transactions
        return dg.AssetCheckResult(
            passed=verdict.state == "ok",
            severity=dg.AssetCheckSeverity.ERROR
            if verdict.state == "error"
            else dg.AssetCheckSeverity.WARN,
            metadata={
                **figures,
                "how the age is known": status.lag_basis or "unknown",
                "transactions not applied": status.unapplied_gtids or "none",
                "pending segments": status.pending_segments,
                "oldest pending batch": status.oldest_pending or "none",
                "applied through": status.applied_partition or "nothing yet",
                "warn / error seconds": (
                    f"{thresholds.warn_seconds:g} / {thresholds.error_seconds:g}"
                ),
                "problems": _capped(verdict.problems),
            },
        )

    @dg.asset_check(
        asset=w.wal_segment,
        name="binlog_retention_headroom",
        required_resource_keys={w.source_key, w.audit_key},
        description=(
            "How far the captured position is from being purged on the source: bytes behind, and"
            " time left before the server's binlog expiry removes the file capture still needs."
            " Warns below CDC_RETENTION_WARN_SECONDS (6 h); errors when the source already purged"
            " transactions capture never read (it names them)."
        ),
    )
    def binlog_retention_headroom(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        source, audit = w.source(context), w.audit(context)
        warn_seconds = audit.audit_settings().retention_warn_seconds
        try:
            source_url = source.capture_settings().source_url
            report = headroom_for(source.wal_paths(), source_url, warn_seconds)
        except CdcError as error:
            return _not_measured("headroom not measured", error)
        metadata: dict[str, object] = {}
        for key, item in report.metadata().items():
            if isinstance(item, list):
                metadata[key] = _capped([str(entry) for entry in item])
            elif item is not None:
                metadata[key] = item
        return dg.AssetCheckResult(
            passed=report.state == "ok",
            severity=dg.AssetCheckSeverity.ERROR
            if report.state == "lost"
            else dg.AssetCheckSeverity.WARN,
            metadata=metadata,
            description=report.summary(),
        )

    return [gtid_continuity, no_duplicate_events, replication_lag, binlog_retention_headroom]


RECONCILIATION = "source_sink_reconciliation"
RECONCILIATION_DESCRIPTION = (
    "Every mirror collection compared with its source table row by row (a hash per row),"
    " at a point the checkpoint is known to cover for that table; names the missing, extra"
    " and differing keys (never values). A table changing faster than the loader catches"
    " up within CDC_RECONCILE_WAIT_SECONDS (60) is skipped (a warning); `cdc-pipeline"
    " verify` runs the same comparison. Each table's result is also its mirror's"
    " matches_source check."
)


def reconciliation_checks(
    tables: Sequence[TableAsset], w: SourceWiring = SINGLE
) -> dg.AssetChecksDefinition:
    """``source_sink_reconciliation`` on ``mongo_batch``, and one ``matches_source`` check per
    keyed table's mirror asset (``defs.tables``), from one comparison."""
    table_specs = table_check_specs(tables)
    by_label = {table.label: table for table in tables}

    @dg.multi_asset_check(
        name=w.name(RECONCILIATION),
        required_resource_keys=w.resource_keys,
        specs=[
            dg.AssetCheckSpec(
                RECONCILIATION, asset=w.mongo_batch, description=RECONCILIATION_DESCRIPTION
            ),
            *table_specs,
        ],
        can_subset=True,
    )
    def _reconcile(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        source, mongo, audit = w.source(context), w.mongo(context), w.audit(context)
        selected = context.selected_asset_check_keys
        overall = dg.AssetCheckKey(w.mongo_batch, RECONCILIATION)
        settings = source.capture_settings()
        wait_seconds = audit.audit_settings().reconcile_wait_seconds
        try:
            report = reconcile(
                source.wal_paths(),
                settings.source_url,
                mongo.mongo_settings(),
                settings.include_tables,
                wait_seconds=wait_seconds,
                mask_key=settings.governance.mask_key,
            )
        except CdcError as error:
            for key in sorted(selected, key=str):
                yield _not_measured("not reconciled", error, key)
            return
        if overall in selected:
            yield _reconciliation_result(report, overall)
        compared = {table.name for table in report.tables}
        for label, asset in sorted(by_label.items()):
            key = dg.AssetCheckKey(asset.copy_key, TABLE_CHECK)
            if asset.keyed and key in selected and label not in compared:
                yield dg.AssetCheckResult(
                    asset_key=asset.copy_key,
                    check_name=TABLE_CHECK,
                    passed=False,
                    severity=dg.AssetCheckSeverity.WARN,
                    description="not compared: the source has no such included table now"
                    " (dropped, renamed, excluded, or without a primary key)",
                )
        for table in report.tables:
            asset = by_label.get(table.name)
            if asset is None or not asset.keyed:
                continue
            key = dg.AssetCheckKey(asset.copy_key, TABLE_CHECK)
            if key in selected:
                yield dg.AssetCheckResult(
                    asset_key=asset.copy_key,
                    check_name=TABLE_CHECK,
                    passed=table.state == "equal",
                    severity=dg.AssetCheckSeverity.ERROR
                    if table.state in ("different", "stale")
                    else dg.AssetCheckSeverity.WARN,
                    description=f"{table.state}{': ' + table.reason if table.reason else ''}",
                    metadata={
                        "source rows": table.source_rows,
                        "mirror documents": table.mirror_rows,
                        "missing": table.missing,
                        "extra": table.extra,
                        "differing": table.differing,
                        "first differing keys": dg.MetadataValue.json(
                            table.to_dict()["differing_keys"][:20]
                        ),
                    },
                )

    return _reconcile


def _reconciliation_result(report: Any, key: dg.AssetCheckKey) -> dg.AssetCheckResult:
    states: dict[str, int] = {}
    for table in report.tables:
        states[table.state] = states.get(table.state, 0) + 1
    tables = report.to_dict()["tables"]
    return dg.AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=report.passed and report.complete,
        severity=dg.AssetCheckSeverity.ERROR if not report.passed else dg.AssetCheckSeverity.WARN,
        description=report.summary(),
        metadata={
            "tables compared": len(report.tables),
            **{f"tables {state}": count for state, count in sorted(states.items())},
            "source rows": sum(table.source_rows for table in report.tables),
            "mirror documents": sum(table.mirror_rows for table in report.tables),
            "stray mirrors": len(report.strays),
            "not mirrored (no primary key)": dg.MetadataValue.json(report.unmirrored[:20]),
            "first problems": _capped(report.problems),
            "tables": dg.MetadataValue.json(tables[:20]),
            "checkpoint gtid": report.checkpoint_gtid or "",
            "source gtid": report.source_gtid or "",
            "seconds": round(report.seconds, 1),
        },
    )


def global_check_keys(w: SourceWiring = SINGLE) -> list[dg.AssetCheckKey]:
    """The five global checks of a source (``cdc-pipeline metrics`` reports their latest
    results)."""
    return [
        dg.AssetCheckKey(w.wal_segment, "gtid_continuity"),
        dg.AssetCheckKey(w.mongo_batch, "no_duplicate_events"),
        dg.AssetCheckKey(w.mongo_batch, "replication_lag"),
        dg.AssetCheckKey(w.wal_segment, "binlog_retention_headroom"),
        dg.AssetCheckKey(w.mongo_batch, RECONCILIATION),
    ]


GLOBAL_CHECK_KEYS = global_check_keys(SINGLE)


def build_checks(
    tables: Sequence[TableAsset], w: SourceWiring = SINGLE
) -> list[dg.AssetChecksDefinition]:
    """Every check of a source, the per-table ones for ``tables``."""
    return [*global_checks(w), reconciliation_checks(tables, w)]


def build_audit(
    checks: Sequence[dg.AssetChecksDefinition], w: SourceWiring = SINGLE
) -> tuple[Any, dg.ScheduleDefinition]:
    """``audit_job`` (every check in ``checks``) and its hourly schedule."""
    job = dg.define_asset_job(
        name=w.name("audit_job"),
        selection=dg.AssetSelection.checks(*checks),
        description="Runs the global checks over the WAL and MongoDB, and each table's.",
    )
    schedule = dg.ScheduleDefinition(
        name=w.name("audit_schedule"),
        job=job,
        cron_schedule="17 * * * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Hourly audit: the global checks (start it in the UI).",
    )
    return job, schedule
