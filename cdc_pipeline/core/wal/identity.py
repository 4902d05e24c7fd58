"""``identity.json``: who writes this WAL, so that a capture or load set up otherwise is refused.

A staging folder records the source server it captures (MySQL ``@@server_uuid``; MariaDB
``@@server_id`` with ``@@gtid_domain_id``), the settings that choose its tables
(``settings.TABLE_SCOPE_VARIABLES``) and the mirror style its loads use (from CDC_MONGO_COMPAT).
Each door checks what it knows before it writes anything: a capture tick and the snapshot check
the server and the tables (``capture.identity``), a load the mirror style, and the tables when it
is told them. ``compare`` is the pure part; ``check_identity`` reads, compares and records.

Invariants:
    * a refusal changes nothing in the staging folder: it is raised before any write, this file
      included;
    * a fact the file lacks is recorded by the first door that owns it (capture: server and
      tables; a load: the mirror style), so folders written before this file existed adopt the
      settings of their first use; a recorded fact is never overwritten, except by a failover;
    * a different server is accepted only when its executed GTID set contains everything the WAL
      holds (a failover to a replica): the file then names the new server and keeps the old one
      with the time it was replaced;
    * the file holds no URL, user or password: a server is named by what it says about itself;
    * it is read, compared and rewritten under ``identity.lock``, atomically
      (``staging.write_json_atomically``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdc_pipeline.core.errors import WalIdentityError, WalServerError
from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.settings import MongoSettings
from cdc_pipeline.core.wal.staging import (
    WalPaths,
    identity_lock,
    read_json,
    write_json_atomically,
)

IDENTITY_FORMAT = 1
CAPTURE_FACTS = frozenset({"server", "tables"})
"""What a capture (tick or snapshot) records when the file lacks it."""
LOAD_FACTS = frozenset({"mirror_style"})
"""What a load records when the file lacks it."""
DECISION = "docs/decisions.md, 'The WAL knows who wrote it'"


@dataclass(frozen=True)
class ServerIdentity:
    """A source server as it names itself: ``key`` identifies it, ``host`` is only shown."""

    flavor: str
    key: str
    host: str = ""

    @classmethod
    def mysql(cls, server_uuid: str, host: str = "") -> ServerIdentity:
        return cls("mysql", f"server_uuid {server_uuid.lower()}", host)

    @classmethod
    def mariadb(cls, server_id: int, gtid_domain_id: int, host: str = "") -> ServerIdentity:
        return cls("mariadb", f"server_id {server_id}, gtid_domain_id {gtid_domain_id}", host)

    def same_server(self, other: ServerIdentity) -> bool:
        return (self.flavor, self.key) == (other.flavor, other.key)

    def describe(self) -> str:
        name = "MySQL" if self.flavor == "mysql" else "MariaDB"
        return f"{name} server ({self.key}{f', on {self.host}' if self.host else ''})"


@dataclass(frozen=True)
class WalIdentity:
    """The content of ``identity.json``; an empty field is a fact not recorded yet."""

    source: str
    server: ServerIdentity | None = None
    server_since: str = ""
    previous_servers: tuple[dict[str, str], ...] = ()
    """Servers replaced by a failover, oldest first: their identity, ``since``, ``until`` and
    the WAL's end (``wal_end_gtid``) when the next one took over."""
    tables: Mapping[str, tuple[str, ...]] | None = None
    mirror_style: str = ""
    mongo_compat: str = ""
    created_at: str = ""
    updated_at: str = ""
    format_version: int = IDENTITY_FORMAT

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["previous_servers"] = list(self.previous_servers)
        data["tables"] = (
            None if self.tables is None else {k: list(v) for k, v in self.tables.items()}
        )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WalIdentity:
        server = data.get("server")
        tables = data.get("tables")
        return cls(
            source=str(data["source"]),
            server=None if server is None else ServerIdentity(**server),
            server_since=str(data.get("server_since", "")),
            previous_servers=tuple(dict(item) for item in data.get("previous_servers", ())),
            tables=None if tables is None else {k: tuple(v) for k, v in tables.items()},
            mirror_style=str(data.get("mirror_style", "")),
            mongo_compat=str(data.get("mongo_compat", "")),
            created_at=str(data.get("created_at", "")),
            updated_at=str(data.get("updated_at", "")),
            format_version=int(data.get("format_version", IDENTITY_FORMAT)),
        )


@dataclass(frozen=True)
class Observed:
    """What one door knows of its own configuration; None: unknown to it (neither compared nor
    recorded)."""

    door: str
    """Named in a refusal: ``capture``, ``snapshot``, ``load``, ``status``..."""
    server: ServerIdentity | None = None
    executed: GtidSet | None = None
    """The server's executed GTID set (judges a different server)."""
    captured: GtidSet | None = None
    """The WAL's end state, everything it holds (None: nothing captured yet)."""
    tables: Mapping[str, tuple[str, ...]] | None = None
    mirror_style: str | None = None
    mongo_compat: str | None = None


@dataclass
class Comparison:
    """``refusals``: one sentence per recorded fact ``observed`` contradicts (empty: accepted),
    the server's first (``server_refused``); ``failover``: the notice when a different server
    is accepted."""

    refusals: list[str] = field(default_factory=list)
    failover: str | None = None
    server_refused: bool = False


def _patterns(values: tuple[str, ...]) -> tuple[str, ...]:
    """A pattern list as a set: order and repeats do not change what is captured."""
    return tuple(sorted(set(values)))


def _setting(variable: str, patterns: tuple[str, ...]) -> str:
    return f"{variable}={','.join(patterns)}" if patterns else f"{variable} unset"


def compare(recorded: WalIdentity, observed: Observed, where: Path) -> Comparison:
    """Judge ``observed`` against the folder's record (pure)."""
    result = Comparison()
    _compare_server(recorded, observed, where, result)
    result.refusals += _compare_tables(recorded, observed, where)
    result.refusals += _compare_mirror_style(recorded, observed, where)
    return result


def _compare_tables(recorded: WalIdentity, observed: Observed, where: Path) -> list[str]:
    if recorded.tables is None or observed.tables is None:
        return []
    refusals = []
    for variable, values in observed.tables.items():
        kept = _patterns(recorded.tables.get(variable, ()))
        wanted = _patterns(values)
        if kept != wanted:
            restore = f"set {_setting(variable, kept)}" if kept else f"unset {variable}"
            refusals.append(
                f"the WAL in {where} was captured with {_setting(variable, kept)} but this"
                f" {observed.door} has {_setting(variable, wanted)}, and sharing one WAL"
                f" between the two would skip rows of each; {restore} again, or point"
                f" CDC_STAGING_DIR at a new folder for this configuration ({DECISION})."
            )
    return refusals


def _compare_mirror_style(recorded: WalIdentity, observed: Observed, where: Path) -> list[str]:
    kept, wanted = recorded.mirror_style, observed.mirror_style
    if not kept or not wanted or kept == wanted:
        return []
    compat = recorded.mongo_compat or "?"
    return [
        f"the WAL in {where} is loaded with {kept} mirror names (CDC_MONGO_COMPAT={compat}) but"
        f" this {observed.door} uses {wanted} ones"
        f" (CDC_MONGO_COMPAT={observed.mongo_compat or '?'}), which would split every mirror in"
        f" two; set CDC_MONGO_COMPAT={compat} again, or point CDC_STAGING_DIR at a new folder"
        " (and CDC_MONGO_DB at a new database) for this sink."
    ]


def _compare_server(
    recorded: WalIdentity, observed: Observed, where: Path, result: Comparison
) -> None:
    kept, now = recorded.server, observed.server
    if kept is None or now is None or kept.same_server(now):
        return
    captured, executed = observed.captured, observed.executed
    if kept.flavor != now.flavor or (
        captured is not None and executed is not None and captured.flavor != executed.flavor
    ):
        lacking = "is of the other kind (MySQL or MariaDB)"
    elif executed is None:
        lacking = "could not show its GTID history"
    else:
        missing = captured - executed if captured is not None else GtidSet.empty(executed.flavor)
        if not missing:
            result.failover = (
                f"{now.describe()} replaces {kept.describe()} as the source of the WAL in"
                f" {where}: it has executed everything the WAL holds"
                f" ({captured or 'nothing captured yet'}), so capture goes on from there as"
                " after a failover; identity.json records the change."
            )
            return
        lacking = (
            f"never executed {missing.count():,} of the WAL's transactions"
            f" ({missing.describe()}), so it is not that server or a replica carrying its history"
        )
    result.server_refused = True
    result.refusals.append(
        f"the WAL in {where} was captured from {kept.describe()}, but CDC_MYSQL_URL reaches"
        f" {now.describe()}, which {lacking}; point CDC_MYSQL_URL back at that server (or a"
        " replica of it), or point CDC_STAGING_DIR at a new folder for this one."
    )


def adopt(
    recorded: WalIdentity, observed: Observed, facts: Collection[str], now: str
) -> WalIdentity:
    """``recorded`` with the facts among ``facts`` it lacks taken from ``observed``, and a
    different server (already accepted by ``compare``) put in place of the old (pure)."""
    identity = recorded
    server = observed.server
    if "server" in facts and server is not None:
        kept = identity.server
        if kept is None:
            identity = replace(identity, server=server, server_since=now)
        elif not kept.same_server(server):
            replaced = {
                "flavor": kept.flavor,
                "key": kept.key,
                "host": kept.host,
                "since": identity.server_since,
                "until": now,
                "wal_end_gtid": str(observed.captured or ""),
            }
            identity = replace(
                identity,
                server=server,
                server_since=now,
                previous_servers=(*identity.previous_servers, replaced),
            )
        elif kept.host != server.host:
            identity = replace(identity, server=server)
    if "tables" in facts and observed.tables is not None:
        tables = {name: _patterns(values) for name, values in observed.tables.items()}
        if identity.tables is None or dict(identity.tables) != tables:
            identity = replace(identity, tables={**(identity.tables or {}), **tables})
    if "mirror_style" in facts and observed.mirror_style and not identity.mirror_style:
        identity = replace(
            identity, mirror_style=observed.mirror_style, mongo_compat=observed.mongo_compat or ""
        )
    if identity != recorded:
        identity = replace(identity, updated_at=now, created_at=identity.created_at or now)
    return identity


def read_identity(paths: WalPaths) -> WalIdentity | None:
    """The folder's record; None when there is none yet. An unreadable file is refused: it
    is never silently replaced."""
    if not paths.identity.exists():
        return None
    data = read_json(paths.identity)
    try:
        if data is None:
            raise ValueError
        return WalIdentity.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise WalIdentityError(
            f"{paths.identity} cannot be read, so who wrote this WAL is unknown; restore the"
            " file, or (only if no other pipeline uses this folder) delete it so that the next"
            f" capture records the current settings ({DECISION})."
        ) from None


def check_identity(paths: WalPaths, observed: Observed, facts: Collection[str]) -> str | None:
    """Refuse ``observed`` (``WalIdentityError``, nothing written) when it contradicts the
    folder's record; else record the facts among ``facts`` the record lacks, or a failover.

    Returns the failover notice to log (None: same server, or none known).
    """
    with identity_lock(paths):
        recorded = read_identity(paths)
        base = recorded or WalIdentity(source=paths.source)
        comparison = compare(base, observed, paths.root)
        if comparison.refusals:
            refused = WalServerError if comparison.server_refused else WalIdentityError
            raise refused(comparison.refusals[0])
        updated = adopt(base, observed, facts, datetime.now(UTC).isoformat())
        if updated != recorded:
            write_json_atomically(paths.identity, updated.to_dict())
        return comparison.failover


def check_load_identity(
    paths: WalPaths, mongo: MongoSettings, tables: Mapping[str, tuple[str, ...]] | None
) -> None:
    """The load side of ``check_identity``: the mirror style (recorded by the first load), and
    ``tables`` when the caller knows them (compared, never recorded: capture owns them)."""
    observed = Observed(
        door="load",
        tables=tables,
        mirror_style=mongo.mirror_name_style,
        mongo_compat=mongo.compat,
    )
    check_identity(paths, observed, LOAD_FACTS)


def identity_problems(paths: WalPaths, observed: Observed) -> list[str]:
    """What a capture or load with ``observed`` would be refused for, read only (``status``,
    ``doctor``): one sentence per contradicted fact; empty when none or nothing is recorded."""
    try:
        recorded = read_identity(paths)
    except WalIdentityError as error:
        return [str(error)]
    if recorded is None:
        return []
    return compare(recorded, observed, paths.root).refusals
