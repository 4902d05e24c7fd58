"""``mysql.ddl`` against the DDL corpus the real servers wrote (``ddl_corpus.json``): for each
statement, what the loader does with ``classify_row``'s answer must leave the mirrors equal to
the source tables.

The corpus comes from ``integration/test_ddl_corpus_collector``: a real MariaDB and a real
MySQL 9.7 ran every statement; per statement the file holds the text sent, the Query events the
server wrote (text, default schema, ANSI_QUOTES) as capture reads them, the tables with row
events, and the tables of the corpus schemas before and after as information_schema showed
them: ``[schema, table, columns, rows, checksum]`` (``columns`` hashes each column's name,
``COLUMN_TYPE``, character set and place in the primary key; ``checksum`` is ``CHECKSUM
TABLE``). Nothing in it comes from the classifier. ``integration/test_ddl_corpus_live`` runs the
statements again on both servers and fails if the file no longer matches what they write.

What is compared (a CDC classifier need only be right about what the loader acts on):
mirrors start as a copy of every table ``before`` (columns, rows, checksum); each Query event
is classified with ``classify_row`` in its session and applied as ``load.mirror_ddl.apply_ddl``
does: ``truncate`` empties the targets' mirrors, ``drop_table``/``replace_table`` drop them,
``rename_table`` moves each old mirror to its new name, then each of ``rebuilds`` is read again
from the source as it is ``after`` (a table gone leaves its mirror as it was); row events then
add their inserted rows. Every name must end with its mirror equal to the table ``after``:
same columns, row count and checksum; an absent mirror equals an empty or absent table. So a
missed drop, rename, truncate or rebuild, a wrong target (schema, name, letter case) and an
action on the wrong table all fail; rebuilding a table that did not change does not (it costs
a read, it loses nothing). ``kind`` and ``targets`` matter only through these effects.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cdc_pipeline.core.mysql.ddl import classify_row, ddl_context

CORPUS_FILE = Path(__file__).with_name("ddl_corpus.json")
CASES: list[dict[str, Any]] = json.loads(CORPUS_FILE.read_text(encoding="utf-8"))

Name = tuple[str, str]
State = tuple[str, int, int]
"""A table's or mirror's ``(columns, rows, checksum)``."""

KNOWN_GAPS: dict[str, str] = {}
"""Statements whose disagreement cannot be fixed in ``mysql.ddl``, with the reason: the test
requires them to still disagree, so a fix elsewhere shows up here."""


def loader_disagreements(case: dict[str, Any]) -> list[str]:
    """Where the mirrors, after the loader applied the statement's classified events, differ
    from the source tables after the statement (see the module docstring)."""
    before: dict[Name, State] = {(s, t): (c, r, k) for s, t, c, r, k in case["before"]}
    after: dict[Name, State] = {(s, t): (c, r, k) for s, t, c, r, k in case["after"]}
    mirrors = dict(before)
    for event in case["binlog"]:
        row = {
            "statement": event["statement"],
            "schema": event["default_schema"],
            "after": ddl_context(event["default_schema"], event["ansi_quotes"]),
        }
        statement = classify_row(row, mariadb=case["flavor"] == "mariadb")
        if statement.kind == "truncate":
            for name in statement.targets:
                if name in mirrors:
                    mirrors[name] = (mirrors[name][0], 0, 0)
        elif statement.kind in ("drop_table", "replace_table"):
            for name in statement.targets:
                mirrors.pop(name, None)
        elif statement.kind == "drop_database":  # the loader drops what cdc_collections lists
            for dropped, _ in statement.targets:
                for name in [name for name in mirrors if name[0] == dropped]:
                    mirrors.pop(name)
        elif statement.kind == "rename_table":
            for old, new in statement.renames:
                if old in mirrors:
                    mirrors[new] = mirrors.pop(old)
        for name in statement.rebuilds:
            if name in after:
                mirrors[name] = after[name]
    for schema, table, inserts in case["row_events"]:
        name = (schema, table)
        rows = (mirrors[name][1] if name in mirrors else 0) + inserts
        if name in after and rows == after[name][1]:
            mirrors[name] = after[name]
    problems = []
    for name in sorted(set(mirrors) | set(after)):
        mirror, table = mirrors.get(name), after.get(name)
        if (mirror is None or mirror[1] == 0) and (table is None or table[1] == 0):
            continue
        if mirror is None:
            problems.append(f"{name}: {table[1]} rows never reach a mirror")  # type: ignore[index]
        elif table is None:
            problems.append(f"{name}: the mirror keeps {mirror[1]} rows of a table now gone")
        elif mirror != table:
            problems.append(f"{name}: mirror {mirror} but the table is {table}")
    return problems


def _case_id(case: dict[str, Any]) -> str:
    return f"{case['flavor']}-{case['scene']}-{case['sent'][:60]}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(case) for case in CASES])
def test_the_loader_leaves_mirrors_equal_to_the_source(case: dict[str, Any]) -> None:
    problems = loader_disagreements(case)
    gap = KNOWN_GAPS.get(case["sent"])
    if gap is not None:
        assert problems, f"no longer a gap ({gap}): remove it from KNOWN_GAPS"
        return
    assert problems == [], [event["statement"] for event in case["binlog"]]


def test_the_corpus_covers_both_servers_and_enough_statements() -> None:
    flavors = Counter(case["flavor"] for case in CASES)
    assert set(flavors) == {"mariadb", "mysql"}
    assert len({case["sent"] for case in CASES}) >= 200
    # The truth is not trivial: statements that really dropped, renamed, emptied and changed.
    effects = Counter(kind for case in CASES for kind, names in case["truth"].items() if names)
    assert min(effects[kind] for kind in ("dropped", "renamed", "emptied", "changed")) >= 10
