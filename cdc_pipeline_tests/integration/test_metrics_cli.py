"""``cdc-pipeline metrics`` against the real sources and the session's MongoDB, its output read
by the Prometheus client library's own parser (what a scraper accepts)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cdc_pipeline.definitions import defs
from cdc_pipeline_tests.integration.test_cli_errors import cli_env, run_cli  # noqa: F401
from devtools.local_servers import SourceServer, free_port

pytestmark = pytest.mark.integration


def scrape(
    env: dict[str, str], *flags: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    run = run_cli("metrics", *flags, env=env)
    assert (run.code, run.stderr) == (0, ""), (run.stdout, run.stderr)
    samples = {}
    for family in text_string_to_metric_families(run.stdout):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "source"))
            assert sample.labels["source"] == "default"
            samples[(sample.name, labels)] = sample.value
    return samples


def test_metrics_follow_capture_load_and_an_outage(
    source_server: SourceServer,
    source_schema: str,
    cli_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**cli_env, "CDC_SEGMENT_MAX_EVENTS": "5"}
    assert run_cli("capture", "--once", env=env).code == 0  # the WAL starts here
    source_server.execute(
        *(f"INSERT INTO `{source_schema}`.t VALUES ({key}, {key})" for key in range(1, 9))
    )
    for _ in range(2):
        assert run_cli("capture", "--once", env=env).code == 0
    assert run_cli("load", "--pending", env=env).code == 0
    loaded = scrape(env, "--no-checks")
    assert loaded[("cdc_up", (("part", "source"),))] == 1
    assert loaded[("cdc_up", (("part", "mongodb"),))] == 1
    assert loaded[("cdc_segments_captured_total", ())] == 2
    assert loaded[("cdc_segments_applied_total", ())] == 2
    assert loaded[("cdc_row_events_captured_total", ())] == 8
    assert loaded[("cdc_row_events_applied_total", ())] == 8
    assert loaded[("cdc_lag_transactions", ())] == 0
    assert loaded[("cdc_lag_seconds", ())] == 0
    assert loaded[("cdc_pending_segments", ())] == 0
    assert loaded[("cdc_breaker_open", ())] == 0
    assert loaded[("cdc_load_halted", ())] == 0
    assert loaded[("cdc_binlog_transactions_lost", ())] == 0
    assert loaded[("cdc_binlog_bytes_behind", ())] == 0

    source_server.execute(f"UPDATE `{source_schema}`.t SET v = -v WHERE id <= 3")
    assert run_cli("capture", "--once", env=env).code == 0
    source_server.execute(f"DELETE FROM `{source_schema}`.t WHERE id = 8")
    behind = scrape(env, "--no-checks")
    assert behind[("cdc_pending_segments", ())] == 1
    assert behind[("cdc_row_events_captured_total", ())] == 11
    assert behind[("cdc_row_events_applied_total", ())] == 8
    assert behind[("cdc_lag_transactions", ())] == 2  # the UPDATE captured, the DELETE not
    assert behind[("cdc_binlog_bytes_behind", ())] > 0

    # MongoDB down: a scrape still answers, says so, and leaves out what it could not read.
    down = scrape({**env, "CDC_MONGO_URI": f"mongodb://127.0.0.1:{free_port()}"}, "--no-checks")
    assert down[("cdc_up", (("part", "mongodb"),))] == 0
    assert ("cdc_load_halted", ()) not in down and ("cdc_dead_letters", ()) not in down

    # With DAGSTER_HOME: the checks' latest results, as audit_job recorded them.
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    audit = {**env, "DAGSTER_HOME": str(home), "CDC_RECONCILE_WAIT_SECONDS": "1"}
    for name, value in audit.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        defs.resolve_job_def("audit_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
    checked = scrape({**env, "DAGSTER_HOME": str(home)})
    results = {
        labels[0][1]: value
        for (name, labels), value in checked.items()
        if name == "cdc_check_passed"
    }
    assert set(results) == {
        "gtid_continuity",
        "no_duplicate_events",
        "replication_lag",
        "binlog_retention_headroom",
        "source_sink_reconciliation",
    }, results
    assert results["gtid_continuity"] == 1 and results["no_duplicate_events"] == 1
    # The mirror misses the captured UPDATE and the DELETE: reconciliation cannot pass.
    assert results["source_sink_reconciliation"] == 0
