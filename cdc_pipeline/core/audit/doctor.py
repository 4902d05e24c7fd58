"""Preflight checks: is the source, the sink and the staging folder ready for CDC?

Each check yields a ``Finding``; a failing one carries the exact statement or config line that
fixes it. ``evaluate_source`` is pure (server variables and ``SHOW GRANTS`` lines in, findings
out); the ``check_*`` functions gather those inputs and never raise for an operator problem.

Invariants: no finding contains a password, a password hash or a full connection URI (servers
are named by their redacted form; grant lines are parsed, never echoed); a check only reads,
except ``check_staging``, which writes and removes one probe file in an existing folder.
``check_identity`` judges the settings as a capture and a load would (``wal.identity``), read only.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import pymongo
import pymysql
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from cdc_pipeline.core.audit.doctor_rules import (
    SOURCE_VARIABLES,
    Finding,
    evaluate_source,
    failed,
    passed,
    tables_finding,
    warned,
)
from cdc_pipeline.core.capture.identity import read_server_identity
from cdc_pipeline.core.errors import CdcError, SourceUnavailableError
from cdc_pipeline.core.load.sink import halt_sentence, read_halt
from cdc_pipeline.core.mysql.source import (
    SourceState,
    connect,
    detect_flavor,
    query_all,
    query_one,
    read_state,
    tls_session,
)
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl
from cdc_pipeline.core.wal.identity import Observed, ServerIdentity, identity_problems
from cdc_pipeline.core.wal.ledger import wal_end
from cdc_pipeline.core.wal.staging import WalPaths

MIN_FREE_BYTES = 100_000_000
"""Below this much free space in the staging folder, the staging check fails (100 MB)."""


# -- source variables ------------------------------------------------------------------------


# -- gathering -------------------------------------------------------------------------------


def check_source(url: SourceUrl, include_tables: Sequence[str] = ()) -> list[Finding]:
    """Connect as the CDC user and evaluate the server; a connection problem is one finding."""
    try:
        with connect(url) as connection:
            flavor = detect_flavor(connection)
            version = str((query_one(connection, "SELECT VERSION()") or ("?",))[0])
            names = ", ".join(f"'{name}'" for name in SOURCE_VARIABLES)
            rows = query_all(connection, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})")
            grants = [str(row[0]) for row in query_all(connection, "SHOW GRANTS")]
            visible = query_all(
                connection,
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES"
                " WHERE TABLE_TYPE = 'BASE TABLE'",
            )
            session = tls_session(connection)
    except SourceUnavailableError as error:
        return [
            failed(
                "connection",
                str(error),
                "start the source server or correct user, password, host and port in CDC_MYSQL_URL",
            )
        ]
    except pymysql.err.MySQLError as error:
        code = error.args[0] if error.args else "?"
        return [
            failed(
                "connection",
                f"the source {url.redacted()} failed a read-only query (MySQL error {code})",
                "check the server's error log and rerun cdc-pipeline doctor",
            )
        ]
    connected = passed(
        "connection", f"connected to {flavor} {version} at {url.host}:{url.port} as {url.user}"
    )
    variables = {str(name).lower(): str(value) for name, value in rows}
    findings = evaluate_source(flavor, variables, grants, url.user, include_tables)
    tables = [(str(schema), str(table)) for schema, table in visible]
    return [
        connected,
        tls_finding(url, session),
        *findings,
        tables_finding(tables, grants, url.user, include_tables),
    ]


def tls_finding(url: SourceUrl, session: tuple[str, str] | None) -> Finding:
    """Whether the source session is encrypted, and what of the server's certificate is checked
    (``core.tls``); a plaintext session, or one whose certificate is not checked, is a warning."""
    mode = url.tls.mode
    if session is None:
        return warned(
            "tls",
            f"the session to the source is not encrypted (ssl-mode={mode}): rows and the"
            " password cross the network in clear",
            "enable TLS on the server and add ?ssl-mode=VERIFY_IDENTITY&ssl-ca=<CA file> to"
            " CDC_MYSQL_URL (ssl-mode=DISABLED only on a trusted network)",
        )
    detail = f"encrypted ({session[0]}, {session[1]}); server certificate {url.tls.check}"
    if not mode.startswith("VERIFY"):
        return warned(
            "tls",
            f"{detail} (ssl-mode={mode}), so a machine in the middle can pose as the server",
            "add ssl-mode=VERIFY_IDENTITY&ssl-ca=<CA file> to CDC_MYSQL_URL",
        )
    return passed("tls", f"{detail} (ssl-mode={mode})")


def check_mongo(settings: MongoSettings, timeout_s: float = 5) -> list[Finding]:
    """Ping the sink; the finding names it only by ``settings.redacted()``."""
    try:
        where = settings.redacted()
    except ValueError:  # e.g. a port that is not a number
        where = "an unparsable URI"
    fix = "start MongoDB or correct the host and port in CDC_MONGO_URI"
    try:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            settings.uri,
            serverSelectionTimeoutMS=int(timeout_s * 1000),
            connectTimeoutMS=int(timeout_s * 1000),
        )
    except (ConfigurationError, ValueError, TypeError) as error:
        # Not the error's text: pymongo may quote parts of the URI in it.
        detail = f"CDC_MONGO_URI ({where}) cannot be used ({type(error).__name__})"
        return [
            failed("mongo", detail, "write CDC_MONGO_URI as mongodb://[user:password@]host:port")
        ]
    try:
        client.admin.command("ping")
    except OperationFailure as error:
        return [
            failed(
                "mongo",
                f"MongoDB at {where} refused the ping (code {error.code})",
                "fix the user and password in CDC_MONGO_URI or grant the user access",
            )
        ]
    except PyMongoError as error:
        return [
            failed(
                "mongo",
                f"MongoDB at {where} did not answer within {timeout_s:g} s"
                f" ({type(error).__name__})",
                fix,
            )
        ]
    finally:
        client.close()
    return [passed("mongo", f"MongoDB at {where} answers")]


def check_load_halt(settings: MongoSettings, source: str) -> list[Finding]:
    """Whether loading stopped at a row MongoDB refuses (``cdc_load_halts``)."""
    try:
        halt = read_halt(settings, source, deadline=5.0)
    except CdcError:
        return []  # check_mongo has said whether MongoDB answers
    if halt is None:
        return [passed("load", "no row is refused by MongoDB")]
    detail, _, fix = halt_sentence(halt).partition("; ")
    return [failed("load", detail, fix.rstrip("."))]


def check_staging(path: Path, must_exist: Path | None = None) -> list[Finding]:
    """The WAL folder is (or can become) a writable directory with at least 100 MB free.

    ``must_exist``: a folder above ``path`` that capture does not create (the parent of
    CDC_STAGING_DIR: a missing one is a typo or a disk that is not mounted).
    """
    if must_exist is not None and not must_exist.is_dir():
        return [
            failed(
                "staging",
                f"{path} cannot be created because {must_exist} is not an existing folder",
                f"create it (mkdir -p {path.parent}) or correct CDC_STAGING_DIR",
            )
        ]
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [
            failed(
                "staging",
                f"{existing} is a file, not a folder",
                "point CDC_STAGING_DIR at a folder (or move the file away)",
            )
        ]
    fix = f"make {existing} writable by this user or point CDC_STAGING_DIR elsewhere"
    if existing != path:
        if not os.access(existing, os.W_OK | os.X_OK):
            return [failed("staging", f"{path} does not exist and {existing} is read-only", fix)]
        found = passed("staging", f"{path} does not exist yet; capture will create it")
    else:
        probe = path / f".cdc_doctor_probe-{uuid.uuid4().hex}"
        try:
            descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(descriptor, b"cdc doctor probe\n")
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            probe.unlink()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            return [failed("staging", f"cannot write in {path} ({reason})", fix)]
        found = passed("staging", f"{path} is a writable folder")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        space = failed(
            "staging_space",
            f"only {free:,} bytes free under {existing} (needs {MIN_FREE_BYTES:,})",
            "free disk space there or point CDC_STAGING_DIR at a larger disk",
        )
    else:
        space = passed("staging_space", f"{free:,} bytes free under {existing}")
    return [found, space]


def check_identity(capture: CaptureSettings, mongo: MongoSettings | None) -> list[Finding]:
    """The staging folder's record of who writes it against these settings: the source server
    (when it answers), the table settings and the mirror style; one finding per contradiction."""
    paths = WalPaths(capture.staging_dir, capture.source_name)
    if not paths.identity.exists():
        return [passed("wal_identity", "no identity recorded yet: the first capture records it")]
    state: SourceState | None = None
    server: ServerIdentity | None = None
    try:
        with connect(capture.source_url) as connection:
            state = read_state(connection)
            server = read_server_identity(connection, state.flavor)
    except (CdcError, pymysql.err.MySQLError):
        pass  # the connection finding says why; the other facts are still compared
    try:
        end = wal_end(paths)
    except CdcError:
        end = None
    observed = Observed(
        door="configuration",
        server=server,
        executed=state.executed if state is not None else None,
        captured=end.gtid if end is not None else None,
        tables=capture.table_scope,
        mirror_style=mongo.mirror_name_style if mongo is not None else None,
        mongo_compat=mongo.compat if mongo is not None else None,
    )
    problems = identity_problems(paths, observed)
    if not problems:
        return [passed("wal_identity", f"{paths.identity} matches these settings")]
    findings = []
    for problem in problems:
        detail, _, fix = problem.partition("; ")
        findings.append(failed("wal_identity", detail, fix.rstrip(".")))
    return findings


def run_doctor(
    capture: CaptureSettings | None,
    mongo: MongoSettings | None,
    mongo_problem: str | None = None,
    capture_problem: str | None = None,
) -> list[Finding]:
    """Every check: source and WAL (``capture`` None: not configured, ``capture_problem`` says
    why), MongoDB (``None``: not configured, ``mongo_problem`` says why)."""
    if capture is None:
        findings = [
            failed(
                "connection",
                capture_problem or "CDC_MYSQL_URL is not set",
                "export CDC_MYSQL_URL=mysql://user:password@host:port (the README's 'your own"
                " servers' lists the grants and settings)",
            )
        ]
    else:
        findings = check_source(capture.source_url, capture.include_tables)
    if mongo is None:
        findings.append(
            failed(
                "mongo",
                mongo_problem or "CDC_MONGO_URI is not set",
                "export CDC_MONGO_URI=mongodb://host:port (and CDC_MONGO_DB if not 'cdc')",
            )
        )
    else:
        mongo_findings = check_mongo(mongo)
        findings += mongo_findings
        if capture is not None and all(finding.ok for finding in mongo_findings):
            findings += check_load_halt(mongo, capture.source_name)
    if capture is None:
        return findings
    root = WalPaths(capture.staging_dir, capture.source_name).root
    return (
        findings + check_staging(root, capture.staging_dir.parent) + check_identity(capture, mongo)
    )
