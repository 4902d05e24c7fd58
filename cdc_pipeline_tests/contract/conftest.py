"""The MongoDB backends the sink's contract tests run against, one session fixture parameter each.

- ``nx-27017``: the session's local stand-in (the ``mongo_target`` fixture), when the session
  runs on it (the default);
- ``mongoeco``: the ``mongoeco`` wire server (memory engine) from its own Python >= 3.13 venv,
  built by ``scripts/ensure_mongoeco.sh`` (``devtools.local_servers.MongoecoServer``): the
  session's own under ``CDC_TEST_MONGO=mongoeco``, else started here on a free port;
- ``mongodb``: a real MongoDB at ``CDC_TEST_MONGO_URI``, when that is set.

A backend that is not available is skipped with the reason. Each test gets a fresh database on the
backend, dropped afterwards.

Environment:
    CDC_MONGOECO_VENV: where the mongoeco venv lives (default ~/.cache/cdc_pipeline/mongoeco-venv).
    CDC_MONGOECO_PYTHON: the Python >= 3.13 to build it with (default: found on PATH or pyenv).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pymongo
import pytest
from pymongo.database import Database

from cdc_pipeline_tests.conftest import MongoTarget, session_mongo_kind
from devtools.local_servers import (
    MongoecoServer,
    MongoecoUnavailable,
    mongoeco_python,
    new_data_dir,
)

BACKENDS = ("nx-27017", "mongoeco", "mongodb")


class ContractBackend(NamedTuple):
    """One MongoDB-speaking server: its name, URI and the mirror naming it accepts."""

    name: str
    uri: str
    mirror_style: str


def _mongoeco_python() -> Path:
    """The mongoeco venv's Python (``devtools.local_servers.mongoeco_python``), or a skip."""
    try:
        return mongoeco_python()
    except MongoecoUnavailable as reason:
        pytest.skip(f"mongoeco: {reason}")


@pytest.fixture(scope="session", params=BACKENDS)
def contract_mongo(request: pytest.FixtureRequest) -> Iterator[ContractBackend]:
    """Each contract test runs once per available backend; yields (name, uri, mirror_style)."""
    session_kind = session_mongo_kind()
    if request.param == "nx-27017":
        if session_kind != "nx-27017":
            pytest.skip(f"nx-27017: the session's MongoDB is {session_kind}, not nx-27017")
        target: MongoTarget = request.getfixturevalue("mongo_target")
        yield ContractBackend("nx-27017", target.uri, "underscore")
    elif request.param == "mongoeco" and session_kind == "mongoeco":
        target = request.getfixturevalue("mongo_target")
        yield ContractBackend("mongoeco", target.uri, "dotted")
    elif request.param == "mongoeco":
        server = MongoecoServer(_mongoeco_python(), new_data_dir("mongoeco"))
        try:
            server.start()
            yield ContractBackend("mongoeco", server.uri, "dotted")
        finally:
            server.cleanup()  # SIGTERM (then SIGKILL) to the PID started here, data dir removed
        assert not server.is_running(), f"mongoeco (pid {server.pid}) is still running"
    else:
        uri = os.environ.get("CDC_TEST_MONGO_URI")
        if not uri:
            pytest.skip("mongodb: CDC_TEST_MONGO_URI is not set")
        yield ContractBackend("mongodb", uri, "dotted")


@pytest.fixture(scope="session")
def contract_client(contract_mongo: ContractBackend) -> Iterator[pymongo.MongoClient[Any]]:
    """A tz-aware client of the backend (the sink's own client options)."""
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        contract_mongo.uri, serverSelectionTimeoutMS=5_000, tz_aware=True
    )
    yield client
    client.close()


@pytest.fixture
def contract_db(contract_client: pymongo.MongoClient[Any]) -> Iterator[Database[Any]]:
    """A fresh database for one test, dropped afterwards."""
    name = f"cdc_contract_{uuid.uuid4().hex[:10]}"
    yield contract_client[name]
    contract_client.drop_database(name)
