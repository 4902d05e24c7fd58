"""The staging folder is private whatever the umask: folders 0700, files 0600.

Against a real source (both) and the session's MongoDB, under umask 022 (the usual one, which
made every file 0644 and every folder 0755 before): capture (segments, digests, origin and
identity records, the capture lock), a load (applied.json, the loader lock), a quarantined
segment (with its reason) and the breaker file. A folder an earlier version wrote with the
umask's permissions is made private on the next start.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.load.breaker import breaker_of
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.settings import CaptureSettings, SourceUrl
from cdc_pipeline.core.wal.staging import WalPaths, list_segments, quarantine
from cdc_pipeline_tests.conftest import MongoTarget
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def not_private(root: Path) -> list[str]:
    """Every path under ``root`` (itself included) that is not 0700 (folders) or 0600 (files)."""
    wrong = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            wrong.append(f"{path.relative_to(root.parent)} {mode:o}")
    return wrong


def test_everything_in_the_staging_folder_is_private_under_umask_022(
    umask_022: None,
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    db = source_schema
    source_server.execute(f"CREATE TABLE `{db}`.people (id INT PRIMARY KEY, ssn VARCHAR(11))")
    capture_once(capture_settings)
    source_server.execute(
        f"INSERT INTO `{db}`.people VALUES (1, '078-05-1120')",
        f"INSERT INTO `{db}`.people VALUES (2, '219-09-9999')",
    )
    while capture_once(capture_settings).manifest is not None:
        pass
    paths = WalPaths(capture_settings.staging_dir, capture_settings.source_name)
    mongo = dataclasses.replace(mongo_target.settings, database=mongo_db_name)
    run_load(paths, mongo, source_url=SourceUrl.parse(source_server.url))
    breaker_of(paths, 60).record_failure("a probe")
    source_server.execute(f"INSERT INTO `{db}`.people VALUES (3, '457-55-5462')")
    while capture_once(capture_settings).manifest is not None:
        pass
    quarantine(paths, list_segments(paths)[-1], "a test")

    names = {path.name for path in paths.root.rglob("*")}
    assert {"segments", "quarantine", "capture.lock", "loader.lock", "applied.json"} <= names
    assert any(name.endswith(".reason.json") for name in names)
    assert any(name.endswith(".sha256") for name in names)
    assert not_private(paths.root) == []


def test_a_folder_written_with_the_umask_is_made_private_on_the_next_start(
    umask_022: None,
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
) -> None:
    source_server.execute(f"CREATE TABLE `{source_schema}`.t (id INT PRIMARY KEY)")
    capture_once(capture_settings)
    source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES (1)")
    while capture_once(capture_settings).manifest is not None:
        pass
    paths = WalPaths(capture_settings.staging_dir, capture_settings.source_name)
    for path in [paths.root, *paths.root.rglob("*")]:  # as an earlier version left it
        path.chmod(0o755 if path.is_dir() else 0o644)
    assert not_private(paths.root) != []
    capture_once(capture_settings)
    assert not_private(paths.root) == []
