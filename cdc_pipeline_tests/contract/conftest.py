"""The MongoDB backends the sink's contract tests run against, one session fixture parameter each.

- ``nx-27017``: the session's local stand-in (the ``mongo_target`` fixture), when it is local;
- ``mongoeco``: the ``mongoeco`` wire server (memory engine) from its own Python >= 3.13 venv,
  built by ``scripts/ensure_mongoeco.sh`` and started here as a child process on a free port;
- ``mongodb``: a real MongoDB at ``CDC_TEST_MONGO_URI``, when that is set.

A backend that is not available is skipped with the reason. Each test gets a fresh database on the
backend, dropped afterwards.

Environment:
    CDC_MONGOECO_VENV: where the mongoeco venv lives (default ~/.cache/cdc_pipeline/mongoeco-venv).
    CDC_MONGOECO_PYTHON: the Python >= 3.13 to build it with (default: found on PATH or pyenv).
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pymongo
import pytest
from pymongo.database import Database

from cdc_pipeline_tests.conftest import MongoTarget
from devtools.local_servers import LocalServer, new_data_dir

REPO = Path(__file__).resolve().parents[2]
ENSURE_MONGOECO = REPO / "scripts" / "ensure_mongoeco.sh"
BACKENDS = ("nx-27017", "mongoeco", "mongodb")

# mongoeco 4.11.0 has no console script for its wire server: this is the documented start
# command (scripts/ensure_mongoeco.sh), with host and port as arguments.
_MONGOECO_SERVER_CODE = """\
import asyncio, sys
from mongoeco.engines.memory import MemoryEngine
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer
async def main(host, port):
    proxy = AsyncMongoEcoProxyServer(engine=MemoryEngine(), host=host, port=int(port))
    await proxy.start()
    print(proxy.address.uri, flush=True)
    await asyncio.Event().wait()
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class ContractBackend(NamedTuple):
    """One MongoDB-speaking server: its name, URI and the mirror naming it accepts."""

    name: str
    uri: str
    mirror_style: str


class MongoecoServer(LocalServer):
    """The ``mongoeco`` wire server, memory engine, run by the Python of its own venv."""

    name = "mongoeco"

    def __init__(self, python: Path, data_dir: Path):
        self.python = python
        super().__init__(data_dir)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def _command(self) -> list[str]:
        return [str(self.python), "-c", _MONGOECO_SERVER_CODE, "127.0.0.1", str(self.port)]

    def _is_ready(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


def _mongoeco_python() -> Path:
    """The venv's Python after ``ensure_mongoeco.sh``; skips the test if there is none."""
    try:
        result = subprocess.run(
            [str(ENSURE_MONGOECO)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"mongoeco: {ENSURE_MONGOECO.name} could not run ({error})")
    venv = Path(
        os.environ.get("CDC_MONGOECO_VENV")
        or Path.home() / ".cache" / "cdc_pipeline" / "mongoeco-venv"
    )
    notice = result.stderr.strip().splitlines()[-1:] or ["no output"]
    if result.returncode != 0:
        pytest.skip(f"mongoeco: {ENSURE_MONGOECO.name} failed: {notice[0]}")
    python = venv / "bin" / "python"
    if not (python.exists() and (venv / ".cdc_ready").exists()):
        pytest.skip(f"mongoeco: no venv at {venv} ({notice[0]})")
    return python


@pytest.fixture(scope="session", params=BACKENDS)
def contract_mongo(request: pytest.FixtureRequest) -> Iterator[ContractBackend]:
    """Each contract test runs once per available backend; yields (name, uri, mirror_style)."""
    if request.param == "nx-27017":
        if os.environ.get("CDC_TEST_MONGO_URI"):
            pytest.skip("nx-27017: CDC_TEST_MONGO_URI is set, so the session did not start it")
        target: MongoTarget = request.getfixturevalue("mongo_target")
        assert target.server is not None
        yield ContractBackend("nx-27017", target.uri, "underscore")
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
