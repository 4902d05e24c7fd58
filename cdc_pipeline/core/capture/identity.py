"""Which server capture reads, and the capture side of ``wal.identity``: refuse a WAL that another
server or another table list wrote, before anything is written to it.

A MySQL server names itself by ``@@server_uuid``. A MariaDB server has no UUID
(``feedback_server_uid`` exists only with the feedback plugin); ``@@server_id`` is unique among
replication partners, and ``@@gtid_domain_id`` is the domain its own transactions get, so the
two together identify it within a topology. Two unrelated MariaDB servers may share both
(``server_id`` defaults to 1): the GTID history test of a different server, and
``tick._check_resumable``, remain the guard there.
"""

from __future__ import annotations

from typing import Any

from cdc_pipeline.core.mysql.source import SourceState, query_one
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.identity import CAPTURE_FACTS, Observed, ServerIdentity, check_identity
from cdc_pipeline.core.wal.ledger import wal_end
from cdc_pipeline.core.wal.staging import WalPaths


def read_server_identity(connection: Any, flavor: str) -> ServerIdentity:
    """The identity of the server behind ``connection`` (``flavor`` as ``read_state`` found)."""
    if flavor == "mysql":
        uuid, hostname, port = query_one(  # type: ignore[misc]
            connection, "SELECT @@server_uuid, @@hostname, @@port"
        )
        return ServerIdentity.mysql(str(uuid), f"{hostname}:{port}")
    server_id, domain_id, hostname, port = query_one(  # type: ignore[misc]
        connection, "SELECT @@server_id, @@gtid_domain_id, @@hostname, @@port"
    )
    return ServerIdentity.mariadb(int(server_id), int(domain_id), f"{hostname}:{port}")


def check_capture_identity(
    settings: CaptureSettings, paths: WalPaths, connection: Any, state: SourceState, door: str
) -> str | None:
    """Refuse to capture into a WAL another server or table list wrote (``WalIdentityError``),
    and record this capture's facts where the folder lacks them. Call under the capture lock,
    before anything is written. Returns the notice of an accepted failover (None: none)."""
    end = wal_end(paths)
    observed = Observed(
        door=door,
        server=read_server_identity(connection, state.flavor),
        executed=state.executed,
        captured=end.gtid if end is not None else None,
        tables=settings.table_scope,
    )
    return check_identity(paths, observed, CAPTURE_FACTS)
