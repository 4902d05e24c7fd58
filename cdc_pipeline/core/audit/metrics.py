"""``cdc-pipeline metrics``: the pipeline's state in the Prometheus text exposition format.

For the monitoring people already run: write the output to node_exporter's textfile collector
from cron (``docs/operations.md`` has the line), or serve it from any scraper that runs a
command. Every figure comes from what ``status`` reads (the WAL, the source, MongoDB) plus the
binlog retention headroom, so a scrape costs about one ``status``; check results, which live in
Dagster's instance, are passed in by the caller.

Invariants: one ``# HELP`` and ``# TYPE`` per metric, every sample labelled with ``source``;
a part that could not be read is ``cdc_up{part=...} 0`` and its figures are left out (never a
made-up 0); label values are escaped as the format requires; no URL or secret in any sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cdc_pipeline.core.audit.headroom import HeadroomReport
from cdc_pipeline.core.audit.status import Status
from cdc_pipeline.core.errors import CorruptSegmentError
from cdc_pipeline.core.wal.ledger import read_ledger
from cdc_pipeline.core.wal.segment import read_manifest
from cdc_pipeline.core.wal.staging import WalPaths, list_segments, noted_applied, sequence_of

_HELP = {
    "cdc_up": ("gauge", "Whether the part answered this scrape (1) or not (0)."),
    "cdc_lag_seconds": ("gauge", "Seconds MongoDB is behind the source."),
    "cdc_lag_transactions": ("gauge", "Source transactions not yet applied in MongoDB."),
    "cdc_pending_segments": ("gauge", "Captured WAL segments not yet loaded."),
    "cdc_quarantined_segments": ("gauge", "WAL segments set aside as damaged."),
    "cdc_segments_captured_total": ("counter", "WAL segments captured (the last sequence)."),
    "cdc_segments_applied_total": ("counter", "WAL segments applied (the checkpoint's sequence)."),
    "cdc_row_events_captured_total": ("counter", "Row events captured into the WAL."),
    "cdc_row_events_applied_total": ("counter", "Row events applied to MongoDB."),
    "cdc_breaker_open": ("gauge", "1 while the MongoDB breaker is open (loads paused)."),
    "cdc_load_halted": ("gauge", "1 while loading is halted at an unloadable row."),
    "cdc_dead_letters": ("gauge", "Rows set aside in cdc_dead_letters."),
    "cdc_binlog_bytes_behind": ("gauge", "Binlog bytes between capture and the source's head."),
    "cdc_binlog_retention_headroom_seconds": (
        "gauge",
        "Seconds before binlog expiry removes the file capture still needs.",
    ),
    "cdc_binlog_transactions_lost": (
        "gauge",
        "Transactions the source purged before capture read them (0 unless a purge overtook it).",
    ),
    "cdc_check_passed": ("gauge", "The latest result of each asset check (1 passed, 0 failed)."),
    "cdc_check_timestamp_seconds": ("gauge", "When each asset check last ran (Unix time)."),
}


@dataclass(frozen=True)
class CheckResult:
    check: str
    passed: bool
    timestamp: float


@dataclass
class Metrics:
    """Samples by metric name: (labels, value) pairs."""

    source: str
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def add(self, name: str, value: float | int | None, **labels: str) -> None:
        if value is None:
            return
        self.samples.setdefault(name, []).append(({"source": self.source, **labels}, float(value)))

    def text(self) -> str:
        lines: list[str] = []
        for name, (kind, text) in _HELP.items():
            if name not in self.samples:
                continue
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for labels, value in self.samples[name]:
                lines.append(f"{name}{{{_labels(labels)}}} {_number(value)}")
        return "\n".join(lines) + "\n"


def _labels(labels: Mapping[str, str]) -> str:
    escaped = (
        (key, value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
        for key, value in labels.items()
    )
    return ",".join(f'{key}="{value}"' for key, value in escaped)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 2**53 else repr(value)


def row_event_totals(paths: WalPaths, applied_sequence: int) -> tuple[int, int]:
    """Row events captured and applied: the retired segments' (the ledger) plus the row counts
    of the manifests on disk, applied through ``applied_sequence``."""
    ledger = read_ledger(paths)
    retired = ledger.retired_rows if ledger is not None else 0
    captured = applied = retired
    for segment in list_segments(paths):
        try:
            rows = read_manifest(segment).row_count
        except CorruptSegmentError:
            continue  # quarantine's business; counted in cdc_quarantined_segments
        captured += rows
        if sequence_of(segment) <= applied_sequence:
            applied += rows
    return captured, applied


def gather(
    paths: WalPaths,
    status: Status,
    headroom: HeadroomReport | None,
    checks: Iterable[CheckResult] = (),
) -> Metrics:
    """The metrics of one source from its ``status`` and ``headroom`` (None: not measured)."""
    metrics = Metrics(paths.source)
    source_up = status.source_configured and status.source_error is None
    metrics.add("cdc_up", int(source_up), part="source")
    mongo_up = status.mongo_configured and status.sink_error is None
    metrics.add("cdc_up", int(mongo_up), part="mongodb")
    metrics.add("cdc_lag_seconds", status.lag_seconds)
    metrics.add("cdc_lag_transactions", status.lag_transactions)
    metrics.add("cdc_pending_segments", status.pending_segments)
    metrics.add("cdc_quarantined_segments", len(status.quarantined))
    segments = list_segments(paths)
    ledger = read_ledger(paths)
    last = sequence_of(segments[-1]) if segments else (ledger.through_sequence if ledger else 0)
    metrics.add("cdc_segments_captured_total", last)
    applied = noted_applied(paths)
    metrics.add("cdc_segments_applied_total", applied)
    captured_rows, applied_rows = row_event_totals(paths, applied)
    metrics.add("cdc_row_events_captured_total", captured_rows)
    metrics.add("cdc_row_events_applied_total", applied_rows)
    metrics.add("cdc_breaker_open", int(status.breaker != "closed"))
    if mongo_up:
        metrics.add("cdc_load_halted", int(bool(status.load_halt)))
        metrics.add("cdc_dead_letters", status.dead_letters)
    if headroom is not None:
        metrics.add("cdc_binlog_bytes_behind", headroom.bytes_behind)
        metrics.add("cdc_binlog_retention_headroom_seconds", headroom.seconds_left)
        metrics.add("cdc_binlog_transactions_lost", headroom.lost_count)
    for check in checks:
        metrics.add("cdc_check_passed", int(check.passed), check=check.check)
        metrics.add("cdc_check_timestamp_seconds", round(check.timestamp, 3), check=check.check)
    return metrics
