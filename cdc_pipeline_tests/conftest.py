"""Session fixtures: real MariaDB, real MySQL 9.7 and a MongoDB wire-protocol server, as processes.

Each server starts once per test session on a free 127.0.0.1 port with a temporary data folder,
can be killed -9 and restarted on the same data by a test, and is stopped (by the PID we started)
and deleted at the end. Tests get their own source schema and MongoDB database, so they never see
each other's rows.

Environment:
    CDC_TEST_SOURCES: comma-separated subset of ``mariadb,mysql`` (default both).
    CDC_TEST_MONGO: which MongoDB the session starts: ``nx-27017`` (default; fast, run with
        CDC_MONGO_COMPAT=nx-27017) or ``mongoeco`` (close to MongoDB but slow; run with
        CDC_MONGO_COMPAT=standard: dotted mirror names, Decimal128, renameCollection). Tests that
        kill MongoDB are skipped on mongoeco (its memory engine dies with its process).
    CDC_TEST_MONGO_URI: run against this MongoDB instead of starting one (CDC_MONGO_COMPAT
        standard); tests that kill the MongoDB server are skipped then.
    CDC_MYSQL_CHROOT: where the MySQL 9.7 chroot is cached (``make mysql-chroot`` builds it).
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pymongo
import pytest

from cdc_pipeline.core.load.sink import MongoSink
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl
from cdc_pipeline.core.wal.staging import WalPaths
from devtools.local_servers import (
    MariaDBServer,
    MongoecoServer,
    MongoecoUnavailable,
    MySQLServer,
    NxMongoServer,
    SourceServer,
    mongoeco_python,
    new_data_dir,
)
from devtools.postgres import PostgresServer

# Property tests check values, not speed: Hypothesis's 200 ms deadline and its slow-generation
# health check fail them on a busy CI machine (seen when the fault suite ran beside them).
hypothesis.settings.register_profile(
    "cdc", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("cdc")

SOURCE_FLAVORS = [
    name.strip()
    for name in os.environ.get("CDC_TEST_SOURCES", "mariadb,mysql").split(",")
    if name.strip()
]


def _assert_stopped(
    server: SourceServer | NxMongoServer | MongoecoServer | PostgresServer,
) -> None:
    server.cleanup()
    assert not server.is_running(), f"{server.name} (pid {server.pid}) is still running"


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    server = MariaDBServer(new_data_dir("mariadb"))
    server.start()
    yield server
    _assert_stopped(server)


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MySQLServer]:
    server = MySQLServer()
    server.start()
    yield server
    _assert_stopped(server)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL for Dagster's storage (the real-daemon scenarios), started on first use."""
    server = PostgresServer(new_data_dir("postgres"))
    server.start()
    yield server
    _assert_stopped(server)


@pytest.fixture(scope="session", params=SOURCE_FLAVORS)
def source_server(request: pytest.FixtureRequest) -> SourceServer:
    """Each source-side test runs once against MariaDB and once against MySQL 9.7."""
    server: SourceServer = request.getfixturevalue(f"{request.param}_server")
    return server


@pytest.fixture
def source_schema(source_server: SourceServer) -> Iterator[str]:
    """A fresh database on the source for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    source_server.execute(f"CREATE DATABASE `{name}`")
    yield name
    if source_server.is_running():
        source_server.execute(f"DROP DATABASE IF EXISTS `{name}`")


MONGO_KINDS = ("nx-27017", "mongoeco")


def session_mongo_kind() -> str:
    """Which MongoDB this session runs on: ``mongodb`` (CDC_TEST_MONGO_URI, external), else
    CDC_TEST_MONGO (``nx-27017`` by default, or ``mongoeco``)."""
    if os.environ.get("CDC_TEST_MONGO_URI"):
        return "mongodb"
    kind = os.environ.get("CDC_TEST_MONGO", "").strip() or "nx-27017"
    if kind not in MONGO_KINDS:
        raise pytest.UsageError(f"CDC_TEST_MONGO must be one of {', '.join(MONGO_KINDS)}: {kind!r}")
    return kind


@dataclass
class MongoTarget:
    """Where the tests' MongoDB is: nx-27017 or mongoeco started here, or an external MongoDB.

    ``kind`` decides the CDC_MONGO_COMPAT the pipeline runs with: ``nx-27017`` for the fast
    stand-in, ``standard`` (what a real MongoDB gets) for mongoeco and an external server.
    Tests ask this object (``compat``, ``mirror_style``, ``sink``) rather than assume a server.
    """

    uri: str
    kind: str
    server: NxMongoServer | MongoecoServer | None

    @property
    def settings(self) -> MongoSettings:
        """The sink settings CDC_MONGO_COMPAT gives for this server (database ``cdc``)."""
        return MongoSettings(uri=self.uri, compat=self.compat)

    @property
    def can_kill(self) -> bool:
        """Whether a test may kill -9 the server and expect it back with its data."""
        return self.server is not None and self.server.keeps_data_on_restart

    @property
    def compat(self) -> str:
        """CDC_MONGO_COMPAT for this server: the stand-in lacks dotted names and Decimal128."""
        return "nx-27017" if self.kind == "nx-27017" else "standard"

    @property
    def mirror_style(self) -> str:
        return self.settings.mirror_name_style

    def sink(self, database: Any, **kwargs: Any) -> MongoSink:
        """A MongoSink configured for this server, as CDC_MONGO_COMPAT would configure it."""
        settings = self.settings
        return MongoSink(
            database,
            mirror_style=settings.mirror_name_style,
            decimals_as_strings=settings.decimals_as_strings,
            native_rename=settings.native_rename,
            **kwargs,
        )

    def client(self, **kwargs: object) -> pymongo.MongoClient:  # type: ignore[type-arg]
        return pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=5000, **kwargs)


def _start_mongo(kind: str) -> NxMongoServer | MongoecoServer:
    if kind == "mongoeco":
        try:
            python = mongoeco_python()
        except MongoecoUnavailable as reason:
            pytest.exit(f"CDC_TEST_MONGO=mongoeco, but mongoeco cannot run here: {reason}", 2)
        server: NxMongoServer | MongoecoServer = MongoecoServer(python, new_data_dir("mongoeco"))
    else:
        server = NxMongoServer(new_data_dir("nx-27017"))
    server.start()
    return server


@pytest.fixture(scope="session")
def mongo_target() -> Iterator[MongoTarget]:
    kind = session_mongo_kind()
    if kind == "mongodb":
        target = MongoTarget(uri=os.environ["CDC_TEST_MONGO_URI"], kind=kind, server=None)
        os.environ["CDC_MONGO_COMPAT"] = target.compat
        yield target
        return
    server = _start_mongo(kind)
    target = MongoTarget(uri=server.uri, kind=kind, server=server)
    # Subprocesses (the CLI) and Dagster runs name mirrors the way this server accepts.
    os.environ["CDC_MONGO_COMPAT"] = target.compat
    yield target
    _assert_stopped(server)


@pytest.fixture
def killable_mongo(mongo_target: MongoTarget) -> NxMongoServer:
    """The local MongoDB stand-in, for tests that kill it and expect it back with its data;
    skipped against an external MongoDB and against mongoeco."""
    if mongo_target.kind == "mongodb":
        pytest.skip("CDC_TEST_MONGO_URI is set: the external MongoDB is not ours to kill")
    if not isinstance(mongo_target.server, NxMongoServer):
        pytest.skip(
            f"{mongo_target.kind} keeps its data in memory only: a kill -9 and restart comes"
            " back empty, so recovery on the same data cannot be tested on it"
        )
    return mongo_target.server


@pytest.fixture
def mongo_db_name(mongo_target: MongoTarget) -> Iterator[str]:
    """A fresh MongoDB database name for one test, dropped afterwards."""
    name = f"cdc_test_{uuid.uuid4().hex[:10]}"
    yield name
    with mongo_target.client() as client:
        client.drop_database(name)


def make_capture_settings(
    server: SourceServer, schema: str, staging: Path, **overrides: object
) -> CaptureSettings:
    """Capture settings for one test: its schema only, its own staging folder and server id."""
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


@pytest.fixture
def pipeline_env(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> WalPaths:
    """The CDC_* variables of this test's pipeline (its source, schema, MongoDB database and
    staging folder), set for Dagster code and the CLI; returns its WAL paths."""
    for name, value in {
        "CDC_MYSQL_URL": source_server.url,
        "CDC_MONGO_URI": mongo_target.uri,
        "CDC_MONGO_DB": mongo_db_name,
        "CDC_STAGING_DIR": str(capture_settings.staging_dir),
        "CDC_INCLUDE_TABLES": f"{source_schema}.*",
        "CDC_SERVER_ID": str(capture_settings.server_id),
    }.items():
        monkeypatch.setenv(name, value)
    return WalPaths(capture_settings.staging_dir, capture_settings.source_name)
