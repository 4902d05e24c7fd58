"""Global asset checks and the audit job that runs them (the rest arrive with the checks issue).

``gtid_continuity``: the WAL's segments chain from where capture began without holes or overlaps,
and MongoDB's checkpoint equals the end of the segment it names. Thin wiring over
``core.continuity``.
"""

import dagster as dg

from cdc_pipeline.core.continuity import check_chain, gather_chain
from cdc_pipeline.core.errors import CdcError
from cdc_pipeline.core.mongo_sink import open_sink
from cdc_pipeline.core.retry import RetryPolicy
from cdc_pipeline.core.settings import source_name_from_env, staging_dir_from_env
from cdc_pipeline.core.wal import WalPaths
from cdc_pipeline.defs.resources import MongoSinkResource


@dg.asset_check(
    asset="wal_segment",
    name="gtid_continuity",
    description=(
        "The WAL's segments chain without holes or overlaps from where capture began, and the"
        " applied checkpoint in MongoDB equals the end of the segment it names."
    ),
)
def gtid_continuity(mongo: MongoSinkResource) -> dg.AssetCheckResult:
    paths = WalPaths(staging_dir_from_env(), source_name_from_env())
    links, origin, flavor, notes = gather_chain(paths)
    if flavor is None:
        return dg.AssetCheckResult(passed=True, metadata={"segments": 0, "note": "nothing yet"})
    checkpoint = None
    sink_note = ""
    try:
        with open_sink(mongo.mongo_settings(), RetryPolicy(deadline=5.0)) as sink:
            checkpoint = sink.read_checkpoint(paths.root.name)
    except CdcError as error:
        sink_note = f"checkpoint not checked: {error}"
    known = {link.sequence for link in links}
    verifiable = checkpoint is not None and checkpoint.last_sequence in known
    report = check_chain(
        links,
        flavor,
        origin,
        checkpoint.last_sequence if verifiable and checkpoint else None,
        checkpoint.gtid if verifiable and checkpoint else None,
    )
    problems = notes + report.problems
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
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


audit_job = dg.define_asset_job(
    name="audit_job",
    selection=dg.AssetSelection.checks(gtid_continuity),
    description="Runs the global checks over the WAL and MongoDB.",
)

audit_schedule = dg.ScheduleDefinition(
    name="audit_schedule",
    job=audit_job,
    cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Hourly audit: the global checks (start it in the UI).",
)
