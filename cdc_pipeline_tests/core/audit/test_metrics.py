"""The metrics text: what Prometheus' own parser reads back, and parts that could not be read."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cdc_pipeline.core.audit.metrics import CheckResult, Metrics, gather
from cdc_pipeline.core.audit.status import Status
from cdc_pipeline.core.wal.staging import WalPaths


def test_label_values_are_escaped_so_the_parser_reads_them_back() -> None:
    metrics = Metrics('we"ird\\source\nname')
    metrics.add("cdc_pending_segments", 3)
    metrics.add("cdc_lag_seconds", 1.25)
    metrics.add("cdc_lag_transactions", None)  # not measured: no sample at all
    families = {family.name: family for family in text_string_to_metric_families(metrics.text())}
    assert set(families) == {"cdc_pending_segments", "cdc_lag_seconds"}
    (pending,) = families["cdc_pending_segments"].samples
    assert pending.labels == {"source": 'we"ird\\source\nname'} and pending.value == 3
    assert families["cdc_lag_seconds"].samples[0].value == 1.25


def test_a_source_that_did_not_answer_is_up_0_without_made_up_figures(tmp_path: Path) -> None:
    paths = WalPaths(tmp_path, "orders")
    status = Status(source="orders", source_error="cannot reach the source", sink_error="down")
    checks = [CheckResult("gtid_continuity", False, 1_700_000_000.5)]
    text = gather(paths, status, None, checks).text()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("cdc_up", (("part", "source"), ("source", "orders")))] == 0
    assert samples[("cdc_up", (("part", "mongodb"), ("source", "orders")))] == 0
    names = {name for name, _ in samples}
    assert not names & {"cdc_lag_seconds", "cdc_lag_transactions", "cdc_load_halted"}
    assert not names & {"cdc_binlog_bytes_behind", "cdc_binlog_retention_headroom_seconds"}
    check = (("check", "gtid_continuity"), ("source", "orders"))
    assert samples[("cdc_check_passed", check)] == 0
    assert samples[("cdc_check_timestamp_seconds", check)] == 1_700_000_000.5
