"""The DDL corpus file against the real servers: each source runs every corpus statement
again, and what it writes to its binlog and does to its tables must be what
``core/mysql/ddl_corpus.json`` holds, and the loader must keep the mirrors right on it.

Regenerate the file with ``scripts/collect_ddl_corpus.py`` after changing the scenes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from cdc_pipeline_tests.core.mysql.test_ddl_corpus import CASES, KNOWN_GAPS, loader_disagreements
from cdc_pipeline_tests.integration.test_ddl_corpus_collector import collect
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration

BUDGET_SECONDS = 60.0


def _differences(stored: list[dict[str, Any]], live: list[dict[str, Any]]) -> list[str]:
    if [case["sent"] for case in stored] != [case["sent"] for case in live]:
        return ["the scenes changed: run scripts/collect_ddl_corpus.py"]
    return [
        f"{case['sent']!r}: {field} is now {case[field]!r}, the file has {old[field]!r}"
        for old, case in zip(stored, live, strict=True)
        for field in case
        if case[field] != old[field]
    ]


def test_the_corpus_file_is_what_the_server_writes(source_server: SourceServer) -> None:
    started = time.monotonic()
    live = collect(source_server)
    seconds = time.monotonic() - started

    stored = [case for case in CASES if case["flavor"] == source_server.flavor]
    assert _differences(stored, live)[:10] == []
    wrong = {
        case["sent"]: problems
        for case in live
        if (problems := loader_disagreements(case)) and case["sent"] not in KNOWN_GAPS
    }
    assert wrong == {}
    assert seconds < BUDGET_SECONDS, f"{len(live)} statements took {seconds:.0f} s"
