"""``cdc-pipeline catch-up``: capture until caught up, load everything, prove the result.

For CI and cron without a Dagster deployment: the same capture ticks as the sensor
(``capture_once``), the same load as the load runs (``run_load``), then the checks that can
fail after a catch-up: the WAL chains without holes or overlaps up to the checkpoint
(``gtid_continuity``), nothing was staged or applied twice (``no_duplicate_events``), and every
mirror equals its source table (``source_sink_reconciliation``). Lag and binlog headroom are
not judged: a catch-up ends with no lag by construction, and a purge past the position stops
capture itself (``BinlogPurgedError``).

Invariants: an operator-side stop (a setting, an unreachable server, a halt) is raised as the
``CdcError`` that names it, after the work that could be done; a failed check is a problem in the
report, never an exception, so the caller can print every finding and exit 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cdc_pipeline.core.audit.duplicates import DuplicateReport, check_change_log, check_wal
from cdc_pipeline.core.audit.reconcile.run import reconcile
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.errors import CdcError
from cdc_pipeline.core.load.loader import LoadResult, run_load
from cdc_pipeline.core.load.sink import open_sink
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings
from cdc_pipeline.core.wal.continuity import check_with_checkpoint, gather_chain
from cdc_pipeline.core.wal.staging import WalPaths

MAX_TICKS = 10_000
"""A source written faster than capture reads would never let the loop end."""


@dataclass
class CheckOutcome:
    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "passed": self.passed, "problems": self.problems[:20]}


@dataclass
class CatchUpReport:
    segments_captured: int = 0
    rows_captured: int = 0
    load: LoadResult | None = None
    checks: list[CheckOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckOutcome]:
        return [check for check in self.checks if not check.passed]

    def lines(self) -> list[str]:
        lines = [
            f"captured {self.segments_captured} segments ({self.rows_captured:,} row events)",
            self.load.summary() if self.load else "loaded nothing",
        ]
        for check in self.checks:
            state = "passed" if check.passed else f"FAILED: {'; '.join(check.problems[:3])}"
            lines.append(f"check {check.name}: {state}")
        return lines

    def finding(self) -> str:
        """The failed checks in one sentence ("" when every check passed)."""
        if not self.failed:
            return ""
        first = self.failed[0]
        names = ", ".join(check.name for check in self.failed)
        return (
            f"{len(self.failed)} of {len(self.checks)} checks failed ({names}); first:"
            f" {first.problems[0]}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "segments_captured": self.segments_captured,
            "rows_captured": self.rows_captured,
            "load": self.load.to_dict() if self.load else None,
            "checks": [check.to_dict() for check in self.checks],
            "passed": not self.failed,
        }


def catch_up(
    capture: CaptureSettings,
    mongo: MongoSettings,
    *,
    reconcile_wait: float = 60.0,
    progress: Callable[[str], None] = lambda _line: None,
) -> CatchUpReport:
    """Capture ticks until the WAL reaches the source's position, load every pending segment,
    then run the checks; ``progress`` gets one line per tick and the loader's progress."""
    paths = WalPaths(capture.staging_dir, capture.source_name)
    report = CatchUpReport()
    for _ in range(MAX_TICKS):
        result = capture_once(capture)
        if result.manifest is None:
            break
        report.segments_captured += 1
        report.rows_captured += result.rows
        progress(result.summary())
        if result.error:
            raise CdcError(result.error)  # the tick kept what it read; this says why it stopped
    report.load = run_load(
        paths,
        mongo,
        source_url=capture.source_url,
        table_scope=capture.table_scope,
        progress=progress,
        mask_key=capture.governance.mask_key,
    )
    progress(report.load.summary())
    report.checks.append(_continuity(paths, report.load))
    report.checks.append(_duplicates(paths, mongo))
    verdict = reconcile(
        paths,
        capture.source_url,
        mongo,
        capture.include_tables,
        wait_seconds=reconcile_wait,
        mask_key=capture.governance.mask_key,
    )
    findings = verdict.findings()
    report.checks.append(CheckOutcome("source_sink_reconciliation", [findings] if findings else []))
    return report


def _continuity(paths: WalPaths, load: LoadResult) -> CheckOutcome:
    links, origin, flavor, notes = gather_chain(paths)
    outcome = CheckOutcome("gtid_continuity", list(notes))
    if flavor is None:
        return outcome
    checkpoint = load.checkpoint
    chain = check_with_checkpoint(
        links,
        flavor,
        origin,
        checkpoint.last_sequence if checkpoint else None,
        checkpoint.gtid if checkpoint else None,
    )
    outcome.problems.extend(chain.problems)
    return outcome


def _duplicates(paths: WalPaths, mongo: MongoSettings) -> CheckOutcome:
    report = check_wal(paths, DuplicateReport())
    with open_sink(mongo) as sink:
        checkpoint = sink.read_checkpoint(paths.source)
        check_change_log(
            sink.database, paths, checkpoint.last_sequence if checkpoint else 0, report
        )
    return CheckOutcome("no_duplicate_events", list(report.problems))
