"""The servers the benchmarks run against, started as child processes and stopped afterwards.

Measures nothing. Uses ``devtools.local_servers`` as the demo and the test fixtures do: a
local MariaDB 10.11 and/or MySQL 9.7 (the cached chroot), and the MongoDB stand-in nx-27017 unless
``--mongo-uri`` names a real MongoDB. Every server is bound to 127.0.0.1, dies with this process
(``PR_SET_PDEATHSIG``) and is stopped by its own PID, its data folder deleted, on the way out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from devtools.local_servers import (
    LocalServer,
    MariaDBServer,
    MySQLServer,
    NxMongoServer,
    SourceServer,
    new_data_dir,
)


@dataclass
class BenchServers:
    """The started sources by name (``mariadb``/``mysql``) and where MongoDB is."""

    sources: dict[str, SourceServer]
    mongo_uri: str
    mongo_server: NxMongoServer | None
    started: list[LocalServer] = field(default_factory=list)

    @property
    def mongo_compat(self) -> str:
        """CDC_MONGO_COMPAT for the sink: the stand-in lacks dotted names and Decimal128."""
        return "nx-27017" if self.mongo_server is not None else "standard"


def _new_source(name: str) -> SourceServer:
    if name == "mariadb":
        return MariaDBServer(new_data_dir("bench-mariadb"))
    if name == "mysql":
        return MySQLServer()
    raise ValueError(f"unknown source '{name}': use mariadb or mysql")


@contextlib.contextmanager
def started_servers(sources: list[str], mongo_uri: str | None) -> Iterator[BenchServers]:
    """Start every source named and nx-27017 (unless ``mongo_uri``); stop them all on exit."""
    servers = BenchServers(sources={}, mongo_uri=mongo_uri or "", mongo_server=None)
    try:
        for name in sources:
            server = _new_source(name)
            servers.started.append(server)
            server.start()
            servers.sources[name] = server
        if mongo_uri is None:
            mongo = NxMongoServer(new_data_dir("bench-nx"))
            servers.started.append(mongo)
            mongo.start()
            servers.mongo_server = mongo
            servers.mongo_uri = mongo.uri
        yield servers
    finally:
        for server in reversed(servers.started):
            server.cleanup()
