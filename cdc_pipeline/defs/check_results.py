"""The latest result of each asset check, as Dagster's instance recorded it (for
``cdc-pipeline metrics``, which runs outside Dagster)."""

from __future__ import annotations

import os

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from cdc_pipeline.core.audit.metrics import CheckResult
from cdc_pipeline.core.settings import source_name_from_env
from cdc_pipeline.core.sources_file import read_sources
from cdc_pipeline.defs.checks import GLOBAL_CHECK_KEYS, global_check_keys
from cdc_pipeline.defs.wiring import SourceWiring

_DONE = {
    AssetCheckExecutionRecordStatus.SUCCEEDED: True,
    AssetCheckExecutionRecordStatus.FAILED: False,
}


def latest_check_results() -> list[CheckResult]:
    """One result per global check that finished at least once; none without DAGSTER_HOME."""
    if not os.environ.get("DAGSTER_HOME"):
        return []
    # With CDC_SOURCES_FILE the checks are named after the source the command acts on.
    keys = (
        GLOBAL_CHECK_KEYS
        if read_sources() is None
        else global_check_keys(SourceWiring(source_name_from_env()))
    )
    with dg.DagsterInstance.get() as instance:
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    results = []
    for key, record in sorted(latest.items(), key=lambda item: item[0].name):
        if record is not None and record.status in _DONE:
            results.append(CheckResult(key.name, _DONE[record.status], record.create_timestamp))
    return results
