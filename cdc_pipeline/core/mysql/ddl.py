"""Recognise the DDL statements the loader acts on, and the tables they touch.

Only the statements with an effect on the mirror collections are classified (TRUNCATE, DROP
TABLE, RENAME TABLE, ALTER TABLE ... RENAME TO, CREATE TABLE, ALTER TABLE); everything else is
``other`` and is still recorded in the DDL history. Invariant: classification never raises; a
statement it cannot parse is ``other`` with no targets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r"(?:`(?:[^`]|``)+`|[\w$]+)"
_QUALIFIED = rf"{_NAME}(?:\s*\.\s*{_NAME})?"
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*|#[^\n]*", re.S)


@dataclass(frozen=True)
class DdlStatement:
    """What a DDL statement does to which tables: ``targets`` are (schema, table) pairs; for a
    rename, ``renames`` maps each old (schema, table) to its new name, in statement order."""

    kind: str
    targets: tuple[tuple[str, str], ...]
    renames: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = ()


def _unquote(name: str) -> str:
    name = name.strip()
    if name.startswith("`") and name.endswith("`"):
        return name[1:-1].replace("``", "`")
    return name


def _split_qualified(text: str, default_schema: str) -> tuple[str, str]:
    parts = re.findall(_NAME, text)
    if len(parts) == 2:
        return _unquote(parts[0]), _unquote(parts[1])
    return default_schema, _unquote(parts[0])


def _names(text: str, default_schema: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        _split_qualified(match.group(0), default_schema)
        for match in re.finditer(_QUALIFIED, text)
        if match.group(0).upper() not in {"IF", "EXISTS", "RESTRICT", "CASCADE"}
    )


def classify_ddl(statement: str, default_schema: str) -> DdlStatement:
    """Classify one statement; ``default_schema`` qualifies unqualified table names."""
    text = _COMMENTS.sub(" ", statement).strip().rstrip(";")
    flat = re.sub(r"\s+", " ", text)
    upper = flat.upper()
    try:
        if match := re.match(rf"TRUNCATE (?:TABLE )?({_QUALIFIED})", flat, re.I):
            return DdlStatement("truncate", (_split_qualified(match.group(1), default_schema),))
        if re.match(r"DROP (?:TEMPORARY )?TABLES? ", upper):
            rest = re.sub(r"^DROP (?:TEMPORARY )?TABLES? (?:IF EXISTS )?", "", flat, flags=re.I)
            rest = re.sub(r"\s+(RESTRICT|CASCADE)\s*$", "", rest, flags=re.I)
            return DdlStatement("drop_table", _names(rest, default_schema))
        if upper.startswith("RENAME TABLE ") or upper.startswith("RENAME TABLES "):
            pairs = re.findall(rf"({_QUALIFIED})\s+TO\s+({_QUALIFIED})", flat[13:], re.I)
            renames = tuple(
                (_split_qualified(old, default_schema), _split_qualified(new, default_schema))
                for old, new in pairs
            )
            return DdlStatement("rename_table", tuple(old for old, _ in renames), renames)
        if match := re.match(rf"ALTER (?:ONLINE |IGNORE )*TABLE ({_QUALIFIED}) (.*)$", flat, re.I):
            table = _split_qualified(match.group(1), default_schema)
            rename = re.search(
                rf"\bRENAME (?:TO |AS )?(?!COLUMN |INDEX |KEY )({_QUALIFIED})", match.group(2), re.I
            )
            if rename and not re.search(r"\bRENAME (COLUMN|INDEX|KEY)\b", match.group(2), re.I):
                new = _split_qualified(rename.group(1), default_schema)
                return DdlStatement("rename_table", (table,), ((table, new),))
            return DdlStatement("alter_table", (table,))
        if match := re.match(
            rf"CREATE (?:OR REPLACE )?(?:TEMPORARY )?TABLE (?:IF NOT EXISTS )?({_QUALIFIED})",
            flat,
            re.I,
        ):
            return DdlStatement("create_table", (_split_qualified(match.group(1), default_schema),))
    except (IndexError, re.error):
        pass
    return DdlStatement("other", ())


_NOT_COLUMNS = r"(?:INDEX|KEY|UNIQUE|FULLTEXT|SPATIAL|CONSTRAINT|FOREIGN|CHECK|PARTITION)\b"


def changes_columns(statement: str) -> bool:
    """Whether an ALTER TABLE changes existing rows' columns or key without row events.

    True for ADD/DROP/CHANGE/MODIFY/RENAME COLUMN and primary-key changes: the binlog carries
    no row events for the rows such a statement rewrites, so their mirrors must be rebuilt.
    Index, constraint and partition changes, and column DEFAULT changes, are not.
    """
    flat = re.sub(r"\s+", " ", _COMMENTS.sub(" ", statement)).strip().upper()
    if not re.match(r"ALTER (?:ONLINE |IGNORE )*TABLE ", flat):
        return False
    clauses = flat.split(" ", 3)[-1] if flat.count(" ") >= 3 else ""
    patterns = (
        rf"\bADD (?!{_NOT_COLUMNS})(?:COLUMN )?",
        r"\bADD (?:CONSTRAINT \S+ )?PRIMARY KEY\b",
        rf"\bDROP (?!{_NOT_COLUMNS}|DEFAULT\b)(?:COLUMN )?",
        r"\bDROP PRIMARY KEY\b",
        r"\bCHANGE (?:COLUMN )?",
        r"\bMODIFY (?:COLUMN )?",
        r"\bRENAME COLUMN\b",
    )
    return any(re.search(pattern, clauses) for pattern in patterns)
