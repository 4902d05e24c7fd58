"""Fixtures for capture tests: settings pointing one test's schema at a fresh staging folder."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cdc_pipeline.core.settings import CaptureSettings, SourceUrl
from cdc_pipeline.local_servers import SourceServer


def make_capture_settings(
    server: SourceServer, schema: str, staging: Path, **overrides: object
) -> CaptureSettings:
    options: dict[str, object] = {
        "source_url": SourceUrl.parse(server.url),
        "staging_dir": staging,
        "source_name": "default",
        "server_id": random.randint(10_000, 2**31),
        "include_tables": (f"{schema}.*",),
        "max_seconds_per_tick": 10.0,
    }
    options.update(overrides)
    return CaptureSettings(**options)  # type: ignore[arg-type]


@pytest.fixture
def capture_settings(
    source_server: SourceServer, source_schema: str, tmp_path: Path
) -> CaptureSettings:
    return make_capture_settings(source_server, source_schema, tmp_path / "staging")
