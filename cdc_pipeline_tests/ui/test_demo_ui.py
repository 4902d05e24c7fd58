"""What ``make ui`` shows after ``make demo``, in a real browser: the demo run by the real
``dagster-daemon`` (``devtools.demo`` in a temporary folder, with its own MariaDB and
nx-27017), then ``dagster-webserver`` started as ``make ui`` starts it. The sensor's ticks and
the runs it launched are there, each captured table is an asset, and no onboarding dialog
covers the pages. Screenshots go to ``test-artifacts/ui/demo-*.png``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from cdc_pipeline_tests.ui.conftest import (
    PROJECT_ROOT,
    REQUIRE_UI_TEST,
    _wait_until_serving,
    browser_missing,
)
from cdc_pipeline_tests.ui.test_browser import SCREENSHOTS, body_text, wait_for_text
from devtools.local_servers import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.ui,
    pytest.mark.skipif(
        browser_missing() is not None and not REQUIRE_UI_TEST,
        reason=f"{browser_missing()} (CDC_REQUIRE_UI_TEST=1 fails instead of skipping)",
    ),
]


@pytest.fixture(scope="module")
def demo_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("demo")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "DAGSTER_"))}
    demo = subprocess.run(
        [sys.executable, "-m", "devtools.demo"],
        cwd=PROJECT_ROOT,
        env={**base, "CDC_DEMO_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    lines = demo.stdout.splitlines()
    assert len(lines) <= 40, demo.stdout  # a short summary, not Dagster's debug log
    assert "launched by the sensor, 0 failed" in demo.stdout, demo.stdout
    port = free_port()
    log_path = root / "webserver.log"
    env = {  # what make ui sets
        **base,
        "DAGSTER_HOME": str(root / ".dagster_home"),
        "CDC_SOURCE_NAME": "demo",
        "CDC_STAGING_DIR": str(root / ".cdc_staging"),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster-webserver")),
                *("-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_demo_shows_ticks_sensor_runs_and_one_asset_per_table(
    browser: webdriver.Chrome, demo_ui: str
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(f"{demo_ui}/locations/cdc_pipeline/sensors/binlog_capture_sensor")
    text = wait_for_text(
        browser, "demo-1-sensor-ticks", ["binlog_capture_sensor", "1 run requested"]
    )
    assert "never run" not in text
    browser.get(f"{demo_ui}/runs")
    text = wait_for_text(browser, "demo-2-runs", ["load_batch_job", "binlog_capture_sensor"])
    assert "Join the Dagster community" not in text
    browser.get(f"{demo_ui}/assets")
    text = wait_for_text(browser, "demo-3-catalog", ["customers", "order_lines", "mongo_batch"])
    assert "Join the Dagster community" not in body_text(browser)
    browser.get(f"{demo_ui}/assets/demo/mongodb/shop/customers")
    wait_for_text(browser, "demo-4-customers-copy", ["Latest materialization", "mirror documents"])
