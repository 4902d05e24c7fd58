"""Preflight checks: is the source, the sink and the staging folder ready for CDC?

Each check yields a ``Finding``; a failing one carries the exact statement or config line that
fixes it. ``evaluate_source`` is pure (server variables and ``SHOW GRANTS`` lines in, findings
out); the ``check_*`` functions gather those inputs and never raise for an operator problem.

Invariants: no finding contains a password, a password hash or a full connection URI (servers
are named by their redacted form; grant lines are parsed, never echoed); a check only reads,
except ``check_staging``, which writes and removes one probe file in an existing folder.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pymongo
import pymysql
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from cdc_pipeline.core.errors import SourceUnavailableError
from cdc_pipeline.core.gtid import Flavor
from cdc_pipeline.core.mysql.grants import account_name, has_wildcard, parse_grant, select_covers
from cdc_pipeline.core.mysql.source import connect, detect_flavor, query_all, query_one
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl
from cdc_pipeline.core.wal.staging import WalPaths

MIN_FREE_BYTES = 100_000_000
"""Below this much free space in the staging folder, the staging check fails (100 MB)."""

SOURCE_VARIABLES = (
    "log_bin",
    "binlog_format",
    "binlog_row_image",
    "binlog_row_metadata",
    "binlog_checksum",
    "binlog_transaction_compression",
    "binlog_row_value_options",
    "gtid_mode",
    "enforce_gtid_consistency",
    "gtid_strict_mode",
    "log_bin_compress",
)
"""Global variables ``evaluate_source`` reads; each server knows only some of them."""

_ON = {"ON", "1", "TRUE", "YES"}


@dataclass(frozen=True)
class Finding:
    """The outcome of one check. Invariant: ``fix`` is None exactly when ``ok``."""

    check: str
    ok: bool
    detail: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.ok != (self.fix is None):
            raise ValueError(f"finding {self.check!r}: a fix belongs to failures only")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _passed(check: str, detail: str) -> Finding:
    return Finding(check, True, detail, None)


def _failed(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, False, detail, fix)


# -- source variables ------------------------------------------------------------------------


def _set_statement(flavor: Flavor, name: str, value: str) -> str:
    """The statement that changes ``name`` now and across restarts, for this flavor."""
    literal = value if value in {"ON", "OFF"} else f"'{value}'"
    if flavor == "mysql":
        return f"SET PERSIST {name} = {literal};"
    return (
        f"SET GLOBAL {name} = {literal}; and {name}={value} under [mariadbd] in the server config"
    )


_NEW_SESSIONS = " (sessions already open keep the old value until they reconnect)"


@dataclass(frozen=True)
class _Rule:
    """A global variable that must equal ``wanted`` (case-insensitive; ON == 1)."""

    name: str
    wanted: str
    why: str
    flavor: Flavor | None = None
    """Only on this flavor; None: on both."""
    missing_ok: bool = False
    """A server without the variable cannot have the problem (an older version)."""
    note: str = ""


_RULES = (
    _Rule("binlog_format", "ROW", "CDC needs row events", note=_NEW_SESSIONS),
    _Rule(
        "binlog_row_image",
        "FULL",
        "updates and deletes must carry every column",
        note=_NEW_SESSIONS,
    ),
    _Rule(
        "binlog_row_metadata",
        "FULL",
        "only FULL makes rows carry their column names, unsigned flags and ENUM values",
    ),
    _Rule(
        "binlog_checksum",
        "CRC32",
        "the binlog reader's table-map parser assumes a CRC32 trailer on every event",
    ),
    _Rule(
        "binlog_transaction_compression",
        "OFF",
        "the binlog reader silently drops compressed transactions",
        flavor="mysql",
        missing_ok=True,
        note=_NEW_SESSIONS,
    ),
    _Rule(
        "log_bin_compress",
        "OFF",
        "the binlog reader silently drops compressed events",
        flavor="mariadb",
        missing_ok=True,
    ),
    _Rule(
        "gtid_strict_mode",
        "ON",
        "the reader relies on GTIDs increasing within each domain (no gaps, no out-of-order"
        " sequence numbers)",
        flavor="mariadb",
        note=" (GTIDs always exist on MariaDB; strict mode makes them a reliable position)",
    ),
    _Rule("enforce_gtid_consistency", "ON", "GTID mode requires it", flavor="mysql"),
)


def _normalized(value: str) -> str:
    upper = value.strip().upper()
    if upper in _ON:
        return "ON"
    return "OFF" if upper in {"0", "FALSE", "NO"} else upper


def _apply(rule: _Rule, flavor: Flavor, variables: Mapping[str, str]) -> Finding:
    name = rule.name
    if name not in variables:
        if rule.missing_ok:
            return _passed(name, f"{name} does not exist on this server (nothing to turn off)")
        return _failed(
            name,
            f"the server has no {name} variable; CDC needs MySQL 8.0.1+ or MariaDB 10.5+",
            "upgrade the source server",
        )
    found = variables[name].strip() or "empty"
    if _normalized(variables[name]) == rule.wanted:
        return _passed(name, f"{name} is {found}")
    fix = _set_statement(flavor, name, rule.wanted) + rule.note
    return _failed(name, f"{name} is {found}, but {rule.why}", fix)


def _log_bin(flavor: Flavor, variables: Mapping[str, str]) -> Finding:
    if _normalized(variables.get("log_bin", "OFF")) == "ON":
        return _passed("log_bin", "binary logging is ON")
    section, base = ("mysqld", "binlog") if flavor == "mysql" else ("mariadbd", "mariadb-bin")
    extra = " and remove skip-log-bin / disable-log-bin" if flavor == "mysql" else ""
    return _failed(
        "log_bin",
        "binary logging is OFF, so there is no binlog to capture",
        f"log_bin={base} under [{section}] in the server config{extra}, then restart the server"
        " (log_bin cannot be changed at run time)",
    )


def _variable_findings(flavor: Flavor, variables: Mapping[str, str]) -> list[Finding]:
    findings = [_log_bin(flavor, variables)]
    findings += [_apply(r, flavor, variables) for r in _RULES if r.flavor in (None, flavor)]
    if flavor == "mysql":
        findings += [_row_value_options(variables), _gtid_mode(variables)]
    return sorted(findings, key=lambda finding: SOURCE_VARIABLES.index(finding.check))


def _row_value_options(variables: Mapping[str, str]) -> Finding:
    name = "binlog_row_value_options"
    found = variables.get(name, "").strip()
    if not found:
        return _passed(name, f"{name} is empty (full JSON after-images)")
    return _failed(
        name,
        f"{name} is {found}, so JSON updates are logged as partial diffs the reader cannot apply",
        f"SET PERSIST {name} = '';{_NEW_SESSIONS}",
    )


def _gtid_mode(variables: Mapping[str, str]) -> Finding:
    found = variables.get("gtid_mode", "OFF").strip().upper()
    if found == "ON":
        return _passed("gtid_mode", "gtid_mode is ON")
    steps = ["OFF_PERMISSIVE", "ON_PERMISSIVE", "ON"]
    if found in steps:
        steps = steps[steps.index(found) + 1 :]
    statements = " ".join(f"SET PERSIST gtid_mode = {step};" for step in steps)
    return _failed(
        "gtid_mode",
        f"gtid_mode is {found}, but the reader positions itself by GTID",
        "SET PERSIST enforce_gtid_consistency = ON; then one step at a time: "
        + statements
        + " (before the last step wait until SHOW GLOBAL STATUS LIKE"
        " 'Ongoing_anonymous_transaction_count' is 0)",
    )


def _grant_finding(
    flavor: Flavor, grants: Sequence[str], user: str, include_tables: Sequence[str]
) -> Finding:
    parsed = [grant for grant in map(parse_grant, grants) if grant is not None]
    everywhere = set().union(*(g.privileges for g in parsed if g.schema is None))
    has_all = "ALL" in everywhere
    client_names = (
        {"BINLOG MONITOR", "REPLICATION CLIENT"}
        if flavor == "mariadb"
        else {"REPLICATION CLIENT", "SUPER"}
    )
    missing: list[str] = []
    if not has_all and not everywhere & {"REPLICATION SLAVE", "REPLICATION REPLICA"}:
        missing.append("REPLICATION SLAVE")
    if not has_all and not everywhere & client_names:
        missing.append("BINLOG MONITOR" if flavor == "mariadb" else "REPLICATION CLIENT")
    account = account_name(user, parsed)
    select_everywhere = has_all or "SELECT" in everywhere
    global_needed = list(missing)
    schema_statements: list[str] = []
    lacking_select: list[str] = []
    if not select_everywhere and include_tables:
        for pattern in include_tables:
            if select_covers(pattern, parsed):
                continue
            lacking_select.append(pattern)
            schema = pattern.partition(".")[0]
            if has_wildcard(schema):
                global_needed.append("SELECT")
            else:
                schema_statements.append(f"GRANT SELECT ON `{schema}`.* TO {account};")
    elif not select_everywhere and not any(g.privileges & {"SELECT", "ALL"} for g in parsed):
        lacking_select.append("any table")
        global_needed.append("SELECT")
    if not missing and not lacking_select:
        scope = "SELECT everywhere" if select_everywhere else "SELECT on the captured schemas"
        return _passed("grants", f"user {account} has the replication privileges and {scope}")
    statements = list(dict.fromkeys(global_needed))
    fix = [f"GRANT {', '.join(statements)} ON *.* TO {account};"] if statements else []
    lacking = ", ".join(missing)
    if lacking_select:
        lacking += (" and " if lacking else "") + "SELECT on " + ", ".join(lacking_select)
    return _failed(
        "grants",
        f"user {account} lacks {lacking} (privileges held through roles are not counted)",
        " ".join(dict.fromkeys([*fix, *schema_statements])),
    )


def evaluate_source(
    flavor: Flavor,
    variables: Mapping[str, str],
    grants: Sequence[str],
    user: str,
    include_tables: Sequence[str] = (),
) -> list[Finding]:
    """Judge a source's settings and the CDC user's grants; pure, no I/O.

    Args:
        flavor: which server family the values come from.
        variables: lower-cased global variable names -> values as ``SHOW GLOBAL VARIABLES``
            prints them; names a server lacks are simply absent.
        grants: the lines of ``SHOW GRANTS`` for the CDC user.
        user: the CDC user's name, used in the GRANT statement of the fix.
        include_tables: ``CDC_INCLUDE_TABLES`` patterns; SELECT must cover them (no patterns:
            any SELECT grant will do, global SELECT is best).

    Returns:
        One finding per rule, in a stable order; failing ones carry the fix.
    """
    lowered = {name.lower(): value for name, value in variables.items()}
    return [
        *_variable_findings(flavor, lowered),
        _grant_finding(flavor, grants, user, include_tables),
    ]


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
    except SourceUnavailableError as error:
        return [
            _failed(
                "connection",
                str(error),
                "start the source server or correct user, password, host and port in CDC_MYSQL_URL",
            )
        ]
    except pymysql.err.MySQLError as error:
        code = error.args[0] if error.args else "?"
        return [
            _failed(
                "connection",
                f"the source {url.redacted()} failed a read-only query (MySQL error {code})",
                "check the server's error log and rerun cdc-pipeline doctor",
            )
        ]
    connected = _passed(
        "connection", f"connected to {flavor} {version} at {url.host}:{url.port} as {url.user}"
    )
    variables = {str(name).lower(): str(value) for name, value in rows}
    return [connected, *evaluate_source(flavor, variables, grants, url.user, include_tables)]


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
            _failed("mongo", detail, "write CDC_MONGO_URI as mongodb://[user:password@]host:port")
        ]
    try:
        client.admin.command("ping")
    except OperationFailure as error:
        return [
            _failed(
                "mongo",
                f"MongoDB at {where} refused the ping (code {error.code})",
                "fix the user and password in CDC_MONGO_URI or grant the user access",
            )
        ]
    except PyMongoError as error:
        return [
            _failed(
                "mongo",
                f"MongoDB at {where} did not answer within {timeout_s:g} s"
                f" ({type(error).__name__})",
                fix,
            )
        ]
    finally:
        client.close()
    return [_passed("mongo", f"MongoDB at {where} answers")]


def check_staging(path: Path, must_exist: Path | None = None) -> list[Finding]:
    """The WAL folder is (or can become) a writable directory with at least 100 MB free.

    ``must_exist``: a folder above ``path`` that capture does not create (the parent of
    CDC_STAGING_DIR: a missing one is a typo or a disk that is not mounted).
    """
    if must_exist is not None and not must_exist.is_dir():
        return [
            _failed(
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
            _failed(
                "staging",
                f"{existing} is a file, not a folder",
                "point CDC_STAGING_DIR at a folder (or move the file away)",
            )
        ]
    fix = f"make {existing} writable by this user or point CDC_STAGING_DIR elsewhere"
    if existing != path:
        if not os.access(existing, os.W_OK | os.X_OK):
            return [_failed("staging", f"{path} does not exist and {existing} is read-only", fix)]
        found = _passed("staging", f"{path} does not exist yet; capture will create it")
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
            return [_failed("staging", f"cannot write in {path} ({reason})", fix)]
        found = _passed("staging", f"{path} is a writable folder")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        space = _failed(
            "staging_space",
            f"only {free:,} bytes free under {existing} (needs {MIN_FREE_BYTES:,})",
            "free disk space there or point CDC_STAGING_DIR at a larger disk",
        )
    else:
        space = _passed("staging_space", f"{free:,} bytes free under {existing}")
    return [found, space]


def run_doctor(
    capture: CaptureSettings, mongo: MongoSettings | None, mongo_problem: str | None = None
) -> list[Finding]:
    """Every check: source, MongoDB (``None``: not configured, ``mongo_problem`` says why), WAL."""
    findings = check_source(capture.source_url, capture.include_tables)
    if mongo is None:
        findings.append(
            _failed(
                "mongo",
                mongo_problem or "CDC_MONGO_URI is not set",
                "export CDC_MONGO_URI=mongodb://host:port (and CDC_MONGO_DB if not 'cdc')",
            )
        )
    else:
        findings += check_mongo(mongo)
    root = WalPaths(capture.staging_dir, capture.source_name).root
    return findings + check_staging(root, capture.staging_dir.parent)
