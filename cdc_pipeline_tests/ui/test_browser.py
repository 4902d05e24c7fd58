"""The Dagster UI in a real browser: headless Chromium shows the pipeline's assets, its newest
partition and its passing checks, read from a Dagster home filled by real sensor ticks, load runs
and an ``audit_job`` run against real servers.

It proves what an operator sees after ``make demo`` / ``make ui``: both assets with their
partitions, the newest ``cdc_batches`` partition materialized, and every check's result. A
screenshot of each page goes to ``test-artifacts/ui/``. One source, MariaDB, is enough: the UI
renders Dagster's records (runs, partitions, check evaluations), which do not depend on the
source flavor, and the capture and load paths themselves are tested on both sources elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cdc_pipeline_tests.ui.conftest import REQUIRE_UI_TEST, ROUNDS, UiHome, browser_missing

pytestmark = [
    pytest.mark.integration,
    pytest.mark.ui,
    pytest.mark.skipif(
        browser_missing() is not None and not REQUIRE_UI_TEST,
        reason=f"{browser_missing()} (CDC_REQUIRE_UI_TEST=1 fails instead of skipping)",
    ),
]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
PAGE_TIMEOUT = 60  # seconds: the first page waits for the code location to load


def body_text(browser: webdriver.Chrome) -> str:
    return str(browser.find_element(By.TAG_NAME, "body").text)


def wait_for_text(browser: webdriver.Chrome, screenshot: str, expected: list[str]) -> str:
    """Wait until the page shows every string in ``expected`` (as often as it is listed there),
    screenshot it, return its text."""

    def missing(text: str) -> list[str]:
        return [item for item in expected if text.count(item) < expected.count(item)]

    try:
        WebDriverWait(browser, PAGE_TIMEOUT).until(lambda driver: not missing(body_text(driver)))
    except TimeoutException:
        text = body_text(browser)
        pytest.fail(f"{browser.current_url} never showed {missing(text)}; the page shows:\n{text}")
    finally:
        browser.save_screenshot(str(SCREENSHOTS / f"{screenshot}.png"))
    return body_text(browser)


def test_ui_shows_assets_newest_partition_and_passing_checks(
    browser: webdriver.Chrome, ui_home: UiHome, dagster_ui: str
) -> None:
    assert ui_home.check_results and all(ui_home.check_results.values()), ui_home.check_results
    copy = f"default/mongodb/{ui_home.schema}/customers"
    assert ui_home.check_results[f"{copy}:matches_source"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    newest = ui_home.newest_partition

    browser.get(f"{dagster_ui}/assets")
    wait_for_text(
        browser, "1-asset-catalog", ["mongo_batch", "wal_segment", f"{ROUNDS} partitions"]
    )

    browser.get(f"{dagster_ui}/asset-groups")  # the lineage of the three groups
    wait_for_text(browser, "2-asset-lineage", ["source_tables", "cdc", "mongodb_tables"])
    # The pipeline's own group: a check summary per asset.
    browser.get(f"{dagster_ui}/locations/cdc_pipeline.definitions/asset-groups/cdc")
    passed = "Asset checks\n3 / 3 Passed"  # each asset has three checks
    wait_for_text(browser, "2b-cdc-lineage", ["mongo_batch", "wal_segment", passed, passed])

    browser.get(f"{dagster_ui}/assets/mongo_batch")
    wait_for_text(browser, "3-mongo_batch-overview", ["Latest materialization", newest])

    browser.get(f"{dagster_ui}/assets/mongo_batch?view=partitions")
    wait_for_text(
        browser, "4-mongo_batch-partitions", [f"Materialized ({ROUNDS})", "Missing (0)", newest]
    )
    browser.find_element(By.XPATH, f"//*[text()='{newest}']").click()
    run = f"Run\n{ui_home.newest_run_id[:8]}"  # the UI shows a run by its id's first 8 digits
    expected = [f"{newest}\nMaterialized", run, "Job\nload_batch_job", f"checkpoint\n{newest}"]
    wait_for_text(browser, "5-mongo_batch-newest-partition", expected)

    checks_by_asset = {
        "mongo_batch": ["no_duplicate_events", "replication_lag", "source_sink_reconciliation"],
        "wal_segment": ["binlog_retention_headroom", "gtid_continuity", "schema_versions_valid"],
    }
    for number, (asset, checks) in enumerate(checks_by_asset.items(), start=6):
        browser.get(f"{dagster_ui}/assets/{asset}?view=checks")
        # Each check is listed with its latest result; the first one's details say "Passed".
        expected = [f"{check}\nSucceeded" for check in checks] + ["Evaluation result\nPassed"]
        wait_for_text(browser, f"{number}-{asset}-checks", expected)
    # The check that proves the WAL has no holes, opened: its own latest evaluation passed.
    browser.find_element(By.XPATH, "//*[text()='gtid_continuity']").click()
    expected = [
        "gtid_continuity",
        "gtid_continuity",
        "chain without holes",
        "Evaluation result\nPassed",
    ]
    wait_for_text(browser, "8-wal_segment-gtid_continuity", expected)

    # The table's own assets: its MongoDB copy, materialized by the load runs, with its check,
    # and the source table it comes from.
    browser.get(f"{dagster_ui}/assets/{copy}")
    wait_for_text(
        browser,
        "9-table-copy-overview",
        ["customers", "Latest materialization", "mirror documents", "rows applied"],
    )
    browser.get(f"{dagster_ui}/assets/{copy}?view=checks")
    wait_for_text(browser, "10-table-copy-checks", ["matches_source\nSucceeded"])
    browser.get(f"{dagster_ui}/assets/{copy}?view=lineage&lineageScope=upstream")
    wait_for_text(browser, "11-table-lineage", ["customers", "mongo_batch"])
