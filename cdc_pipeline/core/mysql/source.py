"""Talking SQL to the source server: connect with errors for people, and read its binlog state.

Invariants: error messages name the server by ``SourceUrl.redacted()`` only; ``read_state`` reads
everything in one round of queries on one connection, so the fields describe one moment as
closely as the server allows (executed set first, then purged boundary, then file/position).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymysql

from cdc_pipeline.core.errors import SourceSettingError, SourceUnavailableError
from cdc_pipeline.core.gtid import Flavor, GtidSet
from cdc_pipeline.core.settings import SourceUrl

_ACCESS_DENIED = 1045
_SPECIFIC_ACCESS_DENIED = 1227  # "you need (at least one of) the ... privilege(s)"
_UNREACHABLE = {2003, 2005, 2006, 2013}
_NO_TLS = 2026  # CR_SSL_CONNECTION_ERROR: pymysql's "SSL is required but the server doesn't…"


@contextlib.contextmanager
def connect(url: SourceUrl, timeout: float = 10.0) -> Iterator[pymysql.connections.Connection]:
    """An autocommit connection; connection failures become ``SourceUnavailableError``."""
    connection = open_connection(
        url,
        autocommit=True,
        connect_timeout=int(timeout),
        read_timeout=int(timeout * 3),
        charset="utf8mb4",
    )
    try:
        yield connection
    finally:
        with contextlib.suppress(Exception):
            connection.close()


class _Connection(pymysql.connections.Connection):  # type: ignore[misc]
    """pymysql's connection with its PREFERRED-mode TLS context made once per process, without
    the system's CA store.

    Without TLS options pymysql builds a new default context for every connection, loading the
    system's CA store (20-60 ms) only to leave certificates unchecked in that mode
    (``verify_mode`` ``CERT_NONE``, no host name check); a capture tick opens four connections.
    The context here is what pymysql's would be, minus the CA store it never consults: the same
    client protocol settings, made once. Contexts are made to be shared. Explicit TLS options
    (``SourceTls.connect_kwargs``) are untouched: they verify, and pymysql builds their context.
    """

    def _create_ssl_ctx(self, options: Any) -> ssl.SSLContext:
        global _PREFERRED_CONTEXT
        if isinstance(options, dict) and not options:
            if _PREFERRED_CONTEXT is None:
                _PREFERRED_CONTEXT = unverified_context()
            return _PREFERRED_CONTEXT
        return super()._create_ssl_ctx(options)  # type: ignore[no-any-return]


def unverified_context() -> ssl.SSLContext:
    """The context of ``ssl-mode=PREFERRED``/``REQUIRED`` (encrypt, verify nothing): pymysql's
    for empty options (``ssl.create_default_context`` then ``CERT_NONE`` without a host name
    check, X.509 strict checks off) without loading CA certificates nothing reads."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


_PREFERRED_CONTEXT: ssl.SSLContext | None = None


def open_connection(url: SourceUrl, **options: Any) -> pymysql.connections.Connection:
    """Every connection to the source (SQL and binlog stream): ``url``'s credentials and TLS
    options, then ``options``. A session without TLS where ``ssl-mode`` requires it is closed
    and refused; failures become ``SourceUnavailableError``."""
    try:
        connection = _Connection(**{**url.connect_kwargs(), **options})
    except pymysql.err.OperationalError as error:
        raise _unavailable(url, error) from None
    if url.tls.required and not encrypted(connection):
        with contextlib.suppress(Exception):
            connection.close()
        raise _no_tls(url)
    return connection


def _no_tls(url: SourceUrl) -> SourceUnavailableError:
    return SourceUnavailableError(
        f"the source {url.redacted()} does not offer TLS, and ssl-mode={url.tls.mode} in"
        " CDC_MYSQL_URL requires it; enable TLS on the server (ssl_cert, ssl_key) or change"
        " ssl-mode."
    )


def encrypted(connection: Any) -> bool:
    """Whether the session runs over TLS (pymysql wraps its socket once the server agrees)."""
    return isinstance(getattr(connection, "_sock", None), ssl.SSLSocket)


def tls_session(connection: Any) -> tuple[str, str] | None:
    """``(protocol version, cipher)`` of an encrypted session, None for plaintext."""
    sock = getattr(connection, "_sock", None)
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cipher = sock.cipher()
    return (sock.version() or "?", cipher[0] if cipher else "?")


def _unavailable(url: SourceUrl, error: pymysql.err.OperationalError) -> SourceUnavailableError:
    code = error.args[0] if error.args else None
    if code == _NO_TLS and url.tls.required:
        return _no_tls(url)
    cause = getattr(error, "original_exception", None)
    if isinstance(cause, ssl.SSLError | ssl.CertificateError):
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None)
        return SourceUnavailableError(
            f"the TLS handshake with the source {url.redacted()} failed ({reason or cause});"
            f" with ssl-mode={url.tls.mode} check ssl-ca (the CA that signed the server's"
            " certificate) and that the certificate names the URL's host."
        )
    if code == _ACCESS_DENIED:
        return SourceUnavailableError(
            f"the source {url.redacted()} refused user '{url.user}' (wrong password or no such"
            " user); fix the credentials in CDC_MYSQL_URL."
        )
    if code in _UNREACHABLE:
        return SourceUnavailableError(
            f"cannot reach the source at {url.host}:{url.port} (MySQL error {code}); check that"
            " the server is running and CDC_MYSQL_URL's host and port are right."
        )
    return SourceUnavailableError(
        f"the source {url.redacted()} refused the connection (MySQL error {code}); check"
        " CDC_MYSQL_URL and the server's log."
    )


def query_one(connection: Any, sql: str) -> tuple[Any, ...] | None:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
    return tuple(row) if row is not None else None


def query_all(connection: Any, sql: str) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]


def detect_flavor(connection: Any) -> Flavor:
    version = str(query_one(connection, "SELECT VERSION()")[0])  # type: ignore[index]
    return "mariadb" if "mariadb" in version.lower() else "mysql"


@dataclass(frozen=True)
class SourceState:
    """The source's binlog state at one moment."""

    flavor: Flavor
    version: str
    server_uuid: str
    executed: GtidSet
    purged: GtidSet
    """What the server can no longer send (MySQL @@gtid_purged; MariaDB: state before the oldest
    binlog)."""
    binlog_file: str
    binlog_pos: int
    oldest_binlog_file: str
    binlog_files: tuple[tuple[str, int], ...]


def binary_logs(connection: Any) -> list[tuple[str, int]]:
    denied = SourceSettingError(
        "the source user may not list binary logs; grant it: GRANT REPLICATION CLIENT ON *.*"
        " (MySQL) or GRANT BINLOG MONITOR ON *.* (MariaDB)."
    )
    try:
        rows = query_all(connection, "SHOW BINARY LOGS")
    except pymysql.err.OperationalError as error:
        if error.args and error.args[0] in (1381,):
            raise SourceSettingError(
                "binary logging is off on the source; start it with log_bin=ON (log-bin) and"
                " restart the server."
            ) from None
        if error.args and error.args[0] == _SPECIFIC_ACCESS_DENIED:
            raise denied from error
        raise
    except pymysql.err.ProgrammingError as error:
        raise denied from error
    return [(str(row[0]), int(row[1])) for row in rows]


def current_binlog_position(connection: Any, flavor: Flavor) -> tuple[str, int]:
    statements = (
        ["SHOW BINLOG STATUS", "SHOW MASTER STATUS"]
        if flavor == "mariadb"
        else ["SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"]
    )
    for sql in statements:
        try:
            row = query_one(connection, sql)
        except pymysql.err.ProgrammingError:
            continue
        if row is None:
            break
        return str(row[0]), int(row[1])
    raise SourceSettingError(
        "the source reports no binlog position; enable binary logging (log_bin=ON) and grant"
        " REPLICATION CLIENT (MySQL) or BINLOG MONITOR (MariaDB) to the CDC user."
    )


def read_state(connection: Any) -> SourceState:
    """Executed and purged GTIDs, current and oldest binlog file of the source."""
    flavor = detect_flavor(connection)
    version = str(query_one(connection, "SELECT VERSION()")[0])  # type: ignore[index]
    if flavor == "mysql":
        executed_text, purged_text, server_uuid = query_one(  # type: ignore[misc]
            connection, "SELECT @@global.gtid_executed, @@global.gtid_purged, @@server_uuid"
        )
        executed = GtidSet.parse(str(executed_text or ""), "mysql")
        purged = GtidSet.parse(str(purged_text or ""), "mysql")
    else:
        executed_text, server_id = query_one(  # type: ignore[misc]
            connection, "SELECT @@global.gtid_binlog_pos, @@server_id"
        )
        executed = GtidSet.parse(str(executed_text or ""), "mariadb")
        server_uuid = f"mariadb-server-{server_id}"
    files = binary_logs(connection)
    if flavor == "mariadb":
        oldest = files[0][0]
        boundary = query_one(connection, f"SELECT BINLOG_GTID_POS('{oldest}', 4)")
        purged = GtidSet.parse(str((boundary or ("",))[0] or ""), "mariadb")
    binlog_file, binlog_pos = current_binlog_position(connection, flavor)
    return SourceState(
        flavor=flavor,
        version=version,
        server_uuid=str(server_uuid),
        executed=executed,
        purged=purged,
        binlog_file=binlog_file,
        binlog_pos=binlog_pos,
        oldest_binlog_file=files[0][0],
        binlog_files=tuple(files),
    )
