"""``cdc-pipeline status``: where the source, the WAL and MongoDB stand, and the lag between.

Each part is read independently and a part that cannot be read is reported as such, so status
works (and says what is down) during an outage of the source or the sink. The staging folder's
record of who writes it (``wal.identity``) is compared, read only, with what status knows: the
source server when it is reachable, the mirror style when MongoDB is configured, and the table
settings it is given; a contradiction is a problem (exit 1), as capture or load would refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdc_pipeline.core.capture.identity import read_server_identity
from cdc_pipeline.core.capture.snapshot_plan import load_plan
from cdc_pipeline.core.errors import CdcError
from cdc_pipeline.core.gtid import GtidSet, as_flavor
from cdc_pipeline.core.load.breaker import breaker_of
from cdc_pipeline.core.load.sink import (
    dead_letters_sentence,
    halt_sentence,
    read_checkpoint,
    read_dead_letters,
    read_halt,
)
from cdc_pipeline.core.mysql.source import connect, read_state
from cdc_pipeline.core.settings import MongoSettings, SourceUrl
from cdc_pipeline.core.wal.identity import (
    Observed,
    ServerIdentity,
    WalIdentity,
    identity_problems,
    read_identity,
)
from cdc_pipeline.core.wal.ledger import applied_on_disk, wal_end
from cdc_pipeline.core.wal.segment import read_manifest
from cdc_pipeline.core.wal.staging import (
    WalPaths,
    caught_up_at,
    list_segments,
    partition_key,
    quarantine_sentence,
    quarantined_after,
    read_origin,
    sequence_of,
)

_UNSET_SOURCE = "not configured (CDC_MYSQL_URL is not set)"
_UNSET_MONGO = "not configured (CDC_MONGO_URI is not set)"


@dataclass
class Status:
    source: str
    source_gtid: str | None = None
    source_binlog: str | None = None
    source_error: str | None = None
    captured_gtid: str | None = None
    last_segment: str | None = None
    applied_gtid: str | None = None
    applied_partition: str | None = None
    sink_error: str | None = None
    pending_segments: int = 0
    lag_seconds: float | None = None
    lag_transactions: int | None = None
    unapplied_gtids: str = ""
    oldest_pending: str | None = None
    lag_basis: str = ""
    breaker: str = "closed"
    breaker_text: str = ""
    """The sink breaker as the loader last recorded it (``load.breaker``)."""
    source_configured: bool = True
    mongo_configured: bool = True
    mongo_now: str = ""
    """Whether MongoDB answered this status now: reachable, not reachable, not configured."""
    snapshot: str = ""
    dead_letters: int = 0
    """Rows set aside in ``cdc_dead_letters`` (CDC_ON_UNLOADABLE=dead-letter)."""
    load_halt: str = ""
    """Where loading stopped at a row MongoDB refuses (``cdc_load_halts``), as a sentence."""
    identity: str = ""
    """Who writes this WAL, as ``identity.json`` records it (empty: nothing recorded yet)."""
    notes: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    """Partitions whose segments validation set aside; loading halts at the first."""
    problems: list[str] = field(default_factory=list)
    """One sentence per part that could not be read or needs the operator (first: the most
    urgent); empty when all is well."""

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data.pop("problems")
        return data

    def lines(self) -> list[str]:
        lag = "unknown" if self.lag_seconds is None else f"{self.lag_seconds:.1f} s"
        transactions = "unknown" if self.lag_transactions is None else f"{self.lag_transactions:,}"
        return (
            [
                f"source      {self.source_gtid or self.source_error or _UNSET_SOURCE}"
                + (f" ({self.source_binlog})" if self.source_binlog else ""),
                f"captured    {self.captured_gtid or 'nothing yet'}"
                + (f" (last segment {self.last_segment})" if self.last_segment else ""),
            ]
            + ([f"written by  {self.identity}"] if self.identity else [])
            + [
                f"applied     {self.applied_gtid or self.sink_error or 'nothing yet'}"
                + (f" (through {self.applied_partition})" if self.applied_partition else ""),
                f"pending     {self.pending_segments} segments",
                f"lag         {lag}, {transactions} transactions",
                f"mongodb     {self.mongo_now}",
                f"breaker     {self.breaker_text} (as the loader last recorded it)",
            ]
            + ([f"snapshot    {self.snapshot}"] if self.snapshot else [])
            + (
                [
                    f"quarantined {', '.join(self.quarantined)} (loading halts at"
                    f" {self.quarantined[0]})"
                ]
                if self.quarantined
                else []
            )
        )


def _oldest_unapplied_age(
    paths: WalPaths, pending: list[Path], applied_committed_at: str | None
) -> tuple[float | None, str]:
    """Seconds since the oldest transaction not yet applied committed, and how it is known.

    Exact when that transaction is in a pending segment (its commit time is in the manifest).
    When capture has not read it yet, its commit time is unknown, but it is later than both the
    last applied commit and the last moment capture had everything the source had executed
    (``caught_up.json``): the later of the two gives an upper bound on the age.
    """
    now = datetime.now(UTC)
    oldest = next(
        (m.first_committed_at for m in map(read_manifest, pending) if m.first_committed_at), None
    )
    if oldest:
        return (now - datetime.fromisoformat(oldest)).total_seconds(), "oldest pending segment"
    bounds = [datetime.fromisoformat(applied_committed_at)] if applied_committed_at else []
    caught_up = caught_up_at(paths)
    if caught_up is not None:
        bounds.append(caught_up)
    if not bounds:
        return None, "unknown: nothing applied and capture never caught up"
    return max(0.0, (now - max(bounds)).total_seconds()), "upper bound: not captured yet"


def read_status(
    paths: WalPaths,
    source_url: SourceUrl | None,
    mongo: MongoSettings | None,
    tables: Mapping[str, tuple[str, ...]] | None = None,
) -> Status:
    """The status of ``paths``; ``tables``: the table settings to compare with the folder's
    record (``settings.table_scope_from_env``; None: not compared)."""
    status = Status(source=paths.source)
    source_executed: GtidSet | None = None
    server: ServerIdentity | None = None
    if source_url is not None:
        try:
            with connect(source_url) as connection:
                state = read_state(connection)
                server = read_server_identity(connection, state.flavor)
            source_executed = state.executed
            status.source_gtid = str(state.executed)
            status.source_binlog = f"{state.binlog_file}:{state.binlog_pos}"
        except CdcError as error:
            status.source_error = str(error)
    end = wal_end(paths)
    segments = list_segments(paths)
    if end is not None:
        status.captured_gtid = str(end.gtid)
    if segments:
        status.last_segment = segments[-1].name
    applied: GtidSet | None = None
    applied_sequence = 0
    applied_committed_at: str | None = None
    if mongo is not None:
        try:
            checkpoint = read_checkpoint(mongo, paths.source, deadline=5.0)
            if checkpoint is not None:
                applied = GtidSet.parse(checkpoint.gtid, as_flavor(checkpoint.flavor))
                applied_sequence = checkpoint.last_sequence
                applied_committed_at = checkpoint.last_committed_at
                status.applied_gtid = checkpoint.gtid
                status.applied_partition = checkpoint.last_partition
            halt = read_halt(mongo, paths.source, deadline=5.0)
            if halt is not None:
                status.load_halt = halt_sentence(halt)
                status.problems.append(status.load_halt)
            letters = read_dead_letters(mongo, paths.source, deadline=5.0)
            status.dead_letters = len(letters)
            if letters:
                status.problems.append(dead_letters_sentence(letters))
        except CdcError as error:
            status.sink_error = str(error)
        status.mongo_now = (
            f"not reachable now ({mongo.redacted()})"
            if status.sink_error
            else f"reachable now ({mongo.redacted()})"
        )
    else:
        status.mongo_configured, status.mongo_now = False, _UNSET_MONGO
    status.source_configured = source_url is not None
    origin = read_origin(paths)
    if applied is None and status.sink_error is None and origin is not None:
        # Nothing loaded yet: everything since capture's origin is still to be applied.
        applied = GtidSet.parse(origin.gtid, as_flavor(origin.flavor))
    pending = [path for path in segments if sequence_of(path) > applied_sequence]
    status.pending_segments = len(pending)
    if pending:
        status.oldest_pending = read_manifest(pending[0]).partition_key
    if source_executed is not None and applied is not None:
        missing = source_executed - applied
        status.lag_transactions = missing.count()
        status.unapplied_gtids = missing.describe()
        if not missing:
            status.lag_seconds, status.lag_basis = 0.0, "everything executed is applied"
        else:
            status.lag_seconds, status.lag_basis = _oldest_unapplied_age(
                paths, pending, applied_committed_at
            )
    status.snapshot = _snapshot_text(paths)
    breaker = breaker_of(paths, mongo.breaker_probe_seconds if mongo else 60.0)
    status.breaker = breaker.read().state
    status.breaker_text = breaker.describe(status.pending_segments)
    _add_problems(status, paths, applied_sequence or applied_on_disk(paths), mongo)
    observed = Observed(
        door="configuration",
        server=server,
        executed=source_executed,
        captured=end.gtid if end is not None else None,
        tables=tables,
        mirror_style=mongo.mirror_name_style if mongo is not None else None,
        mongo_compat=mongo.compat if mongo is not None else None,
    )
    status.problems[:0] = identity_problems(paths, observed)  # first: nothing moves until fixed
    status.identity = _identity_text(paths)
    return status


def _identity_text(paths: WalPaths) -> str:
    """``identity.json`` in one line ("" when there is none; its problem is reported apart)."""
    try:
        recorded: WalIdentity | None = read_identity(paths)
    except CdcError:
        return "unreadable"
    if recorded is None:
        return ""
    parts = [recorded.server.describe() if recorded.server else "server not recorded yet"]
    for variable, patterns in sorted((recorded.tables or {}).items()):
        parts.append(f"{variable}={','.join(patterns)}" if patterns else f"{variable} unset")
    if recorded.mirror_style:
        parts.append(f"{recorded.mirror_style} mirror names")
    if recorded.previous_servers:
        parts.append(f"{len(recorded.previous_servers)} earlier server(s) before a failover")
    return "; ".join(parts)


def _add_problems(
    status: Status, paths: WalPaths, applied_sequence: int, mongo: MongoSettings | None
) -> None:
    quarantined = quarantined_after(paths, applied_sequence)
    status.quarantined = [partition_key(paths.source, sequence_of(path)) for path in quarantined]
    if quarantined:
        status.problems.append(quarantine_sentence(paths, quarantined[0]))
    if status.source_error:
        status.problems.append(f"status is partial: {status.source_error}")
    if status.sink_error:
        where = mongo.redacted() if mongo is not None else "CDC_MONGO_URI"
        status.problems.append(
            f"status is partial: MongoDB at {where} could not be read, so what was applied is"
            " unknown; start MongoDB or correct CDC_MONGO_URI (details above)."
        )


def _snapshot_text(paths: WalPaths) -> str:
    """The newest snapshot's state in one line ("" when none was ever taken)."""
    try:
        plan = load_plan(paths)
    except CdcError as error:
        return str(error)
    if plan is None:
        return ""
    rows = sum(int(record.get("rows_done", 0)) for record in plan.progress.values())
    done = sum(bool(record.get("done")) for record in plan.progress.values())
    text = (
        f"{plan.snapshot_id} {plan.status}: {done} of {len(plan.table_names)} tables, {rows:,} rows"
    )
    if plan.status == "running":
        text += " (interrupted or still running: 'cdc-pipeline snapshot' resumes it)"
    return text
