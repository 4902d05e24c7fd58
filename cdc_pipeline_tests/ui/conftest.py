"""Fixtures of the browser test: a Dagster home with real runs, its webserver, headless Chromium.

``ui_home`` runs the pipeline once through the real Dagster path on a fresh ``DAGSTER_HOME``
(sensor ticks of ``binlog_capture_sensor``, a ``load_batch_job`` run per partition it requests,
then ``audit_job``); ``dagster_ui`` serves that home with ``dagster-webserver`` as a child
process, stopped by its PID; ``browser`` is Debian's Chromium driven through Debian's
chromedriver, so Selenium Manager never looks for (or downloads) a browser or a driver.
"""

from __future__ import annotations

import importlib
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

import cdc_pipeline.definitions
from cdc_pipeline.definitions import defs
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.sensor_ticks import capture_sensor_tick
from devtools.local_servers import MariaDBServer, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROUNDS = 3  # sensor ticks that each capture new transactions: three partitions

REQUIRE_UI_TEST = os.environ.get("CDC_REQUIRE_UI_TEST", "") not in ("", "0")
"""CI sets CDC_REQUIRE_UI_TEST=1: a missing browser then fails the test instead of skipping it."""


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None when Chromium and its driver are present."""
    absent = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if not absent:
        return None
    return f"{' and '.join(absent)} missing: run scripts/ensure_system_packages.sh as root"


@dataclass
class UiHome:
    """A Dagster home holding real runs, and what the pages must show."""

    path: Path
    env: dict[str, str]
    newest_partition: str
    newest_run_id: str
    check_results: dict[str, bool]
    """By ``asset/path:check``."""
    schema: str


@pytest.fixture(scope="module")
def ui_home(
    mariadb_server: MariaDBServer,
    mongo_target: MongoTarget,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[UiHome]:
    root = tmp_path_factory.mktemp("ui")
    home = root / "dagster_home"
    home.mkdir()
    # The project's instance settings (telemetry off, the loader queue), and no "Join the
    # Dagster community" dialog, which would cover the pages in the screenshots.
    settings = (PROJECT_ROOT / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(settings + "\nnux:\n  enabled: false\n")
    schema = f"ui_{uuid.uuid4().hex[:10]}"
    env = {
        "DAGSTER_HOME": str(home),
        "CDC_MYSQL_URL": mariadb_server.url,
        "CDC_MONGO_URI": mongo_target.uri,
        "CDC_MONGO_DB": f"cdc_{schema}",
        "CDC_STAGING_DIR": str(root / "staging"),
        "CDC_INCLUDE_TABLES": f"{schema}.*",
        "CDC_SERVER_ID": str(random.randint(10_000, 2**31)),
        "CDC_RECONCILE_WAIT_SECONDS": "5",
    }
    mariadb_server.execute(
        f"CREATE DATABASE `{schema}`",
        f"CREATE TABLE `{schema}`.customers (id INT PRIMARY KEY, name VARCHAR(40))",
    )
    with pytest.MonkeyPatch.context() as patch, dg.DagsterInstance.from_config(str(home)) as inst:
        for name, value in env.items():
            patch.setenv(name, value)
        newest_run_id = _run_pipeline(inst, mariadb_server, mongo_target.uri, schema)
        # The code location as the webserver loads it, knowing this WAL's tables: the audit
        # also gives each table's matches_source check.
        located = importlib.reload(cdc_pipeline.definitions)
        audit = located.defs.resolve_job_def("audit_job").execute_in_process(instance=inst)
        checks = {
            f"{'/'.join(e.asset_key.path)}:{e.check_name}": e.passed
            for e in audit.get_asset_check_evaluations()
        }
        partitions = inst.get_dynamic_partitions("cdc_batches")
        assert len(partitions) >= ROUNDS, partitions
        yield UiHome(home, env, partitions[-1], newest_run_id, checks, schema)
    importlib.reload(cdc_pipeline.definitions)  # back to the suite's environment
    mariadb_server.execute(f"DROP DATABASE IF EXISTS `{schema}`")
    with mongo_target.client() as client:
        client.drop_database(env["CDC_MONGO_DB"])


def _run_pipeline(
    instance: dg.DagsterInstance, server: MariaDBServer, mongo_uri: str, schema: str
) -> str:
    """What the daemon does: ticks of the capture sensor and the load runs they request.
    Returns the id of the last load run (the newest partition's)."""
    load_batch_job = defs.resolve_job_def("load_batch_job")
    capture_sensor_tick(instance, server, mongo_uri)  # an empty WAL: fixes where capture starts
    cursor = None
    run_id = ""
    for round_number in range(ROUNDS):
        first = round_number * 10
        server.execute(
            *(
                f"INSERT INTO `{schema}`.customers VALUES ({i}, 'c{i}')"
                for i in range(first, first + 10)
            ),
            f"UPDATE `{schema}`.customers SET name = 'gold' WHERE id = {first}",
        )
        result = capture_sensor_tick(instance, server, mongo_uri, cursor)
        assert isinstance(result, dg.SensorResult), result
        cursor = result.cursor
        for run in result.run_requests or []:
            run_id = load_batch_job.execute_in_process(
                instance=instance, partition_key=run.partition_key, tags=run.tags
            ).run_id
    return run_id


@pytest.fixture(scope="module")
def dagster_ui(ui_home: UiHome) -> Iterator[str]:
    """``dagster-webserver`` on the home, on a free port; yields its base URL."""
    port = free_port()
    log = (ui_home.path / "webserver.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-webserver")),
            *("-h", "127.0.0.1", "-p", str(port), "-m", "cdc_pipeline.definitions"),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, **ui_home.env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, process, ui_home.path / "webserver.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster-webserver exited ({process.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"dagster-webserver did not answer within 120 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium at 1600x1000; fails (never skips) when the browser is missing."""
    missing = browser_missing()
    if missing:
        pytest.fail(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # --no-sandbox: as root (as here and in CI) Chromium will not start with its sandbox.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1600,1000")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
