"""Privileges: reading ``SHOW GRANTS`` output, and probing what the source user may read.

Invariant: grant lines are parsed, never echoed (MariaDB's carry password hashes); a line that
is not a privilege grant on a table or schema (roles, PROXY, routines) parses as None.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pymysql

from cdc_pipeline.core.errors import SourceSettingError
from cdc_pipeline.core.mysql.source import connect, query_one
from cdc_pipeline.core.settings import SourceUrl, split_table_pattern


@dataclass(frozen=True)
class Grant:
    privileges: frozenset[str]
    schema: str | None
    """None for ``*.*``; else the schema name or LIKE pattern as written in the grant."""
    table: str | None
    """None for ``db.*`` and ``*.*``."""
    account: str


def _mask(text: str) -> str:
    """``text`` with quoted runs and parenthesised runs blanked, same length, for keyword search."""
    out: list[str] = []
    quote: str | None = None
    depth = 0
    for char in text:
        if quote:
            out.append(" ")
            if char == quote:
                quote = None
        elif char in "`'\"":
            quote = char
            out.append(" ")
        elif char == "(":
            depth += 1
            out.append(" ")
        elif char == ")":
            depth = max(depth - 1, 0)
            out.append(" ")
        else:
            out.append(" " if depth else char)
    return "".join(out)


def _identifier(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "`'\"":
        return text[1:-1].replace(text[0] * 2, text[0])
    return text


def _split_object(text: str) -> tuple[str | None, str | None] | None:
    """``*.*`` -> (None, None); ``db.*`` -> (db, None); ``db.t`` -> (db, t); routines -> None."""
    text = text.strip()
    words = text.split(None, 1)
    if len(words) == 2 and words[0].upper() in {"PROCEDURE", "FUNCTION", "PACKAGE"}:
        return None
    if len(words) == 2 and words[0].upper() == "TABLE":
        text = words[1]
    masked = _mask(text)
    dot = masked.find(".")
    if dot < 0:
        return None
    schema, table = text[:dot], text[dot + 1 :]
    if schema.strip() == "*":
        return (None, None) if table.strip() == "*" else None
    return _identifier(schema), None if table.strip() == "*" else _identifier(table)


def parse_grant(line: str) -> Grant | None:
    """One ``SHOW GRANTS`` line as privileges on an object; None for roles, PROXY, routines."""
    masked = _mask(line)
    upper = masked.upper()
    if not upper.startswith("GRANT "):
        return None
    on = upper.find(" ON ")
    to = upper.find(" TO ", on + 1)
    if on < 0 or to < 0:
        return None  # a role grant: GRANT `role`@`%` TO `user`@`host`
    target = _split_object(line[on + 4 : to])
    if target is None:
        return None
    names: set[str] = set()
    for part in masked[len("GRANT ") : on].split(","):
        name = " ".join(part.split()).upper()  # column lists are blanked by _mask
        names.add("ALL" if name in {"ALL", "ALL PRIVILEGES"} else name)
    if "PROXY" in names:
        return None
    account_text = line[to + 4 :]
    account_end = re.search(r"\s(IDENTIFIED|WITH|REQUIRE|PASSWORD|ACCOUNT)\b", _mask(account_text))
    account = account_text[: account_end.start()] if account_end else account_text
    return Grant(frozenset(names - {""}), target[0], target[1], account.strip())


def _like(pattern: str, name: str) -> bool:
    """SQL LIKE as used in schema-level grants: ``%``, ``_`` and ``\\``-escapes."""
    regex = ""
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            regex += re.escape(next(chars, "\\"))
        else:
            regex += ".*" if char == "%" else "." if char == "_" else re.escape(char)
    return re.fullmatch(regex, name) is not None


def select_covers(pattern: str, grants: Sequence[Grant]) -> bool:
    """Whether schema- or table-level SELECT grants cover the include pattern ``schema.table``."""
    schema_pattern, table_pattern = split_table_pattern(pattern)
    for grant in grants:
        if grant.schema is None or not grant.privileges & {"SELECT", "ALL"}:
            continue
        if has_wildcard(schema_pattern):
            schema_matches = fnmatch.fnmatchcase(grant.schema, schema_pattern)
        else:
            schema_matches = _like(grant.schema, schema_pattern)
        if not schema_matches:
            continue
        if grant.table is None or grant.table == table_pattern:
            return True
    return False


def account_name(user: str, grants: Sequence[Grant]) -> str:
    """``'user'@'host'`` as the server names this login, from the grant lines when possible."""
    for grant in grants:
        match = re.fullmatch(r"[`'\"]?(.*?)[`'\"]?@[`'\"]?(.*?)[`'\"]?", grant.account)
        if match and match.group(1) == user:
            return f"'{user}'@'{match.group(2)}'"
    return f"'{user}'@'%'"


def has_wildcard(schema_pattern: str) -> bool:
    return any(char in schema_pattern for char in "*?[")


PRIVILEGE_ERRORS = frozenset({1044, 1142, 1143, 1227, 1370})
"""MySQL/MariaDB errors meaning "this user lacks a privilege" (database, table, column, global,
routine)."""


def privilege_error_code(error: BaseException) -> int | None:
    """The error code when ``error`` is the server refusing for lack of a privilege, else None."""
    code = error.args[0] if isinstance(error, pymysql.err.MySQLError) and error.args else None
    return code if code in PRIVILEGE_ERRORS else None


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def require_select(url: SourceUrl, include_tables: Sequence[str]) -> None:
    """Refuse (``SourceSettingError`` with the GRANT) when the user may not read a schema the
    include patterns name: a table the user may not read is hidden from ``verify`` (its mirror
    would look like a stray). A schema name that does not exist still answers "denied" first."""
    with connect(url) as connection:
        for pattern in include_tables:
            schema, table = split_table_pattern(pattern)
            if has_wildcard(schema):
                continue
            probe = "cdc_pipeline_select_probe" if has_wildcard(table) else table
            try:
                query_one(connection, f"SELECT 1 FROM {_quoted(schema)}.{_quoted(probe)} LIMIT 0")
            except pymysql.err.MySQLError as error:
                code = privilege_error_code(error)
                if code is None:
                    continue  # 1146: no such table (yet); verify reports what it finds
                current = str((query_one(connection, "SELECT CURRENT_USER()") or ("",))[0])
                user, _, host = current.rpartition("@")
                account = f"'{user or url.user}'@'{host or '%'}'"
                raise SourceSettingError(
                    f"the source user {account} may not read {pattern} (MySQL error {code}), so"
                    f" verify cannot compare it; run GRANT SELECT ON {_quoted(schema)}.* TO"
                    f" {account};"
                ) from None
