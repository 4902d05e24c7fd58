"""The doctor's rules for the source, pure: server variables and ``SHOW GRANTS`` lines in,
findings out (``doctor`` gathers the inputs).

Invariants: a failing ``Finding`` carries the exact statement or config line that fixes it;
grant lines are parsed, never echoed (MariaDB's carry password hashes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from cdc_pipeline.core.gtid import Flavor
from cdc_pipeline.core.mysql.grants import account_name, has_wildcard, parse_grant, select_covers
from cdc_pipeline.core.settings import SYSTEM_SCHEMAS, split_table_pattern, table_included

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
    """The outcome of one check. Invariant: ``fix`` is None exactly when ``ok``; ``advice``
    marks a passing check with a warning (shown as ``warn``; it does not fail ``doctor``)."""

    check: str
    ok: bool
    detail: str
    fix: str | None = None
    advice: str | None = None

    def __post_init__(self) -> None:
        if self.ok != (self.fix is None):
            raise ValueError(f"finding {self.check!r}: a fix belongs to failures only")
        if self.advice is not None and not self.ok:
            raise ValueError(f"finding {self.check!r}: advice belongs to passing checks only")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def passed(check: str, detail: str) -> Finding:
    return Finding(check, True, detail, None)


def failed(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, False, detail, fix)


def warned(check: str, detail: str, advice: str) -> Finding:
    return Finding(check, True, detail, None, advice)


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
            return passed(name, f"{name} does not exist on this server (nothing to turn off)")
        return failed(
            name,
            f"the server has no {name} variable; CDC needs MySQL 8.0.1+ or MariaDB 10.5+",
            "upgrade the source server",
        )
    found = variables[name].strip() or "empty"
    if _normalized(variables[name]) == rule.wanted:
        return passed(name, f"{name} is {found}")
    fix = _set_statement(flavor, name, rule.wanted) + rule.note
    return failed(name, f"{name} is {found}, but {rule.why}", fix)


def _log_bin(flavor: Flavor, variables: Mapping[str, str]) -> Finding:
    if _normalized(variables.get("log_bin", "OFF")) == "ON":
        return passed("log_bin", "binary logging is ON")
    section, base = ("mysqld", "binlog") if flavor == "mysql" else ("mariadbd", "mariadb-bin")
    extra = " and remove skip-log-bin / disable-log-bin" if flavor == "mysql" else ""
    return failed(
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
        return passed(name, f"{name} is empty (full JSON after-images)")
    return failed(
        name,
        f"{name} is {found}, so JSON updates are logged as partial diffs the reader cannot apply",
        f"SET PERSIST {name} = '';{_NEW_SESSIONS}",
    )


def _gtid_mode(variables: Mapping[str, str]) -> Finding:
    found = variables.get("gtid_mode", "OFF").strip().upper()
    if found == "ON":
        return passed("gtid_mode", "gtid_mode is ON")
    steps = ["OFF_PERMISSIVE", "ON_PERMISSIVE", "ON"]
    if found in steps:
        steps = steps[steps.index(found) + 1 :]
    statements = " ".join(f"SET PERSIST gtid_mode = {step};" for step in steps)
    return failed(
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
            schema = split_table_pattern(pattern)[0]
            if has_wildcard(schema):
                global_needed.append("SELECT")
            else:
                schema_statements.append(f"GRANT SELECT ON `{schema}`.* TO {account};")
    elif not select_everywhere and not any(g.privileges & {"SELECT", "ALL"} for g in parsed):
        lacking_select.append("any table")
        global_needed.append("SELECT")
    if not missing and not lacking_select:
        scope = "SELECT everywhere" if select_everywhere else "SELECT on the captured schemas"
        return passed("grants", f"user {account} has the replication privileges and {scope}")
    statements = list(dict.fromkeys(global_needed))
    fix = [f"GRANT {', '.join(statements)} ON *.* TO {account};"] if statements else []
    lacking = ", ".join(missing)
    if lacking_select:
        lacking += (" and " if lacking else "") + "SELECT on " + ", ".join(lacking_select)
    return failed(
        "grants",
        f"user {account} lacks {lacking} (privileges held through roles are not counted)",
        " ".join(dict.fromkeys([*fix, *schema_statements])),
    )


def tables_finding(
    visible: Sequence[tuple[str, str]],
    grants: Sequence[str],
    user: str,
    include_tables: Sequence[str] = (),
) -> Finding:
    """Whether the CDC user can see any table it is to capture. ``visible``: the base tables
    ``information_schema`` shows this user (it lists only what the user holds a privilege on).

    None visible while the user lacks SELECT everywhere: it cannot read the tables (a grant on
    another schema passed the grants rule), so the fix is a GRANT SELECT. None visible with
    SELECT everywhere: there is nothing to capture yet (a warning; tables created later are
    captured)."""
    wanted = sorted(
        (schema, table)
        for schema, table in visible
        if schema.lower() not in SYSTEM_SCHEMAS
        and (not include_tables or table_included(schema, table, tuple(include_tables)))
    )
    scope = "CDC_INCLUDE_TABLES names" if include_tables else "outside the system schemas"
    if wanted:
        examples = ", ".join(f"{schema}.{table}" for schema, table in wanted[:3])
        more = f" and {len(wanted) - 3} more" if len(wanted) > 3 else ""
        return passed("tables", f"the user sees {len(wanted)} tables to capture ({examples}{more})")
    parsed = [grant for grant in map(parse_grant, grants) if grant is not None]
    account = account_name(user, parsed)
    everywhere = set().union(*(g.privileges for g in parsed if g.schema is None))
    if everywhere & {"SELECT", "ALL"}:
        return warned(
            "tables",
            f"no table {scope} exists yet",
            "check CDC_INCLUDE_TABLES; tables created later are captured from their CREATE",
        )
    schemas = [
        split_table_pattern(pattern)[0]
        for pattern in include_tables
        if not has_wildcard(split_table_pattern(pattern)[0])
    ]
    if schemas and len(schemas) == len(include_tables):
        fix = " ".join(
            dict.fromkeys(f"GRANT SELECT ON `{schema}`.* TO {account};" for schema in schemas)
        )
    else:
        fix = f"GRANT SELECT ON *.* TO {account};"
    return failed(
        "tables",
        f"user {account} can see none of the tables {scope}, so it could not read a snapshot,"
        " a mirror rebuild or verify's comparison",
        fix,
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
