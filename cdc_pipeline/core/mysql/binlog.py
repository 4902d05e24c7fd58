"""Binlog -> a stream of transaction items (begin, row images, DDL, commit), for both dialects.

Invariants:
    * items come in binlog order, and every ``RowImages``/``Ddl`` sits between the ``TxBegin`` and
      the ``TxCommit`` of its transaction; a caller that stops only after a ``TxCommit`` never
      splits a transaction;
    * the library's silent reconnect (mysql-replication #367: it replays from the original
      position) is disabled: a lost connection raises ``SourceUnavailableError`` and the caller
      starts a new reader from its own durable position;
    * events the library cannot decode (MySQL compressed or tagged-GTID transactions) stop the
      stream with ``SourceSettingError`` instead of being dropped silently;
    * rows of tables outside the include patterns are never decoded (the GTID state still
      advances over their transactions).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    NotImplementedEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from cdc_pipeline.core.errors import BinlogPurgedError, SourceSettingError, SourceUnavailableError
from cdc_pipeline.core.gtid import Flavor, GtidSet
from cdc_pipeline.core.mysql.decoder_fixes import install_decoder_fixes
from cdc_pipeline.core.mysql.row_decoder import decode_rows, table_map_signature
from cdc_pipeline.core.mysql.source import open_connection
from cdc_pipeline.core.schema import TableSchema, table_schema_from_rows_event, with_json_columns
from cdc_pipeline.core.settings import SourceUrl
from cdc_pipeline.core.values import row_converter

_MARIADB_STANDALONE = 0x01
_OWN_DUMP_THREAD = (
    "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = %s"
    " AND USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND COMMAND LIKE 'Binlog Dump%%'"
)
"""Whether a thread is a binlog dump of this user (``BinlogReader.end_dump``)."""
_UNSUPPORTED_EVENT_TYPES = {
    40: "a compressed transaction (binlog_transaction_compression=ON)",
    42: "a tagged GTID transaction (SET gtid_next='AUTOMATIC:<tag>')",
}


MODE_ANSI_QUOTES = 4
"""The ANSI_QUOTES bit of the sql_mode a Query event carries (MySQL and MariaDB)."""
MODE_NO_BACKSLASH_ESCAPES = 1 << 20
"""The NO_BACKSLASH_ESCAPES bit of that sql_mode (both servers)."""


@dataclass(frozen=True)
class TxBegin:
    gtid: str
    committed_at: datetime


class RowImages(NamedTuple):
    """The changed rows of one rows event (one table, one operation), in binlog order: each
    ``(before, after)``, BSON-ready documents in column order (None where the operation has
    no such image: ``before`` of an insert, ``after`` of a delete).

    One item per rows event, not per row: a rows event holds up to hundreds of rows, and what
    they share (table, schema version, position) is handled once (a named tuple: a third of a
    frozen dataclass's cost to build)."""

    schema: str
    table: str
    op: str  # insert | update | delete
    images: list[tuple[dict[str, Any] | None, dict[str, Any] | None]]
    table_schema: TableSchema
    binlog_file: str
    binlog_pos: int


@dataclass(frozen=True)
class Ddl:
    schema: str
    """The session's default schema (what unqualified names in the statement belong to)."""
    statement: str
    binlog_file: str
    binlog_pos: int
    ansi_quotes: bool = False
    """The session's sql_mode has ANSI_QUOTES: ``"x"`` in the statement is a name."""
    no_backslash_escapes: bool = False
    """The session's sql_mode has NO_BACKSLASH_ESCAPES: ``\\`` in a string is a character."""


@dataclass(frozen=True)
class TxCommit:
    gtid: str
    binlog_file: str
    binlog_pos: int


@dataclass(frozen=True)
class Idle:
    """The stream is quiet (a heartbeat): a chance for the caller to check its clock."""

    binlog_file: str
    binlog_pos: int


Item = TxBegin | RowImages | Ddl | TxCommit | Idle


class _StrictReader(BinLogStreamReader):  # type: ignore[misc]
    """A BinLogStreamReader that refuses to reconnect by itself (it would replay, see #367)."""

    _stream_connects = 0

    def _BinLogStreamReader__connect_to_stream(self) -> None:
        self._stream_connects += 1
        if self._stream_connects > 1:
            raise _StreamLost
        BinLogStreamReader._BinLogStreamReader__connect_to_stream(self)


class _StreamLost(Exception):
    pass


def _mysql_commit_time(event: Any) -> datetime:
    """MySQL 8+: the GTID event's immediate_commit_timestamp (microseconds), which the library
    leaves unread right after the fields it parses; falls back to the header's seconds."""
    try:
        raw = event.packet.read(7)
        micros = struct.unpack("<Q", raw + b"\0")[0] & ((1 << 55) - 1)
        if micros > 0:
            return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)
    except (struct.error, AttributeError, ValueError, OverflowError):
        pass
    return datetime.fromtimestamp(event.timestamp, tz=UTC)


class BinlogReader:
    """Reads a source's binlog from a GTID state. Use as a context manager; iterate ``items()``."""

    def __init__(
        self,
        url: SourceUrl,
        flavor: Flavor,
        server_id: int,
        start: GtidSet,
        includes: Callable[[str, str], bool],
        heartbeat_seconds: float = 1.0,
        oldest_binlog_file: str | None = None,
        json_columns: Callable[[str, str], frozenset[str]] | None = None,
    ):
        self.url = url
        self.flavor = flavor
        self.includes = includes
        self.json_columns = json_columns
        self._schemas: dict[tuple[str, str, str], TableSchema] = {}
        self._key_order: dict[int, tuple[str, ...]] = {}
        self._built: dict[tuple[Any, ...], TableSchema] = {}
        self._included: dict[tuple[str, str], bool] = {}
        """``includes`` per table, asked once per reader (the patterns do not change)."""
        install_decoder_fixes()
        options: dict[str, Any] = {}
        if flavor == "mariadb":
            options["auto_position"] = start.position_text()
        elif start:
            options["auto_position"] = str(start)
        else:
            # The library treats an empty MySQL GTID set as "file mode from the current file";
            # an empty state means "from the oldest binlog", so say so explicitly.
            options.update(log_file=oldest_binlog_file, log_pos=4, resume_stream=True)
        # The library's own connections (stream and control) go through open_connection, with
        # the URL's TLS options and its refusal of a plaintext session where TLS is required.
        settings = {"read_timeout": max(30, int(heartbeat_seconds * 10))}
        self._stream = _StrictReader(
            connection_settings=settings,
            pymysql_wrapper=lambda **options: open_connection(url, **options),
            server_id=server_id,
            blocking=True,
            is_mariadb=flavor == "mariadb",
            only_events=[
                GtidEvent,
                MariadbGtidEvent,
                QueryEvent,
                XidEvent,
                RotateEvent,
                TableMapEvent,
                WriteRowsEvent,
                UpdateRowsEvent,
                DeleteRowsEvent,
                HeartbeatLogEvent,
                NotImplementedEvent,
            ],
            filter_non_implemented_events=False,
            slave_heartbeat=heartbeat_seconds,
            enable_logging=False,
            **options,
        )

    def __enter__(self) -> BinlogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()

    def end_dump(self) -> None:
        """Have the source end this reader's binlog dump thread now; for a tick that stopped by
        itself, before ``close``.

        Closing the socket alone leaves the server's dump thread waiting for the next event or
        heartbeat before it notices. A tick that starts meanwhile registers the same server id,
        and the server then retires the old thread first: about 100 ms before the first event
        on MariaDB 10.11 (measured; every back-to-back tick of a backlog paid it). The thread is
        this user's own, which ``KILL`` needs no privilege for. Best effort on the library's
        control connection: any failure is ignored, and the server retires the thread as before.

        The thread id is checked first to be a binlog dump of this user on the server the
        control connection reached: behind a proxy or a load balancer that id could belong to
        someone else's session there, which a user with CONNECTION_ADMIN could otherwise kill.
        """
        stream = getattr(self._stream, "_stream_connection", None)
        control = getattr(self._stream, "_ctl_connection", None)
        if stream is None or control is None or not (stream.open and control.open):
            return
        with contextlib.suppress(Exception), control.cursor() as cursor:
            thread = int(stream.thread_id())
            cursor.execute(_OWN_DUMP_THREAD, (thread,))
            if cursor.fetchone() is not None:
                cursor.execute(f"KILL CONNECTION {thread}")

    def _fetch(self) -> Any:
        try:
            return self._stream.fetchone()
        except _StreamLost:
            raise SourceUnavailableError(
                f"the binlog connection to {self.url.host}:{self.url.port} was lost; capture"
                " stops at the last committed transaction and resumes from it next time."
            ) from None
        except pymysql.err.OperationalError as error:
            code = error.args[0] if error.args else None
            if code == 1227:
                raise SourceSettingError(
                    "the source user may not read the binlog (MySQL error 1227); grant it:"
                    " GRANT REPLICATION SLAVE ON *.* TO the user of CDC_MYSQL_URL."
                ) from None
            if code == 1236:
                raise BinlogPurgedError(
                    "the source no longer has the binlog we must resume from (error 1236); run"
                    " 'cdc-pipeline doctor' and recover with 'cdc-pipeline snapshot'.",
                    lost_text="unknown (reported by the server while streaming)",
                ) from None
            raise SourceUnavailableError(
                f"the binlog connection to {self.url.host}:{self.url.port} failed (MySQL error"
                f" {code}); capture resumes from the last committed transaction next time."
            ) from None

    def items(self) -> Iterator[Item]:
        """Yield transaction items forever (blocking); the caller decides when to stop."""
        open_gtid: str | None = None
        standalone = False
        while True:
            event = self._fetch()
            if event is None:  # pragma: no cover - only in non-blocking mode
                return
            stream_file = self._stream.log_file or ""
            position = int(getattr(event.packet, "log_pos", 0) or 0)
            if isinstance(event, NotImplementedEvent):
                reason = _UNSUPPORTED_EVENT_TYPES.get(event.event_type)
                if reason:
                    raise SourceSettingError(
                        f"the binlog holds {reason}, which mysql-replication 1.0.17 cannot decode;"
                        " turn it off on the source (see 'cdc-pipeline doctor')."
                    )
                continue
            if isinstance(event, TableMapEvent):
                self._remember_key_order(event)
            elif isinstance(event, HeartbeatLogEvent):
                yield Idle(stream_file, position)
            elif isinstance(event, GtidEvent | MariadbGtidEvent):
                if open_gtid is not None:
                    raise SourceUnavailableError(
                        f"the binlog stream restarted inside transaction {open_gtid}; capture"
                        " stops at the last committed transaction and resumes from it."
                    )
                open_gtid = str(event.gtid)
                if isinstance(event, MariadbGtidEvent):
                    standalone = bool(event.flags & _MARIADB_STANDALONE)
                    committed_at = datetime.fromtimestamp(event.timestamp, tz=UTC)
                else:
                    standalone = False
                    committed_at = _mysql_commit_time(event)
                yield TxBegin(open_gtid, committed_at)
            elif open_gtid is None:
                continue  # rotate/format events between transactions
            elif isinstance(event, XidEvent):
                yield TxCommit(open_gtid, stream_file, position)
                open_gtid = None
            elif isinstance(event, QueryEvent):
                query = str(event.query).strip()
                keyword = query.upper().rstrip(";")
                if keyword == "BEGIN":
                    continue
                if keyword in {"COMMIT", "ROLLBACK"} or keyword.startswith("XA "):
                    yield TxCommit(open_gtid, stream_file, position)
                    open_gtid = None
                    continue
                schema = event.schema.decode() if isinstance(event.schema, bytes) else event.schema
                sql_mode = getattr(event, "sql_mode", 0) or 0
                yield Ddl(
                    str(schema or ""),
                    query,
                    stream_file,
                    position,
                    bool(sql_mode & MODE_ANSI_QUOTES),
                    bool(sql_mode & MODE_NO_BACKSLASH_ESCAPES),
                )
                if self.flavor == "mysql" and keyword.endswith("START TRANSACTION"):
                    # MySQL logs CREATE TABLE ... SELECT as this statement, then the rows it
                    # inserted and an Xid, all in one GTID: the transaction goes on.
                    continue
                if standalone or self.flavor == "mysql":
                    # A DDL statement is its own transaction: no Xid follows it.
                    yield TxCommit(open_gtid, stream_file, position)
                    open_gtid = None
            elif isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                name = (event.schema, event.table)
                included = self._included.get(name)
                if included is None:
                    if len(self._included) > 4096:
                        self._included.clear()
                    included = self._included[name] = self.includes(*name)
                if not included:
                    continue
                yield self._row_images(event, stream_file, position)

    def _remember_key_order(self, event: Any) -> None:
        """The table map lists primary-key columns in key order (the library keeps only the
        column order): ``PRIMARY KEY (b, a)`` must give ``_id: {b, a}``."""
        metadata = getattr(event, "optional_metadata", None)
        indexes = getattr(metadata, "simple_primary_key_list", None) or []
        try:
            self._key_order[event.table_id] = tuple(event.columns[i].name for i in indexes)
        except (IndexError, AttributeError):
            self._key_order.pop(event.table_id, None)

    def _table_schema(self, event: Any) -> TableSchema:
        """The event's ``TableSchema``, built once per distinct table map (a table map comes
        before every rows event; its schema version is a hash worth keeping)."""
        key = (
            event.schema,
            event.table,
            repr(event.primary_key),
            self._key_order.get(event.table_id, ()),
            table_map_signature(event.columns),
        )
        cached = self._built.get(key)
        if cached is None:
            if len(self._built) > 4096:
                self._built.clear()
            cached = self._built[key] = self._build_table_schema(event)
        return cached

    def _build_table_schema(self, event: Any) -> TableSchema:
        table_schema = table_schema_from_rows_event(event)
        key_order = self._key_order.get(event.table_id, ())
        if key_order and sorted(key_order) == sorted(table_schema.primary_key):
            table_schema = replace(table_schema, primary_key=key_order)
        if self.json_columns is None or not any(
            column.type_name == "longtext" for column in table_schema.columns
        ):
            return table_schema
        key = (event.schema, event.table, table_schema.version)
        if key not in self._schemas:
            longtext = {c.name for c in table_schema.columns if c.type_name == "longtext"}
            names = self.json_columns(event.schema, event.table) & longtext
            self._schemas[key] = with_json_columns(table_schema, names)
        return self._schemas[key]

    def _row_images(self, event: Any, stream_file: str, position: int) -> RowImages:
        table_schema = self._table_schema(event)
        convert = row_converter(table_schema)
        rows = decode_rows(event)
        images: list[tuple[dict[str, Any] | None, dict[str, Any] | None]]
        if isinstance(event, UpdateRowsEvent):
            op = "update"
            images = [
                (
                    convert(row["before_values"], row.get("before_none_sources")),
                    convert(row["after_values"], row.get("after_none_sources")),
                )
                for row in rows
            ]
        elif isinstance(event, WriteRowsEvent):
            op = "insert"
            images = [(None, convert(row["values"], row.get("none_sources"))) for row in rows]
        else:
            op = "delete"
            images = [(convert(row["values"], row.get("none_sources")), None) for row in rows]
        return RowImages(event.schema, event.table, op, images, table_schema, stream_file, position)
