"""Reconcile each mirrored table with its source table: counts and a per-row hash, by key.

The logic of ``cdc-pipeline verify`` and the ``source_sink_reconciliation`` asset check.

A comparison only means something if both sides describe the same transactions for that table.
The mirror is frozen while we hold the loader lock (``loader_lock``), at the checkpoint ``C``,
except that a load that crashed before can have left writes of transactions after ``C``, all of
them captured, hence executed before we took the lock. The source is read in a consistent
snapshot ``V``. So, for each table ``T``, one attempt is:

1. take the loader lock (only for this table), read ``C`` (before any load: ``origin.json``);
   skip the comparison if the captured transactions after ``C`` already touch ``T``;
2. read ``S1`` = the source's executed GTIDs, ``START TRANSACTION WITH CONSISTENT SNAPSHOT``,
   compare every source row (``row_documents`` in the snapshot) with every mirror document, and
   read ``S3`` = executed again *after* the comparison; release the lock;
3. the result stands iff ``C`` is within ``S1`` and no transaction of ``S3 - C`` touched ``T``
   (known from the WAL's segments, once capture has covered ``S3``; ``reconcile_touched``).
   Otherwise ``T`` is tried again in a later round, and reported ``skipped`` with the reason
   when the wait budget is spent.

Why it holds: the transactions on ``T`` visible in ``V`` committed before ``S3`` was read, so
they are in ``S3``; those applied to the mirror are in ``C`` or, for a crashed load's writes, in
``S1 - C``. When none of ``S3 - C`` touched ``T``, both sides hold exactly ``C``'s transactions
on ``T`` (``V`` shows all of ``C``: they were captured and loaded long after they committed).
Reading ``S3`` after the comparison, not right after ``START TRANSACTION``, is deliberate:
(a) a DDL on ``T`` that commits between the snapshot and our first read of ``T`` is caught
(MariaDB then silently shows the table's *current* rows inside the snapshot; MySQL raises 1412,
retried), and from our first read on, our metadata lock holds any DDL on ``T`` off until the
comparison ends (as with ``mysqldump --single-transaction``); (b) no retry loop until
``S1 == S2``, which a busy source never grants; (c) MySQL makes a commit visible a moment
before it adds its GTID to ``gtid_executed``: by the end of the comparison that moment is long
past. The check in step 1 only saves work; step 3 alone decides.

Rounds: every pending table is compared, then capture is awaited once (up to the remaining
budget) until the WAL covers the newest ``S3``, then each is decided; undecided tables go to the
next round after a pause. ``wait_seconds`` bounds the time spent after the first round's
comparisons (waiting for the lock, for capture, between rounds, and comparing again), for the
whole run: a busy source costs about one capture tick, not one per table.

Invariants:
    * never reports ``equal`` for a table whose source state and mirror state differ in GTID
      coverage for that table: undecidable tables are ``skipped``, with the reason;
    * values never leave this package: results hold counts, keys and field names only;
    * memory: one key digest and one row digest (16 bytes each) per source row of the table
      being compared; rows are streamed from both sides (``reconcile_compare``);
    * the loader waits at most one table's comparison for the lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cdc_pipeline.core.audit.reconcile.attempt import (
    CHANGED,
    NOTHING_CAPTURED,
    TOUCHED,
    Compared,
    Outcome,
    ReconcileRun,
    Retry,
    SnapshotBroken,
)
from cdc_pipeline.core.audit.reconcile.report import ReconcileReport, StrayMirror, TableResult
from cdc_pipeline.core.governance import governance_of
from cdc_pipeline.core.gtid import GtidError
from cdc_pipeline.core.load.retry import RetryPolicy
from cdc_pipeline.core.load.sink import open_sink
from cdc_pipeline.core.mysql.catalog import SourceTable, describe_table, list_tables
from cdc_pipeline.core.mysql.source import connect, detect_flavor
from cdc_pipeline.core.settings import MongoSettings, SourceUrl, table_included, table_label
from cdc_pipeline.core.wal.ledger import wal_end
from cdc_pipeline.core.wal.staging import WalPaths

STRAY_SCAN = "(stray mirror scan)"
Final = TableResult | list[StrayMirror]


def reconcile(
    paths: WalPaths,
    source_url: SourceUrl,
    mongo: MongoSettings,
    patterns: tuple[str, ...],
    wait_seconds: float = 30.0,
    cap: int = 20,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    mask_key: str = "",
) -> ReconcileReport:
    """Compare every mirrored table in scope (``patterns``, with a primary key) with its source.

    Args:
        paths: the source's WAL (its loader lock, origin and segments).
        source_url: the source; read with a utf8mb4 connection in consistent snapshots.
        mongo: the sink; its compat decides mirror names and integer-width strictness.
        patterns: ``CDC_INCLUDE_TABLES`` patterns (empty: every non-system table).
        wait_seconds: total time to spend waiting for the loader lock, for capture to cover the
            source's position, and for the loader to apply changes to busy tables.
        cap: at most this many keys per kind (missing, extra, differing) per table.
        mask_key: CDC_MASK_KEY: source rows are compared as the loader wrote them, under the
            column rules the checkpoint records (``core.governance``), masked values included.

    Raises:
        SourceUnavailableError, SourceSettingError, SinkUnavailableError, CorruptSegmentError:
            a server cannot be reached or read, or a segment cannot be read.
    """
    report = ReconcileReport()
    started = clock()
    with (
        connect(source_url) as connection,
        open_sink(mongo, RetryPolicy(deadline=min(10.0, mongo.retry_seconds))) as sink,
    ):
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION lock_wait_timeout = 60")
        checkpoint = sink.read_checkpoint(paths.source)
        rules = governance_of(checkpoint.governance if checkpoint else None, mask_key, "verify")
        run = ReconcileRun(
            paths,
            source_url,
            connection,
            sink,
            detect_flavor(connection),
            patterns,
            wait_seconds,
            cap,
            exact_int_width=mongo.compat != "nx-27017",
            clock=clock,
            sleep=sleep,
            started=started,
            governance=rules,
        )
        items: dict[str, SourceTable | None] = {}
        excluded = rules.settings.exclude_tables
        for schema, name in list_tables(connection, patterns):
            if excluded and table_included(schema, name, excluded):
                continue  # CDC_EXCLUDE_TABLES: never captured, so not compared
            table = describe_table(connection, schema, name)
            if table.primary_key:
                items[table_label(schema, name)] = table
            else:
                report.unmirrored.append(table_label(schema, name))
        if wal_end(paths) is None:
            for name in items:
                report.add_table(TableResult(name=name, state="skipped", reason=NOTHING_CAPTURED))
        else:
            items[STRAY_SCAN] = None
            final, undecided = _rounds(run, items, report)
            _fill(run, report, items, final, undecided)
    report.seconds = clock() - started
    return report


def _rounds(
    run: ReconcileRun, items: dict[str, SourceTable | None], report: ReconcileReport
) -> tuple[dict[str, Final], dict[str, str]]:
    """Attempt every undecided item, wait once for capture, decide; until all are decided or
    the wait budget is spent. Returns the decided items and the reasons of the others."""
    final: dict[str, Final] = {}
    reasons: dict[str, str] = {}
    fatal = False
    pending = list(items)
    run.free_comparisons = True  # the first round's comparisons are not part of the budget
    while pending:
        compared: dict[str, Compared] = {}
        for name in pending:
            outcome = _attempt(run, items[name])
            if isinstance(outcome, Compared):
                compared[name] = outcome
            elif isinstance(outcome, Retry):
                reasons[name], fatal = outcome.reason, fatal or outcome.fatal
            else:
                final[name] = outcome
        run.free_comparisons = False
        newest = [attempt.after for attempt in compared.values() if attempt.after - attempt.applied]
        if newest:
            position = newest[0]
            for after in newest[1:]:
                position = position | after
            run.wait_for_capture(position)
        for name, attempt in compared.items():
            verdict = _verdict(run, items[name], attempt)
            if isinstance(verdict, Retry):
                reasons[name], fatal = verdict.reason, fatal or verdict.fatal
            else:
                final[name] = verdict
        pending = [name for name in pending if name not in final]
        if pending and fatal:
            report.unrelated_problems += 1
            break
        if pending and run.remaining() <= 0:
            break
        if pending:
            run.sleep(min(1.0, run.remaining()))
    return final, {name: reasons[name] for name in pending}


def _attempt(run: ReconcileRun, table: SourceTable | None) -> Outcome:
    try:
        return run.compare_table(table) if table is not None else run.compare_strays()
    except SnapshotBroken:
        return Retry(CHANGED)
    except GtidError as error:
        return Retry(f"the checkpoint cannot be compared with the source: {error}", fatal=True)


def _verdict(run: ReconcileRun, table: SourceTable | None, attempt: Compared) -> Final | Retry:
    """The attempt's result if nothing after the checkpoint touched what it compared."""
    run.checkpoint_gtid, run.source_gtid = str(attempt.applied), str(attempt.after)
    touched = run.touched(attempt)
    if isinstance(touched, Retry):
        return touched
    if isinstance(attempt.result, TableResult):
        assert table is not None
        return Retry(TOUCHED) if touched.touches(table.schema, table.table) else attempt.result
    unsure = [s for s in attempt.result if touched.touches(s.schema, s.table)]
    if unsure:
        return Retry(f"{TOUCHED} ({', '.join(f'{s.schema}.{s.table}' for s in unsure)})")
    return attempt.result


def _fill(
    run: ReconcileRun,
    report: ReconcileReport,
    items: dict[str, SourceTable | None],
    final: dict[str, Final],
    undecided: dict[str, str],
) -> None:
    report.checkpoint_gtid, report.source_gtid = run.checkpoint_gtid, run.source_gtid
    for name in items:
        if name in undecided:
            reason = run.reason(undecided[name])
            if name == STRAY_SCAN:
                report.add(f"stray mirrors not checked: {reason}")
            else:
                report.add_table(TableResult(name=name, state="skipped", reason=reason))
            continue
        outcome = final[name]
        if isinstance(outcome, list):
            for stray in outcome:
                report.add_stray(stray)
        else:
            report.add_table(outcome)
