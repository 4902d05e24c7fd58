"""Run ``audit_job`` in process and return its check evaluations by check name."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from cdc_pipeline.definitions import defs


def audit(reconcile_wait: str = "2") -> dict[str, dg.AssetCheckEvaluation]:
    """Every check's evaluation; reconciliation waits ``reconcile_wait`` s for a busy table
    (tests that leave the loader behind on purpose must not wait the default minute)."""
    saved = os.environ.get("CDC_RECONCILE_WAIT_SECONDS")
    os.environ["CDC_RECONCILE_WAIT_SECONDS"] = saved or reconcile_wait
    try:
        return _run_audit()
    finally:
        if saved is None:
            del os.environ["CDC_RECONCILE_WAIT_SECONDS"]


def _run_audit() -> dict[str, dg.AssetCheckEvaluation]:
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("audit_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
        evaluations = result.get_asset_check_evaluations()
    return {evaluation.check_name: evaluation for evaluation in evaluations}


def value(evaluation: dg.AssetCheckEvaluation, key: str) -> Any:
    """A metadata entry's plain value."""
    return evaluation.metadata[key].value
