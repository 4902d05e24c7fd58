"""A password in an account statement never reaches the WAL or MongoDB (real MariaDB writes
``CREATE USER … IDENTIFIED BY 'pw'`` to its binlog in clear; MySQL writes the hash)."""

from __future__ import annotations

import uuid

import pytest

from cdc_pipeline.core.load.documents import DDL_HISTORY
from cdc_pipeline.core.load.loader import load_pending
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.segment import read_rows
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.integration.test_load import capture_all
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


def test_an_account_statement_reaches_neither_the_wal_nor_mongodb_with_its_password(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    secret = f"S3cret-{uuid.uuid4().hex[:8]}"
    user = f"u_{uuid.uuid4().hex[:8]}"
    capture_all(capture_settings)
    source_server.execute(
        f"USE `{source_schema}`",
        f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{secret}'",
        f"ALTER USER '{user}'@'127.0.0.1' IDENTIFIED BY '{secret}x'",
        "CREATE TABLE t (id INT PRIMARY KEY, password VARCHAR(8))",
    )
    try:
        capture_all(capture_settings)
        paths = WalPaths(capture_settings.staging_dir, "default")
        statements = [
            row["statement"]
            for segment in list_segments(paths)
            for row in read_rows(segment)
            if row["op"] == "ddl"
        ]
        assert any("CREATE USER" in statement for statement in statements)  # kept, redacted
        assert any("password VARCHAR" in statement for statement in statements)
        assert not any(secret in statement for statement in statements)
        for path in paths.root.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
        with mongo_target.client() as client:
            load_pending(paths, mongo_target.sink(client[mongo_db_name]))
            history = [d["statement"] for d in client[mongo_db_name][DDL_HISTORY].find()]
        assert history and not any(secret in statement for statement in history)
    finally:
        source_server.execute(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
