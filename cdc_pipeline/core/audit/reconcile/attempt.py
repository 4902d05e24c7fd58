"""One attempt at comparing a table (or scanning for stray mirrors) and its verdict.

The steps ``reconcile`` runs in rounds (see its module docstring for why they are exact):
``compare_table`` holds the loader lock, reads the checkpoint ``C``, and compares the source's
consistent snapshot with the mirror, bracketed by the source's executed GTIDs before (``S1``)
and after (``S3``); ``touched`` then says, from the WAL, whether ``S3 - C`` touched the table.
Source errors become ``SourceUnavailableError`` / ``SourceSettingError``, MongoDB outages
``SinkUnavailableError``: messages without secrets or row values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pymysql
from pymongo.errors import PyMongoError

from cdc_pipeline.core.audit.reconcile.compare import Comparison, TableComparison, expected_document
from cdc_pipeline.core.audit.reconcile.report import StrayMirror, TableResult
from cdc_pipeline.core.audit.reconcile.strays import find_stray_candidates
from cdc_pipeline.core.audit.reconcile.touched import SegmentSpan, Touched, span_of, touched_by
from cdc_pipeline.core.errors import (
    CorruptSegmentError,
    LoaderBusyError,
    SinkUnavailableError,
    SourceSettingError,
    SourceUnavailableError,
    ValueConversionError,
)
from cdc_pipeline.core.governance import Governance
from cdc_pipeline.core.gtid import Flavor, GtidError, GtidSet
from cdc_pipeline.core.load.dead_letters import held_keys
from cdc_pipeline.core.load.documents import MIRROR_STATUS, key_label
from cdc_pipeline.core.load.large_values import resolve_mirror_document
from cdc_pipeline.core.load.retry import call_with_retries, is_transient
from cdc_pipeline.core.load.sink import MongoSink
from cdc_pipeline.core.mysql.catalog import SourceTable, describe_table
from cdc_pipeline.core.mysql.grants import PRIVILEGE_ERRORS
from cdc_pipeline.core.mysql.source import query_one
from cdc_pipeline.core.mysql.source_rows import row_documents
from cdc_pipeline.core.settings import SourceUrl, table_label
from cdc_pipeline.core.wal.ledger import wal_end
from cdc_pipeline.core.wal.staging import (
    WalPaths,
    list_segments,
    loader_lock,
    read_origin,
    sequence_of,
)

_TABLE_DEFINITION_CHANGED = 1412
_LOCK_WAIT_TIMEOUT = 1205


@dataclass
class Retry:
    """Not decided this time; ``fatal``: retrying cannot help (the positions do not match)."""

    reason: str
    fatal: bool = False


@dataclass
class Compared:
    """An attempt whose verdict waits for the WAL: valid iff ``after - applied`` left it alone."""

    applied: GtidSet
    applied_sequence: int
    before: GtidSet
    after: GtidSet
    result: TableResult | list[StrayMirror]


Outcome = TableResult | Retry | Compared


@dataclass
class ReconcileRun:
    """One run of ``reconcile``: the connections, the wait budget, cached segment spans, and
    the steps of one attempt at a table (``compare_table``) and at the stray scan."""

    paths: WalPaths
    url: SourceUrl
    connection: Any
    sink: MongoSink
    flavor: Flavor
    patterns: tuple[str, ...]
    wait_seconds: float
    cap: int
    exact_int_width: bool
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    started: float = 0.0
    compare_seconds: float = 0.0
    """Time spent comparing while ``free_comparisons``: not counted as waiting."""
    free_comparisons: bool = False
    spans: dict[str, SegmentSpan] = field(default_factory=dict)
    checkpoint_gtid: str = ""
    source_gtid: str = ""
    governance: Governance = field(default_factory=Governance)
    """The column rules the mirrors were written under: applied to each source row read."""

    # -- budget -------------------------------------------------------------------------------
    def remaining(self) -> float:
        waited = self.clock() - self.started - self.compare_seconds
        return self.wait_seconds - waited

    def reason(self, what: str) -> str:
        return what.replace("{wait}", f"{self.wait_seconds:g}")

    # -- positions ----------------------------------------------------------------------------
    def executed(self) -> GtidSet:
        variable = "gtid_executed" if self.flavor == "mysql" else "gtid_binlog_pos"
        row = query_one(self.connection, f"SELECT @@global.{variable}")
        return GtidSet.parse(str((row or ("",))[0] or ""), self.flavor)

    def applied(self) -> tuple[GtidSet, int]:
        """The checkpoint's GTID set and segment sequence; before any load, the origin."""
        checkpoint = self.sink.read_checkpoint(self.paths.source)
        origin = read_origin(self.paths)
        if checkpoint is not None:
            text, flavor, sequence = checkpoint.gtid, checkpoint.flavor, checkpoint.last_sequence
        elif origin is None:
            raise GtidError("MongoDB holds no checkpoint and the WAL has no origin.json")
        else:
            text, flavor, sequence = origin.gtid, origin.flavor, 0
        if flavor and flavor != self.flavor:
            raise GtidError(f"the checkpoint is for a {flavor} source, the source is {self.flavor}")
        return GtidSet.parse(text, self.flavor), sequence

    def wal_gtid(self) -> GtidSet | None:
        end = wal_end(self.paths)
        return end.gtid if end is not None and end.gtid.flavor == self.flavor else None

    def spans_after(self, sequence: int) -> list[SegmentSpan]:
        """Spans of the segments after ``sequence`` (segments are immutable: cached)."""
        spans = []
        for path in list_segments(self.paths):
            if sequence_of(path) <= sequence:
                continue
            if path.name not in self.spans:
                try:
                    self.spans[path.name] = span_of(path, self.flavor)
                except CorruptSegmentError:
                    if path.exists():
                        raise
                    continue  # retired meanwhile: what it covered is reported uncovered
            spans.append(self.spans[path.name])
        return spans

    def wait_for_capture(self, position: GtidSet) -> bool:
        while True:
            end = self.wal_gtid()
            if end is not None and end.issuperset(position):
                return True
            if self.remaining() <= 0:
                return False
            self.sleep(min(0.5, max(self.remaining(), 0.01)))

    # -- one attempt --------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[tuple[GtidSet, int] | None]:
        """The loader lock and the checkpoint under it; None if a load kept the lock."""
        try:
            with loader_lock(self.paths, max(1.0, self.remaining())):
                yield self.applied()
        except LoaderBusyError:
            yield None

    def early_reason(self, applied: GtidSet, sequence: int, names: list[tuple[str, str]]) -> str:
        """Why comparing now is pointless (captured changes after the checkpoint), or ''."""
        captured = self.wal_gtid()
        if captured is None:
            return ""
        touched = touched_by(self.spans_after(sequence), captured - applied)
        if not touched.known:
            return HOLE
        if any(touched.touches(schema, table) for schema, table in names):
            return TOUCHED
        return ""

    def compare_table(self, table: SourceTable) -> Outcome:
        name = table_label(table.schema, table.table)
        collection = self.sink.mirror(table.schema, table.table)
        with self.locked() as position:
            if position is None:
                return Retry(LOCKED)
            applied, sequence = position
            status = call_with_retries(
                lambda: self.sink.database[MIRROR_STATUS].find_one({"_id": collection}),
                self.sink.retry_policy,
            )
            if status is not None:
                reason = f"the loader marked the mirror stale: {status.get('reason', '?')}"
                since = status.get("stale_since_gtid")
                reason += f" (at {since}); re-baseline it" if since else "; re-baseline it"
                return TableResult(
                    name=name, state="stale", reason=reason, checkpoint_gtid=str(applied)
                )
            early = self.early_reason(applied, sequence, [(table.schema, table.table)])
            if early:
                return Retry(early)
            started = self.clock()
            try:
                outcome = self.read_both(table, collection)
            finally:
                if self.free_comparisons:
                    self.compare_seconds += self.clock() - started
        if not isinstance(outcome, tuple):
            return outcome
        comparison, before, after = outcome
        result = TableResult.compared(
            name,
            comparison,
            checkpoint_gtid=str(applied),
            source_gtid=str(after),
            seconds=self.clock() - started,
            set_aside=sorted(self.held(collection)),
        )
        return Compared(applied, sequence, before, after, result)

    def held(self, collection: str) -> set[str]:
        """Keys of the mirror set aside in ``cdc_dead_letters``: known to differ."""
        database = self.sink.database
        return call_with_retries(lambda: held_keys(database, collection), self.sink.retry_policy)

    def read_both(
        self, table: SourceTable, collection: str
    ) -> tuple[Comparison, GtidSet, GtidSet] | Retry | TableResult:
        """Source rows in one snapshot against the mirror: ``(Comparison, S1, S3)``."""
        comparison = TableComparison(self.exact_int_width, self.cap)
        with self.transaction() as before:
            try:
                described = describe_table(self.connection, table.schema, table.table)
            except ValueError:
                return Retry(CHANGED)
            if not described.primary_key:
                return Retry(CHANGED)

            held = self.held(collection)

            def expected() -> Iterator[dict[str, Any]]:
                rules = self.governance
                for row in row_documents(self.connection, described):
                    if rules.active:
                        row = rules.document(described.schema, described.table, row) or {}
                    document = expected_document(described, row, self.sink.stored)
                    if not held or key_label(document["_id"]) not in held:
                        yield document

            try:
                for document in expected():
                    comparison.add_expected(document)
                with self.mirror_errors():
                    database = self.sink.database
                    for document in database[collection].find({}, batch_size=1000):
                        if held and key_label(document["_id"]) in held:
                            continue  # set aside in cdc_dead_letters: reported, not compared
                        comparison.add_mirror(resolve_mirror_document(database, document))
                if comparison.needs_second_pass:
                    comparison.resolve(expected())
            except ValueConversionError as error:
                column = str(error).split(":")[0] if str(error).startswith("column ") else ""
                return TableResult(
                    name=table_label(table.schema, table.table),
                    state="skipped",
                    reason=f"{column or 'a column'} cannot be read exactly"
                    " (a type or value outside the CONTRACT's type mapping)",
                )
            after = self.executed()
        return comparison.finish(), before, after

    @contextlib.contextmanager
    def transaction(self) -> Iterator[GtidSet]:
        """A consistent-snapshot transaction; yields the executed set read just before it.

        Source errors become ``SourceUnavailableError`` (1412, a DDL since the snapshot, and
        1205, a metadata lock wait, become a retry through ``SnapshotBroken``).
        """
        try:
            before = self.executed()
            with self.connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            try:
                yield before
            finally:
                with contextlib.suppress(pymysql.err.MySQLError):
                    self.connection.rollback()
        except pymysql.err.OperationalError as error:
            code = error.args[0] if error.args else None
            if code in (_TABLE_DEFINITION_CHANGED, _LOCK_WAIT_TIMEOUT):
                raise SnapshotBroken from None
            if code in PRIVILEGE_ERRORS:
                raise SourceSettingError(
                    f"the source user '{self.url.user}' may not read the tables in scope (MySQL"
                    f" error {code}); grant it SELECT on them (GRANT SELECT ON schema.* TO ...)."
                ) from None
            raise SourceUnavailableError(
                f"lost the source {self.url.redacted()} while verifying (MySQL error {code});"
                " check that it is running and run verify again."
            ) from None

    @contextlib.contextmanager
    def mirror_errors(self) -> Iterator[None]:
        started = self.clock()
        try:
            yield
        except PyMongoError as error:
            if is_transient(error):
                raise SinkUnavailableError(
                    type(error).__name__, 1, self.clock() - started
                ) from None
            raise

    def compare_strays(self) -> Outcome:
        with self.locked() as position:
            if position is None:
                return Retry(LOCKED)
            applied, sequence = position
            with self.transaction() as before, self.mirror_errors():
                candidates = find_stray_candidates(self.connection, self.sink, self.patterns)
                after = self.executed()
        return Compared(applied, sequence, before, after, candidates)

    # -- verdict ------------------------------------------------------------------------------
    def touched(self, compared: Compared) -> Touched | Retry:
        if not compared.applied.issubset(compared.before):
            unknown = compared.applied - compared.before
            return Retry(f"{FOREIGN_CHECKPOINT} ({unknown.describe(3)})", fatal=True)
        changed = compared.after - compared.applied
        end = self.wal_gtid()
        if changed and (end is None or not end.issuperset(compared.after)):
            return Retry(CAPTURE_BEHIND)
        touched = touched_by(self.spans_after(compared.applied_sequence), changed)
        return touched if touched.known else Retry(HOLE)


class SnapshotBroken(Exception):
    """A DDL or a metadata-lock wait broke the snapshot: try the table again."""


LOCKED = "a load kept the loader lock for the whole wait of {wait} s"
TOUCHED = "changed after the checkpoint and the loader did not catch up within {wait} s"
CAPTURE_BEHIND = (
    "the source moved past the WAL's end and capture did not catch up within {wait} s"
    " (is the capture sensor running?)"
)
HOLE = (
    "the WAL after the checkpoint has a hole (a missing or quarantined segment); see the"
    " gtid_continuity check"
)
CHANGED = "the table was dropped or lost its primary key while being verified"
FOREIGN_CHECKPOINT = "the checkpoint holds transactions the source never executed"
NOTHING_CAPTURED = "nothing captured yet (no origin.json in the staging folder)"
