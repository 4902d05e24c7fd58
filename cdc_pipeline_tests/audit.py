"""Run ``audit_job`` in process and return its check evaluations by check name.

The definitions are built afresh for each call, from the environment at that moment, as a code
location loads them: the per-table ``matches_source`` checks follow the test's own staging
folder and include patterns. (A module-level ``defs`` kept the tables of whichever test first
imported it, so a later test's audit checked another test's tables and failed or passed
depending on the order the tests ran in.)"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from cdc_pipeline.definitions import build_definitions


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
    """By check name; of the per-table checks that share a name, a failed one if any."""
    with dg.instance_for_test() as instance:
        result = (
            build_definitions()
            .resolve_job_def("audit_job")
            .execute_in_process(instance=instance, raise_on_error=False)
        )
        evaluations = result.get_asset_check_evaluations()
    by_name: dict[str, dg.AssetCheckEvaluation] = {}
    for evaluation in evaluations:
        kept = by_name.get(evaluation.check_name)
        if kept is None or (kept.passed and not evaluation.passed):
            by_name[evaluation.check_name] = evaluation
    return by_name


def value(evaluation: dg.AssetCheckEvaluation, key: str) -> Any:
    """A metadata entry's plain value."""
    return evaluation.metadata[key].value
