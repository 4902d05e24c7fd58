"""Re-reading a source table for a mirror rebuild after a column change (``load.mirror_ddl``).

Invariant: each call reads the table as it is now, with the same conversions as the binlog path
(``mysql.source_rows``), so the rebuilt mirror holds what the loader would have written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pymysql

from cdc_pipeline.core.errors import SourceTableChangedError
from cdc_pipeline.core.governance import Governance
from cdc_pipeline.core.load.documents import mirror_id
from cdc_pipeline.core.load.rebuild import Rebaseline, TableRead
from cdc_pipeline.core.mysql.catalog import SourceTable, describe_table
from cdc_pipeline.core.mysql.source import connect
from cdc_pipeline.core.mysql.source_rows import row_documents
from cdc_pipeline.core.settings import SourceUrl


@contextlib.contextmanager
def source_rebaseline(
    url: SourceUrl | None, governance: Governance | Callable[[], Governance] | None = None
) -> Iterator[Rebaseline | None]:
    """Re-reads a source table for a mirror rebuild after a column change (None: no source).

    Each call reads the table's rows as they are now. That is enough for an exact mirror:
    every later change of a row is in the WAL after the DDL and is applied after the rebuild,
    so each key ends at its last change, or at the value read if it never changed again.
    ``governance``: the excluded and masked columns the rows are read under, as capture wrote
    them, or a callable giving the rules in force at each read (``RulesInForce``); a table
    whose key is masked cannot resume a read (its raw keys are kept nowhere).
    """
    fixed = governance if isinstance(governance, Governance) else Governance()
    rules_now = governance if callable(governance) else (lambda: fixed)
    if url is None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        connection: Any = None

        def rows(schema: str, table: str) -> TableRead | None:
            nonlocal connection
            if connection is None:
                connection = stack.enter_context(connect(url))
            try:
                described = describe_table(connection, schema, table)
            except ValueError:
                return None
            if not described.primary_key:
                return TableRead("", (), lambda _after: iter(()))
            rules = rules_now()
            masked = rules.key_masked(schema, table, described.columns, described.primary_key)
            return TableRead(
                "" if masked else _shape(described, rules),
                described.primary_key,
                lambda after: _read(connection, described, after, rules),
            )

        yield rows


TABLE_CHANGED_DURING_READ = {1054, 1146}
"""Unknown column, no such table: a DDL on the source between two of the read's pages."""


def _shape(described: SourceTable, rules: Governance) -> str:
    """A digest of the table's columns, types and key and of the column rules: a rebuild
    resumes only over the same."""
    text = json.dumps(
        [described.columns, described.column_types, described.primary_key, rules.record()],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read(
    connection: Any, described: SourceTable, after: tuple[Any, ...] | None, rules: Governance
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The rows after key ``after`` (all if None), page by page. The pages hold no lock on the
    source (a rebuild must never block the source's DDL or writes), so a DDL can land between
    two of them: that is reported as ``SourceTableChangedError`` and the rebuild starts over
    with the table as it is then."""
    try:
        for document in row_documents(connection, described, after_key=after):
            if rules.active:
                document = rules.document(described.schema, described.table, document) or {}
            yield mirror_id(described.key_of(document)), document
    except pymysql.err.MySQLError as error:
        if error.args and error.args[0] in TABLE_CHANGED_DURING_READ:
            name = f"{described.schema}.{described.table}"
            raise SourceTableChangedError(f"{name} changed during the read: {error}") from error
        raise
